// ZeRO++ hpZ (hierarchical partitioning, Config::hpz_partition_size) on thread-ranks, against
// independent references:
//  - training (stage 3, AdamW with clipping, GPT-2 with tied embeddings and Llama, 4 ranks with
//    hpz 2 and 4, 2 ranks with hpz 2, with and without gradient accumulation and prefetching,
//    f32 and bf16 compute) gives the losses and final master weights of the same run without hpZ
//    bit for bit: hpZ only changes which ranks the backward's weights come from, and they are
//    the very values the forward gathered. With qwZ on too, the run equals the qwZ run without
//    hpZ bit for bit: the secondary shards hold the forward's dequantized weights, which is what
//    the backward's re-quantized gather of the unchanged primary shards gives;
//  - a counting communicator (it wraps the sub-groups the engine splits too) shows, hook by hook,
//    that every gather launched by a forward use runs over the 4-rank group and moves the
//    group's padded weights (P x dtype size, int8 codes + scales with qwZ), and every gather of
//    a backward use over the rank's 2-rank sub-group (consecutive ranks), unquantized, P x dtype
//    size, except the head's first after the update (its forward and backward are one use that
//    no forward precedes); the per-step counts follow a derivation from the model's hook order,
//    and `zerospeed estimate` predicts the same bytes on the wire;
//  - a size that does not divide the ranks is refused naming the key, its value and the size;
//  - the secondary partition costs P / H x dtype size per non-persistent group per rank in the
//    engine's params accounting, as `zerospeed estimate` says.
#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/error.h"
#include "comm/communicator.h"
#include "core/backend.h"
#include "models/transformer.h"
#include "tests/test_util.h"
#include "zero/engine.h"
#include "zero/estimate.h"
#include "zero/quantize.h"

namespace zs::zero {
namespace {

using core::DType;
using core::Tensor;

const char* kGpt2 = R"({"model_type": "gpt2", "vocab_size": 61, "n_embd": 32, "n_layer": 2,
    "n_head": 4, "n_positions": 32})";
const char* kLlama = R"({"model_type": "llama", "vocab_size": 53, "hidden_size": 32,
    "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 48, "max_position_embeddings": 32})";

constexpr int64_t kGlobalSeqs = 8, kT = 12;

// Which hook is running on this rank, so a collective can be attributed to the use that
// launched it (with prefetching off, every gather is launched by its own use).
struct Phase {
    enum Kind { none, forward, backward, after } kind = none;
    int g = -1;
    int micro = 0;
};

struct Call {
    std::string op;
    int64_t bytes = 0;  // what the collective was handed: all-gather's out, reduce-scatter's in
    int group_size = 0;
    int group_rank = 0;
    Phase phase;
};

// Per rank: the calls of every communicator split from the counted one, in order.
struct CallLog {
    bool counting = false;
    Phase phase;
    std::vector<Call> calls;
};

// Forwards to a real communicator and records each collective; split() returns a counting
// wrapper of the real split, so the engine's hpZ sub-group is counted too.
class CountingComm final : public comm::Communicator {
public:
    CountingComm(comm::Communicator& inner, CallLog& log) : inner_(inner), log_(log) {}
    CountingComm(std::unique_ptr<comm::Communicator> owned, CallLog& log)
        : owned_(std::move(owned)), inner_(*owned_), log_(log) {}

