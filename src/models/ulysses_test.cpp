// Ulysses sequence parallelism against the unsharded computation, over thread-ranks.
//
// The core alone: each of P ranks holds its Tl tokens of q, k, v (views of a fused projection);
// UlyssesAttention's output, lse-driven backward and dq, dk, dv equal LocalAttention run on the
// whole sequence, sliced to the rank's tokens — GQA with the KV heads split (P | NKV), repeated
// (NKV | P, and neither dividing the other), MHA, a sliding window; f32 to 1e-5 and bf16 within
// the rounding the exchange adds (see Bf16CoreTracksLocalAttention).
//
// The model: a Transformer per rank on its slice of every sequence (global positions: learned
// for GPT-2, RoPE for Llama) gives, summed over the sp ranks, the whole model's loss and every
// parameter's gradient (1e-5, f32), with and without activation checkpointing; also tp 2 x sp 2,
// and ring attention alone (ring 2, 4) and under Ulysses (USP 2 x 2).
// A counting communicator checks each layer's all-to-all bytes against the Ulysses formula
// (parallel::ulysses_volume).
#include "parallel/ulysses.h"

#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "comm/communicator.h"
#include "models/attention_core.h"
#include "models/transformer.h"
#include "models/weights.h"
#include "parallel/topology.h"
#include "tests/test_util.h"

