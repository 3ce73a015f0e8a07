// Tensor-parallel training against the whole model: tp = 2 and 4 ranks (threads), each holding
// its heads, MLP columns and vocabulary rows cut from the same whole weights (tp_slice), give the
// whole model's loss and, for every parameter, the matching slice of its gradient — GPT-2 (tied
// embeddings, learned positions, biases, GELU, an uneven vocabulary split) and Llama (GQA,
// SwiGLU, RoPE, untied head), in f32 and with activation checkpointing.
#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>

#include "comm/communicator.h"
#include "models/kv_cache.h"
#include "models/transformer.h"
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

TEST(TensorParallelModel, LossAndGradientsEqualTheWholeModel) {
    for (const char* json : {kGpt2, kLlama}) {
        for (bool ckpt : {false, true}) {
            const RunConfig run{.compute_dtype = DType::f32, .activation_checkpointing = ckpt};
            Transformer whole(parse_hf_config(json, "test"), run);
            DenseParams wp(whole.layout(), DType::f32, true);
            wp.init(3);
            // Biases and norms start at 0 and 1: perturb every parameter so that a bias added by
            // every rank (instead of once) or a norm treated as split shows.
            Rng prng(17);
            for (size_t i = 0; i < whole.layout().params().size(); ++i) {
                Tensor w = wp.weight(static_cast<ParamId>(i));
                for (int64_t k = 0; k < w.numel(); ++k) {
                    w.data<float>()[k] += static_cast<float>(prng.uniform(-0.1, 0.1));
                }
            }
            wp.bind(whole.binding());
            const ModelConfig& c = whole.config();
            Rng rng(9);
            TrainBatch bt{zs::test::random_ints(rng, {2, 9}, DType::i32, 0, c.vocab_size - 1),
                          zs::test::random_ints(rng, {2, 9}, DType::i32, 0, c.vocab_size - 1)};
            bt.targets.data<int32_t>()[4] = -100;
            const LossStats want = whole.forward_backward(bt, 0.1f, 2.0f);
            for (int tp : {2, 4}) {
                comm::run_local(tp, [&](int rank, comm::Communicator& g) {
                    RunConfig rc = run;
                    rc.tp = &g;
                    Transformer m(parse_hf_config(json, "test"), rc);
                    DenseParams p(m.layout(), DType::f32, true);
                    const auto& params = m.layout().params();
                    for (size_t i = 0; i < params.size(); ++i) {
                        const auto id = static_cast<ParamId>(i);
                        p.weight(id).copy_from(
                            m.tp_slice(id, wp.weight(whole.layout().id(params[i].name))));
                    }
                    p.bind(m.binding());
                    p.zero_grads();
                    const LossStats got = m.forward_backward(bt, 0.1f, 2.0f);
                    const std::string at = c.model_type + " tp " + std::to_string(tp) + " rank " +
                                           std::to_string(rank) + (ckpt ? " ckpt" : "");
                    EXPECT_EQ(got.n_tokens, want.n_tokens) << at;
                    EXPECT_NEAR(got.loss_sum, want.loss_sum, 1e-5 * std::fabs(want.loss_sum)) << at;
                    for (size_t i = 0; i < params.size(); ++i) {
                        const auto id = static_cast<ParamId>(i);
                        const Tensor ref =
                            m.tp_slice(id, wp.grad(whole.layout().id(params[i].name)));
                        EXPECT_LT(rel_err(p.grad(id), ref), 1e-5) << at << " " << params[i].name;
                    }
                });
            }
        }
    }
}

// Inference: greedy decoding through a KV cache of each rank's heads equals the whole model's,
// token for token, with the logits (all-gathered over the vocabulary) to 1e-5.
TEST(TensorParallelModel, GreedyDecodingEqualsTheWholeModel) {
    for (const char* json : {kGpt2, kLlama}) {
        Transformer whole(parse_hf_config(json, "test"), RunConfig{});
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
        for (int tp : {2, 4}) {
            comm::run_local(tp, [&](int, comm::Communicator& g) {
                RunConfig rc;
                rc.tp = &g;
                Transformer m(parse_hf_config(json, "test"), rc);
                DenseParams p(m.layout(), DType::f32, false);
                const auto& params = m.layout().params();
                for (size_t i = 0; i < params.size(); ++i) {
                    p.weight(static_cast<ParamId>(i))
                        .copy_from(m.tp_slice(static_cast<ParamId>(i),
                                              wp.weight(whole.layout().id(params[i].name))));
                }
                p.bind(m.binding());
                std::vector<float> logits;
                EXPECT_EQ(decode(m, &logits), want) << m.config().model_type << " tp " << tp;
                ASSERT_EQ(logits.size(), want_logits.size());
                for (size_t i = 0; i < logits.size(); ++i) {
                    ASSERT_NEAR(logits[i], want_logits[i], 1e-5 * (1 + std::fabs(want_logits[i])))
                        << "logit " << i;
                }
            });
        }
    }
}

TEST(TensorParallelModel, SizesThatDoNotDivideTheModelAreRefused) {
    comm::run_local(3, [&](int, comm::Communicator& g) {
        RunConfig rc;
        rc.tp = &g;
        try {
            Transformer m(parse_hf_config(kLlama, "test"), rc);
            ADD_FAILURE() << "tp 3 accepted for 8 heads";
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find("tp = 3 must divide the 8 attention heads"),
                      std::string::npos)
                << e.what();
        }
    });
}

}  // namespace
}  // namespace zs::models