    int rank() const override { return inner_.rank(); }
    int size() const override { return inner_.size(); }
    std::string name() const override { return "counting(" + inner_.name() + ")"; }
    comm::Work allreduce(const Tensor& t, comm::ReduceOp op) override {
        record("allreduce", t);
        return inner_.allreduce(t, op);
    }
    comm::Work reduce_scatter(const Tensor& out, const Tensor& in, comm::ReduceOp op) override {
        record("reduce_scatter", in);
        return inner_.reduce_scatter(out, in, op);
    }
    comm::Work allgather(const Tensor& out, const Tensor& in) override {
        record("allgather", out);
        return inner_.allgather(out, in);
    }
    comm::Work broadcast(const Tensor& t, int root) override {
        record("broadcast", t);
        return inner_.broadcast(t, root);
    }
    comm::Work all_to_all(const Tensor& out, const Tensor& in) override {
        record("all_to_all", in);
        return inner_.all_to_all(out, in);
    }
    comm::Work send(const Tensor& t, int peer, int tag) override {
        return inner_.send(t, peer, tag);
    }
    comm::Work recv(const Tensor& t, int peer, int tag) override {
        return inner_.recv(t, peer, tag);
    }
    void barrier() override { inner_.barrier(); }
    std::unique_ptr<Communicator> split(int color, int key) override {
        return std::make_unique<CountingComm>(inner_.split(color, key), log_);
    }

private:
    void record(const char* op, const Tensor& t) {
        if (log_.counting) {
            log_.calls.push_back(
                {op, static_cast<int64_t>(t.nbytes()), inner_.size(), inner_.rank(), log_.phase});
        }
    }
    std::unique_ptr<comm::Communicator> owned_;  // a split: outlives inner_'s uses
    comm::Communicator& inner_;
    CallLog& log_;
};

// The engine's hooks, tagging the log with the use in progress.
class TaggingHooks final : public models::GroupHooks {
public:
    TaggingHooks(Engine& e, CallLog& log) : e_(e), log_(log) {}
    int micro = 0;
    void before_forward(int g) override {
        run(Phase::forward, g, [&] { e_.before_forward(g); });
    }
    void after_forward(int g) override {
        run(Phase::after, g, [&] { e_.after_forward(g); });
    }
    void before_backward(int g) override {
        run(Phase::backward, g, [&] { e_.before_backward(g); });
    }
    void after_backward(int g) override {
        run(Phase::after, g, [&] { e_.after_backward(g); });
    }

private:
    template <class F>
    void run(Phase::Kind k, int g, F&& f) {
        log_.phase = {k, g, micro};
        f();
        log_.phase = {};
    }
    Engine& e_;
    CallLog& log_;
};

struct TrainRun {
    std::vector<double> losses;
    std::vector<std::vector<float>> weights;  // final f32 master weights per group (rank 0)
    std::vector<Call> calls;                  // rank 0's, during the last step
    int hpz = 0;                              // rank 0's engine's hpz_size()
    std::vector<int64_t> padded;              // P per group
    int head = 0, embed = 0;                  // their groups
};

struct TrainSetup {
    const char* json = kGpt2;
    int world = 4;
    int64_t micro = 2;  // sequences per micro-batch: accumulation kGlobalSeqs / (micro x world)
    DType ct = DType::f32;
    Config zc;
    int64_t steps = 4;
};

Config stage3(int64_t hpz, bool qw = false, int64_t prefetch = 50'000'000) {
    Config zc;
    zc.stage = 3;
    zc.persistence_threshold = 0;
    zc.quantized_weights = qw;
    zc.hpz_partition_size = hpz;
    zc.prefetch_numel = prefetch;
    return zc;
}

