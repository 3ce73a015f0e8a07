// ds_config.json parsing: DeepSpeed's rules that the fixture cannot exercise (the "Adam" means
// AdamW rule lives in DeepSpeedEngine, not DeepSpeedConfig), a table of bad inputs that must raise
// ConfigError naming the key path, unknown-key warnings with suggestions, the unsupported list,
// "auto", duplicate keys and DeepSpeed's deprecated spellings. Expected values marked "DeepSpeed
// source" are typed from deepspeed 0.19 (engine.py, zero/config.py, config.py), not computed.
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/atomic_file.h"
#include "tests/test_util.h"
#include "train/ds_config.h"
#include "train/loss_scaler.h"
#include "train/lr_schedule.h"

namespace zs::train {
namespace {

TrainConfig parse(const std::string& body, int world = 1) {
    return parse_ds_config(
        R"({"train_batch_size": 8)" + std::string(body.empty() ? "" : ", ") + body + "}", "ds.json",
        world);
}

bool contains(const std::vector<std::string>& v, const std::string& needle) {
    for (const std::string& s : v) {
        if (s.find(needle) != std::string::npos) return true;
    }
    return false;
}

TEST(DsConfigOptimizer, AdamMeansAdamWUnlessAdamWModeIsFalse) {
    struct Case {
        const char* type;
        const char* params;
        optim::Kind want;  // DeepSpeed source: adamw iff name == "adamw" or adam_w_mode (default)
    };
    const Case cases[] = {
        {"Adam", "{}", optim::Kind::adamw},
        {"adam", R"({"adam_w_mode": true})", optim::Kind::adamw},
        {"Adam", R"({"adam_w_mode": false})", optim::Kind::adam},
        {"AdamW", R"({"adam_w_mode": false})", optim::Kind::adamw},
        {"ADAMW", "{}", optim::Kind::adamw},
        {"Lion", "{}", optim::Kind::lion},
        {"SGD", R"({"momentum": 0.9, "nesterov": true})", optim::Kind::sgd},
        {"Adagrad", R"({"lr_decay": 0.01, "initial_accumulator_value": 0})", optim::Kind::adagrad},
        {"Lamb", R"({"max_coeff": 5})", optim::Kind::lamb},
        {"LAMB", "{}", optim::Kind::lamb},
    };
    for (const Case& k : cases) {
        TrainConfig c = parse(std::string(R"("optimizer": {"type": ")") + k.type +
                              R"(", "params": )" + k.params + "}");
        EXPECT_EQ(c.optimizer.kind, k.want) << k.type << " " << k.params;
        EXPECT_EQ(c.optimizer.type, k.type);
        EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
    }
}

TEST(DsConfigOptimizer, AdagradAsTorchBuildsIt) {
    TrainConfig c = parse(R"("optimizer": {"type": "Adagrad", "params": {"weight_decay": 0.1}})");
    EXPECT_DOUBLE_EQ(c.optimizer.lr, 1e-2);  // torch.optim.Adagrad's default
    EXPECT_DOUBLE_EQ(c.optimizer.eps, 1e-10);
    EXPECT_EQ(c.optimizer.options().kind, optim::Kind::adagrad);
    EXPECT_THROW(parse(R"("optimizer": {"type": "Adagrad", "params":
        {"initial_accumulator_value": 0.1}})"),
                 ConfigError);
    // The 1-bit optimizers are named as not implemented yet, not as unknown.
    for (const char* type : {"OneBitLamb", "OneBitAdam", "ZeroOneAdam"}) {
        try {
            parse(std::string(R"("optimizer": {"type": ")") + type + R"(", "params": {}})");
            ADD_FAILURE() << type << " accepted";
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find("not implemented yet"), std::string::npos)
                << e.what();
        }
    }
}

// DeepSpeed source: FusedLamb(lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-8,
// eps_inside_sqrt=False, weight_decay=0., max_grad_norm=0., max_coeff=10.0, min_coeff=0.01,
// amsgrad=False) (deepspeed/ops/lamb/fused_lamb.py); DeepSpeedEngine raises on max_grad_norm.
TEST(DsConfigOptimizer, LambAsDeepSpeedBuildsFusedLamb) {
    TrainConfig d = parse(R"("optimizer": {"type": "Lamb"})");
    EXPECT_EQ(d.optimizer.kind, optim::Kind::lamb);
    EXPECT_EQ(d.optimizer.lr, 1e-3);
    EXPECT_EQ(d.optimizer.beta1, 0.9);
    EXPECT_EQ(d.optimizer.beta2, 0.999);
    EXPECT_EQ(d.optimizer.eps, 1e-8);
    EXPECT_EQ(d.optimizer.weight_decay, 0.0);
    EXPECT_TRUE(d.optimizer.bias_correction);
    EXPECT_FALSE(d.optimizer.eps_inside_sqrt);
    EXPECT_EQ(d.optimizer.max_coeff, 10.0);
    EXPECT_EQ(d.optimizer.min_coeff, 0.01);
    TrainConfig c = parse(R"("optimizer": {"type": "lamb", "params": {"lr": 2e-3,
        "betas": [0.8, 0.99], "eps": 1e-6, "weight_decay": 0.01, "bias_correction": false,
        "eps_inside_sqrt": true, "max_coeff": 3, "min_coeff": 0.1, "amsgrad": false}})");
    EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
    optim::Options o = c.optimizer.options();
    EXPECT_EQ(o.kind, optim::Kind::lamb);
    EXPECT_EQ(c.optimizer.lr, 2e-3);
    EXPECT_EQ(o.beta1, 0.8f);
    EXPECT_EQ(o.beta2, 0.99f);
    EXPECT_EQ(o.eps, 1e-6f);
    EXPECT_EQ(o.weight_decay, 0.01f);
    EXPECT_FALSE(o.bias_correction);
    EXPECT_TRUE(o.eps_inside_sqrt);
    EXPECT_EQ(o.max_coeff, 3.0f);
    EXPECT_EQ(o.min_coeff, 0.1f);
    // An Adam-only key is named as such; a misspelt one gets a suggestion.
    TrainConfig w =
        parse(R"("optimizer": {"type": "Lamb", "params": {"adam_w_mode": true, "max_coef": 5}})");
    EXPECT_TRUE(contains(w.warnings, "optimizer.params.adam_w_mode: not a parameter of Lamb"));
    EXPECT_TRUE(contains(w.warnings, "did you mean 'max_coeff'"));
    EXPECT_EQ(w.optimizer.max_coeff, 10.0);
}

