// Expert parallelism (DeepSpeed-MoE) in the trainer: a tiny Mixtral-shaped model trained over
// thread-ranks with its experts sharded over ep ranks gives the single-rank run's losses step for
// step; the expert parameters and their optimizer states per rank are 1/ep of the single rank's;
// with a capacity factor the dropped assignments (visible in the losses) are those of ep = 1.
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "comm/communicator.h"
#include "io/safetensors.h"
#include "io/token_dataset.h"
#include "tests/test_util.h"
#include "train/trainer.h"
#include "train/trainer_test_util.h"

namespace zs::train {
namespace {

namespace fs = std::filesystem;
using core::Tensor;

// A tiny Mixtral (4 experts, top-2, router aux loss) over 3500 training and 500 validation tokens;
// runs at sequence 12 without evaluation.
struct MoeScratch : TrainScratch {
    explicit MoeScratch(const std::string& name)
        : TrainScratch("moe_ep_" + name, R"({"model_type": "mixtral", "vocab_size": 61,
            "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 2, "intermediate_size": 24, "max_position_embeddings": 64,
            "num_local_experts": 4, "num_experts_per_tok": 2, "router_aux_loss_coef": 0.02,
            "output_router_logits": true})",
                       5, 3500, 500) {}
    RunOptions run(int64_t steps) const { return run_options(steps, 12, 0); }
};

// 4 sequences per step in micro-batches of 1 (so every rank's routing sees the sequences a
// single rank's micro-batches see), AdamW with clipping; `world` ranks = dp x tp. `extra`: more
// top-level keys (", \"moe\": {...}").
TrainConfig ep_config(int world, int tp, int ep, int stage, const std::string& extra = "") {
    return parse_ds_config(
        R"({"train_batch_size": 4, "train_micro_batch_size_per_gpu": 1,
            "optimizer": {"type": "AdamW", "params": {"lr": 2e-3, "weight_decay": 0.01}},
            "gradient_clipping": 1.0, "tensor_parallel": {"autotp_size": )" +
            std::to_string(tp) + R"(}, "expert_parallel_size": )" + std::to_string(ep) +
            R"(, "zero_optimization": {"stage": )" + std::to_string(stage) + "}" + extra + "}",
        "ep", world);
}

std::vector<StepStats> single_rank(const models::ModelConfig& mc, const RunOptions& run) {
    return train_single(mc, ep_config(1, 1, 1, 0), run);
}

struct Case {
    int world, tp, ep, stage;
    std::string str() const {
        return "world " + std::to_string(world) + " tp " + std::to_string(tp) + " ep " +
               std::to_string(ep) + " ZeRO-" + std::to_string(stage);
    }
};

// Runs `c` over thread-ranks; on every rank each step's loss is within 1e-5 relative of
// `want`'s and its gradient norm within 1e-4.
void expect_ep_run_matches(const models::ModelConfig& mc, const RunOptions& run, const Case& c,
                           const std::vector<StepStats>& want) {
    expect_ranks_match(
        run_ranks(c.world, mc, ep_config(c.world, c.tp, c.ep, c.stage), run,
                  [&](int, Trainer& t) { EXPECT_EQ(t.model().ep_size(), c.ep) << c.str(); }),
        want, 1e-4, c.str());
}

// The issue's bar: ep 2 and 4, dp x ep = 2 x 2 at ZeRO 0-3 and tp x ep = 2 x 2, no token
// dropping, give the single rank's losses to 1e-5 relative over 50 fp32 steps.
TEST(ExpertParallelTraining, FiftyStepsEqualTheSingleRank) {
    MoeScratch s("fifty");
    const RunOptions run = s.run(50);
    const std::vector<StepStats> want = single_rank(s.mc, run);
    ASSERT_EQ(want.size(), 50u);
    const Case cases[] = {{2, 1, 1, 0}, {2, 1, 2, 0}, {4, 1, 4, 1}, {4, 1, 2, 0},
                          {4, 1, 2, 1}, {4, 1, 2, 2}, {4, 1, 2, 3}, {4, 2, 2, 1}};
    for (const Case& c : cases) expect_ep_run_matches(s.mc, run, c, want);
}

