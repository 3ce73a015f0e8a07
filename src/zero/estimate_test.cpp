// zerospeed estimate against measurement: the peak bytes the trainer's allocator records over a
// few steps (one rank, stages 0-3, f32 and bf16, with and without activation checkpointing) are
// within 10% of the estimate, and the persistent model-state bytes match the per-stage formulas
// within 5%; an MoE model's activations at a tensor-parallel rank's dimensions are the measured
// ones. Under tensor parallelism (split and replicated KV heads, dense and MoE MLPs), against real
// tp-sized models over thread-ranks: each rank's parameters are its shard by the Megatron rules,
// and the bytes the model and the trainer hand to their communicators and to the sub-groups split
// from them (counted by a decorator) are the estimate's, group by group.
#include "zero/estimate.h"

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "backends/cpu/cpu_kernels.h"
#include "comm/communicator.h"
#include "core/backend.h"
#include "parallel/topology.h"
#include "tests/test_util.h"
#include "train/trainer.h"

namespace zs::zero {
namespace {

// On a CPU whose 16-bit matmuls run on f32 copies (no native bf16), the estimate adds the largest
// product's copies (MemoryEstimate::matmul_scratch, an upper bound) and a measured bf16 peak lies
// between the estimate without them and with them.
bool widened() { return !backends::cpu::matmul_routes().native_bf16; }
void expect_peak(int64_t measured, const MemoryEstimate& e, const std::string& at) {
    if (e.matmul_scratch == 0) {
        EXPECT_EQ(measured, e.activations + e.transient) << at;
    } else {
        EXPECT_LE(measured, e.activations + e.transient) << at;
        EXPECT_GE(measured, e.activations + e.transient - e.matmul_scratch) << at;
    }
}

namespace fs = std::filesystem;

TEST(Estimate, PeakWithinTenPercentOfMeasured) {
    const std::string root =
        (fs::temp_directory_path() / ("zs_est_" + std::to_string(getpid()))).string();
    fs::remove_all(root);
    {
        zs::test::Rng rng(5);
        std::vector<int32_t> toks(40000);
        for (auto& x : toks) x = static_cast<int32_t>(rng.integer(0, 999));
        io::TokenShardWriter w(root, 1000, 0, "t");
        w.append("train", toks.data(), 36000);
        w.append("val", toks.data() + 36000, 4000);
        w.finish();
    }
    auto mc =
        models::parse_hf_config(R"({"model_type": "llama", "vocab_size": 1000, "hidden_size": 128,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 352, "max_position_embeddings": 128})",
                                "t");
    auto comm = comm::make_self();
    for (bool bf16 : {false, true}) {
        for (bool ckpt : {false, true}) {
            for (int stage : {0, 1, 2, 3}) {
                std::string ds =
                    fmt::format(R"({{"train_batch_size": 4, "optimizer": {{"type": "AdamW"}},
                    "bf16": {{"enabled": {}}}, "zero_optimization": {{"stage": {}}} {} }})",
                                bf16, stage, ckpt ? R"(, "activation_checkpointing": {})" : "");
                train::TrainConfig tc = train::parse_ds_config(ds, "t", 1);
                train::RunOptions run;
                run.data_dir = root;
                run.seq_len = 64;
                run.steps = 2;
                run.progress = false;
                train::Trainer t(mc, tc, run, *comm);
                t.init_random();
                for (int i = 0; i < 2; ++i) t.step();
                core::MemStats m = core::memory_stats();
                EstimateInput in;
                in.stage = stage;
                in.micro_batch = 4;
                in.seq_len = 64;
                in.widened_16bit_matmul = widened();
                MemoryEstimate e = estimate(t.model(), in);
                std::string what =
                    fmt::format("stage {} {} ckpt {}", stage, bf16 ? "bf16" : "f32", ckpt);
                EXPECT_NEAR(static_cast<double>(m.peak_total), static_cast<double>(e.peak),
                            0.10 * e.peak)
                    << what << "\nmeasured:\n"
                    << m.report() << "estimate:\n"
                    << e.report();
                // Persistent model states vs the per-stage formula (bf16: 2 + 4 + 12/N style).
                int64_t states = m.current_of(core::MemCategory::params) +
                                 m.current_of(core::MemCategory::grads) +
                                 m.current_of(core::MemCategory::optimizer);
                double formula = model_state_bytes_per_param(stage, 1, bf16 ? 2 : 4, 2) *
                                 static_cast<double>(e.n_params);
                if (stage < 2) {
                    EXPECT_NEAR(static_cast<double>(states), formula, 0.05 * formula) << what;
                }
            }
        }
    }
    fs::remove_all(root);
}

TEST(Estimate, StateBytesPerParamFollowZeroFormulas) {
    // bf16 compute + fp32 master + Adam: DeepSpeed's 16 bytes with our f32 gradients (+2).
    EXPECT_DOUBLE_EQ(model_state_bytes_per_param(0, 4, 2, 2), 18.0);
    EXPECT_DOUBLE_EQ(model_state_bytes_per_param(1, 4, 2, 2), 6.0 + 16.0 / 4);
    EXPECT_DOUBLE_EQ(model_state_bytes_per_param(2, 4, 2, 2), 2.0 + 16.0 / 4);
    EXPECT_DOUBLE_EQ(model_state_bytes_per_param(3, 4, 2, 2), 18.0 / 4);
    // f32: master weights are the compute weights.
    EXPECT_DOUBLE_EQ(model_state_bytes_per_param(3, 2, 4, 2), 16.0 / 2);
}

