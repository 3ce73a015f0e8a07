// ZeRO-Inference in the serving engine (`serve --offload-weights`): infer::Engine with a
// zero::WeightStream as EngineConfig::weight_hooks against the same engine over the in-memory
// model as the reference. Several concurrent requests of different lengths, arriving while others
// decode, with a small token budget (Dynamic SplitFuse: prompt chunks and decodes share a step),
// give the same tokens and the same log-probabilities bit for bit, for the tiny HF fixtures in f32
// and bf16, with the blocks on NVMe swap files (O_DIRECT) and on the cpu tier. Every engine step
// reads each block's weights exactly once (the block files' bytes, counted by the stream),
// whether it serves one sequence or many. A forward that throws between the hooks (the engine
// ends that batch and serves on) leaves the stream usable: the next forward is bit-identical.
#include <cstring>
#include <map>

#include <gtest/gtest.h>

#include "base/error.h"
#include "infer/engine.h"
#include "io/test_files_test.h"
#include "models/kv_cache.h"
#include "models/sources.h"
#include "tests/test_util.h"
#include "zero/inference.h"
#include "zero/inference_test_util.h"

namespace zs::zero {
namespace {

using core::DType;
using models::Transformer;

struct Served {
    std::map<infer::RequestId, std::vector<int32_t>> tokens;
    std::map<infer::RequestId, std::vector<float>> logprobs;
    std::vector<int64_t> step_seqs;   // sequences in each step
    std::vector<int64_t> step_bytes;  // weight bytes the stream read during each step
    int64_t mixed_steps = 0;          // steps with prompt chunks and decodes together
};

// Four greedy requests of 5, 13, 9 and 20 prompt tokens (8-12 new each), two at first, one after
// two steps, one after four; a budget of 8 tokens per step chunks the prompts.
Served serve(Transformer& model, WeightStream* ws) {
    infer::EngineConfig ec;
    ec.kv_blocks = 64;
    ec.block_size = 4;
    ec.kv_dtype = DType::f32;
    ec.scheduler.max_batch_tokens = 8;
    ec.scheduler.max_seqs = 8;
    ec.weight_hooks = ws;
    infer::Engine e(model, ec);
    const int64_t V = model.config().vocab_size;
    const std::vector<int64_t> lens = {5, 13, 9, 20};
    auto add = [&](size_t i) {
        std::vector<int32_t> p;
        for (int64_t t = 0; t < lens[i]; ++t) {
            p.push_back(static_cast<int32_t>((11 * static_cast<int64_t>(i) + 5 * t + 3) % V));
        }
        infer::RequestOptions o;
        o.sampling.temperature = 0.0f;
        o.max_tokens = 8 + static_cast<int64_t>(i);
        o.ignore_eos = true;
        e.add_request(std::move(p), o);
    };
    add(0);
    add(1);
    Served s;
    for (int64_t step = 0; e.has_unfinished(); ++step) {
        if (step == 2) add(2);
        if (step == 4) add(3);
        const int64_t before = ws ? ws->bytes_read() : 0;
        for (const infer::RequestOutput& o : e.step()) {
            EXPECT_NE(o.finish_reason, infer::FinishReason::error);
            auto& t = s.tokens[o.id];
            t.insert(t.end(), o.new_tokens.begin(), o.new_tokens.end());
            for (const infer::SampleResult& r : o.new_samples)
                s.logprobs[o.id].push_back(r.logprob);
        }
        if (ws) ws->settle();  // the read-ahead issued in this step is counted in it
        s.step_bytes.push_back(ws ? ws->bytes_read() - before : 0);
        const infer::StepStats& st = e.last_step();
        s.step_seqs.push_back(st.n_seqs);
        s.mixed_steps += st.n_prefill_tokens > 0 && st.n_decode_tokens > 0;
        if (step > 200) {
            ADD_FAILURE() << "no progress";
            break;
        }
    }
    return s;
}

TEST(ZeroInferenceServe, StreamedEngineStepsEqualInMemoryEngine) {
    test::TempDir disk;  // the real disk: O_DIRECT
    struct Case {
        const char* name;
        DType ct;
        Tier tier;
        int64_t prefetch;
    };
    const Case cases[] = {{"llama", DType::f32, Tier::nvme, 1},
                          {"llama_tied_mqa", DType::bf16, Tier::cpu, 2},
                          {"gpt2", DType::bf16, Tier::nvme, 2},
                          {"gpt2", DType::f32, Tier::cpu, 1}};
    for (const Case& c : cases) {
        const std::string what = fmt::format("{} {} tier {} prefetch {}", c.name,
                                             core::to_string(c.ct), to_string(c.tier), c.prefetch);
        FixtureModel ref = open_fixture(c.name, c.ct, true);
        const Served want = serve(*ref.model, nullptr);
        ASSERT_GT(want.mixed_steps, 0) << what << ": no step mixed prompt chunks and decodes";
        FixtureModel m = open_fixture(c.name, c.ct, false);
        WeightStream ws(*m.model, *m.files.weights, stream_config(c.tier, disk.path(), c.prefetch));
        const Served got = serve(*m.model, &ws);
        EXPECT_EQ(got.tokens, want.tokens) << what;
        ASSERT_EQ(got.logprobs.size(), want.logprobs.size()) << what;
        for (const auto& [id, lp] : want.logprobs) {
            const std::vector<float>& g = got.logprobs.at(id);
            ASSERT_EQ(g.size(), lp.size()) << what << " request " << id;
            EXPECT_EQ(std::memcmp(g.data(), lp.data(), lp.size() * sizeof(float)), 0)
                << what << " request " << id << ": log-probabilities differ";
        }
        EXPECT_EQ(got.step_seqs, want.step_seqs) << what;

        // One weight pass per step, whatever the number of sequences in it: every block once
        // (the first step also reads ahead the next step's first blocks, which the later steps
        // then find in flight).
        const int L = static_cast<int>(m.model->config().n_layers);
        int64_t per_step = 0, ahead = 0;
        for (int l = 0; l < L; ++l) {
            per_step += block_read_bytes(*m.model, l, c.tier);
            if (l < std::min<int64_t>(c.prefetch, L - 1))
                ahead += block_read_bytes(*m.model, l, c.tier);
        }
        int64_t max_seqs = 0;
        for (size_t i = 0; i < got.step_bytes.size(); ++i) {
            EXPECT_EQ(got.step_bytes[i], per_step + (i == 0 ? ahead : 0))
                << what << " step " << i << " (" << got.step_seqs[i] << " sequences)";
            max_seqs = std::max(max_seqs, got.step_seqs[i]);
        }
        EXPECT_GE(max_seqs, 4) << what << ": no step served all four requests";
        EXPECT_EQ(std::count(got.step_seqs.begin(), got.step_seqs.end(), 1) > 0, true)
            << what << ": no step served a single sequence";
    }
}

// A KV cache that throws in one layer's attention once (an error inside a forward, between a
// block's before_forward and after_forward).
class ThrowingKv final : public models::KvAttention {
public:
    ThrowingKv(const models::ModelConfig& cfg, int64_t n) : kv_(cfg, n, DType::f32) {}
    void attend(int layer, const ops::AttentionOptions& opts, const Tensor& q, const Tensor& k,
                const Tensor& v, const Tensor& out) override {
        if (layer == throw_at) {
            throw_at = -1;
            throw IoError("injected failure");
        }
        kv_.attend(layer, opts, q, k, v, out);
    }
    int throw_at = -1;

private:
    models::ContiguousKvCache kv_;
};

TEST(ZeroInferenceServe, ForwardThatThrowsLeavesTheStreamUsable) {
    test::TempDir disk;
    for (Tier tier : {Tier::nvme, Tier::cpu}) {
        // Three blocks and two buffers: a block left bound would hold the buffer the next
        // forward's first block needs.
        FixtureModel ref = open_fixture("gpt2_variants", DType::f32, true);
        FixtureModel m = open_fixture("gpt2_variants", DType::f32, false);
        ASSERT_EQ(m.model->config().n_layers, 3);
        WeightStream ws(*m.model, *m.files.weights, stream_config(tier, disk.path(), 1));
        std::vector<int32_t> ids = {3, 14, 15, 92, 65, 35};  // < the vocabulary (97)
        std::vector<int32_t> pos = {0, 1, 2, 3, 4, 5};
        auto forward = [&](Transformer& t, models::KvAttention& kv, models::GroupHooks* h) {
            return t.forward_tokens(Tensor::wrap(ids.data(), {6}, DType::i32),
                                    Tensor::wrap(pos.data(), {6}, DType::i32), kv, {5}, h);
        };
        ThrowingKv want_kv(ref.model->config(), 6);
        const Tensor want = forward(*ref.model, want_kv, nullptr);
        for (int layer : {1, 0, 2}) {
            ThrowingKv bad(m.model->config(), 6);
            bad.throw_at = layer;
            EXPECT_THROW(forward(*m.model, bad, &ws), IoError);
            ThrowingKv good(m.model->config(), 6);
            const Tensor got = forward(*m.model, good, &ws);
            const auto V = static_cast<size_t>(m.model->config().vocab_size);
            EXPECT_EQ(std::memcmp(got.data<float>(), want.data<float>(), V * sizeof(float)), 0)
                << to_string(tier) << ": logits after a forward that threw in layer " << layer;
        }
    }
}

}  // namespace
}  // namespace zs::zero
