// bf16 master weights, gradients and optimizer states (Config::bf16_master / bf16_states;
// DeepSpeed's bf16.bf16_master_weights_and_grads and bf16.bf16_optimizer_states) on
// thread-ranks:
//  - against a naive reference: a plain loop over the unsharded model holding bf16 weights (and
//    bf16 or f32 moments), which widens them to f32, runs the f32 AdamW update of
//    optim::Optimizer on the whole group with the step's reduced gradients, and rounds back to
//    nearest even: after every one of 6 steps the engine's gathered weights and moments equal it
//    bit for bit, at 1 and 2 ranks, stages 1-3; the reduced gradients are bf16 values;
//  - offloaded (optimizer, gradients, parameters; NVMe swap files, small sub-groups) equals the
//    in-memory bf16-master run bit for bit at 1 and 2 ranks; the records hold 2-byte states;
//  - the configurations it cannot serve are refused by name.
#include <cstring>
#include <filesystem>
#include <mutex>

#include <gtest/gtest.h>

#include "base/error.h"
#include "base/timer.h"
#include "comm/communicator.h"
#include "core/backend.h"
#include "core/half.h"
#include "models/transformer.h"
#include "tests/test_util.h"
#include "zero/engine.h"
#include "zero/estimate.h"
#include "zero/tiers.h"

