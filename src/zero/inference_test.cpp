// ZeRO-Inference (zero/inference.h) against the in-memory model as the reference: greedy decoding
// of the tiny HF fixtures (Llama, Llama with tied embeddings and MQA, GPT-2), in f32 and bf16,
// with the blocks streamed from NVMe swap files (O_DIRECT on the real disk, and on tmpfs) and
// from the cpu tier, read ahead 1 to 3 blocks, gives the same tokens and the same logits bit for
// bit, at batch 1 and batch 3 (BatchKvCache, against the in-memory batch and against each prompt
// decoded alone); the bytes read per forward are the block files; the memory held is
// stream_memory's formula; bad settings are refused by name.
#include "zero/inference.h"

#include <cstring>
#include <filesystem>

#include <gtest/gtest.h>

#include "base/error.h"
#include "core/backend.h"
#include "io/test_files_test.h"
#include "models/kv_cache.h"
#include "models/sources.h"
#include "tests/test_util.h"
#include "zero/inference_test_util.h"

namespace zs::zero {
namespace {

namespace fs = std::filesystem;
using core::DType;
using models::Transformer;

struct Decoded {
    std::vector<std::vector<int32_t>> tokens;  // per sequence
    std::vector<std::vector<float>> logits;    // per forward: [B, V] flattened
};

constexpr int64_t kNew = 10;

// Greedy decoding of B prompts of one length in lockstep (one forward per step for all).
Decoded decode(Transformer& model, const std::vector<std::vector<int32_t>>& prompts,
               models::GroupHooks* hooks) {
    const auto B = static_cast<int64_t>(prompts.size());
    const auto n = static_cast<int64_t>(prompts[0].size());
    const int64_t V = model.config().vocab_size;
    BatchKvCache kv(model.local_config(), B, n + kNew, model.run_config().compute_dtype);
    Decoded out;
    out.tokens.resize(static_cast<size_t>(B));
    std::vector<int32_t> ids, pos;
    std::vector<int64_t> rows;
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t i = 0; i < n; ++i) {
            ids.push_back(prompts[static_cast<size_t>(b)][static_cast<size_t>(i)]);
            pos.push_back(static_cast<int32_t>(i));
        }
        rows.push_back((b + 1) * n - 1);
    }
    for (int64_t step = 0; step < kNew; ++step) {
        const auto N = static_cast<int64_t>(ids.size());
        Tensor logits =
            model.forward_tokens(Tensor::wrap(ids.data(), {N}, DType::i32),
                                 Tensor::wrap(pos.data(), {N}, DType::i32), kv, rows, hooks);
        kv.commit(N / B);
        const float* l = logits.data<float>();
        out.logits.emplace_back(l, l + B * V);
        const int32_t p = static_cast<int32_t>(kv.length());
        ids.clear();
        pos.clear();
        rows.clear();
        for (int64_t b = 0; b < B; ++b) {
            const float* lb = l + b * V;
            const auto next = static_cast<int32_t>(std::max_element(lb, lb + V) - lb);
            out.tokens[static_cast<size_t>(b)].push_back(next);
            ids.push_back(next);
            pos.push_back(p);
            rows.push_back(b);
        }
    }
    return out;
}

std::vector<std::vector<int32_t>> prompts(int64_t B, int64_t vocab) {
    std::vector<std::vector<int32_t>> p;
    for (int64_t b = 0; b < B; ++b) {
        std::vector<int32_t> s;
        for (int64_t i = 0; i < 6; ++i)
            s.push_back(static_cast<int32_t>((7 * b + 3 * i + 1) % vocab));
        p.push_back(s);
    }
    return p;
}

void expect_same(const Decoded& ref, const Decoded& got, const std::string& what) {
    EXPECT_EQ(got.tokens, ref.tokens) << what;
    ASSERT_EQ(got.logits.size(), ref.logits.size()) << what;
    for (size_t s = 0; s < ref.logits.size(); ++s) {
        ASSERT_EQ(got.logits[s].size(), ref.logits[s].size());
        EXPECT_EQ(std::memcmp(got.logits[s].data(), ref.logits[s].data(),
                              ref.logits[s].size() * sizeof(float)),
                  0)
            << what << ": logits of forward " << s << " differ";
    }
}