// Qwen2-MoE-shaped (a sigmoid-gated shared expert beside the routed ones, top-k probabilities not
// renormalised): ep 2 and dp x ep 2 x 2 at ZeRO-3 give the single rank's losses over 50 steps.
TEST(ExpertParallelTraining, Qwen2MoeFiftyStepsEqualTheSingleRank) {
    MoeScratch s("qwen2_moe");
    const models::ModelConfig mc = models::parse_hf_config(
        R"({"model_type": "qwen2_moe", "vocab_size": 61, "hidden_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 40, "moe_intermediate_size": 16,
            "shared_expert_intermediate_size": 24, "num_experts": 4, "num_experts_per_tok": 2,
            "norm_topk_prob": false, "max_position_embeddings": 64,
            "router_aux_loss_coef": 0.02, "output_router_logits": true})",
        "test");
    ASSERT_EQ(mc.moe.shared_intermediate, 24);
    const RunOptions run = s.run(50);
    const std::vector<StepStats> want = single_rank(mc, run);
    ASSERT_EQ(want.size(), 50u);
    for (const Case& c : {Case{2, 1, 2, 1}, Case{4, 1, 2, 3}}) {
        expect_ep_run_matches(mc, run, c, want);
    }
}

// DeepSpeed's capacity rule drops assignments per rank, from that rank's own routing: with a
// capacity factor small enough to drop, ep 2 keeps exactly the ep 1 run's assignments (same dp),
// so the losses agree; they differ from the run without dropping (the drop is real).
TEST(ExpertParallelTraining, CapacityDropsAreThoseOfEpOne) {
    MoeScratch s("capacity");
    models::ModelConfig mc = s.mc;
    mc.moe.capacity_factor = 0.5f;
    mc.moe.min_capacity = 1;
    const RunOptions run = s.run(8);
    const std::vector<StepStats> ep1 = run_ranks(2, mc, ep_config(2, 1, 1, 1), run)[0];
    ASSERT_EQ(ep1.size(), 8u);
    expect_ep_run_matches(mc, run, {2, 1, 2, 1}, ep1);
    const std::vector<StepStats> no_drop = single_rank(s.mc, run);
    EXPECT_GT(std::fabs(no_drop[0].loss - ep1[0].loss), 1e-4);
}

// The ds_config "moe" section's router z-loss: it changes training (the losses differ from the
// run without it from the first step: the reported loss includes coef x z) and its gradient
// travels through expert parallelism like the rest (ep 2 equals ep 1 on the same dp); the
// section is refused for a dense model.
TEST(ExpertParallelTraining, RouterZLossFromTheMoeSection) {
    MoeScratch s("zloss");
    const RunOptions run = s.run(8);
    const std::string moe = R"(, "moe": {"router_z_loss_coef": 0.05})";
    const std::vector<StepStats> ep1 =
        run_ranks(2, s.mc, ep_config(2, 1, 1, 1, moe), run,
                  [](int, Trainer& t) { EXPECT_EQ(t.model().config().moe.z_loss_coef, 0.05f); })[0];
    ASSERT_EQ(ep1.size(), 8u);
    expect_ranks_match(run_ranks(2, s.mc, ep_config(2, 1, 2, 1, moe), run), ep1, 1e-4,
                       "z-loss ep 2");
    const std::vector<StepStats> plain = run_ranks(2, s.mc, ep_config(2, 1, 1, 1), run)[0];
    // Step 1 starts from the same weights: the loss differs by coef x z > 0 only.
    EXPECT_GT(ep1[0].loss - plain[0].loss, 1e-6);
    // Its gradient changed the updates: the gap moves (the z term shrinks as training lowers it).
    EXPECT_GT(std::fabs((ep1[7].loss - plain[7].loss) - (ep1[0].loss - plain[0].loss)), 1e-4);
    models::ModelConfig dense = models::parse_hf_config(
        R"({"model_type": "llama", "vocab_size": 61, "hidden_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 4, "intermediate_size": 24, "max_position_embeddings": 64})",
        "test");
    auto comm = comm::make_self();
    EXPECT_THROW(Trainer(dense, ep_config(1, 1, 1, 0, moe), run, *comm), ConfigError);
}

