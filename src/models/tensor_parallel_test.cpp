// Tensor-parallel training against the whole model: tp = 2 and 4 ranks (threads), each holding
// its heads, MLP columns and vocabulary rows cut from the same whole weights (tp_slice), give the
// whole model's loss and, for every parameter, the matching slice of its gradient — GPT-2 (tied
// embeddings, learned positions, biases, GELU, an uneven vocabulary split), Llama (GQA, SwiGLU,
// RoPE, untied head), Llama with fewer KV heads than ranks (KV heads replicated, their gradient
// rows summed over the ranks sharing them) and Mixtral (replicated router, split experts, the
// load-balancing loss), in f32 and with activation checkpointing; in bf16 within a tolerance
// derived from bf16's precision. Greedy decoding through each rank's KV cache equals the whole
// model's.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "comm/communicator.h"
#include "models/kv_cache.h"
#include "models/sources.h"
#include "models/transformer.h"
#include "models/weights.h"
#include "tests/test_util.h"

namespace zs::models {
namespace {

using core::DType;
using zs::test::Rng;

const char* kGpt2 = R"({"model_type": "gpt2", "vocab_size": 61, "n_embd": 32, "n_layer": 2,
    "n_head": 4, "n_positions": 32})";
const char* kLlama = R"({"model_type": "llama", "vocab_size": 58, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 4,
    "intermediate_size": 48, "max_position_embeddings": 32, "rms_norm_eps": 1e-6})";
// Two KV heads: split at tp 2, replicated at tp 4 (each shared by two ranks).
const char* kLlamaKv2 = R"({"model_type": "llama", "vocab_size": 58, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
    "intermediate_size": 48, "max_position_embeddings": 32, "rms_norm_eps": 1e-6})";
// Multi-query attention with a QKV bias (Qwen2): the one KV head is on every rank.
const char* kQwenMqa = R"({"model_type": "qwen2", "vocab_size": 47, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
    "intermediate_size": 40, "max_position_embeddings": 32})";
// transformer_test.cpp's tiny Mixtral: 4 experts, top 2, the load-balancing loss in the total,
// one KV head for two query heads (replicated at tp 2).
const char* kMixtral = R"({"model_type": "mixtral", "vocab_size": 41, "hidden_size": 16,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
    "intermediate_size": 24, "max_position_embeddings": 32, "num_local_experts": 4,
    "num_experts_per_tok": 2, "router_aux_loss_coef": 0.05, "output_router_logits": true})";

struct Case {
    const char* json;
    std::vector<int> tps;
};

// ||got - want|| / ||want|| (f32 sums in another order differ by rounding only).
double rel_err(const Tensor& got, const Tensor& want) {
    double d = 0, n = 0;
    for (int64_t i = 0; i < want.numel(); ++i) {
        const double w = want.data<float>()[i], g = got.data<float>()[i];
        d += (g - w) * (g - w);
        n += w * w;
    }
    return std::sqrt(d / std::max(n, 1e-30));
}

double sum_squares(const Tensor& t, int64_t begin, int64_t end) {
    double s = 0;
    for (int64_t i = begin; i < end; ++i) s += double{t.data<float>()[i]} * t.data<float>()[i];
    return s;
}

// The whole model's f32 weights, initialised and then perturbed: biases and norms start at 0
// and 1, so a bias added by every rank (instead of once) or a norm treated as split shows.
void init_perturbed(const DenseParams& wp, const ParamLayout& layout) {
    wp.init(3);
    Rng prng(17);
    for (size_t i = 0; i < layout.params().size(); ++i) {
        Tensor w = wp.weight(static_cast<ParamId>(i));
        for (int64_t k = 0; k < w.numel(); ++k) {
            w.data<float>()[k] += static_cast<float>(prng.uniform(-0.1, 0.1));
        }
    }
}

// This rank's parameters in `dtype`, cut from the whole model's (same dtype) by tp_slice.
std::unique_ptr<DenseParams> rank_params(Transformer& m, const Transformer& whole,
                                         const DenseParams& wp, DType dtype) {
    auto p = std::make_unique<DenseParams>(m.layout(), dtype, true);
    const auto& params = m.layout().params();
    for (size_t i = 0; i < params.size(); ++i) {
        const auto id = static_cast<ParamId>(i);
        p->weight(id).copy_from(m.tp_slice(id, wp.weight(whole.layout().id(params[i].name))));
    }
    p->bind(m.binding());
    p->zero_grads();
    return p;
}