TEST(ZeroInference, StreamedWeightsDecodeBitIdenticalToInMemory) {
    test::TempDir disk;  // the real disk: O_DIRECT
    char shm_tmpl[] = "/dev/shm/zs_stream_XXXXXX";
    const bool has_shm = fs::exists("/dev/shm") && ::mkdtemp(shm_tmpl) != nullptr;
    const std::string shm = has_shm ? std::string(shm_tmpl) : disk.path();
    struct Setting {
        Tier tier;
        std::string path;
        int64_t prefetch;
    };
    const Setting settings[] = {
        {Tier::nvme, disk.path(), 1}, {Tier::nvme, shm, 3}, {Tier::cpu, "", 2}};
    int k = 0;
    for (const char* name : {"llama", "llama_tied_mqa", "gpt2"}) {
        for (DType ct : {DType::f32, DType::bf16}) {
            for (int64_t B : {int64_t{1}, int64_t{3}}) {
                const Setting& t = settings[k++ % 3];
                const std::string what =
                    fmt::format("{} {} batch {} tier {} prefetch {}", name, core::to_string(ct), B,
                                to_string(t.tier), t.prefetch);
                FixtureModel ref = open_fixture(name, ct, true);
                const auto ps = prompts(B, ref.model->config().vocab_size);
                const Decoded want = decode(*ref.model, ps, nullptr);
                if (B > 1) {
                    // Batched greedy tokens are each prompt's own.
                    for (int64_t b = 0; b < B; ++b) {
                        const Decoded solo =
                            decode(*ref.model, {ps[static_cast<size_t>(b)]}, nullptr);
                        EXPECT_EQ(want.tokens[static_cast<size_t>(b)], solo.tokens[0])
                            << what << " sequence " << b;
                    }
                }
                FixtureModel m = open_fixture(name, ct, false);
                const StreamConfig sc = stream_config(t.tier, t.path, t.prefetch);
                const int64_t before = core::memory_stats().current_of(core::MemCategory::params);
                std::string dir;
                {
                    WeightStream ws(*m.model, *m.files.weights, sc);
                    dir = ws.dir();
                    const StreamMemory sm = stream_memory(*m.model, sc.prefetch);
                    EXPECT_EQ(core::memory_stats().current_of(core::MemCategory::params) - before,
                              sm.resident + sm.buffers)
                        << what;
                    const int64_t read0 = ws.bytes_read();
                    const Decoded got = decode(*m.model, ps, &ws);
                    ws.settle();
                    expect_same(want, got, what);
                    // Every forward reads every block once (+ padding and a footer on NVMe),
                    // plus what the last one read ahead for the next forward.
                    int64_t per_forward = 0, ahead = 0;
                    const int L = static_cast<int>(m.model->config().n_layers);
                    for (int l = 0; l < L; ++l) {
                        const int64_t on_tier = block_read_bytes(*m.model, l, t.tier);
                        per_forward += on_tier;
                        if (l < std::min<int64_t>(sc.prefetch, L - 1)) ahead += on_tier;
                    }
                    EXPECT_EQ(ws.bytes_read() - read0, per_forward * kNew + ahead) << what;
                }
                if (t.tier == Tier::nvme) {
                    EXPECT_FALSE(dir.empty());
                    EXPECT_FALSE(fs::exists(dir)) << what << ": swap dir left";
                }
            }
        }
    }
    if (has_shm) fs::remove_all(shm);
}

TEST(ZeroInference, BadSettingsAreRefusedByName) {
    FixtureModel m = open_fixture("llama", DType::f32, false);
    auto message = [&](StreamConfig sc) {
        try {
            WeightStream ws(*m.model, *m.files.weights, sc);
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    StreamConfig mem;
    mem.tier = Tier::memory;
    EXPECT_NE(message(mem).find("--offload-weights: expected nvme or cpu"), std::string::npos);
    StreamConfig none;
    none.prefetch = 0;
    none.tier = Tier::cpu;
    EXPECT_NE(message(none).find("read-ahead must be >= 1"), std::string::npos);
    StreamConfig nopath;
    nopath.tier = Tier::nvme;
    EXPECT_NE(message(nopath).find("--offload-path: required"), std::string::npos);
}

}  // namespace
}  // namespace zs::zero