// ---- tensor parallelism -----------------------------------------------------------------------

const char* kGpt2 = R"({"model_type": "gpt2", "vocab_size": 61, "n_embd": 32, "n_layer": 2,
    "n_head": 4, "n_positions": 32})";  // tied, biases, learned positions; 61 splits unevenly
const char* kLlama = R"({"model_type": "llama", "vocab_size": 58, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4,
    "intermediate_size": 48, "max_position_embeddings": 32})";  // GQA, SwiGLU, untied head
// KV heads replicated at tp 4 (each on 2 ranks), split at tp 2.
const char* kLlamaKv = R"({"model_type": "llama", "vocab_size": 58, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 48, "max_position_embeddings": 32})";
// One KV head, replicated on every tp rank, with a QKV bias (its rows are summed too); tied.
const char* kQwenKv = R"({"model_type": "qwen2", "vocab_size": 47, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
    "intermediate_size": 40, "max_position_embeddings": 32, "tie_word_embeddings": true})";
// Mixtral-shaped: 4 experts top-2 with the load-balancing loss; KV heads split at tp 2,
// replicated at tp 4.
const char* kMixtral = R"({"model_type": "mixtral", "vocab_size": 58, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 24, "max_position_embeddings": 32, "num_local_experts": 4,
    "num_experts_per_tok": 2, "router_aux_loss_coef": 0.02, "output_router_logits": true})";

// Forwards every call to a real communicator and records what each collective was handed.
class CountingComm final : public comm::Communicator {
public:
    struct Call {
        std::string op;
        int64_t numel = 0, bytes = 0;  // the whole: all-reduce's tensor, reduce-scatter's in,
                                       // all-gather's out
    };
    explicit CountingComm(comm::Communicator& inner) : inner_(inner) {}
    CountingComm(std::unique_ptr<comm::Communicator> owned, std::vector<CountingComm*>* family)
        : owned_(std::move(owned)), inner_(*owned_) {
        family->push_back(this);
    }

    std::vector<Call> calls;
    std::vector<CountingComm*> children;  // split() results (owned by their callers)

    int rank() const override { return inner_.rank(); }
    int size() const override { return inner_.size(); }
    std::string name() const override { return "counting(" + inner_.name() + ")"; }
    comm::Work allreduce(const core::Tensor& t, comm::ReduceOp op) override {
        record("allreduce", t);
        return inner_.allreduce(t, op);
    }
    comm::Work reduce_scatter(const core::Tensor& out, const core::Tensor& in,
                              comm::ReduceOp op) override {
        record("reduce_scatter", in);
        return inner_.reduce_scatter(out, in, op);
    }
    comm::Work allgather(const core::Tensor& out, const core::Tensor& in) override {
        record("allgather", out);
        return inner_.allgather(out, in);
    }
    comm::Work broadcast(const core::Tensor& t, int root) override {
        record("broadcast", t);
        return inner_.broadcast(t, root);
    }
    comm::Work all_to_all(const core::Tensor& out, const core::Tensor& in) override {
        record("all_to_all", in);
        return inner_.all_to_all(out, in);
    }
    comm::Work send(const core::Tensor& t, int peer, int tag) override {
        record("send", t);
        return inner_.send(t, peer, tag);
    }
    comm::Work recv(const core::Tensor& t, int peer, int tag) override {
        record("recv", t);
        return inner_.recv(t, peer, tag);
    }
    void barrier() override { inner_.barrier(); }
    std::unique_ptr<Communicator> split(int color, int key) override {
        return std::make_unique<CountingComm>(inner_.split(color, key), &children);
    }

    // This communicator's calls and its split children's (recursively).
    std::vector<std::pair<const CountingComm*, Call>> all_calls() const {
        std::vector<std::pair<const CountingComm*, Call>> out;
        for (const Call& c : calls) out.emplace_back(this, c);
        for (const CountingComm* ch : children) {
            for (auto& x : ch->all_calls()) out.push_back(std::move(x));
        }
        return out;
    }
    void clear() {
        calls.clear();
        for (CountingComm* ch : children) ch->clear();
    }

private:
    void record(const char* op, const core::Tensor& t) {
        calls.push_back({op, t.numel(), static_cast<int64_t>(t.nbytes())});
    }
    std::unique_ptr<comm::Communicator> owned_;
    comm::Communicator& inner_;
};

// Parameters the Megatron split leaves whole on every tensor-parallel rank.
bool replicated(const std::string& name) {
    return name.find(".ln") != std::string::npos || name.starts_with("head.norm") ||
           name == "embed.positions" || name.ends_with(".attn.out.bias") ||
           name.ends_with(".mlp.down.bias") || name.ends_with(".moe.router.weight");
}