struct Tolerance {
    double loss = 1e-5;  // relative, on the loss sum and the aux loss
    double grad = 1e-5;  // relative 2-norm error of each parameter's gradient
};

// Two micro-batches of forward_backward on the whole model and on tp ranks of the same weights in
// `run.compute_dtype`: the same loss, aux loss and (per parameter, this rank's slice of) the
// whole model's gradient; and the gradient norm counted with tp_copies equals the whole model's.
void expect_training_matches(const Case& cs, const RunConfig& run, Tolerance tol) {
    Transformer whole(parse_hf_config(cs.json, "test"), run);
    DenseParams init(whole.layout(), DType::f32, false);
    init_perturbed(init, whole.layout());
    DenseParams wp(whole.layout(), run.compute_dtype, true);
    for (size_t i = 0; i < whole.layout().params().size(); ++i) {
        const auto id = static_cast<ParamId>(i);
        wp.weight(id).copy_from(init.weight(id));
    }
    wp.bind(whole.binding());
    const ModelConfig& c = whole.config();
    // Two micro-batches accumulate into the gradients (a rank must not sum the first one's
    // share of a replicated KV head twice).
    Rng rng(9);
    std::vector<TrainBatch> batches;
    std::vector<LossStats> want;
    for (int b = 0; b < 2; ++b) {
        batches.push_back({zs::test::random_ints(rng, {2, 9}, DType::i32, 0, c.vocab_size - 1),
                           zs::test::random_ints(rng, {2, 9}, DType::i32, 0, c.vocab_size - 1)});
        batches.back().targets.data<int32_t>()[4] = -100;
        want.push_back(whole.forward_backward(batches.back(), 0.1f, 2.0f));
    }
    double want_sq = 0;
    for (size_t i = 0; i < whole.layout().params().size(); ++i) {
        const Tensor g = wp.grad(static_cast<ParamId>(i));
        want_sq += sum_squares(g, 0, g.numel());
    }
    for (int tp : cs.tps) {
        std::vector<double> rank_sq(static_cast<size_t>(tp), 0.0);
        comm::run_local(tp, [&](int rank, comm::Communicator& g) {
            RunConfig rc = run;
            rc.tp = &g;
            Transformer m(parse_hf_config(cs.json, "test"), rc);
            auto p = rank_params(m, whole, wp, run.compute_dtype);
            const std::string at = c.model_type + " (" + std::to_string(c.n_heads) + " heads, " +
                                   std::to_string(c.n_kv_heads) + " KV) tp " + std::to_string(tp) +
                                   " rank " + std::to_string(rank) +
                                   (run.activation_checkpointing ? " ckpt" : "") + " " +
                                   to_string(run.compute_dtype);
            for (size_t b = 0; b < batches.size(); ++b) {
                const LossStats got = m.forward_backward(batches[b], 0.1f, 2.0f);
                const LossStats& w = want[b];
                EXPECT_EQ(got.n_tokens, w.n_tokens) << at;
                EXPECT_NEAR(got.loss_sum, w.loss_sum, tol.loss * std::fabs(w.loss_sum)) << at;
                EXPECT_NEAR(got.aux_loss, w.aux_loss, tol.loss * std::fabs(w.aux_loss)) << at;
            }
            const auto& params = m.layout().params();
            for (size_t i = 0; i < params.size(); ++i) {
                const auto id = static_cast<ParamId>(i);
                // Replicated KV rows: tp_slice gives this rank's KV head's rows of the whole
                // gradient, which the ranks sharing the head summed their shares into.
                const Tensor ref = m.tp_slice(id, wp.grad(whole.layout().id(params[i].name)));
                EXPECT_LT(rel_err(p->grad(id), ref), tol.grad) << at << " " << params[i].name;
                for (const Transformer::TpCopies& r : m.tp_copies(id)) {
                    rank_sq[static_cast<size_t>(rank)] +=
                        sum_squares(p->grad(id), r.begin, r.end) / r.copies;
                }
            }
        });
        double got_sq = 0;
        for (double s : rank_sq) got_sq += s;
        EXPECT_NEAR(std::sqrt(got_sq), std::sqrt(want_sq), tol.grad * std::sqrt(want_sq))
            << c.model_type << " tp " << tp << ": gradient norm counted with tp_copies";
    }
}