TEST(DsConfigOptimizer, DefaultsAreThoseOfTheOptimizerDeepSpeedBuilds) {
    TrainConfig none = parse("");
    EXPECT_FALSE(none.optimizer.given);
    EXPECT_EQ(none.optimizer.kind, optim::Kind::adamw);
    // DeepSpeed source: FusedAdam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0).
    TrainConfig a = parse(R"("optimizer": {"type": "AdamW"})");
    EXPECT_EQ(a.optimizer.lr, 1e-3);
    EXPECT_EQ(a.optimizer.beta1, 0.9);
    EXPECT_EQ(a.optimizer.beta2, 0.999);
    EXPECT_EQ(a.optimizer.eps, 1e-8);
    EXPECT_EQ(a.optimizer.weight_decay, 0.0);
    EXPECT_TRUE(a.optimizer.bias_correction);
    // torch_adam: torch.optim.AdamW, whose weight_decay defaults to 0.01.
    TrainConfig t = parse(R"("optimizer": {"type": "AdamW", "params": {"torch_adam": true}})");
    EXPECT_EQ(t.optimizer.weight_decay, 0.01);
    // gradient_clipping: DeepSpeed's GRADIENT_CLIPPING_DEFAULT is 1.0; steps_per_print: None.
    EXPECT_EQ(none.gradient_clipping, 1.0);
    EXPECT_FALSE(none.steps_per_print.has_value());
    EXPECT_EQ(none.scheduler.kind, SchedulerKind::constant);
    EXPECT_EQ(LrSchedule(none.scheduler, none.optimizer).lr(5), 1e-3);
    EXPECT_EQ(none.precision, Precision::f32);
    EXPECT_EQ(LossScaler(none.fp16).scale(), 1.0);
    EXPECT_FALSE(LossScaler(none.fp16).update(false));
    // optimizer options handed to the optim layer
    optim::Options o =
        parse(R"("optimizer": {"type": "SGD", "params": {"momentum": 0.5}})").optimizer.options();
    EXPECT_EQ(o.kind, optim::Kind::sgd);
    EXPECT_EQ(o.momentum, 0.5f);
}

TEST(DsConfigPrecision, Fp16StaticAndBf16OldName) {
    TrainConfig f = parse(R"("fp16": {"enabled": true, "loss_scale": 256})");
    EXPECT_EQ(f.precision, Precision::fp16);
    LossScaler s(f.fp16);
    EXPECT_FALSE(s.dynamic());
    EXPECT_EQ(s.scale(), 256.0);
    EXPECT_TRUE(s.update(true));  // an overflowed step is skipped, the static scale stays
    EXPECT_EQ(s.scale(), 256.0);
    TrainConfig b = parse(R"("bfloat16": {"enabled": true})");
    EXPECT_EQ(b.precision, Precision::bf16);
    TrainConfig both = parse(R"("bf16": {"enabled": false}, "bfloat16": {"enabled": true})");
    EXPECT_EQ(both.precision, Precision::f32);  // DeepSpeed reads "bf16" when present
    EXPECT_TRUE(contains(both.warnings, "bfloat16"));
}

TEST(DsConfigZero, AliasesDeprecatedFormsAndAuto) {
    TrainConfig a = parse(R"("zero_optimization": {"stage": 3, "prefetch_bucket_size": 1e6,
        "max_live_parameters": 2e6, "reduce_bucket_size": "auto", "overlap_comm": "auto"})");
    EXPECT_EQ(a.zero.stage3_prefetch_bucket_size, 1'000'000);
    EXPECT_EQ(a.zero.stage3_max_live_parameters, 2'000'000);
    EXPECT_EQ(a.zero.reduce_bucket_size, 500'000'000);  // "auto" = DeepSpeed's default
    EXPECT_TRUE(a.zero.overlap_comm);                   // default: stage == 3
    EXPECT_TRUE(a.warnings.empty()) << a.warnings.front();
    TrainConfig d = parse(R"("zero_optimization": {"stage": 2, "cpu_offload": true,
        "stage3_gather_fp16_weights_on_model_save": true})");
    EXPECT_EQ(d.zero.offload_optimizer.device, OffloadDevice::cpu);
    EXPECT_TRUE(d.zero.stage3_gather_16bit_weights_on_model_save);
    EXPECT_FALSE(d.zero.overlap_comm);
    EXPECT_TRUE(contains(d.warnings, "zero_optimization.cpu_offload: deprecated"));
    TrainConfig old = parse(R"("zero_optimization": true, "allgather_size": 1e7)");
    EXPECT_EQ(old.zero.stage, 1);
    EXPECT_EQ(old.zero.allgather_bucket_size, 10'000'000);
    TrainConfig off =
        parse(R"("zero_optimization": {"stage": 1, "offload_param": {"device": "cpu"}})");
    EXPECT_TRUE(contains(off.warnings, "applies to ZeRO stage 3 only"));
}

TEST(DsConfigAuto, ResolvedAsTheTrainerWouldFromTheFlags) {
    // The shape of the ds_config files transformers' docs publish (zero3 with "auto" throughout).
    const std::string text = R"({
        "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                                   "weight_decay": "auto"}},
        "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": "auto",
            "warmup_max_lr": "auto", "warmup_num_steps": "auto", "total_num_steps": "auto"}},
        "bf16": {"enabled": "auto"},
        "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto"}})";
    // Without the run's values, "auto" where DeepSpeed needs a number is refused, naming flags.
    try {
        parse_ds_config(text, "zero3.json", 2);
        ADD_FAILURE() << "accepted";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("--micro-batch"), std::string::npos) << e.what();
    }
    AutoValues a;
    a.micro_batch = 4;
    a.lr = 3e-4;
    a.warmup = 10;
    a.steps = 200;
    a.hidden_size = 64;
    TrainConfig c = parse_ds_config(text, "zero3.json", 2, &a);
    EXPECT_EQ(c.batch.train_micro_batch_size_per_gpu, 4);
    EXPECT_EQ(c.batch.gradient_accumulation_steps, 1);  // the Trainer's default
    EXPECT_EQ(c.batch.train_batch_size, 8);             // 4 x 1 x 2 ranks
    EXPECT_DOUBLE_EQ(c.optimizer.lr, 3e-4);
    EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.999);
    EXPECT_DOUBLE_EQ(c.optimizer.eps, 1e-8);
    EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 0.0);
    EXPECT_DOUBLE_EQ(c.gradient_clipping, 1.0);
    EXPECT_EQ(c.zero.reduce_bucket_size, 64 * 64);
    EXPECT_EQ(c.zero.stage3_prefetch_bucket_size, static_cast<int64_t>(0.9 * 64 * 64));
    EXPECT_EQ(c.zero.stage3_param_persistence_threshold, 640);
    EXPECT_TRUE(contains(c.resolved_auto, "scheduler.params.total_num_steps = 200 (--steps)"));
    EXPECT_TRUE(contains(c.resolved_auto, "optimizer.params.lr = 0.0003 (--lr)"));
    EXPECT_TRUE(contains(c.resolved_auto, "train_batch_size = 8"));
    EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
}