// Elements of the whole model's KV heads that replication adds over the tp ranks: each of the
// NKV < tp KV heads (k and v rows of the fused QKV weight and bias) is on tp / NKV ranks.
int64_t replicated_kv_extra(const models::Transformer& whole, int tp) {
    const models::ModelConfig& c = whole.config();
    if (c.n_kv_heads >= tp) return 0;
    int64_t n = 0;
    for (const models::ParamInfo& p : whole.layout().params()) {
        if (p.name.find(".attn.qkv.") == std::string::npos) continue;
        const int64_t row = p.shape.ndim() == 2 ? p.shape[1] : 1;
        n += (tp - c.n_kv_heads) * 2 * c.head_dim * row;
    }
    return n;
}

// Rank r's parameter count by the rules, from the whole model's parameters: replicated ones whole,
// the vocabulary's rows (embedding, LM head) ceil(V / tp) per rank with the last shorter, the
// fused QKV rows 1/tp of the query heads and one KV head each when tp exceeds the KV heads,
// everything else (experts included) 1/tp.
int64_t shard_numel_by_rule(const models::Transformer& whole, int r, int tp) {
    const models::ModelConfig& c = whole.config();
    const int64_t V = c.vocab_size, per = (V + tp - 1) / tp;
    const int64_t rows = std::max<int64_t>(0, std::min(per, V - r * per));
    int64_t n = 0;
    for (const models::ParamInfo& p : whole.layout().params()) {
        if (replicated(p.name)) {
            n += p.numel();
        } else if (p.name == "embed.tokens" || p.name == "head.out.weight") {
            n += rows * p.shape[1];
        } else if (p.name.find(".attn.qkv.") != std::string::npos && c.n_kv_heads < tp) {
            const int64_t row = p.shape.ndim() == 2 ? p.shape[1] : 1;
            n += (c.q_dim() / tp + 2 * c.head_dim) * row;
        } else {
            EXPECT_EQ(p.numel() % tp, 0) << p.name;
            n += p.numel() / tp;
        }
    }
    return n;
}

int64_t numel_of(const models::Transformer& m) {
    int64_t n = 0;
    for (const models::ParamInfo& p : m.layout().params()) n += p.numel();
    return n;
}

TEST(EstimateTensorParallel, EachRankHoldsItsShard) {
    for (const char* json : {kGpt2, kLlama, kLlamaKv, kQwenKv, kMixtral}) {
        const models::ModelConfig mc = models::parse_hf_config(json, "test");
        const models::Transformer whole(mc, models::RunConfig{});
        for (int tp : {2, 4}) {
            const RankModel rank(mc, models::RunConfig{}, tp);
            std::vector<int64_t> real(static_cast<size_t>(tp));
            std::vector<MemoryEstimate> from_real(4);
            // dp 3 x tp ranks, micro-batch 2 x 16 tokens, at a ZeRO stage.
            auto input = [tp](int stage) {
                EstimateInput in;
                in.world = 3 * tp;
                in.sizes.tp = tp;
                in.stage = stage;
                in.micro_batch = 2;
                in.seq_len = 16;
                return in;
            };
            comm::run_local(tp, [&](int r, comm::Communicator& g) {
                models::RunConfig rc;
                rc.tp = &g;
                const models::Transformer m(mc, rc);
                real[static_cast<size_t>(r)] = numel_of(m);
                if (r != 0) return;
                for (int stage = 0; stage <= 3; ++stage) {
                    from_real[static_cast<size_t>(stage)] = estimate(m, input(stage));
                }
            });
            const std::string at = mc.model_type + " tp " + std::to_string(tp);
            int64_t sum = 0, replicated_numel = 0;
            for (int r = 0; r < tp; ++r) {
                EXPECT_EQ(real[static_cast<size_t>(r)], shard_numel_by_rule(whole, r, tp))
                    << at << " rank " << r;
                sum += real[static_cast<size_t>(r)];
            }
            for (const models::ParamInfo& p : whole.layout().params()) {
                if (replicated(p.name)) replicated_numel += p.numel();
            }
            // Every split element on one rank, every replicated one on all, a replicated KV head
            // on tp / NKV.
            EXPECT_EQ(
                sum, numel_of(whole) + (tp - 1) * replicated_numel + replicated_kv_extra(whole, tp))
                << at;
            // The stand-in group lays out rank 0's real shard; its estimate is the real model's.
            for (int stage = 0; stage <= 3; ++stage) {
                const MemoryEstimate e = estimate(rank, input(stage));
                const MemoryEstimate& w = from_real[static_cast<size_t>(stage)];
                EXPECT_EQ(e.n_params, real[0]) << at;
                EXPECT_EQ(e.dp, 3) << at;
                EXPECT_EQ(e.params, w.params) << at << " stage " << stage;
                EXPECT_EQ(e.grads, w.grads) << at << " stage " << stage;
                EXPECT_EQ(e.master + e.optimizer, w.master + w.optimizer) << at;
                EXPECT_EQ(e.peak, w.peak) << at << " stage " << stage;
                EXPECT_EQ(e.comm.total(), w.comm.total()) << at << " stage " << stage;
            }
        }
    }
}