// Memory per rank: the expert parameters and their AdamW states (master weights, m, v) of a rank
// at ep are 1/ep of the single rank's, measured from the engine's buffers (ZeRO-0: every rank
// holds whole groups), while the dense part is the same.
TEST(ExpertParallelTraining, ExpertMemoryPerRankIsOneOverEp) {
    MoeScratch s("memory");
    const RunOptions run = s.run(1);
    auto expert_and_dense = [](Trainer& t) {
        const models::ParamLayout& l = t.model().layout();
        int64_t expert = 0, dense = 0;
        for (int g = 0; g < l.n_groups(); ++g) {
            int64_t bytes = t.engine().master_shard(g).nbytes();
            for (int i = 0; i < t.engine().n_states(); ++i)
                bytes += t.engine().state_shard(g, i).nbytes();
            // Without ep the experts share their block's buffer: split it by parameter.
            int64_t ex = 0;
            for (models::ParamId id : l.group(g).params) {
                if (l.param(id).name.find(".moe.experts.") != std::string::npos)
                    ex += l.param(id).numel();
            }
            const double frac = static_cast<double>(ex) / static_cast<double>(l.group(g).numel);
            expert += static_cast<int64_t>(std::llround(frac * static_cast<double>(bytes)));
            dense += bytes - static_cast<int64_t>(std::llround(frac * static_cast<double>(bytes)));
        }
        return std::pair{expert, dense};
    };
    std::pair<int64_t, int64_t> one;
    {
        auto comm = comm::make_self();
        Trainer t(s.mc, ep_config(1, 1, 1, 0), run, *comm);
        one = expert_and_dense(t);
    }
    ASSERT_GT(one.first, 0);
    for (int ep : {2, 4}) {
        comm::run_local(ep, [&](int, comm::Communicator& comm) {
            Trainer t(s.mc, ep_config(ep, 1, ep, 0), run, comm);
            const auto [expert, dense] = expert_and_dense(t);
            // Padding of the flat groups aside (at most kAlign elements per parameter).
            EXPECT_NEAR(static_cast<double>(expert), static_cast<double>(one.first) / ep,
                        0.01 * static_cast<double>(one.first))
                << "ep " << ep;
            EXPECT_NEAR(static_cast<double>(dense), static_cast<double>(one.second),
                        0.01 * static_cast<double>(one.second))
                << "ep " << ep;
        });
    }
}

// Checkpoints hold the whole (ep-free) model, so they reshard across ep: saved at dp x ep 2 x 2
// (ZeRO-3) and resumed at ep 1 (dp 2) or ep 4, or saved at ep 1 and resumed at tp x ep 2 x 2,
// the next losses equal the uninterrupted single-rank run's; the HF export gathered at ep 2
// equals the single rank's weights.
TEST(ExpertParallelTraining, CheckpointsReshardAcrossEp) {
    MoeScratch s("ckpt");
    const RunOptions full = s.run(8);
    const std::vector<StepStats> want = train_single(
        s.mc, ep_config(1, 1, 1, 0), full, [&](Trainer& t) { t.export_hf(s.root + "/hf_want"); });
    ASSERT_EQ(want.size(), 8u);
    const std::pair<Case, Case> cases[] = {
        {{4, 1, 2, 3}, {2, 1, 1, 1}}, {{4, 1, 2, 3}, {4, 1, 4, 2}}, {{2, 1, 1, 2}, {4, 2, 2, 0}}};
    for (const auto& [save, load] : cases) {
        const std::string at = "saved at " + save.str() + ", loaded at " + load.str();
        fs::remove_all(s.root + "/ckpt");
        RunOptions first = s.run(4);
        first.save_dir = s.root + "/ckpt";
        run_ranks(save.world, s.mc, ep_config(save.world, save.tp, save.ep, save.stage), first);
        ASSERT_TRUE(fs::exists(s.root + "/ckpt/step-4/manifest.json")) << at;
        expect_resume_matches(load.world, s.mc, ep_config(load.world, load.tp, load.ep, load.stage),
                              full, s.root + "/ckpt", 4, want,
                              load.ep > 1 ? s.root + "/hf_got" : "", at);
        if (load.ep == 1) continue;
        expect_safetensors_close(s.root + "/hf_want/model.safetensors",
                                 s.root + "/hf_got/model.safetensors", 1e-5, at);
        fs::remove_all(s.root + "/hf_got");
    }
}