TEST(DsConfigErrors, BadInputsNameTheKeyPathAndValue) {
    struct Case {
        const char* body;  // inside {"train_batch_size": 8, ...}
        const char* want;  // substring of the message
    };
    const Case cases[] = {
        {R"("zero_optimization": {"stage": "three"})",
         R"(zero_optimization.stage: expected an integer 0-3, got "three")"},
        {R"("zero_optimization": {"stage": 4})",
         "zero_optimization.stage: expected an integer 0-3, got 4"},
        {R"("zero_optimization": {"reduce_bucket_size": -1})",
         "zero_optimization.reduce_bucket_size: expected an integer >= 0, got -1"},
        {R"("zero_optimization": {"allgather_bucket_size": 1.5})",
         "zero_optimization.allgather_bucket_size: expected an integer >= 0, got 1.5"},
        {R"("zero_optimization": {"contiguous_gradients": "yes"})",
         R"(zero_optimization.contiguous_gradients: expected true or false, got "yes")"},
        {R"("zero_optimization": {"offload_optimizer": {"device": "gpu"}})",
         R"(zero_optimization.offload_optimizer.device: expected one of "none", "cpu", "nvme", got "gpu")"},
        {R"("zero_optimization": {"offload_param": {"device": "nvme"}, "stage": 3})",
         "zero_optimization.offload_param.nvme_path: required"},
        {R"("zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu", "ratio": 0.5}})",
         "zero_optimization.offload_optimizer: partial offload"},
        {R"("zero_optimization": {"stage": 0, "compute_grad_norm": false})",
         "zero_optimization.compute_grad_norm"},
        {R"("zero_optimization": {"stage3_prefetch_bucket_size": 1, "prefetch_bucket_size": 2})",
         "zero_optimization.prefetch_bucket_size: given twice"},
        {R"("zero_optimization": {"offload_optimizer": {"device": "cpu"}, "cpu_offload": true})",
         "zero_optimization.cpu_offload: cannot be given together"},
        {R"("zero_optimization": 3)", "zero_optimization: expected an object, got 3"},
        {R"("zero_optimization": {"stage": 3, "zero_quantized_gradients_bits": 2})",
         "zero_optimization.zero_quantized_gradients_bits: expected 8 or 4 (int8 or int4 gradient "
         "codes), got 2"},
        {R"("zero_optimization": {"zero_quantized_gradients_bits": "int4"})",
         R"(zero_optimization.zero_quantized_gradients_bits: expected an integer, got "int4")"},
        {R"("optimizer": {"type": "Muon"})", R"(optimizer.type: "Muon" is not supported)"},
        {R"("optimizer": {"params": {"lr": 1}})", "optimizer.type: required"},
        {R"("optimizer": {"type": "AdamW", "params": {"betas": [0.9]}})",
         "optimizer.params.betas: expected two numbers in [0, 1), got an array"},
        {R"("optimizer": {"type": "AdamW", "params": {"lr": -1}})",
         "optimizer.params.lr: expected a number >= 0, got -1"},
        {R"("optimizer": {"type": "AdamW", "params": {"lr": "auto"}})",
         R"(optimizer.params.lr: "auto" is a Hugging Face Trainer placeholder)"},
        {R"("optimizer": {"type": "AdamW", "params": {"max_grad_norm": 1.0}})",
         "optimizer.params.max_grad_norm"},
        {R"("optimizer": {"type": "Lamb", "params": {"max_grad_norm": 1.0}})",
         "optimizer.params.max_grad_norm: is refused by DeepSpeed"},
        {R"("optimizer": {"type": "Lamb", "params": {"min_coeff": 2, "max_coeff": 1}})",
         "optimizer.params.min_coeff: must be <= max_coeff"},
        {R"("optimizer": {"type": "Lamb", "params": {"max_coeff": -1}})",
         "optimizer.params.max_coeff: expected a number >= 0, got -1"},
        {R"("optimizer": {"type": "Lamb", "params": {"amsgrad": true}})",
         "optimizer.params.amsgrad: FusedLamb does not support"},
        {R"("optimizer": {"type": "Lamb", "params": {"eps_inside_sqrt": "yes"}})",
         R"(optimizer.params.eps_inside_sqrt: expected true or false, got "yes")"},
        {R"("optimizer": {"type": "Adam", "params": {"amsgrad": true}})",
         "optimizer.params.amsgrad"},
        {R"("optimizer": {"type": "SGD", "params": {"nesterov": true}})",
         "optimizer.params.nesterov: Nesterov momentum requires"},
        {R"("optimizer": {"type": "SGD", "params": {"momentum": 0.9, "dampening": 0.1}})",
         "optimizer.params.dampening"},
        {R"("optimizer": {"type": "AdamW", "params": {"torch_adam": true, "bias_correction": false}})",
         "optimizer.params.bias_correction"},
        {R"("scheduler": {"type": "WarmupDecayLR", "params": {}})",
         "scheduler.params.total_num_steps: required by WarmupDecayLR"},
        {R"("scheduler": {"type": "WarmupCosineLR", "params": {"warmup_num_steps": 5}})",
         "scheduler.params.total_num_steps: required by WarmupCosineLR"},
        {R"("scheduler": {"type": "OneCycle", "params": {"cycle_max_lr": 0.1}})",
         "scheduler.params.cycle_min_lr: required by OneCycle"},
        {R"("scheduler": {"type": "OneCycle", "params": {"cycle_min_lr": 0, "cycle_max_lr": 1, "cycle_first_step_size": 0}})",
         "scheduler.params.cycle_first_step_size: must be positive"},
        {R"("scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": 0}})",
         "scheduler.params.warmup_num_steps: expected an integer >= 1, got 0"},
        {R"("scheduler": {"type": "WarmupLR", "params": {"warmup_type": "cosine"}})",
         R"(scheduler.params.warmup_type: expected one of "log", "linear", got "cosine")"},
        {R"("scheduler": {"type": "warmuplr"})", R"(did you mean "WarmupLR"?)"},
        {R"("scheduler": {"type": "CosineAnnealingLR"})", "scheduler.type"},
        {R"("gradient_clipping": "high")",
         R"(gradient_clipping: expected a number >= 0, got "high")"},
        {R"("gradient_clipping": -1)", "gradient_clipping: expected a number >= 0, got -1"},
        {R"("fp16": {"enabled": true, "loss_scale": -1})",
         "fp16.loss_scale: expected a number >= 0"},
        {R"("fp16": {"enabled": true, "loss_scale": true})", "fp16.loss_scale"},
        {R"("fp16": {"enabled": true, "loss_scale_window": 0})",
         "fp16.loss_scale_window: expected an integer >= 1, got 0"},
        {R"("fp16": {"enabled": true, "min_loss_scale": 0})", "fp16.min_loss_scale"},
        {R"("fp16": {"enabled": true, "hysteresis": 0})", "fp16.hysteresis"},
        {R"("fp16": {"enabled": true}, "bf16": {"enabled": true})",
         "fp16.enabled and bf16.enabled cannot both be true"},
        {R"("bf16": {"enabled": true, "bf16_optimizer_states": true})",
         "bf16.bf16_optimizer_states"},
        {R"("bf16": {"enabled": true, "bf16_master_weights_and_grads": true})",
         "bf16_master_weights_and_grads needs ZeRO stage 1, 2 or 3"},
        {R"("communication_data_type": "fp8")",
         R"(communication_data_type: expected one of "fp32", "fp16", "bf16", got "fp8")"},
        {R"("data_types": {"grad_accum_dtype": "int8"})", "data_types.grad_accum_dtype"},
        {R"("checkpoint": {"tag_validation": "strict"})", "checkpoint.tag_validation"},
        {R"("steps_per_print": 0)", "steps_per_print: expected an integer >= 1, got 0"},
        {R"("activation_checkpointing": {"number_checkpoints": "all"})",
         "activation_checkpointing.number_checkpoints"},
        {R"("csv_monitor": {"enabled": true, "output_path": 3})", "csv_monitor.output_path"},
        {R"("gradient_predivide_factor": 0)", "gradient_predivide_factor"},
        {R"("train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 1)",
         "8 != 3 * 1 * 1"},
        {R"("gradient_accumulation_steps": true)",
         "gradient_accumulation_steps: expected an integer, got true"},
        {R"("train_micro_batch_size_per_gpu": "auto")",
         R"(train_micro_batch_size_per_gpu: "auto" is a Hugging Face Trainer placeholder)"},
    };
    for (const Case& k : cases) {
        try {
            parse(k.body);
            ADD_FAILURE() << "accepted " << k.body;
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find(k.want), std::string::npos)
                << "message: " << e.what() << "\nwanted: " << k.want;
            EXPECT_EQ(std::string(e.what()).rfind("ds.json: ", 0), 0u) << e.what();
        }
    }
    // Batch-size rules and malformed documents.
    EXPECT_THROW(parse_ds_config(R"({"gradient_accumulation_steps": 2})", "ds.json", 1),
                 ConfigError);
    EXPECT_THROW(parse_ds_config(R"({"train_batch_size": 8})", "ds.json", 0), ConfigError);
    EXPECT_THROW(parse_ds_config(R"({"train_batch_size": 8,})", "ds.json", 1), zs::Error);
    EXPECT_THROW(parse_ds_config(R"({"train_batch_size": 8, "train_batch_size": 4})", "ds.json", 1),
                 zs::Error);  // DeepSpeed rejects duplicate keys too
    EXPECT_THROW(parse_ds_config("[1, 2]", "ds.json", 1), ConfigError);
    EXPECT_THROW(load_ds_config("/nonexistent/ds_config.json", 1), zs::Error);
}