// An MoE model at a tensor-parallel rank's dimensions (RankModel's local model: its share of each
// expert's columns, of the heads and the vocabulary; the router, the gathered rows and the
// residual stream whole): the activations saved across the step are the measured ones, and the
// peak the allocator records in a micro-batch is the estimate's when every token picks the same
// experts (a zero router: ties go to the lower index), the busiest expert's backward at its bound,
// and within it otherwise (random routing).
TEST(EstimateTensorParallel, MoeActivationsAtTheRanksDimensions) {
    const int64_t B = 2, T = 32;
    const models::ModelConfig mc = models::parse_hf_config(
        R"({"model_type": "mixtral", "vocab_size": 58, "hidden_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 4, "intermediate_size": 96,
        "max_position_embeddings": 32, "num_local_experts": 4, "num_experts_per_tok": 2,
        "router_aux_loss_coef": 0.02, "output_router_logits": true})",
        "test");
    for (int tp : {1, 2, 4}) {
        for (core::DType ct : {core::DType::f32, core::DType::bf16}) {
            for (bool ckpt : {false, true}) {
                for (bool zero_router : {true, false}) {
                    const models::RunConfig run{
                        .compute_dtype = ct, .activation_checkpointing = ckpt, .logits_chunk = 16};
                    const RankModel rank(mc, run, tp);
                    models::Transformer m(rank.local_model().config(), run);
                    models::DenseParams p(m.layout(), ct, true);
                    p.init(1);
                    p.bind(m.binding());
                    for (size_t i = 0; i < m.layout().params().size(); ++i) {
                        if (zero_router &&
                            m.layout().params()[i].name.ends_with(".moe.router.weight"))
                            p.weight(static_cast<models::ParamId>(i)).zero();
                    }
                    zs::test::Rng rng(3);
                    const int64_t V = m.config().vocab_size;  // the rank's rows
                    const models::TrainBatch bt{
                        zs::test::random_ints(rng, {B, T}, core::DType::i32, 0, V - 1),
                        zs::test::random_ints(rng, {B, T}, core::DType::i32, 0, V - 1)};
                    const int64_t before = core::memory_stats().current_total;
                    core::backend(core::Device::cpu()).memory().reset_peak();
                    m.forward_backward(bt, 1.0f);
                    const core::MemStats s = core::memory_stats();
                    EstimateInput in;
                    in.world = tp;
                    in.sizes.tp = tp;
                    in.micro_batch = B;
                    in.seq_len = T;
                    in.widened_16bit_matmul = widened();
                    const MemoryEstimate e = estimate(rank, in);
                    const std::string at =
                        fmt::format("tp {} {}{}{}", tp, core::to_string(ct), ckpt ? " ckpt" : "",
                                    zero_router ? " zero router" : "");
                    // What stays: the saved activations and the residual stream's gradient
                    // (dres, counted in the transient).
                    EXPECT_EQ(s.current_total - before, e.activations + B * T * mc.hidden_size * 4)
                        << at;
                    if (zero_router) {
                        expect_peak(s.peak_total - before, e, at);
                    } else {
                        EXPECT_LE(s.peak_total - before, e.activations + e.transient) << at;
                    }
                }
            }
        }
    }
}

