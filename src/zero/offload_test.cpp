// Optimizer offload (Config::offload; ZeRO-Offload / ZeRO-Infinity) on thread-ranks, against the
// in-memory engine as the reference: 20 steps of a tiny Llama and GPT-2 (tied embeddings) with
// AdamW and clipping, at 1 and 2 ranks, stages 1-3, f32 and bf16 compute, offloaded to the cpu
// tier and to NVMe swap files (sub-groups small enough to cut parameters, 1 to 4 buffers,
// pipelined reads/writes on and off) give the same losses, final master weights and both Adam
// moments bit for bit; the bytes moved per step match the record sizes; the swap directory is
// removed; a full disk (a small tmpfs) fails the step with an IoError naming the file and errno
// 28 and leaves no temporary file; offload_optimizer.ratio keeps the first sub-groups in memory
// (same training, fewer bytes on the tier); and the configurations offload cannot serve are
// refused by name.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <tuple>

#include <gtest/gtest.h>
#include <sys/mount.h>

#include "base/error.h"
#include "comm/communicator.h"
#include "core/backend.h"
#include "io/test_files_test.h"
#include "models/transformer.h"
#include "tests/test_util.h"
#include "zero/engine.h"
#include "zero/tiers.h"

namespace zs::zero {
namespace {

namespace fs = std::filesystem;
using models::Transformer;

const char* kGpt2 = R"({"model_type": "gpt2", "vocab_size": 61, "n_embd": 32, "n_layer": 2,
    "n_head": 4, "n_positions": 32})";
const char* kLlama = R"({"model_type": "llama", "vocab_size": 53, "hidden_size": 32,
    "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 48, "max_position_embeddings": 32})";

constexpr int64_t kGlobalSeqs = 4, kMicro = 1, kT = 8, kSteps = 20;
const optim::Options kAdamW{optim::Kind::adamw, 0.9f, 0.95f, 1e-8f, 0.1f};

struct TrainRun {
    std::vector<double> losses;
    std::vector<std::vector<float>> state;  // per group: master, m, v (rank 0's gathered copy)
    int64_t read = 0, written = 0;          // rank 0's offload bytes
    std::string dir;                        // rank 0's swap directory while it existed
};

TrainRun train(const char* json, int world, int stage, DType ct, const OffloadConfig& off,
               int64_t steps = kSteps, const optim::Options& oo = kAdamW) {
    auto cfg = models::parse_hf_config(json, "test");
    zs::test::Rng rng(5);
    Tensor data =
        zs::test::random_ints(rng, {2, kGlobalSeqs, kT + 1}, DType::i32, 0, cfg.vocab_size - 1);
    TrainRun out;
    out.losses.resize(static_cast<size_t>(steps));
    std::mutex mu;
    comm::run_local(world, [&](int r, comm::Communicator& c) {
        models::RunConfig rc;
        rc.compute_dtype = ct;
        Transformer model(cfg, rc);
        Config zc;
        zc.stage = stage;
        zc.persistence_threshold = 0;
        zc.offload = off;
        Engine eng(model.layout(), model.binding(), c, zc, ct, oo,
                   [&](int g) { return model.grad_groups(g); });
        if (r == 0) out.dir = eng.offload_dir();
        eng.init_weights(99);
        const int64_t accum = kGlobalSeqs / (kMicro * world);
        for (int64_t step = 0; step < steps; ++step) {
            eng.begin_step(static_cast<int>(accum));
            double loss_sum = 0;
            for (int64_t k = 0; k < accum; ++k) {
                int64_t first = (k * world + r) * kMicro;
                Tensor seqs = data.select(0, step % 2).slice(0, first, first + kMicro);
                models::TrainBatch b{seqs.slice(1, 0, kT).contiguous(),
                                     seqs.slice(1, 1, kT + 1).contiguous()};
                const float ce = 1.0f / static_cast<float>(kMicro * kT * accum * world);
                loss_sum += model.forward_backward(b, ce, 1.0f, &eng).loss_sum;
                eng.end_micro_batch();
            }
            eng.finish_grads();
            double norm = std::sqrt(eng.grad_sq_norm());
            float clip = norm > 1.0 ? static_cast<float>(1.0 / norm) : 1.0f;
            eng.step(3e-2f, step + 1, clip);
            Tensor l = Tensor::empty({1}, DType::f32);
            l.data<float>()[0] = static_cast<float>(loss_sum);
            c.allreduce(l, comm::ReduceOp::sum).wait();
            if (r == 0) out.losses[static_cast<size_t>(step)] = l.data<float>()[0];
        }
        if (r == 0) {
            out.read = eng.offload_bytes_read();
            out.written = eng.offload_bytes_written();
        }
        for (int g = 0; g < model.layout().n_groups(); ++g) {
            for (int st = -1; st < eng.n_states(); ++st) {
                Tensor w = eng.gather_group(g, st).contiguous();  // collective
                if (r != 0) continue;
                const float* d = w.data<float>();
                std::lock_guard<std::mutex> lock(mu);
                out.state.emplace_back(d, d + w.numel());
            }
        }
    });
    return out;
}