// The step's MoE metrics: each expert's share of the routing sums to 1 and is the same at ep 1
// and ep 2 (the routing is), and the all-to-all bytes a rank sends per step lie between the
// counts alone, L x micro-batches x (ep - 1) x E/ep x 8, and every routed row crossing
// (C f32 values four times: out, back, their gradients out and back), 0 without ep.
TEST(ExpertParallelTraining, ExpertLoadAndAllToAllBytesPerStep) {
    MoeScratch s("load");
    const RunOptions run = s.run(3);
    std::vector<std::vector<double>> loads[2];
    int64_t bytes[2] = {0, 0};
    for (int ep : {1, 2}) {
        const std::vector<StepStats> got = run_ranks(2, s.mc, ep_config(2, 1, ep, 1), run)[0];
        for (const StepStats& st : got) {
            loads[ep - 1].push_back(st.expert_load);
            double sum = 0;
            for (double v : st.expert_load) sum += v;
            EXPECT_NEAR(sum, 1.0, 1e-6);
            bytes[ep - 1] = std::max(bytes[ep - 1], st.a2a_bytes);
        }
    }
    ASSERT_EQ(loads[0].size(), 3u);
    for (size_t i = 0; i < 3; ++i) {
        ASSERT_EQ(loads[0][i].size(), 4u);
        for (size_t e = 0; e < 4; ++e) EXPECT_NEAR(loads[0][i][e], loads[1][i][e], 1e-6);
    }
    EXPECT_EQ(bytes[0], 0);
    const int64_t L = 2, micro = 2, E = 4, P = 2, N = 12, k = 2, C = 32;  // 2 micro-batches a rank
    const int64_t counts = L * micro * (P - 1) * (E / P) * 8;
    EXPECT_GT(bytes[1], counts);
    EXPECT_LE(bytes[1], counts + L * micro * N * k * C * 4 * 4);
}

// TED's duplicate-token elimination: under tp x ep = 2 x 2 each tp rank dispatches half of the
// tokens its tp peer holds too, so at the first step (same weights, same routing as dp x ep =
// 2 x 2 without tp) the two tp ranks' all-to-all payloads add up to the tp-1 rank's exactly, and
// each moves about half of it; the counts (L x micro x (P - 1) x E/P x 8 bytes) are per rank as
// before. (50-step equivalence of tp x ep: FiftyStepsEqualTheSingleRank.)
TEST(ExpertParallelTraining, TedDispatchesEachTokenOnce) {
    MoeScratch s("ted");
    const RunOptions run = s.run(1);
    // Each rank's all-to-all bytes in its one step at ep 2, and at tp x ep 2 x 2.
    auto first_step_bytes = [&](int world, int tp) {
        std::vector<int64_t> bytes;
        for (const std::vector<StepStats>& steps :
             run_ranks(world, s.mc, ep_config(world, tp, 2, 1), run)) {
            bytes.push_back(steps.at(0).a2a_bytes);
        }
        return bytes;
    };
    const std::vector<int64_t> one = first_step_bytes(2, 1), ted = first_step_bytes(4, 2);
    const int64_t L = 2, micro = 2, E = 4, P = 2;  // 2 micro-batches a dp rank
    const int64_t counts = L * micro * (P - 1) * (E / P) * 8;
    for (int d = 0; d < 2; ++d) {  // dp rank d: world ranks 2d (tp 0) and 2d + 1 (tp 1)
        const int64_t payload = one[d] - counts;
        const int64_t a = ted[2 * d] - counts, b = ted[2 * d + 1] - counts;
        EXPECT_GT(payload, 0);
        EXPECT_EQ(a + b, payload) << "dp rank " << d;
        EXPECT_GT(a, 0);
        EXPECT_GT(b, 0);
        EXPECT_LT(std::max(a, b), payload * 3 / 4) << "dp rank " << d;
    }
}

// Settings that cannot work are refused by name.
TEST(ExpertParallelTraining, RefusesInconsistentSizes) {
    MoeScratch s("refuse");
    const RunOptions run = s.run(1);
    // ep must divide the data-parallel ranks.
    EXPECT_THROW(ep_config(2, 1, 4, 0), ConfigError);
    try {
        ep_config(4, 2, 4, 0);
        ADD_FAILURE() << "ep 4 over 2 data-parallel ranks accepted";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("expert_parallel_size"), std::string::npos)
            << e.what();
    }
    // ep must divide the experts (3 experts, ep 2).
    models::ModelConfig three = s.mc;
    three.moe.n_experts = 3;
    comm::run_local(2, [&](int, comm::Communicator& comm) {
        EXPECT_THROW(Trainer(three, ep_config(2, 1, 2, 0), run, comm), ConfigError);
    });
    // A dense model has no experts to shard.
    models::ModelConfig dense = models::parse_hf_config(
        R"({"model_type": "llama", "vocab_size": 61, "hidden_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 24,
            "max_position_embeddings": 64})",
        "test");
    comm::run_local(2, [&](int, comm::Communicator& comm) {
        EXPECT_THROW(Trainer(dense, ep_config(2, 1, 2, 0), run, comm), ConfigError);
    });
}

}  // namespace
}  // namespace zs::train