namespace zs::models {
namespace {

using core::DType;
using zs::test::Rng;

// ||got - want|| / ||want|| over any CPU tensors (any dtype and strides).
double rel_err(const Tensor& got, const Tensor& want) {
    const auto g = ops::reference::from_tensor(got), w = ops::reference::from_tensor(want);
    double d = 0, n = 0;
    for (int64_t i = 0; i < w.numel(); ++i) {
        d += (g[i] - w[i]) * (g[i] - w[i]);
        n += w[i] * w[i];
    }
    return std::sqrt(d / std::max(n, 1e-30));
}

struct CoreCase {
    int64_t NH, NKV;
    int P;
    int64_t window = 0;
};

std::string describe(const CoreCase& c, DType dt) {
    return fmt::format("NH {} NKV {} P {} (repeat {}) window {} {}", c.NH, c.NKV, c.P,
                       parallel::kv_repeat(c.NKV, c.P), c.window, to_string(dt));
}

// Views q, k, v [B, T, H, HS] of a fused [B, T, (NH + 2 NKV) HS] tensor.
struct Qkv {
    Tensor fused, q, k, v;
    Qkv(Tensor f, int64_t NH, int64_t NKV, int64_t HS) : fused(std::move(f)) {
        const int64_t B = fused.size(0), T = fused.size(1), W = fused.size(2);
        q = fused.as_strided({B, T, NH, HS}, {T * W, W, HS, 1}, 0);
        k = fused.as_strided({B, T, NKV, HS}, {T * W, W, HS, 1}, NH * HS);
        v = fused.as_strided({B, T, NKV, HS}, {T * W, W, HS, 1}, (NH + NKV) * HS);
    }
};

struct CoreErrors {
    double out = 0, lse = 0, dq = 0, dk = 0, dv = 0;
};

// The worst error over the ranks of the Ulysses core against LocalAttention on the whole sequence,
// both in `dt`. Two layers, backward in reverse order: the core keeps nothing between the passes,
// each backward exchanges its own q, k, v and output again.
CoreErrors core_errors(const CoreCase& c, DType dt) {
    const int64_t B = 2, Tl = 5, T = c.P * Tl, HS = 16, W = (c.NH + 2 * c.NKV) * HS;
    Rng rng(21);
    ops::AttentionOptions opts;
    opts.window = c.window;
    const Qkv whole(zs::test::random_tensor(rng, {B, T, W}, dt), c.NH, c.NKV, HS);
    const Tensor dout = zs::test::random_tensor(rng, {B, T, c.NH, HS}, dt);
    Tensor out = Tensor::empty({B, T, c.NH, HS}, dt), lse = Tensor::empty({B, c.NH, T}, DType::f32);
    const Qkv dwhole(Tensor::zeros({B, T, W}, dt), c.NH, c.NKV, HS);
    LocalAttention local;
    local.forward(0, opts, out, lse, whole.q, whole.k, whole.v);
    local.backward(0, opts, dwhole.q, dwhole.k, dwhole.v, dout, whole.q, whole.k, whole.v, out,
                   lse);
    std::vector<CoreErrors> errs(static_cast<size_t>(c.P));
    comm::run_local(c.P, [&](int r, comm::Communicator& g) {
        UlyssesAttention core(g);
        auto mine = [&](const Tensor& t) { return t.slice(1, r * Tl, (r + 1) * Tl); };
        const Qkv x(mine(whole.fused).contiguous(), c.NH, c.NKV, HS);
        Tensor o[2], l[2];
        for (int layer = 0; layer < 2; ++layer) {
            o[layer] = Tensor::empty({B, Tl, c.NH, HS}, dt);
            l[layer] = Tensor::empty({B, c.NH, Tl}, DType::f32);
            core.forward(layer, opts, o[layer], l[layer], x.q, x.k, x.v);
        }
        CoreErrors& e = errs[static_cast<size_t>(r)];
        e.out = rel_err(o[0], mine(out));
        // lse stays in the caller's [B, NH, Tl] buffer as this rank's heads of the whole sequence.
        const int64_t NHl = c.NH / c.P;
        e.lse = rel_err(l[0].view({B, NHl, T}), lse.slice(1, r * NHl, (r + 1) * NHl));
        for (int layer = 1; layer >= 0; --layer) {
            const Qkv dx(Tensor::empty({B, Tl, W}, dt), c.NH, c.NKV, HS);
            const Tensor d = mine(dout).contiguous();
            core.backward(layer, opts, dx.q, dx.k, dx.v, d, x.q, x.k, x.v, o[layer], l[layer]);
            e.dq = std::max(e.dq, rel_err(dx.q, mine(dwhole.q)));
            e.dk = std::max(e.dk, rel_err(dx.k, mine(dwhole.k)));
            e.dv = std::max(e.dv, rel_err(dx.v, mine(dwhole.v)));
        }
    });
    CoreErrors worst;
    for (const CoreErrors& e : errs) {
        worst.out = std::max(worst.out, e.out);
        worst.lse = std::max(worst.lse, e.lse);
        worst.dq = std::max(worst.dq, e.dq);
        worst.dk = std::max(worst.dk, e.dk);
        worst.dv = std::max(worst.dv, e.dv);
    }
    return worst;
}

const CoreCase kCoreCases[] = {
    {4, 2, 2},     // GQA, KV heads split (one per rank)
    {4, 2, 4},     // GQA, each KV head on two ranks (repeat 2)
    {8, 2, 4, 3},  // repeat 2, two query heads per rank, a sliding window of 3
    {6, 3, 2},     // neither divides: each KV head repeated twice, 3 per rank
    {4, 1, 4},     // multi-query: the KV head on every rank (repeat 4)
    {4, 4, 4},     // MHA
};

TEST(UlyssesCore, EqualsLocalAttentionOnTheWholeSequence) {
    for (const CoreCase& c : kCoreCases) {
        const CoreErrors e = core_errors(c, DType::f32);
        const std::string at = describe(c, DType::f32);
        EXPECT_LE(e.out, 1e-5) << at;
        EXPECT_LE(e.lse, 1e-6) << at;
        EXPECT_LE(e.dq, 1e-5) << at;
        EXPECT_LE(e.dk, 1e-5) << at;
        EXPECT_LE(e.dv, 1e-5) << at;
    }
}

// bf16: the exchange only copies, and the local kernel computes each (sequence, head) alike
// whatever other heads share its call, so output, lse and dq equal LocalAttention's bf16 result
// and so do dk, dv when the KV heads are split (repeat 1). A repeated KV head's gradient is the
// sum of `repeat` partial sums (the query heads of each rank), each rounded to bf16 on its rank
// before the f32 sum is rounded again, where LocalAttention rounds the f32 total once: at most
// (repeat + 1) roundings of 2^-8 relative, i.e. (repeat + 1) * 2^-8 of the partial sums' norm,
// which for these independent random partials is within sqrt(repeat) of the total's. Held to
// (repeat + 1) * 2^-8 * sqrt(repeat) in 2-norm relative error.
TEST(UlyssesCore, Bf16CoreTracksLocalAttention) {
    for (const CoreCase& c : kCoreCases) {
        const CoreErrors e = core_errors(c, DType::bf16);
        const std::string at = describe(c, DType::bf16);
        const auto R = static_cast<double>(parallel::kv_repeat(c.NKV, c.P));
        EXPECT_EQ(e.out, 0.0) << at;
        EXPECT_EQ(e.lse, 0.0) << at;
        EXPECT_EQ(e.dq, 0.0) << at;
        const double tol = R == 1 ? 0.0 : (R + 1) * std::ldexp(1.0, -8) * std::sqrt(R);
        EXPECT_LE(e.dk, tol) << at;
        EXPECT_LE(e.dv, tol) << at;
    }
}

// ---------------------------------------------------------------------------- the model

const char* kGpt2 = R"({"model_type": "gpt2", "vocab_size": 61, "n_embd": 32, "n_layer": 2,
    "n_head": 4, "n_positions": 32})";