TEST(DsConfigWarnings, UnknownKeysAtEveryLevelSuggestTheClosestKey) {
    TrainConfig c = parse(R"("gradient_clippng": 1.0,
        "zero_optimization": {"stage": 2, "overlap_com": true,
                              "offload_optimizer": {"device": "cpu", "pin_memroy": false}},
        "optimizer": {"type": "AdamW", "params": {"weight_decy": 0.1}},
        "scheduler": {"type": "WarmupLR", "params": {"warmup_max_l": 0.1}},
        "fp16": {"enabled": false, "initial_scale_pow": 8},
        "completely_unrelated_thing": 1)");
    const std::pair<const char*, const char*> want[] = {
        {"gradient_clippng", "gradient_clipping"},
        {"zero_optimization.overlap_com", "overlap_comm"},
        {"zero_optimization.offload_optimizer.pin_memroy", "pin_memory"},
        {"optimizer.params.weight_decy", "weight_decay"},
        {"scheduler.params.warmup_max_l", "warmup_max_lr"},
        {"fp16.initial_scale_pow", "initial_scale_power"},
    };
    for (const auto& [key, suggestion] : want) {
        EXPECT_TRUE(contains(c.warnings, std::string("unknown key '") + key +
                                             "' (ignored); did you mean '" + suggestion + "'?"))
            << key;
    }
    EXPECT_TRUE(contains(c.warnings, "unknown key 'completely_unrelated_thing' (ignored)"));
    EXPECT_FALSE(contains(c.warnings, "completely_unrelated_thing' (ignored); did you mean"));
    EXPECT_EQ(c.warnings.size(), 7u);
    // Unknown keys leave the rest intact.
    EXPECT_TRUE(c.zero.offload_optimizer.pin_memory);
    EXPECT_FALSE(c.zero.overlap_comm);
    // A key of another optimizer / scheduler is named as such.
    TrainConfig o = parse(R"("optimizer": {"type": "Lion", "params": {"eps": 1e-6}},
        "scheduler": {"type": "WarmupLR", "params": {"total_num_steps": 10}})");
    EXPECT_TRUE(contains(o.warnings, "optimizer.params.eps: not a parameter of Lion"));
    EXPECT_TRUE(
        contains(o.warnings, "scheduler.params.total_num_steps: not a parameter of WarmupLR"));
}

// DeepSpeed 0.19.6 and earlier accept reduce_bucket_size 0 (ge=0), 0.19.7 refuses it (gt=0):
// accepted, with the fact stated, since it changes nothing zerospeed computes.
TEST(DsConfigWarnings, ReduceBucketSizeZeroAcceptedAsDeepSpeedAcceptedIt) {
    TrainConfig c = parse(R"("zero_optimization": {"stage": 2, "reduce_bucket_size": 0})");
    EXPECT_EQ(c.zero.reduce_bucket_size, 0);
    EXPECT_TRUE(contains(c.warnings,
                         "zero_optimization.reduce_bucket_size: 0 is accepted as "
                         "DeepSpeed 0.19.6 and earlier accept it"));
}

TEST(DsConfigWarnings, UnsupportedDeepSpeedSettingsAreListed) {
    TrainConfig c =
        parse(R"("wandb": {"enabled": true, "project": "x"}, "comet": {"enabled": false},
        "zero_optimization": {"stage": 3, "zero_quantized_nontrainable_weights": true,
                              "mics_shard_size": 8, "zero_hpz_partition_size": 1},
        "nebula": {"enabled": true}, "flops_profiler": {"enabled": false}, "pipeline": {"seed_layers": true},
        "tensorboard": {"enabled": true}, "checkpoint": {"load_universal": true})");
    EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
    for (const char* key : {"wandb", "zero_optimization.zero_quantized_nontrainable_weights",
                            "zero_optimization.mics_shard_size", "nebula", "pipeline.seed_layers",
                            "tensorboard", "checkpoint.load_universal"}) {
        EXPECT_TRUE(contains(c.unsupported, std::string("ds.json: ") + key + ":")) << key;
    }
    for (const char* key : {"comet", "flops_profiler", "zero_hpz_partition_size"}) {
        EXPECT_FALSE(contains(c.unsupported, key)) << key;  // disabled or default: nothing asked
    }
    EXPECT_EQ(c.unsupported.size(), 7u);
}

