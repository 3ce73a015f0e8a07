// The shared transformer on tiny configs of every family: gradients against finite differences of
// the loss (along random directions, in f32), activation checkpointing bit-identical to saving,
// inference with a KV cache equal to the training forward, bf16 close to f32, and config errors.
#include "models/transformer.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "models/kv_cache.h"
#include "ops/activation.h"
#include "tests/test_util.h"

namespace zs::models {
namespace {

using zs::test::Rng;

const char* kGpt2 = R"({"model_type": "gpt2", "vocab_size": 61, "n_embd": 24, "n_layer": 2,
    "n_head": 3, "n_positions": 32})";
const char* kLlama = R"({"model_type": "llama", "vocab_size": 53, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 40, "max_position_embeddings": 32, "rms_norm_eps": 1e-6})";
const char* kQwen = R"({"model_type": "qwen2", "vocab_size": 47, "hidden_size": 24,
    "num_hidden_layers": 1, "num_attention_heads": 3, "num_key_value_heads": 1,
    "intermediate_size": 20, "max_position_embeddings": 32, "tie_word_embeddings": true,
    "rope_theta": 1000000.0})";
const char* kMixtral = R"({"model_type": "mixtral", "vocab_size": 41, "hidden_size": 16,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
    "intermediate_size": 24, "max_position_embeddings": 32, "num_local_experts": 4,
    "num_experts_per_tok": 2, "router_aux_loss_coef": 0.05, "output_router_logits": true})";

struct Model {
    std::unique_ptr<Transformer> model;
    std::unique_ptr<DenseParams> params;
};

Model make(const char* json, RunConfig run = {}, uint64_t seed = 1) {
    Model s;
    s.model = std::make_unique<Transformer>(parse_hf_config(json, "test config"), run);
    s.params =
        std::make_unique<DenseParams>(s.model->layout(), run.compute_dtype, true, run.device);
    s.params->init(seed);
    s.params->bind(s.model->binding());
    return s;
}

TrainBatch batch(const ModelConfig& c, int64_t B, int64_t T, uint64_t seed) {
    Rng rng(seed);
    TrainBatch b{zs::test::random_ints(rng, {B, T}, DType::i32, 0, c.vocab_size - 1),
                 zs::test::random_ints(rng, {B, T}, DType::i32, 0, c.vocab_size - 1)};
    b.targets.data<int32_t>()[1] = -100;  // one ignored target
    return b;
}

// Directional derivative check: (L(θ+εd) - L(θ-εd)) / 2ε  vs  <∇L, d>, for several directions.
void check_gradients(const char* json, float eps = 1e-2f) {
    Model s = make(json);
    const ModelConfig& c = s.model->config();
    // Routing is piecewise: with the default tiny router init all experts score alike and a
    // finite-difference step flips choices. Decisive router weights keep the choice fixed.
    for (size_t i = 0; i < s.model->layout().params().size(); ++i) {
        if (s.model->layout().params()[i].name.find("router") == std::string::npos) continue;
        Tensor w = s.params->weight(static_cast<ParamId>(i));
        zs::ops::scale(w, w, 100.0f);
    }
    TrainBatch b = batch(c, 2, 7, 5);
    s.params->zero_grads();
    LossStats st = s.model->forward_backward(b, 1.0f / 13.0f);
    ASSERT_EQ(st.n_tokens, 13);
    auto total = [&]() {
        LossStats l = s.model->forward_loss(b);
        return l.loss_sum / 13.0 + c.moe.aux_loss_coef * l.aux_loss;
    };
    std::mt19937 gen(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int trial = 0; trial < 3; ++trial) {
        // d: random over all params; <g, d> from the flat gradient buffers.
        double gd = 0;
        std::vector<Tensor> dirs;
        for (int g = 0; g < s.model->layout().n_groups(); ++g) {
            Tensor d = Tensor::empty(s.params->group_weights(g).shape(), DType::f32);
            float* dp = d.data<float>();
            const float* gp = s.params->group_grads(g).data<float>();
            for (int64_t i = 0; i < d.numel(); ++i) {
                dp[i] = nd(gen);
                gd += static_cast<double>(dp[i]) * gp[i];
            }
            dirs.push_back(d);
        }
        // Unit-norm direction: the step is eps in parameter space whatever the model size.
        double norm2 = 0;
        for (const Tensor& d : dirs) {
            const float* dp = d.data<float>();
            for (int64_t i = 0; i < d.numel(); ++i) norm2 += static_cast<double>(dp[i]) * dp[i];
        }
        const auto inv = static_cast<float>(1.0 / std::sqrt(norm2));
        for (const Tensor& d : dirs) zs::ops::scale(d, d, inv);
        gd *= inv;
        auto shift = [&](float sign) {
            for (int g = 0; g < s.model->layout().n_groups(); ++g) {
                float* w = s.params->group_weights(g).data<float>();
                const float* dp = dirs[static_cast<size_t>(g)].data<float>();
                for (int64_t i = 0; i < dirs[static_cast<size_t>(g)].numel(); ++i)
                    w[i] += sign * eps * dp[i];
            }
        };
        shift(1.0f);
        double lp = total();
        shift(-2.0f);
        double lm = total();
        shift(1.0f);
        double fd = (lp - lm) / (2.0 * eps);
        EXPECT_NEAR(fd, gd, 1e-2 * std::fabs(gd) + 2e-6 / eps)
            << c.model_type << " trial " << trial;
    }
}