// One micro-batch of a tp model through a counting communicator: the all-reduces it issues over
// tp and over the kv group it splits from tp (count and bytes) are tp_micro_batch_traffic's, for
// f32 and bf16, with and without activation checkpointing, the logits in several chunks; and the
// step's bytes sent are the ring's share of them per micro-batch, group by group.
TEST(EstimateTensorParallel, TrafficEqualsTheModelsCollectives) {
    const int64_t B = 2, T = 9;
    for (const char* json : {kGpt2, kLlama, kLlamaKv, kQwenKv, kMixtral}) {
        const models::ModelConfig mc = models::parse_hf_config(json, "test");
        for (int tp : {2, 4}) {
            for (core::DType ct : {core::DType::f32, core::DType::bf16}) {
                for (bool ckpt : {false, true}) {
                    const models::RunConfig run{
                        .compute_dtype = ct, .activation_checkpointing = ckpt, .logits_chunk = 7};
                    zs::test::Rng rng(11);
                    const models::TrainBatch bt{
                        zs::test::random_ints(rng, {B, T}, core::DType::i32, 0, mc.vocab_size - 1),
                        zs::test::random_ints(rng, {B, T}, core::DType::i32, 0, mc.vocab_size - 1)};
                    comm::run_local(tp, [&](int r, comm::Communicator& g) {
                        CountingComm counted(g);
                        models::RunConfig rc = run;
                        rc.tp = &counted;
                        models::Transformer m(mc, rc);
                        models::DenseParams p(m.layout(), ct, true);
                        p.init(1);
                        p.bind(m.binding());
                        m.forward_backward(bt, 1.0f / static_cast<float>(B * T));
                        const std::string at = mc.model_type + " tp " + std::to_string(tp) + " " +
                                               core::to_string(ct) + (ckpt ? " ckpt" : "") +
                                               " rank " + std::to_string(r);
                        // The tp group's calls, and the kv group's (split from it: replicated
                        // KV heads).
                        int64_t calls = 0, bytes = 0, kv_calls = 0, kv_bytes = 0;
                        for (const auto& [from, c] : counted.all_calls()) {
                            EXPECT_EQ(c.op, "allreduce") << at;
                            ++(from == &counted ? calls : kv_calls);
                            (from == &counted ? bytes : kv_bytes) += c.bytes;
                        }
                        const bool kv_replicated = mc.n_kv_heads < tp;
                        ASSERT_EQ(counted.children.size(), kv_replicated ? 1U : 0U) << at;
                        const int kv_ranks = kv_replicated ? counted.children[0]->size() : 1;
                        EXPECT_EQ(kv_ranks, kv_replicated ? tp / mc.n_kv_heads : 1) << at;
                        EXPECT_EQ(kv_calls > 0, kv_replicated) << at;
                        const TpTraffic t = tp_micro_batch_traffic(m, B, T);
                        EXPECT_EQ(t.calls, calls) << at;
                        EXPECT_EQ(t.bytes, bytes) << at;
                        EXPECT_EQ(t.kv_ranks, kv_ranks) << at;
                        EXPECT_EQ(t.kv_calls, kv_calls) << at;
                        EXPECT_EQ(t.kv_bytes, kv_bytes) << at;
                        EstimateInput in;
                        in.world = tp;
                        in.sizes.tp = tp;
                        in.micro_batch = B;
                        in.seq_len = T;
                        in.grad_accum = 3;
                        const MemoryEstimate e = estimate(m, in);
                        EXPECT_EQ(e.comm.tp_allreduce_calls, 3 * calls) << at;
                        EXPECT_DOUBLE_EQ(static_cast<double>(e.comm.tp_allreduce),
                                         3.0 * 2.0 * (tp - 1) / tp * static_cast<double>(bytes))
                            << at;
                        EXPECT_EQ(e.comm.kv_ranks, kv_ranks) << at;
                        EXPECT_EQ(e.comm.tp_kv_allreduce_calls, 3 * kv_calls) << at;
                        EXPECT_DOUBLE_EQ(
                            static_cast<double>(e.comm.tp_kv_allreduce),
                            3.0 * 2.0 * (kv_ranks - 1) / kv_ranks * static_cast<double>(kv_bytes))
                            << at;
                        EXPECT_EQ(
                            e.comm.dp_allreduce + e.comm.dp_reduce_scatter + e.comm.dp_allgather, 0)
                            << at;
                    });
                }
            }
        }
    }
}