// ZeRO++ qwZ, qgZ and hpZ are implemented (zero/engine.h): accepted, not listed as unsupported,
// read into ZeroConfig with zerospeed's zero_quantized_gradients_bits (default 8). hpZ's size is
// checked against the data-parallel size by the engine (zero/hpz_test.cpp).
TEST(DsConfigZero, ZeroPlusPlusQuantizedCommunicationIsAccepted) {
    TrainConfig c = parse(
        R"("zero_optimization": {"stage": 3, "zero_quantized_weights": true,
        "zero_quantized_gradients": true, "zero_quantized_gradients_bits": 4,
        "zero_hpz_partition_size": 2})");
    EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
    EXPECT_TRUE(c.zero.zero_quantized_weights);
    EXPECT_TRUE(c.zero.zero_quantized_gradients);
    EXPECT_EQ(c.zero.zero_quantized_gradients_bits, 4);
    EXPECT_FALSE(contains(c.unsupported, "zero_quantized_weights"));
    EXPECT_FALSE(contains(c.unsupported, "zero_quantized_gradients"));
    EXPECT_EQ(c.zero.zero_hpz_partition_size, 2);
    EXPECT_TRUE(c.unsupported.empty()) << c.unsupported.front();
    // Defaults, and stage 1: accepted (no effect below the stages they apply to; the engine logs
    // so), as DeepSpeed accepts them there.
    TrainConfig d = parse(R"("zero_optimization": {"stage": 1, "zero_quantized_gradients": true})");
    EXPECT_TRUE(d.zero.zero_quantized_gradients);
    EXPECT_FALSE(d.zero.zero_quantized_weights);
    EXPECT_EQ(d.zero.zero_quantized_gradients_bits, 8);
    EXPECT_TRUE(d.unsupported.empty()) << d.unsupported.front();
    EXPECT_EQ(parse(R"("zero_optimization": {"zero_quantized_gradients_bits": 8})")
                  .zero.zero_quantized_gradients_bits,
              8);
}

TEST(DsConfigErrors, UnimplementedBlocksThatChangeTrainingAreRefused) {
    // Each changes what training computes in the DeepSpeed releases that read it; zerospeed
    // does not implement it, and says so along with what DeepSpeed did and does.
    struct Case {
        const char* block;
        const char* deepspeed;  // the DeepSpeed fact the message states
    };
    for (const Case& k : std::vector<Case>{
             {R"("amp": {"enabled": true, "opt_level": "O1"})", "0.19.8 refuses the key"},
             {R"("progressive_layer_drop": {"enabled": true, "theta": 0.5})",
              "0.19.8 refuses the key"},
             {R"("curriculum_learning": {"enabled": true, "curriculum_type": "seqlen"})",
              "0.19.8 refuses the key"},
             {R"("sparse_attention": {"mode": "fixed"})", "0.19.7 and later refuse the key"},
             {R"("compression_training": {"weight_quantization": {"shared_parameters":
                 {"enabled": true}}})",
              "0.19.7 and later refuse the key"},
             {R"("compression_training": {"layer_reduction": {"enabled": true}})",
              "0.19.7 and later refuse the key"},
             {R"("data_efficiency": {"data_sampling": {"curriculum_learning": {"enabled": true}}})",
              "DeepSpeed 0.19.8's data sampler"},
             {R"("data_efficiency": {"enabled": true, "data_routing": {"random_ltd":
                 {"enabled": true}}})",
              "DeepSpeed 0.19.8 drops tokens"},
         }) {
        try {
            parse(k.block);
            ADD_FAILURE() << k.block << " accepted";
        } catch (const ConfigError& e) {
            const std::string what = e.what();
            EXPECT_NE(what.find("not implemented by zerospeed"), std::string::npos) << what;
            EXPECT_NE(what.find(k.deepspeed), std::string::npos) << what;
        }
    }
    // Asking for nothing: "enabled" false or absent (DeepSpeed's default is false for each), a
    // compression block whose techniques are all off.
    TrainConfig c = parse(R"("amp": {"enabled": false}, "progressive_layer_drop": {"theta": 0.5},
        "curriculum_learning": {"enabled": false}, "elasticity": {"enabled": false},
        "compression_training": {"weight_quantization": {"shared_parameters": {"enabled": false}},
                                 "layer_reduction": {"enabled": false}},
        "data_efficiency": {"enabled": false, "data_sampling": {"curriculum_learning":
                                                                {"enabled": false}}})");
    EXPECT_TRUE(c.unsupported.empty()) << c.unsupported.front();
}

TEST(DsConfigWarnings, UnimplementedBlocksThatLeaveTrainingUnchangedAreListed) {
    // In DeepSpeed these changed I/O, the reduction's form or kernel launches, or were not read.
    TrainConfig c = parse(R"("nebula": {"enabled": true}, "sparse_gradients": true,
        "graph_harvesting": true, "eigenvalue": {"enabled": true},
        "quantize_training": {"enabled": true}, "data_efficiency": {"enabled": true})");
    for (const char* key : {"nebula", "sparse_gradients", "graph_harvesting", "eigenvalue",
                            "quantize_training", "data_efficiency"}) {
        EXPECT_TRUE(contains(c.unsupported, std::string("ds.json: ") + key + ":")) << key;
    }
    EXPECT_EQ(c.unsupported.size(), 6u);
    EXPECT_TRUE(contains(c.unsupported,
                         "sparse_gradients: not implemented by zerospeed: "
                         "embedding gradients are reduced dense, the same sum"));
    EXPECT_TRUE(contains(c.unsupported, "which do not read a top-level \"eigenvalue\""));
}

// --- elasticity: hand-worked cases (the fixture test in ds_config_test.cpp compares ~3,000
// (config, world size) pairs with DeepSpeed 0.19.7 itself), then properties. ---

TrainConfig elastic(const std::string& block, int world, const std::string& extra = "") {
    return parse_ds_config(R"({"elasticity": {"enabled": true, )" + block + "}" + extra + "}",
                           "ds.json", world);
}

void expect_batch(const TrainConfig& c, int64_t tbs, int64_t mbs, int64_t gas) {
    EXPECT_EQ(c.batch.train_batch_size, tbs);
    EXPECT_EQ(c.batch.train_micro_batch_size_per_gpu, mbs);
    EXPECT_EQ(c.batch.gradient_accumulation_steps, gas);
}