const char* kLlama = R"({"model_type": "llama", "vocab_size": 58, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 48, "max_position_embeddings": 32, "rms_norm_eps": 1e-6})";

// Every all-to-all's bytes (the buffer handed in), forwarding to the real communicator.
class CountingComm final : public comm::Communicator {
public:
    explicit CountingComm(comm::Communicator& inner) : inner_(inner) {}
    int rank() const override { return inner_.rank(); }
    int size() const override { return inner_.size(); }
    std::string name() const override { return inner_.name(); }
    comm::Work allreduce(const Tensor& t, comm::ReduceOp op) override {
        return inner_.allreduce(t, op);
    }
    comm::Work reduce_scatter(const Tensor& out, const Tensor& in, comm::ReduceOp op) override {
        return inner_.reduce_scatter(out, in, op);
    }
    comm::Work allgather(const Tensor& out, const Tensor& in) override {
        return inner_.allgather(out, in);
    }
    comm::Work broadcast(const Tensor& t, int root) override { return inner_.broadcast(t, root); }
    comm::Work all_to_all(const Tensor& out, const Tensor& in) override {
        a2a_bytes += static_cast<int64_t>(in.nbytes());
        ++a2a_calls;
        return inner_.all_to_all(out, in);
    }
    comm::Work send(const Tensor& t, int peer, int tag) override {
        return inner_.send(t, peer, tag);
    }
    comm::Work recv(const Tensor& t, int peer, int tag) override {
        return inner_.recv(t, peer, tag);
    }
    void barrier() override { inner_.barrier(); }
    std::unique_ptr<comm::Communicator> split(int color, int key) override {
        return inner_.split(color, key);
    }
    int64_t a2a_bytes = 0, a2a_calls = 0;

private:
    comm::Communicator& inner_;
};

struct ModelCase {
    const char* json;
    int tp = 1, sp = 2;
    bool ckpt = false;
    int ring = 1;  // ring attention's degree; sp is then the Ulysses degree inside it (USP)
};

// Rank (ulysses u, ring r)'s tokens of x [B, T]: ring rank r's zig-zag chunks r and 2R-1-r (of
// 2R), then the u-th of U equal slices of those 2T/(2R) tokens (RunConfig::ring's layout).
Tensor sp_slice(const Tensor& x, int U, int u, int R, int r) {
    const int64_t B = x.size(0), c = x.size(1) / (2 * R), Tl = 2 * c / U;
    const parallel::ZigzagChunks z = parallel::zigzag_chunks(r, R);
    Tensor chunks = Tensor::empty({B, 2 * c}, x.dtype());
    chunks.slice(1, 0, c).copy_from(x.slice(1, z.first * c, (z.first + 1) * c));
    chunks.slice(1, c, 2 * c).copy_from(x.slice(1, z.second * c, (z.second + 1) * c));
    return chunks.slice(1, u * Tl, (u + 1) * Tl).contiguous();
}