namespace zs::zero {
namespace {

namespace fs = std::filesystem;
using models::Transformer;

const char* kLlama = R"({"model_type": "llama", "vocab_size": 53, "hidden_size": 32,
    "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 48, "max_position_embeddings": 32})";

constexpr int64_t kGlobalSeqs = 4, kT = 8;
const optim::Options kAdamW{optim::Kind::adamw, 0.9f, 0.95f, 1e-8f, 0.1f};

float rnd(float x) { return core::bf16_to_f32(core::f32_to_bf16(x)); }

struct RunOut {
    std::vector<double> losses;
    std::vector<std::vector<float>> state;  // after the last step: per group master, m, v
    int64_t read = 0, written = 0;
    int mismatches = 0;      // reference comparisons that failed (bf16 reference runs)
    int non_bf16_grads = 0;  // reduced gradients that are not bf16 values
    int64_t compared = 0;    // elements compared against the reference
    OffloadTimes times;      // rank 0's last step
    double step_s = 0;       // rank 0's last eng.step() wall time
};

struct RunSetup {
    int world = 1, stage = 1;
    bool bf16_states = false;
    OffloadConfig off;
    bool reference = false;  // check against the naive reference every step
    int64_t steps = 6;
};

RunOut train(const RunSetup& su) {
    auto cfg = models::parse_hf_config(kLlama, "test");
    zs::test::Rng rng(7);
    Tensor data =
        zs::test::random_ints(rng, {2, kGlobalSeqs, kT + 1}, DType::i32, 0, cfg.vocab_size - 1);
    RunOut out;
    out.losses.resize(static_cast<size_t>(su.steps));
    std::mutex mu;
    comm::run_local(su.world, [&](int r, comm::Communicator& c) {
        models::RunConfig rc;
        rc.compute_dtype = DType::bf16;
        Transformer model(cfg, rc);
        Config zc;
        zc.stage = su.stage;
        zc.persistence_threshold = 0;
        zc.offload = su.off;
        zc.bf16_master = true;
        zc.bf16_states = su.bf16_states;
        Engine eng(model.layout(), model.binding(), c, zc, DType::bf16, kAdamW,
                   [&](int g) { return model.grad_groups(g); });
        eng.init_weights(99);
        const models::ParamLayout& lay = model.layout();
        const int G = lay.n_groups();
        // The naive reference (rank 0): bf16 weights and moments of the whole model, as f32
        // values that are bf16 (moments: bf16 values only with bf16_states).
        std::vector<std::vector<float>> w(G), m(G), v(G);
        if (r == 0 && su.reference) {
            for (int g = 0; g < G; ++g) {
                const models::GroupInfo& gi = lay.group(g);
                w[g].assign(static_cast<size_t>(gi.numel), 0.0f);
                for (models::ParamId id : gi.params) {
                    const models::ParamInfo& pi = lay.param(id);
                    models::init_param_values(pi, id, 99, w[g].data() + pi.offset);
                }
                for (float& x : w[g]) x = rnd(x);
                m[g].assign(w[g].size(), 0.0f);
                v[g].assign(w[g].size(), 0.0f);
            }
        }
        optim::Optimizer ref_opt(kAdamW);
        const int64_t accum = kGlobalSeqs / su.world;
        for (int64_t step = 0; step < su.steps; ++step) {
            eng.begin_step(static_cast<int>(accum));
            double loss_sum = 0;
            for (int64_t k = 0; k < accum; ++k) {
                const int64_t first = k * su.world + r;
                Tensor seqs = data.select(0, step % 2).slice(0, first, first + 1);
                models::TrainBatch b{seqs.slice(1, 0, kT).contiguous(),
                                     seqs.slice(1, 1, kT + 1).contiguous()};
                const float ce = 1.0f / static_cast<float>(kT * accum * su.world);
                loss_sum += model.forward_backward(b, ce, 1.0f, &eng).loss_sum;
                eng.end_micro_batch();
            }
            eng.finish_grads();
            const double norm = std::sqrt(eng.grad_sq_norm());
            const float clip = norm > 1.0 ? static_cast<float>(1.0 / norm) : 1.0f;
            // The reduced gradients of the whole model (collective), for the reference.
            std::vector<Tensor> grads;
            if (su.reference) {
                for (int g = 0; g < G; ++g) {
                    const GroupShard& s = eng.shard(g);
                    Tensor full = Tensor::empty({s.padded}, DType::f32);
                    Tensor mine = eng.reduced_grads(g).clone();
                    c.allgather(full, mine).wait();
                    grads.push_back(full);
                }
            }
            Timer st;
            eng.step(3e-2f, step + 1, clip);
            if (r == 0) {
                out.step_s = st.seconds();
                out.times = eng.offload_times();
            }
            Tensor l = Tensor::empty({1}, DType::f32);
            l.data<float>()[0] = static_cast<float>(loss_sum);
            c.allreduce(l, comm::ReduceOp::sum).wait();
            if (r == 0) out.losses[static_cast<size_t>(step)] = l.data<float>()[0];
            if (!su.reference) continue;
            for (int g = 0; g < G; ++g) {
                Tensor ew = eng.gather_group(g, -1).contiguous();  // collective
                Tensor em = eng.gather_group(g, 0).contiguous();
                Tensor ev = eng.gather_group(g, 1).contiguous();
                if (r != 0) continue;
                const size_t n = w[g].size();
                const float* gd = grads[static_cast<size_t>(g)].data<float>();
                for (size_t i = 0; i < n; ++i) out.non_bf16_grads += rnd(gd[i]) != gd[i];
                // The reference update: widen (the vectors hold the values), f32 AdamW, round.
                optim::Segment seg{};
                seg.master = w[g].data();
                seg.grad = gd;
                seg.state0 = m[g].data();
                seg.state1 = v[g].data();
                seg.n = static_cast<int64_t>(n);
                ref_opt.step({&seg, 1}, 3e-2f, step + 1, clip);
                for (size_t i = 0; i < n; ++i) {
                    w[g][i] = rnd(w[g][i]);
                    if (su.bf16_states) {
                        m[g][i] = rnd(m[g][i]);
                        v[g][i] = rnd(v[g][i]);
                    }
                }
                out.mismatches +=
                    std::memcmp(ew.data<float>(), w[g].data(), n * sizeof(float)) != 0;
                out.mismatches +=
                    std::memcmp(em.data<float>(), m[g].data(), n * sizeof(float)) != 0;
                out.mismatches +=
                    std::memcmp(ev.data<float>(), v[g].data(), n * sizeof(float)) != 0;
                out.compared += static_cast<int64_t>(n);
            }
        }
        if (r == 0) {
            out.read = eng.offload_bytes_read();
            out.written = eng.offload_bytes_written();
        }
        for (int g = 0; g < G; ++g) {
            for (int st = -1; st < eng.n_states(); ++st) {
                Tensor t = eng.gather_group(g, st).contiguous();  // collective
                if (r != 0) continue;
                std::lock_guard<std::mutex> lock(mu);
                out.state.emplace_back(t.data<float>(), t.data<float>() + t.numel());
            }
        }
    });
    return out;
}

TEST(Bf16Master, EqualsANaiveBf16AdamWReferenceEveryStep) {
    for (int world : {1, 2}) {
        for (int stage : {1, 2, 3}) {
            for (bool bs : {false, true}) {
                SCOPED_TRACE(fmt::format("world {} stage {} bf16 states {}", world, stage, bs));
                RunSetup su;
                su.world = world;
                su.stage = stage;
                su.bf16_states = bs;
                su.reference = true;
                su.steps = 6;
                const RunOut run = train(su);
                EXPECT_GT(run.compared, 0);
                EXPECT_EQ(run.mismatches, 0);
                EXPECT_EQ(run.non_bf16_grads, 0);
                // The same batch as the first step (two alternate).
                EXPECT_LT(run.losses[4], run.losses[0]) << run.losses[0] << " " << run.losses[4];
            }
        }
    }
}

// Swap files on tmpfs (the same io_uring path, without the disk's latency).
struct ShmDir {
    std::string path;
    ShmDir() {
        std::string tmpl = fs::exists("/dev/shm")
                               ? "/dev/shm/zs_bf16m_XXXXXX"
                               : (fs::temp_directory_path() / "zs_bf16m_XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
        path = tmpl;
    }
    ~ShmDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

TEST(Bf16Master, OffloadedEqualsInMemoryBitForBit) {
    ShmDir dir;
    struct Case {
        int world, stage;
        bool bs;
    };
    for (const Case& k :
         {Case{1, 2, true}, Case{1, 3, false}, Case{2, 3, true}, Case{2, 2, false}}) {
        const int world = k.world, stage = k.stage;
        const bool bs = k.bs;
        SCOPED_TRACE(fmt::format("world {} stage {} bf16 states {}", world, stage, bs));
        RunSetup su;
        su.world = world;
        su.stage = stage;
        su.bf16_states = bs;
        su.steps = 5;
        const RunOut ref = train(su);
        su.off.optimizer = Tier::nvme;
        su.off.nvme_path = dir.path;
        su.off.sub_group_size = 300;  // cuts parameters
        su.off.buffer_count = 3;
        su.off.pipeline_read = su.off.pipeline_write = true;
        su.off.aio.block_size = 8192;
        su.off.aio.queue_depth = 4;
        if (stage == 3) {
            su.off.param = Tier::nvme;
            su.off.param_nvme_path = dir.path;
            su.off.param_max_in_cpu = 0;
            su.off.param_buffer_count = 2;
        }
        const RunOut got = train(su);
        ASSERT_EQ(got.losses.size(), ref.losses.size());
        for (size_t i = 0; i < ref.losses.size(); ++i)
            EXPECT_EQ(got.losses[i], ref.losses[i]) << "step " << i + 1;
        ASSERT_EQ(got.state.size(), ref.state.size());
        for (size_t i = 0; i < ref.state.size(); ++i) {
            ASSERT_EQ(got.state[i].size(), ref.state[i].size());
            EXPECT_EQ(std::memcmp(got.state[i].data(), ref.state[i].data(),
                                  ref.state[i].size() * sizeof(float)),
                      0)
                << "tensor " << i;
        }
        EXPECT_GT(got.read, 0);
        EXPECT_GT(got.written, 0);
    }
}

// Records on the tier: at stage 2, world 1, one step moves exactly the optimizer records (2
// states of 2 or 4 bytes per element) read and written once, plus the bf16 gradient records
// (2 bytes per element) written by each of the 4 micro-batches and read by the next 3 and the
// step; construction writes the records once (zeros) and init_weights touches none (the bf16
// master is the compute copy).
TEST(Bf16Master, OffloadedRecordsHoldBf16StatesAndGradients) {
    ShmDir dir;
    auto cfg = models::parse_hf_config(kLlama, "test");
    for (bool bs : {true, false}) {
        RunSetup su;
        su.stage = 2;
        su.bf16_states = bs;
        su.steps = 1;
        su.off.optimizer = Tier::cpu;  // bytes counted exactly (no block alignment)
        su.off.sub_group_size = 1000;
        su.off.aio.block_size = 8192;
        const RunOut got = train(su);
        models::RunConfig rc;
        rc.compute_dtype = DType::bf16;
        Transformer model(cfg, rc);
        int64_t elems = 0;
        for (int g = 0; g < model.layout().n_groups(); ++g) elems += model.layout().group(g).numel;
        const int64_t state_bytes = elems * 2 * (bs ? 2 : 4);
        const int64_t grad_bytes = elems * 2;
        // Written: records at construction + by the step; gradients by 4 micro-batches.
        EXPECT_EQ(got.written, 2 * state_bytes + 4 * grad_bytes) << "bf16 states " << bs;
        // Read: the records by the step; gradients by micro-batches 2-4 and the step.
        EXPECT_EQ(got.read, state_bytes + 4 * grad_bytes) << "bf16 states " << bs;
        // zerospeed estimate's tier advice (zero/tiers.h) predicts the same bytes per step.
        TierInput ti;
        ti.memory_cap = int64_t{1} << 40;
        ti.stage = 2;
        ti.micro_batches = 4;
        ti.shard_elems = elems;
        ti.largest_group_shard = elems;
        ti.bf16_master = true;
        ti.bf16_states = bs;
        const TierAdvice adv = advise_tiers(MemoryEstimate{}, ti);
        ASSERT_EQ(adv.options.size(), 2u);  // none, optimizer nvme (a CPU rank, stage 2)
        EXPECT_EQ(adv.options[1].disk_read, got.read);
        EXPECT_EQ(adv.options[1].disk_write, got.written - state_bytes);  // less construction's
    }
}

// ZeRO-Infinity's overlapped step (the benchmark's configuration: bf16 masters and states,
// optimizer, gradients and parameters on NVMe): reads of the next sub-groups as far as the
// buffers allow, parameter shards read ahead in the optimizer and for the next forward, written
// back asynchronously; at one rank without collectives. Every step's loss and the final weights
// and moments equal, bit for bit, the unpipelined run (one buffer, no read-ahead, one parameter
// buffer) and the in-memory run, at 1 and 2 ranks; so does the overlapped run with
// offload_optimizer.ratio 0.5 (half the sub-groups' records in memory).
TEST(Bf16Master, OverlappedInfinityStepEqualsTheSerialOne) {
    ShmDir dir;
    for (int world : {1, 2}) {
        RunSetup mem;
        mem.world = world;
        mem.stage = 3;
        mem.bf16_states = true;
        const RunOut want = train(mem);
        // ratio 0.5: the first half of the sub-groups' records stay in memory (partial offload).
        for (auto [overlap, ratio] : {std::pair{false, 1.0}, {true, 1.0}, {true, 0.5}}) {
            RunSetup su = mem;
            su.off.optimizer = su.off.param = Tier::nvme;
            su.off.nvme_path = su.off.param_nvme_path = dir.path;
            su.off.param_max_in_cpu = 0;
            su.off.sub_group_size = 300;
            su.off.buffer_count = overlap ? 4 : 1;
            su.off.pipeline_read = su.off.pipeline_write = overlap;
            su.off.param_buffer_count = overlap ? 3 : 1;
            su.off.optimizer_ratio = ratio;
            const RunOut got = train(su);
            const std::string what =
                fmt::format("world {} overlap {} ratio {}", world, overlap, ratio);
            EXPECT_EQ(got.losses, want.losses) << what;
            ASSERT_EQ(got.state.size(), want.state.size()) << what;
            for (size_t i = 0; i < want.state.size(); ++i) {
                ASSERT_EQ(got.state[i].size(), want.state[i].size()) << what;
                EXPECT_EQ(std::memcmp(got.state[i].data(), want.state[i].data(),
                                      want.state[i].size() * sizeof(float)),
                          0)
                    << what << " tensor " << i;
            }
        }
    }
}

// The step's offload accounting (OffloadTimes), on the cpu tier where bytes are exact: step()
// reads every state record (2 bf16 moments), gradient record (bf16) and parameter shard (bf16)
// once, plus the next forward's first param_buffer_count shards read ahead, and writes the state
// records and shards back. Its waits and update are each within the step's wall time.
TEST(Bf16Master, OffloadStepAccountingFollowsTheRecords) {
    for (int64_t ahead : {int64_t{1}, int64_t{3}}) {
        RunSetup su;
        su.stage = 3;
        su.bf16_states = true;
        su.steps = 2;
        su.off.optimizer = su.off.param = Tier::cpu;
        su.off.sub_group_size = 500;
        su.off.buffer_count = 3;
        su.off.pipeline_read = su.off.pipeline_write = true;
        su.off.param_buffer_count = ahead;
        const RunOut got = train(su);
        auto cfg = models::parse_hf_config(kLlama, "test");
        models::RunConfig rc;
        rc.compute_dtype = DType::bf16;
        Transformer model(cfg, rc);
        const models::ParamLayout& lay = model.layout();
        int64_t elems = 0, prefetched = 0;
        for (int g = 0; g < lay.n_groups(); ++g) {
            elems += lay.group(g).numel;
            // The forward's order: embedding, blocks, head (one rank: the shard is the group).
            if (g < ahead) prefetched += lay.group(g).numel * 2;
        }
        const OffloadTimes& t = got.times;
        EXPECT_EQ(t.step_read_bytes, elems * 4 + elems * 2 + elems * 2 + prefetched) << ahead;
        EXPECT_EQ(t.step_write_bytes, elems * 4 + elems * 2) << ahead;
        for (double x :
             {t.step_param_wait_s, t.step_read_wait_s, t.step_write_wait_s, t.step_update_s}) {
            EXPECT_GE(x, 0.0);
            EXPECT_LE(x, got.step_s);
        }
        EXPECT_LE(t.step_param_wait_s + t.step_read_wait_s + t.step_write_wait_s + t.step_update_s,
                  got.step_s);
        EXPECT_GT(t.step_update_s, 0.0);
    }
}

// The model states an engine allocates (params, grads, optimizer categories) are estimate's bytes
// per parameter (model_state_bytes_per_param with bf16 masters / states) within 2% (padding).
TEST(Bf16Master, StateMemoryIsTheEstimatesBytesPerParameter) {
    auto cfg = models::parse_hf_config(kLlama, "test");
    for (int stage : {1, 2, 3}) {
        for (bool bs : {false, true}) {
            models::RunConfig rc;
            rc.compute_dtype = DType::bf16;
            Transformer model(cfg, rc);
            int64_t n_params = 0;
            for (const models::ParamInfo& p : model.layout().params()) n_params += p.numel();
            auto states = [] {
                const core::MemStats m = core::memory_stats();
                return m.current_of(core::MemCategory::params) +
                       m.current_of(core::MemCategory::grads) +
                       m.current_of(core::MemCategory::optimizer);
            };
            const int64_t before = states();
            int64_t held = 0;
            comm::run_local(1, [&](int, comm::Communicator& c) {
                Config zc;
                zc.stage = stage;
                zc.bf16_master = true;
                zc.bf16_states = bs;
                Engine eng(model.layout(), model.binding(), c, zc, DType::bf16, kAdamW,
                           [&](int g) { return model.grad_groups(g); });
                held = states() - before;
            });
            const double want = model_state_bytes_per_param(stage, 1, 2, 2, 1, true, bs) *
                                static_cast<double>(n_params);
            EXPECT_NEAR(static_cast<double>(held), want, 0.02 * want)
                << "stage " << stage << " bf16 states " << bs;
        }
    }
}

TEST(Bf16Master, UnservableConfigurationsAreRefusedByName) {
    auto cfg = models::parse_hf_config(kLlama, "test");
    auto make = [&](DType ct, int stage, bool master, bool states, optim::Kind kind) {
        comm::run_local(1, [&](int, comm::Communicator& c) {
            models::RunConfig rc;
            rc.compute_dtype = ct;
            Transformer model(cfg, rc);
            Config zc;
            zc.stage = stage;
            zc.bf16_master = master;
            zc.bf16_states = states;
            optim::Options o = kAdamW;
            o.kind = kind;
            Engine eng(model.layout(), model.binding(), c, zc, ct, o,
                       [&](int g) { return model.grad_groups(g); });
        });
    };
    auto refused = [&](auto fn, const std::string& want) {
        try {
            fn();
            ADD_FAILURE() << "not refused: " << want;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
        }
    };
    refused([&] { make(DType::f32, 2, true, false, optim::Kind::adamw); }, "needs bf16 compute");
    refused([&] { make(DType::bf16, 0, true, false, optim::Kind::adamw); }, "stage 1, 2 or 3");
    refused([&] { make(DType::bf16, 2, false, true, optim::Kind::adamw); },
            "bf16_optimizer_states requires bf16_master_weights_and_grads");
    refused([&] { make(DType::bf16, 2, true, false, optim::Kind::lamb); }, "not with LAMB");
}

}  // namespace
}  // namespace zs::zero