TEST(DsConfigElasticity, WorkedExamples) {
    using V = std::vector<int64_t>;
    // max 100, micro [8, 10, 12], version 0.1, 1..1500 ranks. Bases 8, 10, 12 (LCM 120 > 100 is
    // dropped). 100 // 8 = 12 -> HCN 12 -> 96; 100 // 10 = 10 -> HCN 6 -> 60; 100 // 12 = 8 -> 6
    // -> 72. Rank counts: 96 = 8 * 12 = 12 * 8 -> {12} + divisors of 12 up to 6, {8} + {1, 2, 4}:
    // {1, 2, 3, 4, 6, 8, 12} (7); 72 -> {9, 1, 3} + {6, 1, 2, 3} (5); 60 -> {6, 1, 2, 3} +
    // {5, 1} (5). Batch 96; on 4 ranks 96 / 4 = 24, the largest size dividing it is 12, 96 / (12
    // * 4) = 2 steps.
    const char* b1 = R"("max_train_batch_size": 100, "micro_batch_sizes": [8, 10, 12],
                        "max_gpus": 1500, "version": 0.1)";
    TrainConfig c = elastic(b1, 4);
    expect_batch(c, 96, 12, 2);
    EXPECT_EQ(c.elasticity.valid_world_sizes, (V{1, 2, 3, 4, 6, 8, 12}));
    expect_batch(elastic(b1, 3), 96, 8, 4);  // 96 / 3 = 32: 12 no, 10 no, 8 yes
    // 5 ranks: not a count 96 splits over.
    try {
        elastic(b1, 5);
        ADD_FAILURE() << "5 ranks accepted";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("world size 5 is not one the elastic batch fits: "
                                             "batch 96 (version 0.1) fits 1, 2, 3, 4, 6, 8, 12"),
                  std::string::npos)
            << e.what();
    }
    // max 15, micro [3, 5]: 15 // 3 = 5 -> HCN 4 -> 12; 15 // 5 = 3 -> 2 -> 10; LCM 15 = max ->
    // 15. Counts: 12 -> {4, 1, 2}; 10 -> {2, 1}; 15 -> {5, 1} + {3, 1} = {1, 3, 5}. 12 and 15 tie
    // at 3: the larger wins unless prefer_larger_batch is false.
    const char* b2 = R"("max_train_batch_size": 15, "micro_batch_sizes": [3, 5], "version": 0.1)";
    expect_batch(elastic(b2, 3), 15, 5, 1);
    EXPECT_EQ(elastic(b2, 1).elasticity.valid_world_sizes, (V{1, 3, 5}));
    const std::string b3 = std::string(b2) + R"(, "prefer_larger_batch": false)";
    expect_batch(elastic(b3, 2), 12, 3, 2);  // 12 / 2 = 6: 5 no, 3 yes
    EXPECT_EQ(elastic(b3, 2).elasticity.valid_world_sizes, (V{1, 2, 4}));
    // Version 0.2, 8 GPUs a node, ranks 8..64 = 1..8 nodes; per node max 1000 // 8 = 125.
    // 125 // 3 = 41 -> 36 -> 108 (counts {1, 2, 3, 4, 6}); 125 // 4 = 31 -> 24 -> 96 ({1, 2, 4,
    // 8} + {1, 2, 3, 4, 6, 8}: 6); LCM 12: 10 -> 6 -> 72 (6). 96 beats 72 (larger): batch 96 * 8 =
    // 768 for 8, 16, 24, 32, 48, 64 ranks. 8 ranks: 768 / 8 = 96 -> micro 4, 24 steps.
    const char* b4 = R"("max_train_batch_size": 1000, "micro_batch_sizes": [3, 4],
                        "num_gpus_per_node": 8, "min_gpus": 8, "max_gpus": 64)";
    c = elastic(b4, 8);
    expect_batch(c, 768, 4, 24);
    EXPECT_EQ(c.elasticity.valid_world_sizes, (V{8, 16, 24, 32, 48, 64}));
    // 3 ranks is off the list: the largest multiple of micro x 3 <= 1000 over the sizes, 111 *
    // 9 = 999 (micro 3) or 83 * 12 = 996 (micro 4) -> 999, micro 3, 111 steps; valid: [3].
    c = elastic(b4, 3);
    expect_batch(c, 999, 3, 111);
    EXPECT_EQ(c.elasticity.valid_world_sizes, (V{3}));
}

TEST(DsConfigElasticity, BatchKeysNextToTheBlock) {
    const char* block = R"("max_train_batch_size": 100, "micro_batch_sizes": [8, 10, 12],
                           "version": 0.1)";
    // Refused unless ignore_non_elastic_batch_info (DeepSpeedConfig.__init__), even null.
    for (const char* extra :
         {R"(, "train_batch_size": 64)", R"(, "gradient_accumulation_steps": 2)",
          R"(, "train_micro_batch_size_per_gpu": null)"}) {
        try {
            elastic(block, 4, extra);
            ADD_FAILURE() << extra << " accepted";
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find("ignore_non_elastic_batch_info"),
                      std::string::npos)
                << e.what();
        }
    }
    const std::string ignoring = std::string(block) + R"(, "ignore_non_elastic_batch_info": true)";
    TrainConfig c =
        elastic(ignoring, 4, R"(, "train_batch_size": 64, "train_micro_batch_size_per_gpu": 2)");
    expect_batch(c, 96, 12, 2);
    EXPECT_TRUE(contains(c.warnings, "ds.json: train_batch_size: ignored: elasticity"));
    EXPECT_TRUE(contains(c.warnings, "ds.json: train_micro_batch_size_per_gpu: ignored"));
    // A disabled block is ignored, unchecked; one without "enabled" too, with a warning.
    c = parse(R"("elasticity": {"enabled": false, "micro_batch_sizes": "junk"})", 2);
    expect_batch(c, 8, 4, 1);
    EXPECT_FALSE(c.elasticity.enabled);
    c = parse(R"("elasticity": {"max_train_batch_size": 64, "micro_batch_sizes": [4]})", 2);
    expect_batch(c, 8, 4, 1);
    EXPECT_TRUE(contains(c.warnings, "elasticity: has no \"enabled\": true, so it is ignored"));
}

TEST(DsConfigElasticity, InvalidBlocksNameTheKey) {
    struct Case {
        const char* block;
        const char* want;
    };
    for (const Case& k : std::vector<Case>{
             {R"("micro_batch_sizes": [4])", "elasticity.max_train_batch_size: required"},
             {R"("max_train_batch_size": 64)", "elasticity.micro_batch_sizes: required"},
             {R"("max_train_batch_size": 64, "micro_batch_sizes": [4.5])",
              "elasticity.micro_batch_sizes: expected a non-empty list of integers >= 1"},
             {R"("max_train_batch_size": 64, "micro_batch_sizes": [])",
              "elasticity.micro_batch_sizes: expected a non-empty list"},
             {R"("max_train_batch_size": 64, "micro_batch_sizes": [4], "min_gpus": 0)",
              "elasticity.min_gpus: expected an integer in [1, "},
             {R"("max_train_batch_size": 64, "micro_batch_sizes": [4], "min_gpus": 8,
                 "max_gpus": 4)",
              "elasticity.max_gpus: must be >= min_gpus (8), got 4"},
             {R"("max_train_batch_size": 64, "micro_batch_sizes": [4], "version": 0.15)",
              "elasticity.version: expected 0.1 or 0.2, got 0.15"},
             {R"("max_train_batch_size": 64, "micro_batch_sizes": [4], "version": "new")",
              "elasticity.version: expected 0.1 or 0.2, got \"new\""},
             {R"("max_train_batch_size": 64, "micro_batch_sizes": [4], "version": 0.1,
                 "model_parallel_size": 2, "num_gpus_per_node": 2)",
              "elasticity.model_parallel_size: 2 > 1 needs version 0.2"},
             {R"("max_train_batch_size": 64, "micro_batch_sizes": [4], "num_gpus_per_node": 4,
                 "model_parallel_size": 3)",
              "elasticity.num_gpus_per_node: 4 is not divisible by model_parallel_size 3"},
             {R"("max_train_batch_size": 6, "micro_batch_sizes": [4, 8], "version": 0.1)",
              "elasticity.micro_batch_sizes: 8 exceeds max_train_batch_size (6)"},
             {R"("max_train_batch_size": 64, "micro_batch_sizes": [16], "num_gpus_per_node": 8)",
              "= 64 / 8 = 8 (version 0.2 searches per node)"},
             {R"("max_train_batch_size": 64, "micro_batch_sizes": [4], "min_time": -1)",
              "elasticity.min_time: expected a number >= 0"},
         }) {
        try {
            elastic(k.block, 1);
            ADD_FAILURE() << k.block << " accepted";
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find(k.want), std::string::npos) << e.what();
        }
    }
}