TEST(Transformer, Gpt2GradientsMatchFiniteDifferences) { check_gradients(kGpt2); }
TEST(Transformer, LlamaGqaGradientsMatchFiniteDifferences) { check_gradients(kLlama); }
TEST(Transformer, Qwen2TiedMqaGradientsMatchFiniteDifferences) { check_gradients(kQwen); }
// MoE routing is piecewise constant: a smaller step keeps every token's expert choice (and the
// aux loss's counts) fixed, so the loss is smooth along it.
TEST(Transformer, MixtralGradientsIncludingAuxLossMatchFiniteDifferences) {
    check_gradients(kMixtral, 1e-3f);
}

TEST(Transformer, ActivationCheckpointingIsBitIdentical) {
    for (const char* json : {kGpt2, kLlama, kMixtral}) {
        Model a = make(json), b = make(json, {.activation_checkpointing = true});
        TrainBatch bt = batch(a.model->config(), 2, 9, 3);
        LossStats la = a.model->forward_backward(bt, 0.1f);
        LossStats lb = b.model->forward_backward(bt, 0.1f);
        EXPECT_EQ(la.loss_sum, lb.loss_sum);
        for (int g = 0; g < a.model->layout().n_groups(); ++g) {
            const Tensor& ga = a.params->group_grads(g);
            const Tensor& gb = b.params->group_grads(g);
            EXPECT_EQ(std::memcmp(ga.data_ptr(), gb.data_ptr(), ga.nbytes()), 0)
                << a.model->config().model_type << " group " << g;
        }
    }
}

// RunConfig::device (issue 13): naming the CPU explicitly is the default path, bit for bit, in
// training (loss and every gradient) and in inference (forward_tokens' logits, on the host). The
// CUDA run of the same step is checked against the CPU in backends/cuda/cuda_test.cpp.
TEST(Transformer, ExplicitCpuDeviceIsBitIdentical) {
    for (const char* json : {kGpt2, kLlama, kMixtral}) {
        Model a = make(json), b = make(json, {.device = core::Device::cpu()});
        TrainBatch bt = batch(a.model->config(), 2, 9, 3);
        LossStats la = a.model->forward_backward(bt, 0.1f);
        LossStats lb = b.model->forward_backward(bt, 0.1f);
        EXPECT_EQ(la.loss_sum, lb.loss_sum);
        EXPECT_EQ(la.aux_loss, lb.aux_loss);
        for (int g = 0; g < a.model->layout().n_groups(); ++g) {
            const Tensor& ga = a.params->group_grads(g);
            const Tensor& gb = b.params->group_grads(g);
            EXPECT_EQ(std::memcmp(ga.data_ptr(), gb.data_ptr(), ga.nbytes()), 0)
                << a.model->config().model_type << " group " << g;
        }
        const ModelConfig& c = a.model->config();
        ContiguousKvCache ca(c, 16, DType::f32), cb(c, 16, DType::f32);
        Tensor ids = bt.input_ids.select(0, 0).contiguous();
        Tensor pos = Tensor::empty({ids.numel()}, DType::i32);
        for (int64_t i = 0; i < ids.numel(); ++i) pos.data<int32_t>()[i] = static_cast<int32_t>(i);
        Tensor oa = a.model->forward_tokens(ids, pos, ca, {0, ids.numel() - 1});
        Tensor ob = b.model->forward_tokens(ids, pos, cb, {0, ids.numel() - 1});
        ASSERT_TRUE(ob.device().is_cpu());
        EXPECT_EQ(std::memcmp(oa.data_ptr(), ob.data_ptr(), oa.nbytes()), 0) << c.model_type;
    }
}