// `steps` AdamW steps (lr 1e-2, clipping at 1) over fixed data, as engine_test.cpp trains.
TrainRun train(const TrainSetup& su) {
    auto cfg = models::parse_hf_config(su.json, "test");
    zs::test::Rng rng(77);
    // Two batches alternate, so a few steps visibly reduce the loss.
    Tensor data =
        zs::test::random_ints(rng, {2, kGlobalSeqs, kT + 1}, DType::i32, 0, cfg.vocab_size - 1);
    TrainRun run;
    run.losses.resize(static_cast<size_t>(su.steps));
    std::mutex mu;
    const optim::Options adamw{optim::Kind::adamw, 0.9f, 0.95f, 1e-8f, 0.1f};
    models::RunConfig rc;
    rc.compute_dtype = su.ct;
    comm::run_local(su.world, [&](int r, comm::Communicator& inner) {
        CallLog log;
        CountingComm c(inner, log);
        models::Transformer model(cfg, rc);
        Engine eng(model.layout(), model.binding(), c, su.zc, su.ct, adamw,
                   [&](int g) { return model.grad_groups(g); });
        TaggingHooks hooks(eng, log);
        eng.init_weights(1234);
        const int64_t accum = kGlobalSeqs / (su.micro * su.world);
        for (int64_t step = 0; step < su.steps; ++step) {
            log.counting = step == su.steps - 1;  // after step 1 recorded stage 3's order
            log.calls.clear();
            eng.begin_step(static_cast<int>(accum));
            double loss_sum = 0;
            for (int64_t k = 0; k < accum; ++k) {
                const int64_t first = (k * su.world + r) * su.micro;
                Tensor seqs = data.select(0, step % 2).slice(0, first, first + su.micro);
                models::TrainBatch b{seqs.slice(1, 0, kT).contiguous(),
                                     seqs.slice(1, 1, kT + 1).contiguous()};
                const float ce = 1.0f / static_cast<float>(su.micro * kT * accum * su.world);
                hooks.micro = static_cast<int>(k);
                loss_sum += model.forward_backward(b, ce, 1.0f, &hooks).loss_sum;
                eng.end_micro_batch();
            }
            eng.finish_grads();
            log.counting = false;
            const double norm = std::sqrt(eng.grad_sq_norm());
            eng.step(1e-2f, step + 1, norm > 1.0 ? static_cast<float>(1.0 / norm) : 1.0f);
            Tensor l = Tensor::empty({1}, DType::f32);
            l.data<float>()[0] = static_cast<float>(loss_sum);
            inner.allreduce(l, comm::ReduceOp::sum).wait();
            if (r == 0) {
                std::lock_guard<std::mutex> lock(mu);
                run.losses[static_cast<size_t>(step)] =
                    l.data<float>()[0] / static_cast<double>(kGlobalSeqs * kT);
            }
        }
        for (int g = 0; g < model.layout().n_groups(); ++g) {
            Tensor w = eng.gather_group(g).contiguous();  // collective: every rank calls it
            if (r != 0) continue;
            const float* d = w.data<float>();
            std::lock_guard<std::mutex> lock(mu);
            run.weights.emplace_back(d, d + w.numel());
            run.padded.push_back(eng.shard(g).padded);
        }
        if (r == 0) {
            std::lock_guard<std::mutex> lock(mu);
            run.calls = log.calls;
            run.hpz = eng.hpz_size();
            run.head = model.head_group();
            run.embed = model.embed_group();
        }
    });
    return run;
}

int64_t count(const TrainRun& r, const char* op, int group_size) {
    int64_t n = 0;
    for (const Call& c : r.calls) n += c.op == op && c.group_size == group_size ? 1 : 0;
    return n;
}

// ------------------------------------------------------------------------- (1) equivalence