// Whatever the config, an accepted elastic batch splits as the triple says, stays within the max,
// uses the largest listed micro-batch that divides the per-rank batch, and the run's world size is
// one the batch fits (for version 0.1, inside [min_gpus, max_gpus]).
TEST(DsConfigElasticity, PropertiesHoldForRandomConfigs) {
    std::mt19937_64 rng(97);
    auto pick = [&](int64_t lo, int64_t hi) {
        return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
    };
    int accepted = 0;
    for (int n = 0; n < 400; ++n) {
        std::vector<int64_t> micro(static_cast<size_t>(pick(1, 4)));
        for (int64_t& m : micro) m = pick(1, 24);
        const int64_t max_batch = pick(24, 5000), min_gpus = pick(1, 8);
        const int64_t max_gpus = min_gpus + pick(0, 300);
        const bool v01 = pick(0, 1) == 0;
        const int64_t per_node = v01 ? 1 : std::vector<int64_t>{1, 2, 4, 8}[pick(0, 3)];
        const std::string block = fmt::format(
            R"("max_train_batch_size": {}, "micro_batch_sizes": {}, "min_gpus": {},
               "max_gpus": {}, "prefer_larger_batch": {}, "version": {}, "num_gpus_per_node": {})",
            max_batch, nlohmann::json(micro).dump(), min_gpus, max_gpus,
            pick(0, 1) ? "true" : "false", v01 ? "0.1" : "0.2", per_node);
        for (int world = 1; world <= 40; ++world) {
            TrainConfig c;
            try {
                c = elastic(block, world);
            } catch (const ConfigError&) {
                continue;  // an incompatible world size, or a micro-batch above the max
            }
            ++accepted;
            SCOPED_TRACE(block + ", world size " + std::to_string(world));
            const BatchConfig& b = c.batch;
            EXPECT_EQ(b.train_batch_size,
                      b.train_micro_batch_size_per_gpu * b.gradient_accumulation_steps * world);
            EXPECT_LE(b.train_batch_size, max_batch);
            EXPECT_GE(b.gradient_accumulation_steps, 1);
            for (int64_t m : micro) {
                if (m > b.train_micro_batch_size_per_gpu) {
                    EXPECT_NE((b.train_batch_size / world) % m, 0) << m;
                }
            }
            EXPECT_NE(std::find(micro.begin(), micro.end(), b.train_micro_batch_size_per_gpu),
                      micro.end());
            const std::vector<int64_t>& valid = c.elasticity.valid_world_sizes;
            EXPECT_NE(std::find(valid.begin(), valid.end(), world), valid.end());
            if (v01) {
                EXPECT_GE(world, min_gpus);
                EXPECT_LE(world, max_gpus);
                for (int64_t w : valid) {  // the batch splits over every listed count
                    EXPECT_TRUE(std::any_of(micro.begin(), micro.end(), [&](int64_t m) {
                        return c.batch.train_batch_size % (m * w) == 0;
                    })) << w;
                }
            }
        }
    }
    EXPECT_GE(accepted, 500);
}

TEST(DsConfigWarnings, SettingsAppliedDifferentlyAreStated) {
    // Parameter offload with fp32 compute: to cpu nothing to move (a note), to nvme listed (the
    // parameters are the master weights); optimizer offload is implemented (nothing said);
    // reductions and accumulation in another dtype than fp32: listed with what happens instead.
    TrainConfig c = parse(R"("zero_optimization": {"stage": 3,
        "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "nvme",
        "nvme_path": "/tmp/x"}}, "communication_data_type": "bf16",
        "data_types": {"grad_accum_dtype": "fp16"})");
    EXPECT_TRUE(c.notes.empty());
    EXPECT_FALSE(contains(c.unsupported, "zero_optimization.offload_optimizer"));
    TrainConfig p =
        parse(R"("zero_optimization": {"stage": 3, "offload_param": {"device": "cpu"}})");
    ASSERT_EQ(p.notes.size(), 1u);
    EXPECT_NE(p.notes[0].find("offload_param.device \"cpu\""), std::string::npos) << p.notes[0];
    EXPECT_TRUE(contains(c.unsupported,
                         "ds.json: zero_optimization.offload_param: device \"nvme\" with fp32"));
    // With bf16 both offloads are implemented: nothing to say.
    TrainConfig b = parse(R"("bf16": {"enabled": true}, "zero_optimization": {"stage": 3,
        "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "nvme",
        "nvme_path": "/tmp/x"}})");
    EXPECT_TRUE(b.notes.empty());
    EXPECT_FALSE(contains(b.unsupported, "offload"));
    EXPECT_TRUE(contains(c.unsupported, "communication_data_type: gradients are reduced in fp32"));
    EXPECT_TRUE(contains(c.unsupported, "grad_accum_dtype: gradients are accumulated in fp32"));
    // fp32 for both: nothing to say.
    TrainConfig d = parse(R"("communication_data_type": "fp32",
        "data_types": {"grad_accum_dtype": "fp32"})");
    EXPECT_TRUE(d.unsupported.empty()) << d.unsupported.front();
    EXPECT_TRUE(d.notes.empty());
}