// The pipeline seam: two copies of a model as two stages (stage 0: embedding + the first blocks,
// stage 1: the rest + head), the activation and its gradient handed over by hand, give the whole
// model's loss and gradients. With tied embeddings both stages hold the embedding; its gradient
// is the sum of theirs (DeepSpeed's tied-module all-reduce).
TEST(Transformer, TwoStageSplitEqualsWholeModel) {
    for (const char* json : {kGpt2, kLlama}) {
        Model whole = make(json), s0 = make(json), s1 = make(json);
        const ModelConfig& c = whole.model->config();
        const TrainBatch bt = batch(c, 2, 7, 5);
        const LossStats want = whole.model->forward_backward(bt, 0.1f, 2.0f);
        const int L = static_cast<int>(c.n_layers), cut = 1 + L / 2;  // groups [0, cut), [cut, L]
        GroupHooks none;
        s0.model->begin_micro_batch(bt);
        s1.model->begin_micro_batch(bt);
        s0.model->forward_blocks({0, cut}, none);
        s1.model->residual(cut - 1).copy_from(s0.model->residual(cut - 1));
        s1.model->forward_blocks({cut, L + 1}, none);
        const LossStats got = s1.model->head_loss(true, 0.1f, 2.0f, none);
        s1.model->backward_blocks({cut, L + 1}, 2.0f, none);
        s0.model->residual_grad().copy_from(s1.model->residual_grad());
        s0.model->backward_blocks({0, cut}, 2.0f, none);
        EXPECT_EQ(got.loss_sum, want.loss_sum) << c.model_type;
        EXPECT_EQ(got.n_tokens, want.n_tokens);
        for (int g = 0; g < whole.model->layout().n_groups(); ++g) {
            const Tensor& w = whole.params->group_grads(g);
            const Tensor& a = s0.params->group_grads(g);
            const Tensor& b = s1.params->group_grads(g);
            for (int64_t i = 0; i < w.numel(); ++i) {
                const float sum = a.data<float>()[i] + b.data<float>()[i];
                ASSERT_NEAR(sum, w.data<float>()[i], 1e-6f * (1 + std::fabs(w.data<float>()[i])))
                    << c.model_type << " group " << g << " element " << i;
            }
        }
    }
}

// The backward split (Zero Bubble's B and W): two micro-batches run as F0 B0 F1 B1 W0 W1, the
// weight-gradient GEMMs deferred at B and run at W, give the fused backwards' gradients bit for
// bit (the same GEMMs, each gradient accumulated in the same order), with and without activation
// checkpointing and in bf16; before W the blocks' matrices have no gradient yet, and the blocks'
// after_backward hooks run at W, not at B.
TEST(Transformer, SplitBackwardIsBitIdentical) {
    struct Recorder : GroupHooks {
        std::vector<int> after;
        void after_backward(int g) override { after.push_back(g); }
    };
    const RunConfig runs[] = {
        {}, {.activation_checkpointing = true}, {.compute_dtype = DType::bf16}};
    for (const char* json : {kGpt2, kLlama}) {
        for (const RunConfig& run : runs) {
            Model a = make(json, run), b = make(json, run);
            const ModelConfig& c = a.model->config();
            const TrainBatch b0 = batch(c, 2, 9, 3), b1 = batch(c, 2, 9, 4);
            a.model->forward_backward(b0, 0.1f);
            a.model->forward_backward(b1, 0.1f);
            const int L = static_cast<int>(c.n_layers);
            const Transformer::GroupRange all{0, L + 1};
            Recorder h;
            WeightGradQueue q0, q1;
            for (auto [bt, q] : {std::pair{&b0, &q0}, std::pair{&b1, &q1}}) {
                b.model->begin_micro_batch(*bt);
                b.model->forward_blocks(all, h);
                b.model->head_loss(true, 0.1f, 1.0f, h);
                b.model->defer_weight_grads(q);
                b.model->backward_blocks(all, 1.0f, h);
                b.model->defer_weight_grads(nullptr);
                EXPECT_EQ(q->bytes(), b.model->deferred_weight_grad_bytes(all, 2, 9))
                    << c.model_type;
            }
            // After both Bs: only the head and the embedding were handed over; a block's fused
            // QKV matrix has no gradient yet.
            EXPECT_EQ(h.after, (std::vector<int>{L + 1, 0, L + 1, 0})) << c.model_type;
            const Tensor gq =
                b.model->binding().g(b.model->layout().id("blocks.0.attn.qkv.weight"));
            const Tensor gq_h = gq.to(core::Device::cpu()).to(DType::f32);
            for (int64_t i = 0; i < gq_h.numel(); ++i) {
                ASSERT_EQ(gq_h.data<float>()[i], 0.0f) << c.model_type << " element " << i;
            }
            b.model->weight_backward(all, q0, h);
            b.model->weight_backward(all, q1, h);
            EXPECT_TRUE(q0.empty() && q1.empty());
            std::vector<int> want_after{L + 1, 0, L + 1, 0};
            for (int k = 0; k < 2; ++k) {
                for (int g = L; g >= 1; --g) want_after.push_back(g);
            }
            EXPECT_EQ(h.after, want_after) << c.model_type;
            for (int g = 0; g < a.model->layout().n_groups(); ++g) {
                const Tensor& ga = a.params->group_grads(g);
                const Tensor& gb = b.params->group_grads(g);
                EXPECT_EQ(std::memcmp(ga.data_ptr(), gb.data_ptr(), ga.nbytes()), 0)
                    << c.model_type << " group " << g << " checkpointing "
                    << run.activation_checkpointing << " " << core::to_string(run.compute_dtype);
            }
        }
    }
}