TEST(HpZ, TrainingEqualsTheRunWithoutHpZBitForBit) {
    struct Case {
        const char* json;
        int world;
        int64_t hpz, micro;
        DType ct;
        bool qw;
        int64_t prefetch;
    };
    const int64_t on = 50'000'000;
    for (const Case& k : {
             Case{kGpt2, 4, 2, 2, DType::f32, false, on},   // accumulation 1
             Case{kGpt2, 4, 2, 1, DType::f32, false, 0},    // accumulation 2, no prefetch
             Case{kGpt2, 2, 2, 2, DType::f32, false, on},   // accumulation 2
             Case{kLlama, 4, 2, 2, DType::f32, false, on},  //
             Case{kLlama, 4, 2, 1, DType::f32, false, on},  //
             Case{kLlama, 2, 2, 2, DType::f32, false, 0},   //
             Case{kLlama, 4, 4, 2, DType::f32, false, on},  // one sub-group: every rank
             Case{kLlama, 4, 2, 1, DType::bf16, false, on},
             Case{kGpt2, 4, 2, 1, DType::bf16, false, 0},
             Case{kGpt2, 4, 2, 1, DType::f32, true, on},  // with qwZ: equals qwZ without hpZ
             Case{kLlama, 4, 2, 2, DType::f32, true, 0},
             Case{kLlama, 2, 2, 2, DType::bf16, true, on},
         }) {
        const std::string at = std::string(k.json == kGpt2 ? "gpt2" : "llama") + " world " +
                               std::to_string(k.world) + " hpz " + std::to_string(k.hpz) +
                               " micro " + std::to_string(k.micro) + " " + core::to_string(k.ct) +
                               (k.qw ? " qwZ" : "") + (k.prefetch ? "" : " no prefetch");
        TrainSetup su;
        su.json = k.json;
        su.world = k.world;
        su.micro = k.micro;
        su.ct = k.ct;
        su.zc = stage3(1, k.qw, k.prefetch);
        const TrainRun base = train(su);
        su.zc = stage3(k.hpz, k.qw, k.prefetch);
        const TrainRun h = train(su);
        EXPECT_EQ(base.hpz, 1) << at;
        EXPECT_EQ(h.hpz, k.hpz) << at;
        // hpZ did run: some gathers moved to the sub-group, as many as left the dp group.
        const int H = static_cast<int>(k.hpz);
        if (H < k.world) {
            EXPECT_EQ(count(base, "allgather", H), 0) << at;
            EXPECT_GT(count(h, "allgather", H), 0) << at;
            EXPECT_EQ(count(h, "allgather", H) + count(h, "allgather", k.world),
                      count(base, "allgather", k.world))
                << at;
        } else {
            EXPECT_EQ(count(h, "allgather", H), count(base, "allgather", H)) << at;
        }
        EXPECT_EQ(h.losses, base.losses) << at;
        ASSERT_EQ(h.weights.size(), base.weights.size()) << at;
        for (size_t g = 0; g < h.weights.size(); ++g) {
            EXPECT_TRUE(h.weights[g] == base.weights[g]) << at << " group " << g;
        }
        EXPECT_LT(h.losses.back(), h.losses.front()) << at << ": training should reduce the loss";
    }
}

// ------------------------------------------------------------------ (2) where the bytes go