const std::vector<Case>& training_cases() {
    static const std::vector<Case> cases = {{kGpt2, {2, 4}},
                                            {kLlama, {2, 4}},
                                            {kLlamaKv2, {2, 4}},
                                            {kQwenMqa, {2, 4}},
                                            {kMixtral, {2}}};
    return cases;
}

TEST(TensorParallelModel, LossAndGradientsEqualTheWholeModel) {
    for (const Case& cs : training_cases()) {
        for (bool ckpt : {false, true}) {
            expect_training_matches(
                cs, RunConfig{.compute_dtype = DType::f32, .activation_checkpointing = ckpt}, {});
        }
    }
}

// bf16 compute: tp = 2 against the whole model, both in bf16 with the same bf16 weights. bf16
// keeps 8 significant bits: one ulp is 2^-7 = 7.8e-3 relative, a rounding error at most 2^-8.
// The runs differ only where an all-reduce adds partial sums that the whole model's matmul
// accumulates in one f32 loop.
// - Forward: the partial sums (row-parallel outputs into the residual stream) are f32, so they
//   differ by f32 rounding (~1e-7 relative); a bf16 activation computed from such a value rounds
//   one ulp apart only when it lies within ~1e-7 of a rounding boundary, a rare event. Even if
//   every rounding landed one ulp apart in the same direction, the loss (a log-softmax of f32
//   logits) would move by about one ulp relative: 2^-7, so the loss is held to 1e-2 relative
//   (measured ~1e-8). 2e-2 would be too loose: a row-parallel bias added by both ranks moves
//   GPT-2's loss by only ~3%.
// - Backward: each rank's share of dx (column-parallel QKV / up) is rounded to bf16 (≤ 2^-8)
//   before the all-reduce adds it, two all-reduces per block plus the head's: ~5 such roundings
//   through this 2-block model, up to ~2e-2 relative where shares partly cancel. Gradients are
//   held to 5e-2 relative (measured ≤ 7e-3; the doubled bias above gives 0.1-0.5).
TEST(TensorParallelModel, Bf16LossAndGradientsTrackTheWholeBf16Model) {
    for (const char* json : {kGpt2, kLlama}) {
        expect_training_matches({json, {2}}, RunConfig{.compute_dtype = DType::bf16},
                                {.loss = 1e-2, .grad = 5e-2});
    }
}

// Inference: greedy decoding through a KV cache of each rank's heads (one replicated KV head
// when tp exceeds the KV heads) equals the whole model's, token for token, with the logits
// (all-gathered over the vocabulary) to 1e-5.
// Loading an HF checkpoint into a rank copies only its rows or columns of each file tensor
// (tp_selection): for every HF fixture model (GPT-2's transposed Conv1D weights, Llama, Qwen2 with
// QKV biases, Mixtral, tied and MQA variants) at every tp it admits, each rank's weights equal its
// tp_slice of the whole model loaded from the same file, bit for bit, and the same file tensors
// go unused.
TEST(TensorParallelModel, LoadingSlicesEachRanksPartFromTheFile) {
    int checked = 0;
    for (const char* name : {"gpt2", "llama", "llama_tied_mqa", "qwen2", "mixtral"}) {
        const std::string dir = std::string(ZS_SOURCE_DIR) + "/tests/fixtures/hf/" + name;
        const ModelFiles files = open_model(dir);
        Transformer whole(files.config, RunConfig{});
        DenseParams wp(whole.layout(), DType::f32, false);
        const std::vector<std::string> want_unused = load_hf_weights(whole, wp, *files.weights);
        for (int tp : {2, 4}) {
            const ModelConfig& c = files.config;
            if (c.n_heads % tp != 0 || (c.n_kv_heads % tp != 0 && tp % c.n_kv_heads != 0) ||
                c.intermediate % tp != 0) {
                continue;
            }
            ++checked;
            comm::run_local(tp, [&](int rank, comm::Communicator& g) {
                RunConfig rc;
                rc.tp = &g;
                Transformer m(c, rc);
                DenseParams p(m.layout(), DType::f32, false);
                const std::vector<std::string> unused = load_hf_weights(m, p, *files.weights);
                EXPECT_EQ(unused, want_unused) << name << " tp " << tp;
                for (size_t i = 0; i < m.layout().params().size(); ++i) {
                    const auto id = static_cast<ParamId>(i);
                    const Tensor want = m.tp_slice(id, wp.weight(id));
                    const Tensor got = p.weight(id);
                    ASSERT_EQ(got.shape(), want.shape())
                        << name << " " << m.layout().param(id).name;
                    EXPECT_EQ(std::memcmp(got.data_ptr(), want.data_ptr(), want.nbytes()), 0)
                        << name << " tp " << tp << " rank " << rank << " "
                        << m.layout().param(id).name;
                }
            });
        }
    }
    EXPECT_GE(checked, 5) << "the fixtures should admit tp 2 or 4 several times";
}

