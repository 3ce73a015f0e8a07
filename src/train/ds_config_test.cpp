// ds_config.json against DeepSpeed itself (tests/fixtures/deepspeed/reference.json, recorded by
// tools/reference/make_ds_fixtures.py with DeepSpeed 0.19.8): the lr of every step of each
// scheduler, the dynamic loss scaler over a scripted overflow sequence, and the batch-size triple
// resolution (including the cases DeepSpeed rejects). Plus parsing, errors naming key paths, and
// unknown-key suggestions.
#include "train/ds_config.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/atomic_file.h"
#include "tests/test_util.h"

namespace zs::train {
namespace {

nlohmann::json fixture() {
    return nlohmann::json::parse(
        io::read_file(zs::test::source_path("tests/fixtures/deepspeed/reference.json")));
}

TEST(DeepSpeedSchedules, MatchDeepSpeedStepForStep) {
    nlohmann::json f = fixture();
    ASSERT_GE(f["schedules"].size(), 8u);
    for (const auto& s : f["schedules"]) {
        nlohmann::json cfg = {
            {"train_batch_size", 1},
            {"optimizer", {{"type", "AdamW"}, {"params", {{"lr", s["optimizer_lr"]}}}}},
            {"scheduler", {{"type", s["type"]}, {"params", s["params"]}}}};
        TrainConfig c = parse_ds_config(cfg.dump(), "fixture", 1);
        LrSchedule sched(c.scheduler);
        const auto& lrs = s["lr"];
        for (size_t k = 0; k < lrs.size(); ++k) {
            double want = lrs[k].get<double>();
            double got = sched.lr_for_step(static_cast<int64_t>(k) + 1);
            EXPECT_NEAR(got, want, 1e-12 * std::max(1.0, std::fabs(want)) + 1e-15)
                << s["type"] << " " << s["params"].dump() << " step " << k + 1;
            double b = sched.beta1_at(static_cast<int64_t>(k) - 1);
            if (b >= 0) {
                EXPECT_NEAR(b, s["beta1"][k].get<double>(), 1e-12) << "beta1 step " << k + 1;
            }
        }
    }
}

TEST(DeepSpeedLossScaler, MatchesDynamicLossScaler) {
    nlohmann::json f = fixture();
    for (const auto& t : f["loss_scaler"]) {
        LossScalerConfig c;
        c.initial_scale_power = t["config"]["initial_scale_power"];
        c.loss_scale_window = t["config"]["loss_scale_window"];
        c.min_loss_scale = t["config"]["min_loss_scale"];
        c.hysteresis = t["config"]["hysteresis"];
        c.consecutive_hysteresis = t["config"]["consecutive_hysteresis"];
        LossScaler s(c);
        for (size_t i = 0; i < t["overflow"].size(); ++i) {
            bool ov = t["overflow"][i].get<int>() != 0;
            if (ov && s.scale() == c.min_loss_scale && (c.hysteresis == 1)) {
                EXPECT_THROW(s.update(ov), zs::Error);  // DeepSpeed raises here by default
                break;
            }
            s.update(ov);
            EXPECT_EQ(s.scale(), t["scale_after"][i].get<double>())
                << "event " << i << " of " << t["config"].dump();
        }
    }
}

TEST(DeepSpeedBatch, TripleResolvedAsDeepSpeed) {
    nlohmann::json f = fixture();
    for (const auto& b : f["batch"]) {
        nlohmann::json cfg = nlohmann::json::object();
        const auto& in = b["in"];
        if (!in[0].is_null()) cfg["train_batch_size"] = in[0];
        if (!in[1].is_null()) cfg["train_micro_batch_size_per_gpu"] = in[1];
        if (!in[2].is_null()) cfg["gradient_accumulation_steps"] = in[2];
        int world = in[3];
        if (b["ok"].get<bool>()) {
            TrainConfig c = parse_ds_config(cfg.dump(), "batch", world);
            EXPECT_EQ(c.train_batch_size, b["out"][0].get<int64_t>()) << in.dump();
            EXPECT_EQ(c.micro_batch, b["out"][1].get<int64_t>()) << in.dump();
            EXPECT_EQ(c.grad_accum, b["out"][2].get<int64_t>()) << in.dump();
        } else {
            EXPECT_THROW(parse_ds_config(cfg.dump(), "batch", world), ConfigError) << in.dump();
        }
    }
}

TEST(DsConfig, RealisticConfigsParse) {
    TrainConfig c = parse_ds_config(R"({
        "train_batch_size": 16, "gradient_accumulation_steps": 2,
        "optimizer": {"type": "Adam", "params": {"lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}},
        "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_num_steps": 100, "total_num_steps": 1000, "warmup_max_lr": 3e-4}},
        "gradient_clipping": 1.0, "bf16": {"enabled": true},
        "zero_optimization": {"stage": 3, "reduce_bucket_size": 5e8, "stage3_prefetch_bucket_size": 5e7,
                              "stage3_param_persistence_threshold": 1e5, "offload_optimizer": {"device": "cpu", "pin_memory": true}},
        "activation_checkpointing": {"partition_activations": false},
        "steps_per_print": 5, "wall_clock_breakdown": false})",
                                    "ds.json", 4);
    EXPECT_EQ(c.micro_batch, 2);
    EXPECT_EQ(c.optimizer.kind,
              optim::Kind::adamw);  // "Adam" means AdamW unless adam_w_mode: false
    EXPECT_FLOAT_EQ(c.optimizer.beta2, 0.95f);
    EXPECT_EQ(c.precision, Precision::bf16);
    EXPECT_EQ(c.zero.stage, 3);
    EXPECT_TRUE(c.zero.overlap_comm);  // DeepSpeed's default for stage 3
    EXPECT_EQ(c.zero.reduce_bucket_size, 500000000);
    EXPECT_EQ(c.zero.offload_optimizer, OffloadDevice::cpu);
    EXPECT_TRUE(c.activation_checkpointing);
    EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
    TrainConfig l2 = parse_ds_config(
        R"({"train_batch_size": 1, "optimizer": {"type": "Adam", "params": {"adam_w_mode": false}},
                                         "fp16": {"enabled": true, "initial_scale_power": 12}})",
        "ds.json", 1);
    EXPECT_EQ(l2.optimizer.kind, optim::Kind::adam);
    EXPECT_EQ(l2.precision, Precision::fp16);
    EXPECT_EQ(l2.fp16.initial_scale_power, 12);
}