TEST(Transformer, KvCacheDecodeEqualsFullForward) {
    for (const char* json : {kGpt2, kLlama, kQwen, kMixtral}) {
        Model s = make(json);
        const ModelConfig& c = s.model->config();
        const int64_t T = 11;
        Rng rng(9);
        Tensor ids = zs::test::random_ints(rng, {1, T}, DType::i32, 0, c.vocab_size - 1);
        Tensor full = s.model->forward_logits(ids);  // [T, V]
        ContiguousKvCache kv(c, 32, DType::f32);
        // Prefill 6 tokens, then decode one at a time.
        const int64_t P = 6;
        Tensor pos = Tensor::empty({T}, DType::i32);
        for (int64_t i = 0; i < T; ++i) pos.data<int32_t>()[i] = static_cast<int32_t>(i);
        std::vector<int64_t> all(P);
        for (int64_t i = 0; i < P; ++i) all[static_cast<size_t>(i)] = i;
        Tensor pre =
            s.model->forward_tokens(ids.view({T}).slice(0, 0, P), pos.slice(0, 0, P), kv, all);
        kv.commit(P);
        auto want = zs::ops::reference::from_tensor(full.slice(0, 0, P));
        EXPECT_TRUE(zs::test::all_close(pre, want, {1e-4, 1e-4}, c.model_type + " prefill"));
        for (int64_t t = P; t < T; ++t) {
            Tensor step = s.model->forward_tokens(ids.view({T}).slice(0, t, t + 1),
                                                  pos.slice(0, t, t + 1), kv, {0});
            kv.commit(1);
            EXPECT_TRUE(
                zs::test::all_close(step, zs::ops::reference::from_tensor(full.slice(0, t, t + 1)),
                                    {1e-4, 1e-4}, c.model_type + " decode"));
        }
    }
}

TEST(Transformer, Bf16ComputeTracksF32) {
    Model f = make(kLlama), h = make(kLlama, {.compute_dtype = DType::bf16});
    TrainBatch b = batch(f.model->config(), 2, 8, 4);
    double lf = f.model->forward_loss(b).mean(), lh = h.model->forward_loss(b).mean();
    EXPECT_NEAR(lf, lh, 2e-2 * std::fabs(lf));
}

TEST(Transformer, ParameterCountMatchesLayout) {
    for (const char* json : {kGpt2, kLlama, kQwen, kMixtral}) {
        Transformer m(parse_hf_config(json, "t"), {});
        EXPECT_EQ(m.layout().total_numel(), m.config().n_params()) << m.config().model_type;
    }
}

TEST(Config, ErrorsNameTheField) {
    try {
        parse_hf_config(R"({"model_type": "llama", "vocab_size": 10})", "cfg.json");
        FAIL();
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("cfg.json: missing required field 'hidden_size'"),
                  std::string::npos)
            << e.what();
    }
    EXPECT_THROW(parse_hf_config(R"({"model_type": "bert"})", "c"), ConfigError);
    EXPECT_THROW(parse_hf_config(R"({"model_type": "gpt2", "vocab_size": "many"})", "c"),
                 ConfigError);
    EXPECT_THROW(parse_hf_config("{not json", "c"), ConfigError);
    EXPECT_THROW(parse_hf_config(R"({"model_type": "llama", "vocab_size": 10, "hidden_size": 32,
        "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 3,
        "intermediate_size": 8, "max_position_embeddings": 8})",
                                 "c"),
                 ConfigError);
}

}  // namespace
}  // namespace zs::models