// With prefetching off every gather is launched by the use that needs it. Per step with A
// micro-batches (the model's hook order: embedding, blocks, head, whose forward and backward
// are one backward use and, with tied embeddings, a forward use of the embedding inside it;
// then the blocks and the embedding backward), over the dp group of W ranks: every forward use
// that gathers, from the primary shards; over the sub-group of H ranks: every backward use that
// gathers once the secondary shards are valid, i.e. all but the head's first. A group that is
// next in the recorded order stays gathered (the embedding from its backward to the next
// micro-batch's forward; the head's tied embedding is used inside the head). So per step:
//   block      A forward gathers over W,  A backward gathers over H
//   head       1 over W (micro-batch 0), A - 1 over H
//   embedding  1 over W (+ A tied),       A over H
// The sub-group's all-gather is handed the group's padded P elements of the compute dtype (a
// ring sends (H - 1) / H of them per rank); the dp group's P x dtype size, or with qwZ the W
// packed shards, W (S + 4 ceil(S / 256)) bytes for S = P / W.
TEST(HpZ, BackwardGathersRunOnTheSubGroupWithTheExpectedBytes) {
    for (const char* json : {kGpt2, kLlama}) {
        for (int64_t micro : {int64_t{2}, int64_t{1}}) {
            for (bool qw : {false, true}) {
                const int W = 4, H = 2;
                const int64_t A = kGlobalSeqs / (micro * W);
                const std::string at = std::string(json == kGpt2 ? "gpt2" : "llama") + " A " +
                                       std::to_string(A) + (qw ? " qwZ" : "");
                TrainSetup su;
                su.json = json;
                su.world = W;
                su.micro = micro;
                su.steps = 2;
                su.zc = stage3(H, qw, 0);
                const TrainRun r = train(su);
                ASSERT_EQ(r.hpz, H);
                const bool tied = json == kGpt2;
                const int n_groups = static_cast<int>(r.padded.size());
                std::vector<int64_t> over_w(static_cast<size_t>(n_groups), 0);
                std::vector<int64_t> over_h(static_cast<size_t>(n_groups), 0);
                int64_t bytes_w = 0, bytes_h = 0;
                for (const Call& c : r.calls) {
                    if (c.group_size == H) {
                        // Only the backward gathers use the sub-group: consecutive ranks 0, 1.
                        EXPECT_EQ(c.op, "allgather") << at;
                        EXPECT_EQ(c.group_rank, 0) << at;  // rank 0 of the sub-group {0, 1}
                    }
                    if (c.op != "allgather") continue;
                    ASSERT_GE(c.phase.g, 0) << at << ": a gather outside a use";
                    const auto g = static_cast<size_t>(c.phase.g);
                    const int64_t P = r.padded[g], S = P / W;
                    const bool fwd = c.phase.kind == Phase::forward;
                    const bool first_head = c.phase.g == r.head && c.phase.micro == 0;
                    ASSERT_TRUE(fwd || c.phase.kind == Phase::backward) << at;
                    const std::string use = at + " group " + std::to_string(c.phase.g) + " micro " +
                                            std::to_string(c.phase.micro) +
                                            (fwd ? " forward" : " backward");
                    if (fwd || first_head) {
                        EXPECT_EQ(c.group_size, W) << use;
                        EXPECT_EQ(c.bytes, qw ? W * (S + 4 * ((S + 255) / 256)) : P * 4) << use;
                        ++over_w[g];
                        bytes_w += c.bytes;
                    } else {
                        EXPECT_EQ(c.group_size, H) << use;
                        EXPECT_EQ(c.bytes, P * 4) << use;  // never quantized
                        ++over_h[g];
                        bytes_h += c.bytes;
                    }
                }
                for (int g = 0; g < n_groups; ++g) {
                    const auto i = static_cast<size_t>(g);
                    const std::string grp = at + " group " + std::to_string(g);
                    if (g == r.head) {
                        EXPECT_EQ(over_w[i], 1) << grp;
                        EXPECT_EQ(over_h[i], A - 1) << grp;
                    } else if (g == r.embed) {
                        EXPECT_EQ(over_w[i], tied ? 1 + A : 1) << grp;
                        EXPECT_EQ(over_h[i], A) << grp;
                    } else {
                        EXPECT_EQ(over_w[i], A) << grp;
                        EXPECT_EQ(over_h[i], A) << grp;
                    }
                }
                // Reduce-scatters stay on the dp group, one per group and micro-batch.
                EXPECT_EQ(count(r, "reduce_scatter", W), A * n_groups) << at;
                // zerospeed estimate: the same bytes on the wire (ring: (n - 1) / n of the whole).
                const models::Transformer model(models::parse_hf_config(json, "test"), {});
                EstimateInput in;
                in.world = W;
                in.stage = 3;
                in.micro_batch = micro;
                in.seq_len = kT;
                in.grad_accum = A;
                in.persistence_threshold = 0;
                in.quantized_weights = qw;
                in.hpz_partition_size = H;
                const CommEstimate est = estimate(model, in).comm;
                EXPECT_EQ(est.hpz, H) << at;
                EXPECT_EQ(est.dp_allgather, bytes_w / W * (W - 1)) << at;
                EXPECT_EQ(est.hpz_allgather, bytes_h / H * (H - 1)) << at;
                // Without hpZ the estimate's dp all-gathers are the sum of both.
                in.hpz_partition_size = 1;
                const CommEstimate flat = estimate(model, in).comm;
                EXPECT_EQ(flat.hpz_allgather, 0) << at;
                if (!qw) {
                    EXPECT_EQ(flat.dp_allgather, (bytes_w + bytes_h) / W * (W - 1)) << at;
                }
            }
        }
    }
}

// With prefetching the same gathers run (launched earlier): the counts by group and size equal
// the run without prefetching's.
TEST(HpZ, PrefetchLaunchesTheSameGathers) {
    for (const char* json : {kGpt2, kLlama}) {
        TrainSetup su;
        su.json = json;
        su.micro = 1;
        su.steps = 2;
        su.zc = stage3(2, false, 0);
        const TrainRun off = train(su);
        su.zc = stage3(2, false, 50'000'000);
        const TrainRun on = train(su);
        auto tally = [](const TrainRun& r) {
            std::vector<std::pair<int, int64_t>> v;
            for (const Call& c : r.calls) {
                if (c.op == "allgather") v.emplace_back(c.group_size, c.bytes);
            }
            std::sort(v.begin(), v.end());
            return v;
        };
        EXPECT_EQ(tally(on), tally(off)) << json;
        EXPECT_GT(count(on, "allgather", 2), 0) << json;
    }
}