TEST(DsConfig, BadValuesNameTheKeyPath) {
    struct Case {
        const char* json;
        const char* want;
    };
    Case cases[] = {
        {R"({"train_batch_size": 8, "zero_optimization": {"stage": 4}})",
         "zero_optimization.stage"},
        {R"({"train_batch_size": 8, "zero_optimization": {"stage": "three"}})",
         "zero_optimization.stage"},
        {R"({"train_batch_size": 8, "optimizer": {"type": "Adagrad"}})", "optimizer.type"},
        {R"({"train_batch_size": 8, "optimizer": {"type": "AdamW", "params": {"betas": [0.9]}}})",
         "optimizer.params.betas"},
        {R"({"train_batch_size": 8, "scheduler": {"type": "WarmupDecayLR", "params": {}}})",
         "scheduler.params.total_num_steps"},
        {R"({"train_batch_size": 8, "fp16": {"enabled": true}, "bf16": {"enabled": true}})",
         "bf16 and fp16"},
        {R"({"train_batch_size": 8, "gradient_clipping": "high"})", "gradient_clipping"},
        {R"({"train_batch_size": 8, "zero_optimization": {"offload_optimizer": {"device": "gpu"}}})",
         "offload_optimizer.device"},
        {R"({"gradient_accumulation_steps": 2})", "train_batch_size"},
        {R"({"train_batch_size": 8,})", "ds.json"},
    };
    for (const Case& k : cases) {
        try {
            parse_ds_config(k.json, "ds.json", 2);
            ADD_FAILURE() << "accepted " << k.json;
        } catch (const zs::Error& e) {
            EXPECT_NE(std::string(e.what()).find(k.want), std::string::npos) << e.what();
        }
    }
}

TEST(DsConfig, UnknownKeysWarnWithSuggestion) {
    TrainConfig c = parse_ds_config(
        R"({"train_batch_size": 8, "gradient_clippng": 1.0, "zero_optimization": {"stage": 2, "overlap_com": true},
            "tensorboard": {"enabled": true}})",
        "ds.json", 1);
    ASSERT_EQ(c.warnings.size(), 3u);
    EXPECT_NE(
        c.warnings[0].find("unknown key 'gradient_clippng' (did you mean 'gradient_clipping'?)"),
        std::string::npos)
        << c.warnings[0];
    bool saw_tb = false, saw_overlap = false;
    for (const std::string& w : c.warnings) {
        saw_tb =
            saw_tb || w.find("'tensorboard' is a DeepSpeed setting zerospeed does not implement") !=
                          std::string::npos;
        saw_overlap = saw_overlap ||
                      w.find("zero_optimization.overlap_com' (did you mean 'overlap_comm'?)") !=
                          std::string::npos;
    }
    EXPECT_TRUE(saw_tb);
    EXPECT_TRUE(saw_overlap);
}

}  // namespace
}  // namespace zs::train