// Two micro-batches of [2, T] through the whole model and through tp x sp x ring ranks (each its
// slice of every sequence): per micro-batch the loss sums, and after both the gradients summed
// over the sequence-parallel ranks (each rank's tp slice), equal the whole model's to 1e-5; every
// layer moved 2 * ulysses_volume bytes (3 forward halves with activation checkpointing: the
// recompute) over the Ulysses group.
void expect_model_matches(const ModelCase& mc) {
    const RunConfig run{.compute_dtype = DType::f32, .activation_checkpointing = mc.ckpt};
    const ModelConfig cfg = parse_hf_config(mc.json, "test");
    Transformer whole(cfg, run);
    DenseParams wp(whole.layout(), DType::f32, true);
    wp.init(3);
    Rng prng(17);
    for (size_t i = 0; i < whole.layout().params().size(); ++i) {  // biases and norms off 0, 1
        const Tensor w = wp.weight(static_cast<ParamId>(i));
        for (int64_t k = 0; k < w.numel(); ++k)
            w.data<float>()[k] += static_cast<float>(prng.uniform(-0.1, 0.1));
    }
    wp.bind(whole.binding());
    wp.zero_grads();
    const int64_t B = 2, T = 16, Tl = T / (mc.sp * mc.ring);
    Rng rng(9);
    std::vector<TrainBatch> batches;
    std::vector<LossStats> want;
    for (int b = 0; b < 2; ++b) {
        batches.push_back({zs::test::random_ints(rng, {B, T}, DType::i32, 0, cfg.vocab_size - 1),
                           zs::test::random_ints(rng, {B, T}, DType::i32, 0, cfg.vocab_size - 1)});
        batches.back().targets.data<int32_t>()[5] = -100;
        want.push_back(whole.forward_backward(batches.back(), 0.1f, 2.0f));
    }
    const int world = mc.tp * mc.sp * mc.ring;
    const std::string at = fmt::format("{} tp {} sp {} ring {}{}", cfg.model_type, mc.tp, mc.sp,
                                       mc.ring, mc.ckpt ? " with activation checkpointing" : "");
    comm::run_local(world, [&](int rank, comm::Communicator& w) {
        parallel::Sizes sz;
        sz.tp = mc.tp;
        sz.sp = mc.sp * mc.ring;
        sz.ring = mc.ring;
        parallel::Topology topo(w, sz);
        CountingComm sp(topo.group(parallel::Group::ulysses));
        comm::Communicator& all_sp = topo.group(parallel::Group::sp);
        RunConfig rc = run;
        if (mc.tp > 1) rc.tp = &topo.group(parallel::Group::tp);
        rc.sp = &sp;
        if (mc.ring > 1) rc.ring = &topo.group(parallel::Group::ring);
        Transformer m(cfg, rc);
        ASSERT_EQ(m.sp_size(), mc.sp);
        DenseParams p(m.layout(), DType::f32, true);
        const auto& params = m.layout().params();
        for (size_t i = 0; i < params.size(); ++i) {
            const auto id = static_cast<ParamId>(i);
            p.weight(id).copy_from(m.tp_slice(id, wp.weight(whole.layout().id(params[i].name))));
        }
        p.bind(m.binding());
        p.zero_grads();
        for (size_t b = 0; b < batches.size(); ++b) {
            auto mine = [&](const Tensor& t) {
                return sp_slice(t, mc.sp, topo.coords().ulysses, mc.ring, topo.coords().ring);
            };
            const LossStats got = m.forward_backward(
                {mine(batches[b].input_ids), mine(batches[b].targets)}, 0.1f, 2.0f);
            Tensor sums = Tensor::empty({2}, DType::f32);
            sums.data<float>()[0] = static_cast<float>(got.loss_sum);
            sums.data<float>()[1] = static_cast<float>(got.n_tokens);
            all_sp.allreduce(sums, comm::ReduceOp::sum).wait();
            EXPECT_EQ(sums.data<float>()[1], static_cast<float>(want[b].n_tokens)) << at;
            EXPECT_NEAR(sums.data<float>()[0], want[b].loss_sum, 1e-5 * want[b].loss_sum) << at;
        }
        for (size_t i = 0; i < params.size(); ++i) {
            const auto id = static_cast<ParamId>(i);
            Tensor g = p.grad(id).contiguous();
            all_sp.allreduce(g, comm::ReduceOp::sum).wait();
            const Tensor ref = m.tp_slice(id, wp.grad(whole.layout().id(params[i].name)));
            EXPECT_LT(rel_err(g, ref), 1e-5) << at << " rank " << rank << " " << params[i].name;
        }
        // The all-to-all volume: per layer and micro-batch, forward and backward, at this rank's
        // heads (tp splits them first).
        const ModelConfig& lc = m.local_config();
        const parallel::UlyssesVolume v =
            parallel::ulysses_volume(B, Tl, lc.n_heads, lc.n_kv_heads, lc.head_dim, mc.sp, 4);
        const int64_t per_layer =
            mc.sp > 1 ? v.forward + v.backward + (mc.ckpt ? v.forward : 0) : 0;
        EXPECT_EQ(sp.a2a_bytes, 2 * lc.n_layers * per_layer) << at;
        // Two each way per layer (forward: q, k, v then the output; backward: q, k, v, output
        // and dout then dq, dk, dv), one per sequence.
        EXPECT_EQ(sp.a2a_calls, mc.sp > 1 ? 2 * lc.n_layers * B * (mc.ckpt ? 6 : 4) : 0) << at;
    });
}