void expect_same(const TrainRun& ref, const TrainRun& got, const std::string& what) {
    ASSERT_EQ(got.losses.size(), ref.losses.size()) << what;
    for (size_t s = 0; s < ref.losses.size(); ++s) {
        // Bit for bit: doubles compared with ==.
        EXPECT_EQ(got.losses[s], ref.losses[s]) << what << " step " << s + 1;
    }
    ASSERT_EQ(got.state.size(), ref.state.size()) << what;
    for (size_t i = 0; i < ref.state.size(); ++i) {
        ASSERT_EQ(got.state[i].size(), ref.state[i].size()) << what;
        EXPECT_EQ(std::memcmp(got.state[i].data(), ref.state[i].data(),
                              ref.state[i].size() * sizeof(float)),
                  0)
            << what << ": tensor " << i << " (group, then master / m / v) differs";
    }
}

// Swap files of the equivalence runs go to /dev/shm (tmpfs: the same io_uring path, without the
// virtual disk's latency, so the suite stays fast); the disk itself is exercised by aio_test and
// the benchmarks.
struct ShmDir {
    std::string path;
    ShmDir() {
        std::string tmpl = fs::exists("/dev/shm")
                               ? "/dev/shm/zs_offload_XXXXXX"
                               : (fs::temp_directory_path() / "zs_offload_XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
        path = tmpl;
    }
    ~ShmDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

TEST(Offload, OptimizerOffloadIsBitIdenticalToInMemoryTraining) {
    ShmDir dir;
    struct Setting {
        Tier tier;
        int64_t sub, buffers;
        bool pr, pw;
    };
    // Sub-groups of a few hundred elements cut most parameters; 1 buffer (no overlap) to 4
    // with both pipelines.
    const Setting settings[] = {{Tier::nvme, 300, 4, true, true},
                                {Tier::nvme, 1'000'000'000, 1, false, false},
                                {Tier::cpu, 333, 2, true, false},
                                {Tier::nvme, 1000, 3, false, true}};
    struct Case {
        const char* json;
        DType ct;
        int world, stage;
    };
    std::vector<Case> cases;
    for (DType ct : {DType::f32, DType::bf16}) {
        for (int world : {1, 2}) {
            for (int stage : {1, 2, 3}) cases.push_back({kLlama, ct, world, stage});
        }
    }
    cases.push_back({kGpt2, DType::bf16, 2, 3});  // tied embeddings
    cases.push_back({kGpt2, DType::f32, 1, 2});
    for (size_t k = 0; k < cases.size(); ++k) {
        const Case& c = cases[k];
        const Setting& t = settings[k % 4];
        OffloadConfig off;
        off.optimizer = t.tier;
        off.nvme_path = dir.path;
        off.sub_group_size = t.sub;
        off.buffer_count = t.buffers;
        off.pipeline_read = t.pr;
        off.pipeline_write = t.pw;
        off.aio.block_size = 8192;
        off.aio.queue_depth = 4;
        const std::string what =
            fmt::format("{} {} world {} stage {} tier {} sub {} buffers {} pipeline {}/{}",
                        c.json == kLlama ? "llama" : "gpt2", core::to_string(c.ct), c.world,
                        c.stage, to_string(t.tier), t.sub, t.buffers, t.pr, t.pw);
        const TrainRun ref = train(c.json, c.world, c.stage, c.ct, OffloadConfig{});
        EXPECT_LT(ref.losses.back(), ref.losses.front()) << what;
        const TrainRun got = train(c.json, c.world, c.stage, c.ct, off);
        expect_same(ref, got, what);
        EXPECT_GT(got.read, 0) << what;
        if (t.tier == Tier::nvme) {
            EXPECT_FALSE(got.dir.empty());
            EXPECT_FALSE(fs::exists(got.dir)) << what << ": swap dir left";
        }
    }
}

// Parameter offload (stage 3, bf16 compute): each group's weight shard read from the tier before
// its gather (ahead along the recorded order), dropped after, updated group by group in the step:
// bit for bit the in-memory run, alone, partly (max_in_cpu keeps the first groups in memory) and
// with the optimizer offloaded too.
TEST(Offload, ParameterOffloadIsBitIdenticalToInMemoryTraining) {
    ShmDir dir;
    struct Setting {
        Tier param, optimizer;
        int64_t max_in_cpu, buffers;
    };
    const Setting settings[] = {{Tier::nvme, Tier::memory, 0, 2},
                                {Tier::nvme, Tier::nvme, 0, 5},
                                {Tier::cpu, Tier::cpu, 0, 1},
                                {Tier::nvme, Tier::memory, 5000, 3}};
    for (int world : {1, 2}) {
        const TrainRun ref = train(kLlama, world, 3, DType::bf16, OffloadConfig{});
        for (const Setting& t : settings) {
            OffloadConfig off;
            off.param = t.param;
            off.param_nvme_path = dir.path;
            off.param_max_in_cpu = t.max_in_cpu;
            off.param_buffer_count = t.buffers;
            off.optimizer = t.optimizer;
            off.nvme_path = dir.path;
            off.sub_group_size = 700;
            off.pipeline_read = off.pipeline_write = true;
            const std::string what =
                fmt::format("world {} param {} (max_in_cpu {}, buffers {}) optimizer {}", world,
                            to_string(t.param), t.max_in_cpu, t.buffers, to_string(t.optimizer));
            const TrainRun got = train(kLlama, world, 3, DType::bf16, off);
            expect_same(ref, got, what);
            EXPECT_GT(got.read, 0) << what;
        }
    }
    auto cfg = models::parse_hf_config(kLlama, "test");
    Transformer model(cfg, {});
    for (auto [stage, ct, want] : {std::tuple{2, DType::bf16, "needs ZeRO stage 3"},
                                   std::tuple{3, DType::f32, "with f32 compute"}}) {
        std::string msg;
        try {
            comm::run_local(1, [&](int, comm::Communicator& c) {
                Config zc;
                zc.stage = stage;
                zc.offload.param = Tier::nvme;
                zc.offload.param_nvme_path = dir.path;
                Engine eng(model.layout(), model.binding(), c, zc, ct, kAdamW,
                           [&](int g) { return model.grad_groups(g); });
            });
        } catch (const ConfigError& e) {
            msg = e.what();
        }
        EXPECT_NE(msg.find("offload_param"), std::string::npos) << msg;
        EXPECT_NE(msg.find(want), std::string::npos) << msg;
    }
}

// Bytes per step: each step reads and writes every optimizer record once (padded to 4 KiB + a
// 4 KiB footer on NVMe); at stage 2 each micro-batch writes every gradient record (f32, one per
// sub-group) and each one after the first, and the step, reads them back. Counted against the
// record sizes computed here from the shard sizes.
TEST(Offload, BytesPerStepAreTheRecordSizes) {
    ShmDir dir;
    auto cfg = models::parse_hf_config(kLlama, "test");
    for (int64_t steps : {int64_t{1}, int64_t{3}}) {
        OffloadConfig off;
        off.optimizer = Tier::nvme;
        off.nvme_path = dir.path;
        off.sub_group_size = 500;
        const TrainRun a = train(kLlama, 1, 2, DType::bf16, off, steps);
        // Records: per group, ceil(S / 500) sub-groups of 3 f32 fields (master, m, v), and of
        // one f32 field (the gradients).
        Transformer model(cfg, {});
        int64_t per_pass = 0, grad_pass = 0;
        for (int g = 0; g < model.layout().n_groups(); ++g) {
            const int64_t S = model.layout().group(g).numel;  // 1 rank: the shard is the group
            for (int64_t a0 = 0; a0 < S; a0 += 500) {
                const size_t n = static_cast<size_t>(std::min<int64_t>(500, S - a0)) * 4;
                per_pass += static_cast<int64_t>(io::aio_padded(3 * n) + io::kAioAlign);
                grad_pass += static_cast<int64_t>(io::aio_padded(n) + io::kAioAlign);
            }
        }
        // Writes: the zero records at construction, init_weights' write-back, one per step.
        // Reads: init_weights' page-in and one per step (counted before the final gathers).
        // Gradients: kGlobalSeqs micro-batches per step at 1 rank, each writing them; the
        // micro-batches after the first and the step read them.
        const int64_t accum = kGlobalSeqs / kMicro;
        EXPECT_EQ(a.written, per_pass * (2 + steps) + grad_pass * accum * steps);
        EXPECT_EQ(a.read, per_pass * (1 + steps) + grad_pass * accum * steps);
    }
}

// offload_optimizer.ratio (DeepSpeed's partial offload, stage 3): the first floor((1 - ratio) x n)
// sub-groups keep their records and gradients in memory, the rest go to the tier. Training is bit
// for bit the in-memory run at 1 and 2 ranks, f32 and bf16 compute, and the tier moves exactly the
// offloaded sub-groups' records (counted here from the shard sizes, as above): ratio 1 all of
// them, 0 none. Below stage 3 a ratio < 1 is refused by name.
TEST(Offload, PartialOptimizerOffloadKeepsTheFirstSubGroupsInMemory) {
    ShmDir dir;
    auto cfg = models::parse_hf_config(kLlama, "test");
    for (int world : {1, 2}) {
        for (DType ct : {DType::f32, DType::bf16}) {
            const TrainRun ref = train(kLlama, world, 3, ct, OffloadConfig{});
            {
                const double ratio = ct == DType::f32 ? 0.5 : 0.3;
                OffloadConfig off;
                off.optimizer = Tier::nvme;
                off.nvme_path = dir.path;
                off.sub_group_size = 300;
                off.buffer_count = 3;
                off.pipeline_read = off.pipeline_write = true;
                off.optimizer_ratio = ratio;
                const TrainRun got = train(kLlama, world, 3, ct, off);
                expect_same(ref, got,
                            fmt::format("world {} {} ratio {}", world, core::to_string(ct), ratio));
            }
        }
    }
    // The bytes: one rank, bf16 compute (records of f32 master + m + v; f32 gradient records).
    Transformer model(cfg, {});
    std::vector<std::pair<int64_t, int64_t>> recs;  // per sub-group: record, gradient bytes
    for (int g = 0; g < model.layout().n_groups(); ++g) {
        const int64_t S = model.layout().group(g).numel;
        for (int64_t a0 = 0; a0 < S; a0 += 500) {
            const size_t n = static_cast<size_t>(std::min<int64_t>(500, S - a0)) * 4;
            recs.emplace_back(static_cast<int64_t>(io::aio_padded(3 * n) + io::kAioAlign),
                              static_cast<int64_t>(io::aio_padded(n) + io::kAioAlign));
        }
    }
    const int64_t steps = 2, accum = kGlobalSeqs / kMicro, N = static_cast<int64_t>(recs.size());
    for (double ratio : {1.0, 0.75, 0.5, 0.0}) {
        OffloadConfig off;
        off.optimizer = Tier::nvme;
        off.nvme_path = dir.path;
        off.sub_group_size = 500;
        off.optimizer_ratio = ratio;
        const TrainRun a = train(kLlama, 1, 3, DType::bf16, off, steps);
        // DeepSpeed's rule (stage3.py): sub-group i is offloaded when i >= int((1 - ratio) * n).
        const auto resident = static_cast<int64_t>((1.0 - ratio) * static_cast<double>(N));
        int64_t per_pass = 0, grad_pass = 0;
        for (int64_t i = resident; i < N; ++i) {
            per_pass += recs[static_cast<size_t>(i)].first;
            grad_pass += recs[static_cast<size_t>(i)].second;
        }
        EXPECT_EQ(a.written, per_pass * (2 + steps) + grad_pass * accum * steps) << ratio;
        EXPECT_EQ(a.read, per_pass * (1 + steps) + grad_pass * accum * steps) << ratio;
        if (ratio == 0.5) {
            EXPECT_GT(a.written, 0);
        }
    }
    std::string msg;
    try {
        comm::run_local(1, [&](int, comm::Communicator& c) {
            Config zc;
            zc.stage = 2;
            zc.offload.optimizer = Tier::cpu;
            zc.offload.optimizer_ratio = 0.5;
            Engine eng(model.layout(), model.binding(), c, zc, DType::bf16, kAdamW,
                       [&](int g) { return model.grad_groups(g); });
        });
    } catch (const ConfigError& e) {
        msg = e.what();
    }
    EXPECT_NE(msg.find("offload_optimizer.ratio: partial offload (ratio 0.5 < 1) is supported only "
                       "with stage 3 (stage 2)"),
              std::string::npos)
        << msg;
}

// Gradient offload (stages 2-3 with the optimizer offloaded): the engine keeps no f32 gradient
// shard; what it holds of the grads category is the step's gradient buffers (buffer_count of
// the largest sub-group) while the in-memory engine holds every group's shard, sum of S_g * 4.
// The training itself is checked bit for bit by the tests above (stages 2-3 there offload the
// gradients too).
TEST(Offload, GradientShardsLiveOnTheTier) {
    ShmDir dir;
    auto cfg = models::parse_hf_config(kLlama, "test");
    for (int stage : {1, 2, 3}) {
        for (Tier tier : {Tier::memory, Tier::cpu, Tier::nvme}) {
            // A fresh model: it holds the gradients an engine binds to it.
            Transformer model(cfg, {});
            comm::run_local(1, [&](int, comm::Communicator& c) {
                const int64_t before = core::memory_stats().current_of(core::MemCategory::grads);
                Config zc;
                zc.stage = stage;
                zc.offload.optimizer = tier;
                zc.offload.nvme_path = dir.path;
                zc.offload.sub_group_size = 700;
                zc.offload.buffer_count = 3;
                Engine eng(model.layout(), model.binding(), c, zc, DType::bf16, kAdamW,
                           [&](int g) { return model.grad_groups(g); });
                const int64_t held =
                    core::memory_stats().current_of(core::MemCategory::grads) - before;
                int64_t shards = 0, full = 0, max_sub = 0;
                for (int g = 0; g < model.layout().n_groups(); ++g) {
                    const int64_t S = model.layout().group(g).numel;
                    shards += S * 4;
                    full += S * 4;
                    max_sub = std::max(max_sub, std::min<int64_t>(S, 700));
                }
                const bool off = tier != Tier::memory && stage >= 2;
                EXPECT_EQ(eng.grads_offloaded(), off) << stage << " " << to_string(tier);
                // Stage 1 keeps the full gradients and their reduced shard; stage 2 the shard.
                const int64_t want =
                    off ? 3 * static_cast<int64_t>(io::aio_padded(static_cast<size_t>(max_sub) * 4))
                        : (stage == 1 ? full + shards : shards);
                EXPECT_EQ(held, want) << "stage " << stage << " tier " << to_string(tier);
                if (off) {
                    std::string msg;
                    try {
                        eng.reduced_grads(0);
                    } catch (const NotSupported& e) {
                        msg = e.what();
                    }
                    EXPECT_NE(msg.find("on the offload tier"), std::string::npos) << msg;
                }
            });
        }
    }
}

TEST(Offload, FullDiskStopsTheStepNamingFileAndErrno) {
    test::TempDir dir;
    const std::string mnt = dir.file("small");
    fs::create_directory(mnt);
    auto cfg = models::parse_hf_config(kLlama, "test");
    models::RunConfig rc;
    Transformer model(cfg, rc);
    OffloadConfig off;
    off.optimizer = Tier::nvme;
    off.nvme_path = mnt;
    if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=2m") != 0) {
        GTEST_SKIP() << "cannot mount a tmpfs (" << std::strerror(errno)
                     << "): needs root / CAP_SYS_ADMIN";
    }
    struct Unmount {
        std::string p;
        ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
    } unmount{mnt};
    std::string error;
    comm::run_local(1, [&](int, comm::Communicator& c) {
        Config zc;
        zc.stage = 1;
        zc.offload = off;
        Engine eng(model.layout(), model.binding(), c, zc, DType::f32, kAdamW,
                   [&](int g) { return model.grad_groups(g); });
        eng.init_weights(1);
        // The disk fills up (another writer) after the records are in place.
        {
            std::ofstream filler(mnt + "/filler", std::ios::binary);
            const std::vector<char> page(4096, 'x');
            while (filler.write(page.data(), static_cast<std::streamsize>(page.size())) &&
                   filler.flush()) {
            }
        }
        zs::test::Rng rng(1);
        Tensor seqs = zs::test::random_ints(rng, {1, kT + 1}, DType::i32, 0, cfg.vocab_size - 1);
        eng.begin_step(1);
        model.forward_backward(
            {seqs.slice(1, 0, kT).contiguous(), seqs.slice(1, 1, kT + 1).contiguous()}, 1.0f / kT,
            1.0f, &eng);
        eng.end_micro_batch();
        eng.finish_grads();
        try {
            eng.step(1e-3f, 1, 1.0f);
        } catch (const IoError& e) {
            error = e.what();
        }
        // Nothing half-written is left to be read back.
        for (const auto& e : fs::recursive_directory_iterator(mnt)) {
            EXPECT_FALSE(e.path().string().ends_with(".tmp")) << e.path();
        }
    });
    EXPECT_NE(error.find(mnt), std::string::npos) << error;
    EXPECT_NE(error.find(".swp"), std::string::npos) << error;
    EXPECT_NE(error.find("No space left on device (errno 28)"), std::string::npos) << error;
}

TEST(Offload, RefusedConfigurationsAreNamed) {
    auto cfg = models::parse_hf_config(kLlama, "test");
    Transformer model(cfg, {});
    test::TempDir dir;
    auto make = [&](int stage, optim::Kind kind, Tier tier, std::string path) {
        comm::run_local(1, [&](int, comm::Communicator& c) {
            Config zc;
            zc.stage = stage;
            zc.offload.optimizer = tier;
            zc.offload.nvme_path = std::move(path);
            optim::Options o = kAdamW;
            o.kind = kind;
            Engine eng(model.layout(), model.binding(), c, zc, DType::f32, o,
                       [&](int g) { return model.grad_groups(g); });
        });
    };
    auto message = [&](auto fn) {
        try {
            fn();
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    EXPECT_NE(message([&] {
                  make(0, optim::Kind::adamw, Tier::cpu, "");
              }).find("offload_optimizer: device \"cpu\" needs ZeRO stage 1, 2 or 3"),
              std::string::npos);
    EXPECT_NE(message([&] { make(2, optim::Kind::lamb, Tier::nvme, dir.path()); }).find("LAMB"),
              std::string::npos);
    EXPECT_NE(message([&] { make(2, optim::Kind::adamw, Tier::nvme, ""); }).find("nvme_path"),
              std::string::npos);
}

}  // namespace
}  // namespace zs::zero

namespace zs::zero {
namespace {

// Tier advice (zero/tiers.h) against its formulas, worked by hand for one estimate: stage 3, bf16,
// Adam, 2 micro-batches, Ψ = 1000 shard elements (largest group 400), 2 buffers of sub-groups of
// 100, 1 parameter buffer.
TEST(OffloadTiers, AdviceFollowsTheFormulas) {
    MemoryEstimate e;
    e.params = 2000;     // 2 Ψ
    e.grads = 4000;      // 4 Ψ
    e.master = 4000;     // 4 Ψ
    e.optimizer = 8000;  // 8 Ψ
    e.activations = 500;
    e.transient = 700;
    e.peak = 19200;
    TierInput in;
    in.stage = 3;
    in.micro_batches = 2;
    in.shard_elems = 1000;
    in.largest_group_shard = 400;
    in.ct = 2;
    in.n_states = 2;
    in.sub_group_size = 100;
    in.buffer_count = 2;
    in.param_buffer_count = 1;
    in.compute_s = 1.0;
    in.disk_bw = 10000.0;  // bytes/s
    in.memory_cap = 12000;
    const TierAdvice a = advise_tiers(e, in);
    // none, optimizer nvme at the smallest ratio that fits, optimizer nvme, params nvme (no cpu
    // tier on a CPU)
    ASSERT_EQ(a.options.size(), 4u);
    EXPECT_EQ(a.options[0].name, "none");
    EXPECT_EQ(a.options[0].memory, 19200);
    EXPECT_EQ(a.options[0].step_overlapped, 1.0);
    // Optimizer (and gradients) on NVMe: peak - master - optimizer - grads + 2 buffers x 100 x
    // 4 bytes x (3 record fields + 1 gradient field).
    const int64_t opt_mem = 19200 - 4000 - 8000 - 4000 + 2 * 100 * 4 * 4;
    EXPECT_EQ(a.options[2].name, "optimizer nvme");
    EXPECT_EQ(a.options[2].memory, opt_mem);
    // Records 3 x 4 x 1000 read and written; gradients 2 micro-batches x 4 x 1000 each way.
    EXPECT_EQ(a.options[2].disk_read, 12000 + 8000);
    EXPECT_EQ(a.options[2].disk_write, 12000 + 8000);
    EXPECT_DOUBLE_EQ(a.options[2].step_overlapped, std::max(1.0, 40000.0 / 10000.0));
    EXPECT_DOUBLE_EQ(a.options[2].step_serial, 1.0 + 40000.0 / 10000.0);
    // Partial offload: 12000 - 6400 = 5600 bytes of room hold 350 of the 1000 elements' records
    // and gradient records (12 + 4 bytes each): ratio 0.65, 65% of the disk bytes.
    EXPECT_EQ(a.options[1].name, "optimizer nvme, ratio 0.65");
    EXPECT_EQ(a.options[1].memory, opt_mem + 350 * 16);
    EXPECT_EQ(a.options[1].disk_read, 13000);
    EXPECT_EQ(a.options[1].disk_write, 13000);
    // Parameters too: - 2 Ψ + (1 + 1) x 2 x 400; read (2 x 2 + 1) x 2 Ψ more, write 2 Ψ more.
    EXPECT_EQ(a.options[3].name, "params nvme");
    EXPECT_EQ(a.options[3].memory, opt_mem - 2000 + 2 * 2 * 400);
    EXPECT_EQ(a.options[3].disk_read, 20000 + 5 * 2000);
    EXPECT_EQ(a.options[3].disk_write, 20000 + 2000);
    // 19200 does not fit 12000, opt_mem + 5600 does: the advice is the partial offload; below
    // opt_mem, the parameters too (6000).
    EXPECT_EQ(a.advice, 1);
    // A configured ratio of 0.5 replaces the full offload's line and applies to params nvme's.
    in.ratio = 0.5;
    in.memory_cap = opt_mem + 500 * 16;
    const TierAdvice h = advise_tiers(e, in);
    ASSERT_EQ(h.options.size(), 3u);
    EXPECT_EQ(h.options[1].name, "optimizer nvme, ratio 0.50");
    EXPECT_EQ(h.options[1].memory, opt_mem + 500 * 16);
    EXPECT_EQ(h.options[1].disk_read, 10000);
    EXPECT_EQ(h.options[2].memory, opt_mem + 500 * 16 - 2000 + 2 * 2 * 400);
    EXPECT_EQ(h.options[2].disk_write, 10000 + 2000);
    EXPECT_EQ(h.advice, 1);
    in.ratio = 1.0;
    in.memory_cap = opt_mem - 1;
    EXPECT_EQ(advise_tiers(e, in).advice, 2);
    in.memory_cap = 100;
    EXPECT_EQ(advise_tiers(e, in).advice, -1);
    // Off the CPU the cpu tier is an option (same memory as nvme, no disk traffic).
    in.cpu_device = false;
    in.memory_cap = opt_mem;
    const TierAdvice g = advise_tiers(e, in);
    ASSERT_EQ(g.options.size(), 4u);
    EXPECT_EQ(g.options[1].name, "optimizer cpu");
    EXPECT_EQ(g.options[1].memory, opt_mem);
    EXPECT_EQ(g.options[1].disk_read, 0);
    EXPECT_EQ(g.advice, 1);
}

}  // namespace
}  // namespace zs::zero