// -------------------------------------------------------------------- (3) bad sizes, no-ops

// A tiny layout: two groups of about 3000 and 1000 elements (a ragged first shard at 4 ranks).
struct Layout {
    models::ParamLayout layout;
    Layout() {
        layout.add_group("a");
        layout.add(0, "a.w", core::Shape{60, 50}, models::Init::zeros);
        layout.add(0, "a.b", core::Shape{1}, models::Init::zeros);
        layout.add_group("b");
        layout.add(1, "b.w", core::Shape{1000}, models::Init::zeros);
    }
};

Engine make_engine(const Layout& L, models::ParamBinding& binding, comm::Communicator& c,
                   const Config& zc, DType ct) {
    optim::Options sgd;
    sgd.kind = optim::Kind::sgd;
    return Engine(L.layout, binding, c, zc, ct, sgd, [](int g) { return std::vector<int>{g}; });
}

TEST(HpZ, SizeThatDoesNotDivideTheRanksIsRefusedNamingTheKey) {
    Layout L;
    for (int stage : {3, 1}) {
        for (auto [world, hpz] : {std::pair{4, int64_t{3}}, std::pair{4, int64_t{8}},
                                  std::pair{2, int64_t{4}}, std::pair{1, int64_t{2}}}) {
            comm::run_local(world, [&](int, comm::Communicator& c) {
                models::ParamBinding binding(L.layout);
                Config zc = stage3(hpz);
                zc.stage = stage;
                try {
                    Engine e = make_engine(L, binding, c, zc, DType::f32);
                    ADD_FAILURE() << "hpz " << hpz << " accepted on " << world << " ranks";
                } catch (const ConfigError& e) {
                    const std::string m = e.what();
                    EXPECT_NE(m.find("zero_optimization.zero_hpz_partition_size"),
                              std::string::npos)
                        << m;
                    EXPECT_NE(m.find(" " + std::to_string(hpz) + " "), std::string::npos) << m;
                    EXPECT_NE(m.find("data-parallel size " + std::to_string(world)),
                              std::string::npos)
                        << m;
                }
            });
        }
    }
    // The estimate refuses it too.
    const models::Transformer model(models::parse_hf_config(kGpt2, "test"), {});
    EstimateInput in;
    in.world = 4;
    in.stage = 3;
    in.hpz_partition_size = 3;
    EXPECT_THROW(estimate(model, in), ConfigError);
}

// 0 and 1 are off; below stage 3 a valid size has no effect (no sub-group, no secondary).
TEST(HpZ, OffAndNoEffectBelowStage3) {
    Layout L;
    for (auto [stage, hpz] :
         {std::pair{3, int64_t{0}}, std::pair{3, int64_t{1}}, std::pair{0, int64_t{2}},
          std::pair{1, int64_t{2}}, std::pair{2, int64_t{4}}}) {
        comm::run_local(4, [&](int, comm::Communicator& c) {
            models::ParamBinding binding(L.layout);
            Config zc = stage3(hpz);
            zc.stage = stage;
            Engine e = make_engine(L, binding, c, zc, DType::f32);
            EXPECT_EQ(e.hpz_size(), 1) << "stage " << stage << " hpz " << hpz;
        });
    }
}

// ------------------------------------------------------------------------ (4) memory