TEST(UlyssesModel, LossAndGradientsEqualTheWholeModel) {
    for (const char* json : {kGpt2, kLlama}) {
        for (int sp : {2, 4}) {
            for (bool ckpt : {false, true}) expect_model_matches({json, 1, sp, ckpt});
        }
    }
    // Llama's 4 heads and 2 KV heads at tp 2 x sp 2: tp gives each rank 2 query heads and one KV
    // head, sp repeats that KV head over its 2 ranks.
    expect_model_matches({kLlama, 2, 2, false});
}

// Ring attention and USP at the model level: ring 2, ring 4 and Ulysses 2 x ring 2, each rank on
// its zig-zag slice of every sequence, give the whole model's losses and every parameter's
// gradient to 1e-5 (f32), with and without activation checkpointing; Llama with GQA (RoPE at the
// global positions) and GPT-2 (learned positions).
TEST(UspModel, LossAndGradientsEqualTheWholeModel) {
    for (const char* json : {kGpt2, kLlama}) {
        for (auto [sp, ring] : {std::pair{1, 2}, {1, 4}, {2, 2}}) {
            for (bool ckpt : {false, true}) expect_model_matches({json, 1, sp, ckpt, ring});
        }
    }
}

TEST(UlyssesModel, SequenceLongerThanThePositionsIsRefused) {
    comm::run_local(2, [&](int, comm::Communicator& g) {
        RunConfig rc;
        rc.sp = &g;
        Transformer m(parse_hf_config(kLlama, "test"), rc);
        Rng rng(1);
        // 2 ranks x 20 tokens > 32 positions.
        const Tensor ids = zs::test::random_ints(rng, {1, 20}, DType::i32, 0, 10);
        try {
            m.forward_loss({ids, ids});
            ADD_FAILURE() << "accepted 40 tokens over 32 positions";
        } catch (const ShapeError& e) {
            EXPECT_NE(std::string(e.what()).find("2 sequence-parallel ranks x 20 tokens"),
                      std::string::npos)
                << e.what();
        }
    });
}

TEST(UlyssesModel, SpThatDoesNotDivideTheHeadsIsRefusedNamingBoth) {
    comm::run_local(3, [&](int, comm::Communicator& g) {
        RunConfig rc;
        rc.sp = &g;
        try {
            Transformer m(parse_hf_config(kLlama, "test"), rc);
            ADD_FAILURE() << "sp 3 over 4 heads accepted";
        } catch (const ConfigError& e) {
            const std::string msg = e.what();
            EXPECT_NE(msg.find("sp = 3"), std::string::npos) << msg;
            EXPECT_NE(msg.find("4 attention heads"), std::string::npos) << msg;
        }
    });
}

}  // namespace
}  // namespace zs::models