TEST(TensorParallelModel, GreedyDecodingEqualsTheWholeModel) {
    for (const Case& cs : training_cases()) {
        Transformer whole(parse_hf_config(cs.json, "test"), RunConfig{});
        DenseParams wp(whole.layout(), DType::f32, false);
        wp.init(5);
        wp.bind(whole.binding());
        const std::vector<int32_t> prompt = {3, 17, 5, 40, 22, 9};
        auto decode = [&](Transformer& m, std::vector<float>* first_logits) {
            models::ContiguousKvCache kv(m.local_config(), 32, DType::f32);
            std::vector<int32_t> toks = prompt;
            int64_t done = 0;
            const int64_t V = m.config().vocab_size;
            while (toks.size() < prompt.size() + 12) {
                const int64_t n = static_cast<int64_t>(toks.size()) - done;
                Tensor ids = Tensor::empty({n}, DType::i32), pos = Tensor::empty({n}, DType::i32);
                for (int64_t i = 0; i < n; ++i) {
                    ids.data<int32_t>()[i] = toks[static_cast<size_t>(done + i)];
                    pos.data<int32_t>()[i] = static_cast<int32_t>(done + i);
                }
                Tensor logits = m.forward_tokens(ids, pos, kv, {n - 1});
                kv.commit(n);
                done += n;
                const float* l = logits.data<float>();
                if (first_logits && first_logits->empty()) first_logits->assign(l, l + V);
                toks.push_back(static_cast<int32_t>(std::max_element(l, l + V) - l));
            }
            return toks;
        };
        std::vector<float> want_logits;
        const std::vector<int32_t> want = decode(whole, &want_logits);
        for (int tp : cs.tps) {
            comm::run_local(tp, [&](int, comm::Communicator& g) {
                RunConfig rc;
                rc.tp = &g;
                Transformer m(parse_hf_config(cs.json, "test"), rc);
                DenseParams p(m.layout(), DType::f32, false);
                const auto& params = m.layout().params();
                for (size_t i = 0; i < params.size(); ++i) {
                    p.weight(static_cast<ParamId>(i))
                        .copy_from(m.tp_slice(static_cast<ParamId>(i),
                                              wp.weight(whole.layout().id(params[i].name))));
                }
                p.bind(m.binding());
                const std::string at = m.config().model_type + " (" +
                                       std::to_string(m.config().n_kv_heads) + " KV) tp " +
                                       std::to_string(tp);
                EXPECT_EQ(m.local_config().n_kv_heads,
                          std::max<int64_t>(1, m.config().n_kv_heads / tp))
                    << at;
                std::vector<float> logits;
                EXPECT_EQ(decode(m, &logits), want) << at;
                ASSERT_EQ(logits.size(), want_logits.size());
                for (size_t i = 0; i < logits.size(); ++i) {
                    ASSERT_NEAR(logits[i], want_logits[i], 1e-5 * (1 + std::fabs(want_logits[i])))
                        << at << " logit " << i;
                }
            });
        }
    }
}