// A training step of the trainer (ZeRO 0-3 over dp, tp inside; replicated KV heads and MoE
// included) through counting communicators: the bytes a ring sends for every collective the
// engine and the model hand over, on every group split from the world, equal the estimate's, by
// collective. The trainer's scalar reductions (loss, gradient norm: at most 2
// elements) are not counted. The second step is counted (the first records stage 3's order).
TEST(EstimateTensorParallel, StepTrafficEqualsTheTrainersCollectives) {
    const int64_t micro = 2, T = 16, accum = 2;
    struct Case {
        const char* json;
        int world, tp, stage;
        bool bf16;
        int64_t persistence;  // stage3_param_persistence_threshold
    };
    std::vector<Case> cases;
    for (int stage = 0; stage <= 3; ++stage) {
        for (const char* json : {kGpt2, kLlama}) {
            cases.push_back({json, 2, 1, stage, stage % 2 == 1, 0});
            cases.push_back({json, 4, 2, stage, stage % 2 == 0, 0});
        }
        cases.push_back({kLlamaKv, 4, 4, stage, stage % 2 == 1, 0});  // each KV head on 2 ranks
        cases.push_back({kMixtral, 4, 2, stage, stage % 2 == 0, 0});
    }
    // dp 2 x tp 4: experts and replicated KV heads (a tp group that is not the world); one KV
    // head with a bias on all 4 tp ranks.
    cases.push_back({kMixtral, 8, 4, 1, true, 0});
    cases.push_back({kMixtral, 8, 4, 3, false, 0});
    cases.push_back({kQwenKv, 4, 4, 2, true, 0});
    // Stage 3 with the small groups (embedding, head) persistent and the blocks not.
    cases.push_back({kLlama, 4, 2, 3, true, 2000});
    cases.push_back({kGpt2, 2, 1, 3, false, 2500});
    for (const Case& c : cases) {
        const models::ModelConfig mc = models::parse_hf_config(c.json, "test");
        const std::string ds = fmt::format(
            R"({{"train_batch_size": {}, "train_micro_batch_size_per_gpu": {},
            "optimizer": {{"type": "AdamW"}}, "bf16": {{"enabled": {}}},
            "tensor_parallel": {{"autotp_size": {}}},
            "zero_optimization": {{"stage": {}, "stage3_param_persistence_threshold": {}}}}})",
            micro * accum * (c.world / c.tp), micro, c.bf16, c.tp, c.stage, c.persistence);
        const train::TrainConfig tc = train::parse_ds_config(ds, "t", c.world);
        ASSERT_EQ(tc.batch.gradient_accumulation_steps, accum);
        zs::test::Rng rng(5);
        std::vector<models::TrainBatch> batches;
        for (int64_t i = 0; i < accum; ++i) {
            batches.push_back(
                {zs::test::random_ints(rng, {micro, T}, core::DType::i32, 0, mc.vocab_size - 1),
                 zs::test::random_ints(rng, {micro, T}, core::DType::i32, 0, mc.vocab_size - 1)});
        }
        comm::run_local(c.world, [&](int r, comm::Communicator& g) {
            CountingComm world(g);
            train::RunOptions run;
            run.seq_len = T;
            run.steps = 2;
            run.progress = false;
            train::Trainer t(mc, tc, run, world);
            t.init_random();
            t.step(batches);
            world.clear();
            t.step(batches);
            const std::string at =
                fmt::format("{} world {} tp {} stage {} {} persistence {} rank {}", mc.model_type,
                            c.world, c.tp, c.stage, c.bf16 ? "bf16" : "f32", c.persistence, r);
            // Bytes a ring sends over a group of n: 2 (n - 1) / n of an all-reduce's tensor,
            // (n - 1) / n of a reduce-scatter's or all-gather's whole.
            double allreduce = 0, reduce_scatter = 0, allgather = 0;
            for (const auto& [from, call] : world.all_calls()) {
                const double f = static_cast<double>(from->size() - 1) / from->size();
                if (call.op == "allreduce" && call.numel > 2) {
                    allreduce += 2 * f * static_cast<double>(call.bytes);
                } else if (call.op == "reduce_scatter") {
                    reduce_scatter += f * static_cast<double>(call.bytes);
                } else if (call.op == "allgather") {
                    allgather += f * static_cast<double>(call.bytes);
                } else {
                    EXPECT_TRUE((call.op == "allreduce" && call.numel <= 2) || from->size() == 1)
                        << at << ": " << call.op << " of " << call.numel;
                }
            }
            EstimateInput in;
            in.world = c.world;
            in.sizes.tp = c.tp;
            in.stage = c.stage;
            in.micro_batch = micro;
            in.seq_len = T;
            in.grad_accum = accum;
            in.persistence_threshold = c.persistence;
            const MemoryEstimate e = estimate(t.model(), in);
            EXPECT_DOUBLE_EQ(allreduce,
                             static_cast<double>(e.comm.dp_allreduce + e.comm.tp_allreduce +
                                                 e.comm.tp_kv_allreduce))
                << at;
            EXPECT_DOUBLE_EQ(reduce_scatter, static_cast<double>(e.comm.dp_reduce_scatter)) << at;
            EXPECT_DOUBLE_EQ(allgather, static_cast<double>(e.comm.dp_allgather)) << at;
        });
    }
}

TEST(EstimateTensorParallel, SizesThatDoNotFitAreRefusedByName) {
    auto refused = [](const std::function<void()>& f, const std::string& want) {
        try {
            f();
            ADD_FAILURE() << "accepted; wanted an error with: " << want;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
        }
    };
    const models::ModelConfig llama = models::parse_hf_config(kLlama, "test");
    refused([&] { RankModel m(llama, {}, 3); }, "tp = 3 does not divide llama's 8 attention heads");
    models::ModelConfig odd = llama;
    odd.n_heads = 12;
    refused([&] { RankModel m(odd, {}, 6); }, "tp = 6 and llama's 4 KV heads");
    odd = llama;
    odd.intermediate = 50;
    // Replicated KV heads (8 heads at tp 8: each of the 4 KV heads on 2 ranks) and experts are
    // estimated.
    EXPECT_EQ(RankModel(llama, {}, 8).model().local_config().n_kv_heads, 1);
    EXPECT_EQ(RankModel(models::parse_hf_config(kMixtral, "test"), {}, 4).model().tp_size(), 4);
    refused([&] { RankModel m(odd, {}, 4); },
            "tp = 4 does not divide llama's MLP intermediate size 50");
    const RankModel tp2(llama, {}, 2);
    EstimateInput in;
    in.world = 6;
    in.sizes.tp = 4;
    refused([&] { estimate(tp2, in); }, "does not divide the 6 ranks");
    in.sizes.tp = 1;
    refused([&] { estimate(tp2, in); }, "tp = 2 group, the sizes ask for tp = 1");
    in.world = 8;
    in.sizes.tp = 2;
    in.sizes.pp = 2;
    refused([&] { estimate(tp2, in); }, "pipeline and expert parallelism");
    // Sequence parallelism: the model must run under the sizes' Ulysses and ring degrees, and the
    // sequence must cut evenly.
    in.sizes.pp = 1;
    in.sizes.sp = 2;
    in.world = 8;
    refused([&] { estimate(tp2, in); }, "the model runs under ulysses 1 x ring 1");
    const RankModel ring2(llama, {}, 1, 1, 2);
    EstimateInput rin;
    rin.world = 2;
    rin.sizes.sp = 2;
    rin.sizes.ring = 2;
    rin.seq_len = 34;
    refused([&] { estimate(ring2, rin); }, "--seq-len 34 is not divisible by 4");
}