// Seeded mutations of the example configs (a leaf replaced by a value of another type, or a byte
// of the text changed): each parse either succeeds or raises zs::Error; nothing else escapes.
TEST(DsConfigAio, EveryKeyIsReadOrRefusedByName) {
    // DeepSpeed's defaults when absent (runtime/swap_tensor/constants.py).
    TrainConfig d = parse("");
    EXPECT_EQ(d.aio.block_size, 1048576);
    EXPECT_EQ(d.aio.queue_depth, 8);
    EXPECT_EQ(d.aio.thread_count, 1);
    EXPECT_FALSE(d.aio.single_submit);
    EXPECT_TRUE(d.aio.overlap_events);
    TrainConfig c = parse(R"("aio": {"block_size": 262144, "queue_depth": 32,
        "intra_op_parallelism": 2, "single_submit": true, "overlap_events": false,
        "use_gds": false})");
    EXPECT_EQ(c.aio.block_size, 262144);
    EXPECT_EQ(c.aio.queue_depth, 32);
    EXPECT_EQ(c.aio.thread_count, 2);
    EXPECT_TRUE(c.aio.single_submit);
    EXPECT_FALSE(c.aio.overlap_events);
    EXPECT_TRUE(c.unsupported.empty());
    EXPECT_EQ(parse(R"("aio": {"thread_count": 3})").aio.thread_count, 3);  // the older name
    EXPECT_TRUE(contains(parse(R"("aio": {"use_gds": true})").unsupported, "aio.use_gds"));
    EXPECT_TRUE(contains(parse(R"("aio": {"queue_dept": 4})").warnings, "queue_depth"));
    for (const char* bad : {R"("aio": {"block_size": 5000})", R"("aio": {"queue_depth": 0})",
                            R"("aio": {"thread_count": 2, "intra_op_parallelism": 2})",
                            R"("aio": {"single_submit": "yes"})"}) {
        try {
            parse(bad);
            ADD_FAILURE() << "accepted " << bad;
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find("ds.json: aio."), std::string::npos) << e.what();
        }
    }
    // offload_optimizer's knobs reach the config; fast_init is accepted with a warning.
    TrainConfig o = parse(R"("zero_optimization": {"stage": 2, "sub_group_size": 1000,
        "offload_optimizer": {"device": "nvme", "nvme_path": "/tmp/x", "buffer_count": 3,
        "pin_memory": false, "pipeline_read": true, "fast_init": true}})");
    EXPECT_EQ(o.zero.offload_optimizer.device, OffloadDevice::nvme);
    EXPECT_EQ(o.zero.offload_optimizer.buffer_count, 3);
    EXPECT_FALSE(o.zero.offload_optimizer.pin_memory);
    EXPECT_TRUE(o.zero.offload_optimizer.pipeline_read);
    EXPECT_EQ(o.zero.sub_group_size, 1000);
    EXPECT_TRUE(contains(o.warnings, "fast_init: has no effect"));
}

TEST(DsConfigMoe, GatingKeysReadOrRefusedByName) {
    EXPECT_FALSE(parse("").moe.given);
    TrainConfig c = parse(R"("moe": {"capacity_factor": 1.25, "eval_capacity_factor": 2,
        "min_capacity": 8, "drop_tokens": false, "router_z_loss_coef": 0.001, "use_rts": false,
        "top2_2nd_expert_sampling": false, "noisy_gate_policy": "None"})");
    EXPECT_TRUE(c.moe.given);
    EXPECT_EQ(c.moe.capacity_factor, 1.25);
    EXPECT_EQ(c.moe.eval_capacity_factor, 2.0);
    EXPECT_EQ(c.moe.min_capacity, 8);
    EXPECT_EQ(c.moe.drop_tokens, false);
    EXPECT_EQ(c.moe.router_z_loss_coef, 0.001);
    EXPECT_TRUE(c.warnings.empty());
    // Absent keys stay unset: the model's own gating applies.
    TrainConfig d = parse(R"("moe": {"router_z_loss_coef": 0.01})");
    EXPECT_FALSE(d.moe.capacity_factor.has_value());
    EXPECT_FALSE(d.moe.drop_tokens.has_value());
    EXPECT_TRUE(contains(parse(R"("moe": {"capacity_factr": 1})").warnings, "capacity_factor"));
    const std::pair<const char*, const char*> bad[] = {
        {R"("moe": {"capacity_factor": -1})", "moe.capacity_factor"},
        {R"("moe": {"eval_capacity_factor": "x"})", "moe.eval_capacity_factor"},
        {R"("moe": {"min_capacity": -2})", "moe.min_capacity"},
        {R"("moe": {"drop_tokens": 1.5})", "moe.drop_tokens"},
        {R"("moe": {"router_z_loss_coef": -0.1})", "moe.router_z_loss_coef"},
        {R"("moe": {"use_rts": true})", "moe.use_rts"},
        {R"("moe": {"top2_2nd_expert_sampling": true})", "moe.top2_2nd_expert_sampling"},
        {R"("moe": {"noisy_gate_policy": "RSample"})", "moe.noisy_gate_policy"},
        {R"("moe": {"ep_size": 2})", "expert_parallel_size"},
        {R"("moe": {"num_experts": 8})", "moe.num_experts"},
        {R"("moe": 3)", "moe"},
    };
    for (const auto& [body, key] : bad) {
        try {
            parse(body);
            ADD_FAILURE() << "accepted " << body;
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
        }
    }
}

TEST(DsConfigRobustness, MutatedConfigsRaiseOnlyZsErrors) {
    std::mt19937_64 rng(301);
    const nlohmann::json replacements[] = {"three",
                                           -1,
                                           0,
                                           1e30,
                                           -0.5,
                                           true,
                                           nullptr,
                                           nlohmann::json::array(),
                                           nlohmann::json::object(),
                                           "auto",
                                           18446744073709551615ull,
                                           "",
                                           3.5};
    int ok = 0, rejected = 0;
    for (const char* file :
         {"zero2_offload.json", "zero3_offload.json", "fp16_dynamic.json", "bf16_lion.json"}) {
        const std::string text = io::read_file(
            zs::test::source_path(std::string("tests/fixtures/deepspeed/configs/") + file));
        const nlohmann::json doc = nlohmann::json::parse(text);
        std::vector<nlohmann::json::json_pointer> leaves;
        const nlohmann::json flat = doc.flatten();  // named: items() does not extend its life
        for (const auto& [ptr, v] : flat.items()) {
            leaves.emplace_back(ptr);
        }
        for (int trial = 0; trial < 150; ++trial) {
            std::string mutated;
            if (trial % 3 == 2) {  // byte-level edit
                mutated = text;
                const size_t at = rng() % mutated.size();
                mutated[at] = static_cast<char>("{}[]\",:0e-a\\"[rng() % 12]);
            } else {
                nlohmann::json d = doc;
                d[leaves[rng() % leaves.size()]] = replacements[rng() % std::size(replacements)];
                mutated = d.dump();
            }
            try {
                parse_ds_config(mutated, file, 1 << (rng() % 4));  // worlds all four files fit
                ++ok;
            } catch (const zs::Error&) {
                ++rejected;
            }
        }
    }
    EXPECT_GT(ok, 0);
    EXPECT_GT(rejected, 100);
}

TEST(DsConfigWarnings, DidYouMean) {
    const std::vector<std::string> keys = {"train_batch_size", "train_micro_batch_size_per_gpu",
                                           "gradient_accumulation_steps", "steps_per_print"};
    EXPECT_EQ(did_you_mean("trian_batch_size", keys), "train_batch_size");
    EXPECT_EQ(did_you_mean("Train_Batch_Size", keys), "train_batch_size");
    EXPECT_EQ(did_you_mean("gradient_accumulation", keys), "gradient_accumulation_steps");
    EXPECT_EQ(did_you_mean("seed", keys), "");
    EXPECT_EQ(did_you_mean("", keys), "");
}

}  // namespace
}  // namespace zs::train