// TED inference (tp x ep = 2 x 2 over 4 threads, the ep groups the same tp rank's peers) with
// the inputs marked replicated across ep, as serving runs them: every rank holds the same
// tokens, each runs its experts' tp shards over the rows routed to them and all-gathers the
// outputs over ep before the tp all-reduce. Greedy decoding equals the whole model's, and each
// rank's expert shards run exactly the rows the whole model routes to its experts.
TEST(TensorParallelModel, TedDecodingWithReplicatedInputsEqualsTheWholeModel) {
    const ModelConfig cfg = parse_hf_config(kMixtral, "test");
    Transformer whole(cfg, RunConfig{});
    DenseParams wp(whole.layout(), DType::f32, false);
    wp.init(5);
    wp.bind(whole.binding());
    const std::vector<int32_t> prompt = {3, 17, 5, 40, 22, 9, 11};
    auto decode = [&](Transformer& m) {
        models::ContiguousKvCache kv(m.local_config(), 32, DType::f32);
        std::vector<int32_t> toks = prompt;
        int64_t done = 0;
        const int64_t V = m.config().vocab_size;
        while (toks.size() < prompt.size() + 12) {
            const int64_t n = static_cast<int64_t>(toks.size()) - done;
            Tensor ids = Tensor::empty({n}, DType::i32), pos = Tensor::empty({n}, DType::i32);
            for (int64_t i = 0; i < n; ++i) {
                ids.data<int32_t>()[i] = toks[static_cast<size_t>(done + i)];
                pos.data<int32_t>()[i] = static_cast<int32_t>(done + i);
            }
            Tensor logits = m.forward_tokens(ids, pos, kv, {n - 1});
            kv.commit(n);
            done += n;
            const float* l = logits.data<float>();
            toks.push_back(static_cast<int32_t>(std::max_element(l, l + V) - l));
        }
        return toks;
    };
    std::vector<int64_t> routed(static_cast<size_t>(cfg.moe.n_experts), 0);
    whole.set_routing_observer([&](int64_t, const Tensor& indices) {
        for (int64_t i = 0; i < indices.numel(); ++i) ++routed[indices.data<int32_t>()[i]];
    });
    const std::vector<int32_t> want = decode(whole);
    whole.set_routing_observer({});
    comm::run_local(4, [&](int rank, comm::Communicator& world) {
        const std::unique_ptr<comm::Communicator> tp = world.split(rank / 2, rank);
        const std::unique_ptr<comm::Communicator> ep = world.split(rank % 2, rank);
        RunConfig rc;
        rc.tp = tp.get();
        rc.ep = ep.get();
        Transformer m(cfg, rc);
        ASSERT_EQ(m.ep_size(), 2);
        DenseParams p(m.layout(), DType::f32, false);
        const auto& params = m.layout().params();
        for (size_t i = 0; i < params.size(); ++i) {
            p.weight(static_cast<ParamId>(i))
                .copy_from(m.tp_slice(static_cast<ParamId>(i),
                                      wp.weight(whole.layout().id(params[i].name))));
        }
        p.bind(m.binding());
        m.set_ep_replicated_inputs(true);
        EXPECT_EQ(decode(m), want) << "rank " << rank;
        const int64_t El = cfg.moe.n_experts / 2, r = ep->rank();
        int64_t mine = 0;
        for (int64_t e = r * El; e < (r + 1) * El; ++e) mine += routed[static_cast<size_t>(e)];
        EXPECT_EQ(m.take_expert_rows(), mine) << "rank " << rank;
    });
}

TEST(TensorParallelModel, SizesThatDoNotDivideTheModelAreRefused) {
    auto refused = [](const char* json, int tp, const std::string& expected) {
        comm::run_local(tp, [&](int, comm::Communicator& g) {
            RunConfig rc;
            rc.tp = &g;
            try {
                Transformer m(parse_hf_config(json, "test"), rc);
                ADD_FAILURE() << "tp " << tp << " accepted";
            } catch (const ConfigError& e) {
                EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
            }
        });
    };
    refused(kLlama, 3, "tp = 3 must divide the 8 attention heads");
    // 6 KV heads at tp 4: neither divides the other (neither split nor replicated).
    refused(R"({"model_type": "llama", "vocab_size": 58, "hidden_size": 48,
        "num_hidden_layers": 1, "num_attention_heads": 12, "num_key_value_heads": 6,
        "intermediate_size": 48, "max_position_embeddings": 32})",
            4, "divide the 6 KV heads or be a multiple of them");
}

}  // namespace
}  // namespace zs::models