// ---------------------------------------------------------------- sequence parallelism

const char* kSpModel = R"({"model_type": "llama", "vocab_size": 64, "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 96, "max_position_embeddings": 8192})";

struct SpMeasure {
    int64_t states = 0;  // bytes allocated before the micro-batches (weights, gradients)
    int64_t saved = 0;   // what stays after one (less dres, the residual stream's gradient)
    int64_t peak = 0;    // the second micro-batch's peak above `states`
};

// One rank of a ulysses x ring sequence-parallel group training on sequences of T tokens: two
// micro-batches of B sequences (its T / (ulysses x ring) tokens of each) on a model over mirror
// groups, with the allocator's counts around them.
SpMeasure measure_sp(const models::ModelConfig& mc, const models::RunConfig& base, int ulysses,
                     int ring, int64_t B, int64_t T) {
    MirrorGroup sp(ulysses), rg(ring);
    models::RunConfig run = base;
    run.sp = ulysses > 1 ? &sp : nullptr;
    run.ring = ring > 1 ? &rg : nullptr;
    const int64_t before_model = core::memory_stats().current_total;
    models::Transformer m(mc, run);
    models::DenseParams p(m.layout(), run.compute_dtype, true);
    p.init(1);
    p.bind(m.binding());
    zs::test::Rng rng(3);
    const int64_t Tl = T / (ulysses * ring);
    const models::TrainBatch bt{zs::test::random_ints(rng, {B, Tl}, core::DType::i32, 0, 63),
                                zs::test::random_ints(rng, {B, Tl}, core::DType::i32, 0, 63)};
    SpMeasure out;
    const int64_t before = core::memory_stats().current_total;
    out.states = before - before_model;
    m.forward_backward(bt, 1.0f);
    out.saved = core::memory_stats().current_total - before - B * Tl * mc.hidden_size * 4;
    core::backend(core::Device::cpu()).memory().reset_peak();
    m.forward_backward(bt, 1.0f);
    out.peak = core::memory_stats().peak_total - before;
    return out;
}

MemoryEstimate estimate_sp(const models::ModelConfig& mc, const models::RunConfig& run, int ulysses,
                           int ring, int64_t B, int64_t T) {
    const RankModel rank(mc, run, 1, ulysses, ring);
    EstimateInput in;
    in.world = ulysses * ring;
    in.sizes.sp = ulysses * ring;
    in.sizes.ring = ring;
    in.micro_batch = B;
    in.seq_len = T;
    in.widened_16bit_matmul = widened();
    return estimate(rank, in);
}

// The estimate's per-rank activations under Ulysses, ring and USP against one rank's allocator:
// what a micro-batch leaves allocated (block activations, the cores' buffers) and its peak are
// the estimate's activations and activations + transient, byte for byte (under activation
// checkpointing the peak is bounded by it within one [N, C] f32 tensor), across sequence lengths,
// f32 and bf16; the tokens per rank are seq_len / sp.
TEST(EstimateSequenceParallel, ActivationsPerRankAreTheMeasuredOnes) {
    const models::ModelConfig mc = models::parse_hf_config(kSpModel, "test");
    const int64_t B = 2;
    for (auto [u, r] : {std::pair{1, 1}, {2, 1}, {4, 1}, {1, 2}, {1, 4}, {2, 2}}) {
        for (int64_t T : {64, 256}) {
            for (core::DType ct : {core::DType::f32, core::DType::bf16}) {
                for (bool ckpt : {false, true}) {
                    const models::RunConfig run{
                        .compute_dtype = ct, .activation_checkpointing = ckpt, .logits_chunk = 64};
                    const std::string at = fmt::format("ulysses {} ring {} T {} {}{}", u, r, T,
                                                       core::to_string(ct), ckpt ? " ckpt" : "");
                    const SpMeasure m = measure_sp(mc, run, u, r, B, T);
                    const MemoryEstimate e = estimate_sp(mc, run, u, r, B, T);
                    EXPECT_EQ(e.tokens_per_rank, T / (u * r)) << at;
                    EXPECT_EQ(m.saved, e.activations) << at;
                    if (!ckpt) {
                        expect_peak(m.peak, e, at);
                    } else {
                        // The re-run forward's discarded [N, C] f32 output is counted on top of
                        // the block's backward, though it is freed before (rank_activations):
                        // an upper bound by exactly that.
                        EXPECT_LE(m.peak, e.activations + e.transient) << at;
                        EXPECT_GE(m.peak, e.activations + e.transient - e.matmul_scratch -
                                              B * (T / (u * r)) * mc.hidden_size * 4)
                            << at;
                    }
                }
            }
        }
    }
}