// Bytes in the params category, all ranks together, with every rank's engine built (and, with
// `steps`, after that many SGD steps of hook-driven gathers: the secondary shards are filled
// and the gathered copies dropped by the update).
int64_t params_bytes(const Layout& L, int world, const Config& zc, DType ct, int steps) {
    int64_t bytes = 0;
    comm::run_local(world, [&](int r, comm::Communicator& c) {
        models::ParamBinding binding(L.layout);
        Engine e = make_engine(L, binding, c, zc, ct);
        e.init_weights(5);
        for (int s = 0; s < steps; ++s) {
            e.begin_step(1);
            for (int g = 0; g < 2; ++g) {
                e.before_forward(g);
                e.after_forward(g);
            }
            for (int g = 1; g >= 0; --g) {
                e.before_backward(g);
                e.after_backward(g);
            }
            e.end_micro_batch();
            e.finish_grads();
            e.step(1e-3f, s + 1, 1.0f);
        }
        c.barrier();
        if (r == 0) bytes = core::memory_stats().current_of(core::MemCategory::params);
        c.barrier();
    });
    return bytes;
}

TEST(HpZ, SecondaryPartitionCostsPaddedOverHpzPerGroup) {
    Layout L;
    const int W = 4;
    for (DType ct : {DType::f32, DType::bf16}) {
        for (int64_t H : {int64_t{2}, int64_t{4}}) {
            for (int64_t persistence : {int64_t{0}, int64_t{1000}}) {
                for (int steps : {0, 2}) {
                    const std::string at = std::string(core::to_string(ct)) + " hpz " +
                                           std::to_string(H) + " persistence " +
                                           std::to_string(persistence) + " steps " +
                                           std::to_string(steps);
                    Config zc = stage3(1);
                    zc.persistence_threshold = persistence;
                    const int64_t base = params_bytes(L, W, zc, ct, steps);
                    zc.hpz_partition_size = H;
                    const int64_t hpz = params_bytes(L, W, zc, ct, steps);
                    // Reference: per rank, P / H elements of the compute dtype per group that is
                    // released (P > the persistence threshold); P = ceil(n / W) W for the
                    // group's n elements (parameters at aligned offsets: models/params.h).
                    int64_t want = 0;
                    for (int g = 0; g < 2; ++g) {
                        const int64_t n = L.layout.group(g).numel, P = (n + W - 1) / W * W;
                        if (P > persistence)
                            want += P / H * static_cast<int64_t>(core::dtype_size(ct));
                    }
                    EXPECT_EQ(hpz - base, W * want) << at;
                }
            }
        }
    }
    // A model: the engine's secondary bytes per rank are the estimate's.
    for (const char* json : {kGpt2, kLlama}) {
        for (DType ct : {DType::f32, DType::bf16}) {
            models::RunConfig rc;
            rc.compute_dtype = ct;
            const models::ModelConfig mc = models::parse_hf_config(json, "test");
            auto bytes = [&](int64_t H) {
                int64_t b = 0;
                comm::run_local(W, [&](int r, comm::Communicator& c) {
                    models::Transformer model(mc, rc);
                    Config zc = stage3(H);
                    Engine e(model.layout(), model.binding(), c, zc, ct, optim::Options{},
                             [&](int g) { return model.grad_groups(g); });
                    c.barrier();
                    if (r == 0) b = core::memory_stats().current_of(core::MemCategory::params);
                    c.barrier();
                });
                return b;
            };
            const int64_t delta = bytes(2) - bytes(1);
            const models::Transformer model(mc, rc);
            EstimateInput in;
            in.world = W;
            in.stage = 3;
            in.persistence_threshold = 0;
            in.hpz_partition_size = 2;
            const MemoryEstimate est = estimate(model, in);
            int64_t want = 0;
            for (int g = 0; g < model.layout().n_groups(); ++g) {
                const int64_t n = model.layout().group(g).numel, P = (n + W - 1) / W * W;
                want += P / 2 * static_cast<int64_t>(core::dtype_size(ct));
            }
            EXPECT_EQ(delta, W * want) << json << " " << core::to_string(ct);
            EXPECT_EQ(est.secondary, want) << json << " " << core::to_string(ct);
            in.hpz_partition_size = 1;
            EXPECT_EQ(est.params - estimate(model, in).params, want) << json;
        }
    }
}

}  // namespace
}  // namespace zs::zero