// Sequence parallelism's traffic: one micro-batch of a model over real Ulysses and ring groups
// (thread-ranks, the topology's sub-groups behind a counting decorator) hands the all-to-alls and
// sends the bytes the estimate prints: (U - 1) / U of parallel::ulysses_volume's buffers (forward
// twice under activation checkpointing) and parallel::ring_volume, per layer. At the same tokens
// per rank the Ulysses bytes per rank stay constant in U (its per-link volume), the ring's grow
// with R.
TEST(EstimateSequenceParallel, TrafficEqualsTheCoresSends) {
    const models::ModelConfig mc = models::parse_hf_config(kSpModel, "test");
    const int64_t B = 2, Tl = 32;
    for (auto [u, r] : {std::pair{2, 1}, {4, 1}, {1, 2}, {1, 4}, {2, 2}}) {
        for (bool ckpt : {false, true}) {
            const models::RunConfig base{.compute_dtype = core::DType::bf16,
                                         .activation_checkpointing = ckpt};
            const int64_t T = Tl * u * r;
            const MemoryEstimate e = estimate_sp(mc, base, u, r, B, T);
            const std::string at = fmt::format("ulysses {} ring {}{}", u, r, ckpt ? " ckpt" : "");
            comm::run_local(u * r, [&](int, comm::Communicator& world) {
                parallel::Sizes sz;
                sz.sp = u * r;
                sz.ring = r;
                parallel::Topology topo(world, sz);
                CountingComm uc(topo.group(parallel::Group::ulysses)),
                    rc(topo.group(parallel::Group::ring));
                models::RunConfig run = base;
                run.sp = u > 1 ? &uc : nullptr;
                run.ring = r > 1 ? &rc : nullptr;
                models::Transformer m(mc, run);
                models::DenseParams p(m.layout(), run.compute_dtype, true);
                p.init(1);
                p.bind(m.binding());
                zs::test::Rng rng(3);
                const models::TrainBatch bt{
                    zs::test::random_ints(rng, {B, Tl}, core::DType::i32, 0, 63),
                    zs::test::random_ints(rng, {B, Tl}, core::DType::i32, 0, 63)};
                m.forward_backward(bt, 1.0f);
                int64_t a2a = 0, sent = 0;
                for (const auto& c : uc.calls) a2a += c.op == "all_to_all" ? c.bytes : 0;
                for (const auto& c : rc.calls) sent += c.op == "send" ? c.bytes : 0;
                EXPECT_EQ(a2a * (u - 1) / u, e.comm.sp_all_to_all) << at;
                EXPECT_EQ(sent, e.comm.ring_send) << at;
                EXPECT_GT(a2a + sent, 0) << at;
            });
        }
    }
}

// The issue's scale goal, with the tracked allocator: under a per-rank cap set to what one rank
// needs for 256-token sequences (weights, gradients and activations; a Llama-shaped GQA model of
// 8 layers, f32), the longest sequence 4 ranks train, in steps of 64 tokens, against the single
// rank's. The longest is found from the estimate (exact here, above) and confirmed by measured
// peaks: it fits under the cap and the next length does not. Ring 4, Ulysses 4 and Ulysses 2 x
// ring 2 each reach >= 3.5x (the Ulysses core keeps no head-sharded copy of a layer between
// forward and backward: backward exchanges q, k, v and the output again).
TEST(EstimateSequenceParallel, FourRanksTrainSequencesOverThreePointFiveTimesLonger) {
    const models::ModelConfig mc = models::parse_hf_config(
        R"({"model_type": "llama", "vocab_size": 64, "hidden_size": 128, "num_hidden_layers": 8,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 352,
        "max_position_embeddings": 8192})",
        "test");
    const models::RunConfig run{.compute_dtype = core::DType::f32, .logits_chunk = 64};
    const int64_t B = 1, step = 64;
    const SpMeasure one = measure_sp(mc, run, 1, 1, B, 256);
    const int64_t cap = one.states + one.peak;
    auto longest = [&](int u, int r) {
        int64_t T = step;
        while (one.states + estimate_sp(mc, run, u, r, B, T + step).activations +
                   estimate_sp(mc, run, u, r, B, T + step).transient <=
               cap) {
            T += step;
        }
        const SpMeasure fit = measure_sp(mc, run, u, r, B, T),
                        over = measure_sp(mc, run, u, r, B, T + step);
        EXPECT_LE(fit.states + fit.peak, cap) << "ulysses " << u << " ring " << r << " T " << T;
        EXPECT_GT(over.states + over.peak, cap) << "ulysses " << u << " ring " << r << " T " << T;
        return T;
    };
    const int64_t t1 = longest(1, 1);
    EXPECT_EQ(t1, 256);
    for (auto [u, r, want] : {std::tuple{1, 4, 3.5}, {2, 2, 3.5}, {4, 1, 3.5}}) {
        const int64_t t4 = longest(u, r);
        EXPECT_GE(static_cast<double>(t4), want * static_cast<double>(t1))
            << "ulysses " << u << " ring " << r << ": " << t4 << " vs " << t1;
        std::printf(
            "cap %lld bytes: 1 rank %lld tokens, ulysses %d x ring %d: %lld tokens (%.2fx)\n",
            static_cast<long long>(cap), static_cast<long long>(t1), u, r,
            static_cast<long long>(t4), static_cast<double>(t4) / static_cast<double>(t1));
    }
}

}  // namespace
}  // namespace zs::zero
