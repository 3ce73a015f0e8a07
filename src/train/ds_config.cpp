// ds_config.json → TrainConfig, section by section, in the order DeepSpeedConfig reads them.
// Each section's reader names the DeepSpeed source it mirrors; docs/CONFIG.md lists every key.
#include "train/ds_config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <iterator>
#include <limits>
#include <numeric>
#include <set>
#include <system_error>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/log.h"
#include "io/atomic_file.h"
#include "io/json.h"
#include "train/config_section.h"
#include "train/ds_config_elastic.h"
#include "train/ds_config_zero.h"

namespace zs::train {
namespace {

constexpr int64_t kI64Min = std::numeric_limits<int64_t>::min();
constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
constexpr double kInf = std::numeric_limits<double>::infinity();

// Python's floor division (DeepSpeed derives the batch triple with //).
int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
    return q;
}

// runtime/config.py: _set_batch_related_parameters, then _batch_assertion. With `elastic` (the
// triple elasticity derived), DeepSpeed has written it over the three keys before reading them.
BatchConfig parse_batch(Section& root, int world, const std::optional<BatchConfig>& elastic) {
    std::optional<int64_t> tbs, mbs, gas;
    if (elastic) {
        root.known(
            {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"});
        tbs = elastic->train_batch_size;
        mbs = elastic->train_micro_batch_size_per_gpu;
        gas = elastic->gradient_accumulation_steps;
    } else {
        tbs = root.get_int("train_batch_size", kI64Min, kI64Max);
        mbs = root.get_int("train_micro_batch_size_per_gpu", kI64Min, kI64Max);
        gas = root.get_int("gradient_accumulation_steps", kI64Min, kI64Max);
    }
    const std::string& src = root.source();
    auto div = [&](int64_t a, int64_t b, const char* what) {
        ZS_CHECK_T(ConfigError, b != 0, "{}: {} is 0 (division by zero resolving the batch size)",
                   src, what);
        return floor_div(a, b);
    };
    BatchConfig b;
    if (tbs && mbs && gas) {
        b = {*tbs, *mbs, *gas};
    } else if (tbs && mbs) {
        b = {*tbs, *mbs, floor_div(div(*tbs, *mbs, "train_micro_batch_size_per_gpu"), world)};
    } else if (tbs && gas) {
        b = {*tbs, div(floor_div(*tbs, world), *gas, "gradient_accumulation_steps"), *gas};
    } else if (mbs && gas) {
        b = {*mbs * *gas * world, *mbs, *gas};
    } else if (tbs) {
        b = {*tbs, floor_div(*tbs, world), 1};
    } else if (mbs) {
        b = {*mbs * world, *mbs, 1};
    } else {
        ZS_THROW(ConfigError,
                 "{}: either train_batch_size or train_micro_batch_size_per_gpu must be given "
                 "(gradient_accumulation_steps alone does not determine the batch)",
                 src);
    }
    ZS_CHECK_T(ConfigError, b.train_batch_size > 0, "{}: train_batch_size must be > 0, got {}", src,
               b.train_batch_size);
    ZS_CHECK_T(ConfigError, b.train_micro_batch_size_per_gpu > 0,
               "{}: train_micro_batch_size_per_gpu must be > 0, got {}{}", src,
               b.train_micro_batch_size_per_gpu,
               mbs ? "" : " (train_batch_size / world size / gradient_accumulation_steps)");
    ZS_CHECK_T(ConfigError, b.gradient_accumulation_steps > 0,
               "{}: gradient_accumulation_steps must be > 0, got {}{}", src,
               b.gradient_accumulation_steps,
               gas ? "" : " (train_batch_size / train_micro_batch_size_per_gpu / world size)");
    ZS_CHECK_T(ConfigError,
               b.train_batch_size ==
                   b.train_micro_batch_size_per_gpu * b.gradient_accumulation_steps * world,
               "{}: train_batch_size must equal train_micro_batch_size_per_gpu * "
               "gradient_accumulation_steps * world size: {} != {} * {} * {}",
               src, b.train_batch_size, b.train_micro_batch_size_per_gpu,
               b.gradient_accumulation_steps, world);
    return b;
}

// runtime/engine.py _configure_basic_optimizer and the constructors it calls.
OptimizerConfig parse_optimizer(Section& root) {
    OptimizerConfig o;
    std::optional<Section> s = root.get_section("optimizer", false);
    if (!s) return o;
    o.given = true;
    std::optional<std::string> type = s->get_string("type");
    if (!type) {
        s->fail("type",
                "required: one of \"Adam\", \"AdamW\", \"SGD\", \"Lion\", \"Adagrad\", \"Lamb\"");
    }
    o.type = *type;
    s->known({"legacy_fusion"});
    std::string t = *type;
    for (char& ch : t) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    const bool adam = t == "adam" || t == "adamw";
    if (adam) {
        o.kind = optim::Kind::adamw;
    } else if (t == "sgd") {
        o.kind = optim::Kind::sgd;
    } else if (t == "lion") {
        o.kind = optim::Kind::lion;
    } else if (t == "adagrad") {
        o.kind = optim::Kind::adagrad;
    } else if (t == "lamb") {
        o.kind = optim::Kind::lamb;
    } else if (t == "onebitadam" || t == "onebitlamb" || t == "zerooneadam") {
        s->fail("type", fmt::format("\"{}\" is not implemented yet (1-bit compression is "
                                    "planned); supported: \"Adam\", \"AdamW\", \"SGD\", "
                                    "\"Lion\", \"Adagrad\", \"Lamb\"",
                                    *type));
    } else {
        s->fail("type", fmt::format("\"{}\" is not supported by zerospeed; expected one of "
                                    "\"Adam\", \"AdamW\", \"SGD\", \"Lion\", \"Adagrad\", "
                                    "\"Lamb\"",
                                    *type));
    }
    static const nlohmann::json kEmpty = nlohmann::json::object();
    std::optional<Section> maybe = s->get_section("params", false);
    Diagnostics scratch;  // only used when "params" is absent (nothing to warn about)
    Section p =
        maybe ? *maybe : Section(kEmpty, root.source(), s->path_of("params"), scratch, false);
    // DeepSpeedEngine._configure_basic_optimizer raises on this key for every optimizer, FusedLamb
    // (which has a max_grad_norm argument) included.
    if (p.has("max_grad_norm")) {
        p.fail("max_grad_norm",
               "is refused by DeepSpeed as an optimizer parameter (for every optimizer, Lamb "
               "included); use the top-level \"gradient_clipping\"");
    }
    // Keys each optimizer takes; a key of another optimizer is ignored with a warning (DeepSpeed
    // would pass it to the constructor, which rejects it).
    const std::vector<std::string> adam_keys = {
        "lr",          "betas",      "eps",        "weight_decay",          "bias_correction",
        "adam_w_mode", "torch_adam", "amsgrad",    "fp32_optimizer_states", "set_grad_none",
        "foreach",     "fused",      "capturable", "differentiable",        "maximize"};
    const std::vector<std::string> sgd_keys = {"lr",           "momentum",       "dampening",
                                               "weight_decay", "nesterov",       "maximize",
                                               "foreach",      "differentiable", "fused"};
    const std::vector<std::string> lion_keys = {"lr", "betas", "weight_decay", "set_grad_none",
                                                "fp32_optimizer_states"};
    // torch.optim.Adagrad (DeepSpeed's Adagrad without offload) and DeepSpeedCPUAdagrad.
    const std::vector<std::string> adagrad_keys = {
        "lr",       "lr_decay",       "weight_decay", "initial_accumulator_value", "eps", "foreach",
        "maximize", "differentiable", "fused",        "fp32_optimizer_states"};
    // FusedLamb's constructor (deepspeed/ops/lamb/fused_lamb.py).
    const std::vector<std::string> lamb_keys = {
        "lr",        "betas",     "eps",    "weight_decay", "bias_correction", "eps_inside_sqrt",
        "max_coeff", "min_coeff", "amsgrad"};
    const std::vector<std::string>& mine = adam                             ? adam_keys
                                           : o.kind == optim::Kind::sgd     ? sgd_keys
                                           : o.kind == optim::Kind::adagrad ? adagrad_keys
                                           : o.kind == optim::Kind::lamb    ? lamb_keys
                                                                            : lion_keys;
    for (const auto* list : {&adam_keys, &sgd_keys, &lion_keys, &adagrad_keys, &lamb_keys}) {
        for (const std::string& k : *list) {
            if (std::find(mine.begin(), mine.end(), k) != mine.end()) continue;
            if (p.has(k)) p.warn(k, fmt::format("not a parameter of {}; ignored", *type));
        }
    }
    p.known({"fp32_optimizer_states", "set_grad_none", "foreach", "fused", "capturable",
             "differentiable"});  // implementation choices with the same math
    // torch.optim.Adagrad's (and DeepSpeedCPUAdagrad's) default lr is 1e-2.
    o.lr = p.get_number("lr", 0.0, kInf).value_or(o.kind == optim::Kind::adagrad ? 1e-2 : 1e-3);
    o.weight_decay = p.get_number("weight_decay", 0.0, kInf).value_or(0.0);
    if (adam || o.kind == optim::Kind::lion || o.kind == optim::Kind::lamb) {
        if (p.has("betas")) {
            const nlohmann::json& b = *p.get_raw("betas");
            if (!b.is_array() || b.size() != 2 || !b[0].is_number() || !b[1].is_number() ||
                b[0].get<double>() < 0 || b[0].get<double>() >= 1 || b[1].get<double>() < 0 ||
                b[1].get<double>() >= 1) {
                p.fail("betas",
                       fmt::format("expected two numbers in [0, 1), got {}", describe_json(b)));
            }
            o.beta1 = b[0].get<double>();
            o.beta2 = b[1].get<double>();
        }
    }
    if (adam) {
        const bool adam_w_mode = p.get_bool("adam_w_mode").value_or(true);
        o.kind = (t == "adamw" || adam_w_mode) ? optim::Kind::adamw : optim::Kind::adam;
        o.torch_adam = p.get_bool("torch_adam").value_or(false);
        o.eps = p.get_number("eps", 0.0, kInf).value_or(1e-8);
        std::optional<bool> bc = p.get_bool("bias_correction");
        if (o.torch_adam && bc) {
            p.fail("bias_correction",
                   "torch.optim.Adam/AdamW (torch_adam: true) has no bias_correction "
                   "parameter");
        }
        o.bias_correction = bc.value_or(true);
        // torch.optim.AdamW's own default; FusedAdam and DeepSpeedCPUAdam default to 0.
        if (o.torch_adam && o.kind == optim::Kind::adamw && !p.has("weight_decay")) {
            o.weight_decay = 0.01;
        }
        if (p.get_bool("amsgrad").value_or(false)) {
            p.fail("amsgrad", "AMSGrad is not supported (nor by DeepSpeed's FusedAdam)");
        }
    } else if (o.kind == optim::Kind::sgd) {
        o.momentum = p.get_number("momentum", 0.0, kInf).value_or(0.0);
        const double dampening = p.get_number("dampening", -kInf, kInf).value_or(0.0);
        o.nesterov = p.get_bool("nesterov").value_or(false);
        if (o.nesterov && (o.momentum <= 0 || dampening != 0)) {
            p.fail("nesterov",
                   "Nesterov momentum requires a momentum > 0 and zero dampening "
                   "(torch.optim.SGD)");
        }
        if (dampening != 0) p.fail("dampening", "SGD dampening is not supported (only 0)");
    } else if (o.kind == optim::Kind::adagrad) {
        o.eps = p.get_number("eps", 0.0, kInf).value_or(1e-10);
        o.lr_decay = p.get_number("lr_decay", 0.0, kInf).value_or(0.0);
        if (p.get_number("initial_accumulator_value", 0.0, kInf).value_or(0.0) != 0.0) {
            p.fail("initial_accumulator_value", "only 0 (the default) is supported");
        }
    } else if (o.kind == optim::Kind::lamb) {
        o.eps = p.get_number("eps", 0.0, kInf).value_or(1e-8);
        o.bias_correction = p.get_bool("bias_correction").value_or(true);
        o.eps_inside_sqrt = p.get_bool("eps_inside_sqrt").value_or(false);
        o.max_coeff = p.get_number("max_coeff", 0.0, kInf).value_or(10.0);
        o.min_coeff = p.get_number("min_coeff", 0.0, kInf).value_or(0.01);
        if (o.min_coeff > o.max_coeff) {
            p.fail("min_coeff", fmt::format("must be <= max_coeff ({}), got {} (the trust ratio is "
                                            "clamped to [min_coeff, max_coeff])",
                                            o.max_coeff, o.min_coeff));
        }
        if (p.get_bool("amsgrad").value_or(false)) {
            p.fail("amsgrad", "FusedLamb does not support the AMSGrad variant");
        }
    }
    if (p.get_bool("maximize").value_or(false)) p.fail("maximize", "maximize is not supported");
    p.finish();
    s->finish();
    return o;
}

// runtime/lr_schedules.py: the constructor arguments of each scheduler (ds_config's "params"
// are passed to it as keyword arguments).
SchedulerConfig parse_scheduler(Section& root) {
    SchedulerConfig c;
    std::optional<Section> s = root.get_section("scheduler", false);
    if (!s) return c;
    std::optional<std::string> type = s->get_string("type");
    if (!type) {
        s->fail("type",
                "required: one of \"WarmupLR\", \"WarmupDecayLR\", \"WarmupCosineLR\", "
                "\"OneCycle\", \"LRRangeTest\"");
    }
    const std::vector<std::string> names = {"WarmupLR", "WarmupDecayLR", "WarmupCosineLR",
                                            "OneCycle", "LRRangeTest"};
    const SchedulerKind kinds[] = {SchedulerKind::warmup_lr, SchedulerKind::warmup_decay_lr,
                                   SchedulerKind::warmup_cosine_lr, SchedulerKind::one_cycle,
                                   SchedulerKind::lr_range_test};
    size_t idx = names.size();
    for (size_t i = 0; i < names.size(); ++i) {
        if (*type == names[i]) idx = i;  // case-sensitive: DeepSpeed looks the class up by name
    }
    if (idx == names.size()) {
        std::string hint = did_you_mean(*type, names);
        s->fail(
            "type",
            fmt::format("\"{}\" is not supported by zerospeed (torch.optim.lr_scheduler "
                        "classes are not either); expected one of \"WarmupLR\", "
                        "\"WarmupDecayLR\", \"WarmupCosineLR\", \"OneCycle\", "
                        "\"LRRangeTest\"{}",
                        *type, hint.empty() ? "" : fmt::format(" (did you mean \"{}\"?)", hint)));
    }
    c.kind = kinds[idx];
    static const nlohmann::json kEmpty = nlohmann::json::object();
    Diagnostics scratch;
    std::optional<Section> maybe = s->get_section("params", false);
    Section p =
        maybe ? *maybe : Section(kEmpty, root.source(), s->path_of("params"), scratch, false);
    auto require = [&](const char* key) {
        if (!p.has(key)) p.fail(key, fmt::format("required by {}", *type));
    };
    // Keys of the other schedulers: ignored with a warning (DeepSpeed's constructor rejects them).
    const std::vector<std::vector<std::string>> keys = {
        {"warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "warmup_type"},
        {"warmup_min_lr", "warmup_max_lr", "warmup_num_steps", "warmup_type", "total_num_steps"},
        {"total_num_steps", "warmup_min_ratio", "warmup_num_steps", "cos_min_ratio", "warmup_type"},
        {"cycle_min_lr", "cycle_max_lr", "decay_lr_rate", "cycle_first_step_size",
         "cycle_second_step_size", "cycle_first_stair_count", "cycle_second_stair_count",
         "decay_step_size", "cycle_momentum", "cycle_min_mom", "cycle_max_mom", "decay_mom_rate"},
        {"lr_range_test_min_lr", "lr_range_test_step_size", "lr_range_test_step_rate",
         "lr_range_test_staircase"}};
    const std::vector<std::string>& mine = keys[idx];
    for (const auto& list : keys) {
        for (const std::string& k : list) {
            if (std::find(mine.begin(), mine.end(), k) == mine.end() && p.has(k)) {
                p.warn(k, fmt::format("not a parameter of {}; ignored", *type));
            }
        }
    }
    if (auto it = p.get_int("last_batch_iteration", -1, kI64Max); it && *it != -1) {
        p.note_unsupported("last_batch_iteration",
                           "resuming a schedule mid-way from ds_config is not supported; "
                           "zerospeed checkpoints carry the step (ignored)");
    }
    auto warmup = [&] {
        c.warmup_num_steps = p.get_int("warmup_num_steps", 1, kI64Max).value_or(1000);
        c.warmup_type = p.get_choice("warmup_type", {"log", "linear"}, false).value_or(0) == 0
                            ? WarmupType::log
                            : WarmupType::linear;
    };
    switch (c.kind) {
        case SchedulerKind::constant:
            break;
        case SchedulerKind::warmup_lr:
        case SchedulerKind::warmup_decay_lr:
            warmup();
            c.warmup_min_lr = p.get_number("warmup_min_lr", 0.0, kInf).value_or(0.0);
            c.warmup_max_lr = p.get_number("warmup_max_lr", 0.0, kInf);
            if (c.kind == SchedulerKind::warmup_decay_lr) {
                require("total_num_steps");
                c.total_num_steps = *p.get_int("total_num_steps", 0, kI64Max);
                if (!c.warmup_max_lr) c.warmup_max_lr = 1e-3;  // WarmupDecayLR's own default
            }
            break;
        case SchedulerKind::warmup_cosine_lr:
            warmup();
            require("total_num_steps");
            c.total_num_steps = *p.get_int("total_num_steps", 0, kI64Max);
            c.warmup_min_ratio = p.get_number("warmup_min_ratio", 0.0, 1.0).value_or(0.0);
            c.cos_min_ratio = p.get_number("cos_min_ratio", 0.0, 1.0).value_or(1e-4);
            break;
        case SchedulerKind::one_cycle:
            require("cycle_min_lr");
            require("cycle_max_lr");
            c.cycle_min_lr = *p.get_number("cycle_min_lr", 0.0, kInf);
            c.cycle_max_lr = *p.get_number("cycle_max_lr", 0.0, kInf);
            c.decay_lr_rate = p.get_number("decay_lr_rate", 0.0, kInf).value_or(0.0);
            c.cycle_first_step_size =
                p.get_number("cycle_first_step_size", 0.0, kInf).value_or(2000);
            if (c.cycle_first_step_size <= 0) {
                p.fail("cycle_first_step_size", "must be positive, got 0");
            }
            c.cycle_second_step_size = p.get_number("cycle_second_step_size", 0.0, kInf);
            c.cycle_first_stair_count =
                p.get_int("cycle_first_stair_count", 0, kI64Max).value_or(0);
            c.cycle_second_stair_count = p.get_int("cycle_second_stair_count", 0, kI64Max);
            c.decay_step_size = p.get_number("decay_step_size", 0.0, kInf).value_or(0.0);
            c.cycle_momentum = p.get_bool("cycle_momentum").value_or(true);
            c.cycle_min_mom = p.get_number("cycle_min_mom", 0.0, 1.0).value_or(0.8);
            c.cycle_max_mom = p.get_number("cycle_max_mom", 0.0, 1.0).value_or(0.9);
            c.decay_mom_rate = p.get_number("decay_mom_rate", 0.0, kInf).value_or(0.0);
            break;
        case SchedulerKind::lr_range_test:
            c.lr_range_test_min_lr = p.get_number("lr_range_test_min_lr", 0.0, kInf).value_or(1e-3);
            c.lr_range_test_step_size =
                p.get_int("lr_range_test_step_size", 1, kI64Max).value_or(2000);
            c.lr_range_test_step_rate =
                p.get_number("lr_range_test_step_rate", 0.0, kInf).value_or(1.0);
            c.lr_range_test_staircase = p.get_bool("lr_range_test_staircase").value_or(false);
            break;
    }
    p.finish();
    s->finish();
    return c;
}

// precision_config.py: DeepSpeedFP16Config (validated only when dynamic scaling is on).
Fp16Config parse_fp16(Section& root) {
    Fp16Config f;
    std::optional<Section> s = root.get_section("fp16", true);
    if (!s) return f;
    f.enabled = s->get_bool("enabled").value_or(false);
    f.auto_cast = s->get_bool("auto_cast").value_or(false);
    f.loss_scale = s->get_number("loss_scale", 0.0, kInf).value_or(0.0);
    f.initial_scale_power = static_cast<int>(s->get_int("initial_scale_power", 0, 64).value_or(16));
    const bool dynamic = f.enabled && f.loss_scale == 0;
    f.loss_scale_window =
        s->get_int("loss_scale_window", dynamic ? 1 : kI64Min, kI64Max).value_or(1000);
    f.hysteresis = static_cast<int>(s->get_int("hysteresis", 1, 1'000'000).value_or(2));
    f.consecutive_hysteresis = s->get_bool("consecutive_hysteresis").value_or(false);
    f.min_loss_scale = s->get_int("min_loss_scale", dynamic ? 1 : kI64Min, kI64Max).value_or(1);
    f.fp16_master_weights_and_grads = s->get_bool("fp16_master_weights_and_grads").value_or(false);
    if (f.fp16_master_weights_and_grads) {
        s->note_unsupported("fp16_master_weights_and_grads",
                            "fp16 master weights are not implemented (fp32 masters are kept)");
    }
    if (f.auto_cast) {
        s->note_unsupported("auto_cast", "planned: zerospeed casts inputs with the model dtype");
    }
    s->finish();
    return f;
}

// precision_config.py: "bf16", or the old name "bfloat16" when "bf16" is absent.
Bf16Config parse_bf16(Section& root) {
    Bf16Config b;
    std::optional<Section> s = root.get_section("bf16", true);
    if (s) {
        if (root.has("bfloat16")) {
            root.warn("bfloat16", "ignored: \"bf16\" is given too (DeepSpeed reads \"bf16\")");
        }
    } else {
        s = root.get_section("bfloat16", true);
    }
    root.known({"bf16", "bfloat16"});
    if (!s) return b;
    b.enabled = s->get_bool("enabled").value_or(false);
    b.immediate_grad_update = s->get_bool("immediate_grad_update").value_or(false);
    b.check_grad_overflow = s->get_bool("check_grad_overflow").value_or(true);
    b.bf16_master_weights_and_grads = s->get_bool("bf16_master_weights_and_grads").value_or(false);
    b.bf16_optimizer_states = s->get_bool("bf16_optimizer_states").value_or(false);
    if (b.bf16_optimizer_states && !b.bf16_master_weights_and_grads) {
        s->fail("bf16_optimizer_states", "requires bf16_master_weights_and_grads: true");
    }
    if (b.immediate_grad_update) {
        s->note_unsupported("immediate_grad_update", "planned");
    }
    s->finish();
    return b;
}

// DeepSpeed's "pipeline" section (runtime/config.py get_pipeline_config: stages, partition,
// seed_layers, activation_checkpoint_interval, pipe_partitioned, grad_partitioned, use_reentrant)
// and zerospeed's schedule and virtual_stages. `pp` is the stage count already resolved with --pp.
PipelineConfig parse_pipeline(Section& root, int pp) {
    PipelineConfig c;
    c.stages = pp;
    std::optional<Section> s = root.get_section("pipeline", true);
    if (!s) return c;
    if (s->has("stages") && !s->get_raw("stages")->is_string()) s->get_int("stages", 1, 4096);
    s->known({"stages"});
    if (std::optional<std::string> part = s->get_string("partition")) {
        std::string v = *part;
        std::transform(v.begin(), v.end(), v.begin(),
                       [](unsigned char ch) { return std::tolower(ch); });
        if (v == "parameters" || v == "best") {
            c.partition = PipelineConfig::Partition::parameters;
            if (v == "best") {
                s->warn("partition",
                        "\"best\" is not a partition method of DeepSpeed's PipelineModule; "
                        "partitioning by parameters (its default)");
            }
        } else if (v == "uniform") {
            c.partition = PipelineConfig::Partition::uniform;
        } else if (v == "flops") {
            c.partition = PipelineConfig::Partition::flops;
        } else if (v == "time") {
            c.partition = PipelineConfig::Partition::time;
        } else {
            s->fail("partition", fmt::format("expected \"parameters\", \"uniform\", \"flops\" "
                                             "or \"time\", got "
                                             "\"{}\" (type:regex partitions are not implemented)",
                                             *part));
        }
    }
    if (std::optional<size_t> k =
            s->get_choice("schedule", {"1f1b", "gpipe", "interleaved", "zb-h1", "zb-h2"}, true)) {
        const char* names[] = {"1f1b", "gpipe", "interleaved", "zb-h1", "zb-h2"};
        c.schedule = names[*k];
    }
    c.virtual_stages = static_cast<int>(s->get_int("virtual_stages", 1, 64).value_or(1));
    if (s->get_bool("seed_layers").value_or(false)) {
        s->note_unsupported("seed_layers", "layers are initialised from the run's seed by name");
    }
    if (s->get_int("activation_checkpoint_interval", 0, 1 << 20).value_or(0) > 0) {
        s->note_unsupported("activation_checkpoint_interval",
                            "each stage keeps only its input per micro-batch and recomputes its "
                            "forward before the backward (interval = the stage)");
    }
    s->get_bool("pipe_partitioned");
    s->get_bool("grad_partitioned");
    s->get_bool("use_reentrant");
    s->finish();
    return c;
}

// activation_checkpointing/config.py (plain dict reads, no validation in DeepSpeed).
ActivationCheckpointingConfig parse_activation_checkpointing(Section& root) {
    ActivationCheckpointingConfig a;
    std::optional<Section> s = root.get_section("activation_checkpointing", false);
    if (!s) return a;
    a.given = true;
    a.partition_activations = s->get_bool("partition_activations").value_or(false);
    a.cpu_checkpointing = s->get_bool("cpu_checkpointing").value_or(false);
    a.contiguous_memory_optimization =
        s->get_bool("contiguous_memory_optimization").value_or(false);
    a.number_checkpoints = s->get_int("number_checkpoints", 1, kI64Max);
    a.synchronize_checkpoint_boundary =
        s->get_bool("synchronize_checkpoint_boundary").value_or(false);
    a.profile = s->get_bool("profile").value_or(false);
    s->finish();
    return a;
}

// DtypeEnum's names (runtime/config.py).
// zerospeed's "moe" section (MoeGatingConfig). DeepSpeed's other MoE(...) arguments are refused
// by name where they would change the computation and pointed elsewhere where zerospeed has them.
MoeGatingConfig parse_moe(Section& root) {
    MoeGatingConfig m;
    std::optional<Section> s = root.get_section("moe", false);
    if (!s) return m;
    m.given = true;
    m.capacity_factor = s->get_number("capacity_factor", 0.0, kInf);
    m.eval_capacity_factor = s->get_number("eval_capacity_factor", 0.0, kInf);
    m.min_capacity = s->get_int("min_capacity", 0, kI64Max);
    m.drop_tokens = s->get_bool("drop_tokens");
    m.router_z_loss_coef = s->get_number("router_z_loss_coef", 0.0, kInf);
    for (const char* key : {"use_rts", "top2_2nd_expert_sampling"}) {
        if (s->get_bool(key).value_or(false)) {
            s->fail(key,
                    "true is not implemented: zerospeed keeps tokens in order and takes the "
                    "second expert by probability (DeepSpeed with this false)");
        }
    }
    if (const std::optional<std::string> p = s->get_string("noisy_gate_policy");
        p && *p != "None") {
        s->fail("noisy_gate_policy", fmt::format("\"{}\" is not implemented (only \"None\")", *p));
    }
    if (s->has("ep_size")) {
        s->fail("ep_size", "use the top-level expert_parallel_size (or train --ep)");
    }
    for (const char* key : {"num_experts", "k", "use_residual"}) {
        if (s->has(key)) {
            s->fail(key,
                    "comes from the model's config.json (num_local_experts / num_experts, "
                    "num_experts_per_tok, shared_expert_intermediate_size)");
        }
    }
    s->finish();
    return m;
}

std::optional<DataType> parse_dtype(Section& s, const char* key) {
    std::optional<size_t> i =
        s.get_choice(key,
                     {"fp32", "float32", "float", "torch.float32", "fp16", "float16", "half",
                      "torch.float16", "bf16", "bfloat16", "torch.bfloat16"},
                     false);
    if (!i) return std::nullopt;
    return *i < 4 ? DataType::fp32 : *i < 8 ? DataType::fp16 : DataType::bf16;
}

MonitorConfig parse_monitor(Section& root, const char* key) {
    MonitorConfig m;
    std::optional<Section> s = root.get_section(key, true);
    if (!s) return m;
    m.enabled = s->get_bool("enabled").value_or(false);
    m.output_path = s->get_string("output_path").value_or("");
    m.job_name = s->get_string("job_name").value_or("DeepSpeedJobName");
    s->finish();
    return m;
}

CheckpointConfig parse_checkpoint(Section& root) {
    CheckpointConfig c;
    std::optional<Section> s = root.get_section("checkpoint", false);
    if (!s) return c;
    switch (s->get_choice("tag_validation", {"WARN", "IGNORE", "FAIL"}, true).value_or(0)) {
        case 1:
            c.tag_validation = TagValidation::ignore;
            break;
        case 2:
            c.tag_validation = TagValidation::fail;
            break;
        default:
            c.tag_validation = TagValidation::warn;
            break;
    }
    c.load_universal = s->get_bool("load_universal").value_or(false);
    c.use_node_local_storage = s->get_bool("use_node_local_storage").value_or(false);
    if (std::optional<Section> pw = s->get_section("parallel_write", false)) {
        c.parallel_write_pipeline_stage = pw->get_bool("pipeline_stage").value_or(false);
        pw->finish();
    }
    if (c.load_universal) {
        s->note_unsupported("load_universal", "DeepSpeed universal checkpoints are not read");
    }
    if (c.parallel_write_pipeline_stage) {
        s->note_unsupported("parallel_write", "no pipeline parallelism");
    }
    s->known({"checkpoint_serialization"});
    s->unsupported("writer", "DeepSpeed's fast checkpoint writer is not implemented");
    s->finish();
    return c;
}

// runtime/swap_tensor/aio_config.py (DeepSpeed 0.19: intra_op_parallelism; older releases:
// thread_count).
io::AioConfig parse_aio(Section& root) {
    io::AioConfig a;
    std::optional<Section> s = root.get_section("aio", false);
    if (!s) return a;
    a.block_size = s->get_int("block_size", 4096, int64_t{1} << 30).value_or(a.block_size);
    if (a.block_size % 4096 != 0) s->fail("block_size", "expected a multiple of 4096 (O_DIRECT)");
    a.queue_depth = s->get_int("queue_depth", 1, 4096).value_or(a.queue_depth);
    std::optional<int64_t> tc = s->get_int("thread_count", 1, 64);
    std::optional<int64_t> iop = s->get_int("intra_op_parallelism", 1, 64);
    if (tc && iop) s->fail("intra_op_parallelism", "given twice (also as 'thread_count')");
    a.thread_count = tc ? *tc : iop.value_or(a.thread_count);
    a.single_submit = s->get_bool("single_submit").value_or(a.single_submit);
    a.overlap_events = s->get_bool("overlap_events").value_or(a.overlap_events);
    if (s->get_bool("use_gds").value_or(false)) {
        s->note_unsupported("use_gds",
                            "GPUDirect Storage is not implemented (I/O goes through "
                            "host buffers)");
    }
    s->finish();
    return a;
}

void parse_data_types(Section& root, TrainConfig& c) {
    std::optional<Section> s = root.get_section("data_types", false);
    if (!s) return;
    c.grad_accum_dtype = parse_dtype(*s, "grad_accum_dtype");
    s->unsupported("param_dtype", "not implemented");
    s->unsupported("buffer_dtype", "not implemented");
    s->known({"keep_in_fp32_modules"});
    s->finish();
}

// Whether `v` (a JSON object) has `path` leading to a true flag (Python truthiness of a bool or
// a number; DeepSpeed reads these flags with get_scalar_param and tests them with `if`).
bool flag_on(const nlohmann::json* v, std::initializer_list<const char*> path) {
    for (const char* k : path) {
        if (!v || !v->is_object() || !v->contains(k)) return false;
        v = &(*v)[k];
    }
    return (v->is_boolean() && v->get<bool>()) || (v->is_number() && v->get<double>() != 0);
}

// Top-level DeepSpeed keys zerospeed does not implement. Each entry of the last two tables says
// what DeepSpeed does with the key, with the file and function, checked against the releases on
// PyPI: 0.19.6, 0.19.7 and the newest, 0.19.8 (the version tools/reference pins). 0.19.7 and
// 0.19.8 start DeepSpeedConfig.__init__ (runtime/config.py) with _reject_removed_config_keys,
// which raises DeepSpeedConfigError for any key of _REMOVED_TOP_LEVEL_CONFIG_KEYS that is present,
// "enabled": false included (deepspeedai/DeepSpeed#8489): 0.19.7 lists nebula,
// compression_training, quantize_training and sparse_attention; 0.19.8 adds amp, elasticity,
// eigenvalue, sparse_gradients, graph_harvesting, the top-level curriculum_learning and
// progressive_layer_drop. zerospeed accepts a block that asks for nothing, as the releases that
// read the key did; "elasticity" is implemented (parse_elasticity).
void note_unsupported_sections(Section& root) {
    const char* const kNotImplemented[][2] = {
        {"wandb", "Weights & Biases logging is not supported (use csv_monitor)"},
        {"comet", "Comet logging is not supported (use csv_monitor)"},
        {"torch_autocast", "not implemented (use bf16 or fp16)"},
        {"flops_profiler", "not implemented (the progress line reports MFU)"},
        {"autotuning", "not implemented"},
        {"comms_logger", "not implemented"},
        {"hybrid_engine", "not implemented"},
        {"compile", "not implemented"},
        {"timers", "not implemented"},
        {"expert_parallel", "AutoEP is not implemented"},
        {"weight_quantization", "not implemented"},
        {"datastates_ckpt", "not implemented"},
        {"use_data_before_expert_parallelism", "not implemented"},
        {"disable_allgather", "not implemented"},
        {"memory_breakdown", "not implemented"},
        {"zenflow", "ZenFlow is not implemented"},
    };
    // Not implemented, and training computes the same without them: in DeepSpeed they changed
    // I/O, the reduction's form or the kernel launch, or were never acted on. Listed, then
    // ignored.
    const char* const kIgnored[][2] = {
        // 0.19.6: checkpoint_engine/utils.py create_checkpoint_engine built a
        // NebulaCheckpointEngine (torch_nebula) when nebula.enabled, else torch.save.
        {"nebula",
         "Nebula checkpointing is not implemented by zerospeed; checkpoints are written as usual "
         "(DeepSpeed 0.19.6 saved through torch_nebula; 0.19.7 and later refuse the key)"},
        // 0.19.7: runtime/engine.py DeepSpeedEngine.__init__ marks nn.Embedding weights in
        // sparse_tensor_module_names; _get_gradients_for_reduction all-reduces them as
        // SparseTensor (the same sum).
        {"sparse_gradients",
         "not implemented by zerospeed: embedding gradients are reduced dense, the same sum "
         "(DeepSpeed 0.19.7 reduced them in sparse form; 0.19.8 refuses the key)"},
        // 0.19.7: bf16_optimizer.py BF16_Optimizer.step / update_hp_grads run the gradient norm,
        // clipping and the hp-grad update as CUDA graphs (use_graph), the same arithmetic.
        {"graph_harvesting",
         "not implemented by zerospeed (CUDA graph capture of the bf16 optimizer's norm and "
         "clipping in DeepSpeed 0.19.7, the same arithmetic; 0.19.8 refuses the key)"},
        // 0.19.6 and 0.19.7: runtime/config.py get_eigenvalue_config never reads a top-level
        // "eigenvalue" (0.19.6 looks only in quantize_training, and only with compression
        // weight quantization on; 0.19.7 returns the defaults), so the block had no effect.
        {"eigenvalue",
         "eigenvalue-based quantization is not implemented by zerospeed; training is unchanged, "
         "as in DeepSpeed 0.19.6 and 0.19.7, which do not read a top-level \"eigenvalue\" "
         "(0.19.8 refuses the key)"},
        // 0.19.6: runtime/config.py get_eigenvalue_config reads only quantize_training.eigenvalue,
        // only when compression_training weight quantization is on, and asserts it disabled;
        // nothing else of the block is read, so MoQ lives in compression_training (refused here).
        {"quantize_training",
         "Mixture-of-Quantization is not implemented by zerospeed; training is unchanged, as in "
         "DeepSpeed 0.19.6, which read only this block's eigenvalue part (0.19.7 and later "
         "refuse the key)"},
    };
    for (const auto& [key, why] : kNotImplemented) root.unsupported(key, why);
    for (const auto& [key, why] : kIgnored) root.unsupported(key, why);
    // Not implemented, and each would change what training computes: refused when the block asks
    // for something. `on` says when it does, as the last release that read the key tests it.
    struct Refused {
        const char* key;
        bool (*on)(const nlohmann::json& v);
        const char* why;
    };
    const Refused kRefused[] = {
        // 0.19.7: engine.py _do_optimizer_sanity_check / _configure_optimizer wrap model and
        // optimizer with apex amp.initialize when amp.enabled (get_amp_enabled).
        {"amp", [](const nlohmann::json& v) { return flag_on(&v, {"enabled"}); },
         "Apex AMP is not implemented by zerospeed; use the \"bf16\" or \"fp16\" section. "
         "DeepSpeed 0.19.7 wrapped model and optimizer with apex amp.initialize; 0.19.8 refuses "
         "the key"},
        // 0.19.7: engine.py DeepSpeedEngine.forward adds ProgressiveLayerDrop.get_state()
        // (pld_theta, pld_gamma) to the model's kwargs, updated each step (get_pld_enabled).
        {"progressive_layer_drop", [](const nlohmann::json& v) { return flag_on(&v, {"enabled"}); },
         "progressive layer dropping is not implemented by zerospeed. DeepSpeed 0.19.7 passed "
         "the drop schedule (pld_theta) to the model's forward; 0.19.8 refuses the key"},
        // 0.19.7: data_pipeline/config.py get_curriculum_enabled_legacy; engine.py forward passes
        // curriculum_seqlen from a CurriculumScheduler (curriculum_type "seqlen").
        {"curriculum_learning", [](const nlohmann::json& v) { return flag_on(&v, {"enabled"}); },
         "the legacy curriculum is not implemented by zerospeed. DeepSpeed 0.19.7 passed a "
         "growing curriculum_seqlen to the model's forward; 0.19.8 refuses the key and points to "
         "data_efficiency.data_sampling.curriculum_learning, which zerospeed does not implement "
         "either"},
        // 0.19.6: compression/config.py get_compression_config; engine.py
        // _configure_compression_scheduler and _configure_quantization (MoQ) act on each
        // technique whose shared_parameters.enabled (layer_reduction.enabled) is true.
        {"compression_training",
         [](const nlohmann::json& v) {
             for (const char* t :
                  {"weight_quantization", "activation_quantization", "sparse_pruning",
                   "row_pruning", "head_pruning", "channel_pruning"}) {
                 if (flag_on(&v, {t, "shared_parameters", "enabled"})) return true;
             }
             return flag_on(&v, {"layer_reduction", "enabled"});
         },
         "compression (quantization, pruning, layer reduction) is not implemented by zerospeed. "
         "DeepSpeed 0.19.6 ran its compression scheduler and MoQ quantizer; 0.19.7 and later "
         "refuse the key"},
        // 0.19.6: runtime/config.py get_sparse_attention parses it (no "enabled" flag) into
        // DeepSpeedConfig.sparse_attention for model code to build SparseSelfAttention from; the
        // engine itself never reads it.
        {"sparse_attention", [](const nlohmann::json&) { return true; },
         "sparse attention is not implemented by zerospeed, whose models compute dense "
         "attention. DeepSpeed 0.19.6 parsed the block for the model's own SparseSelfAttention; "
         "0.19.7 and later refuse the key"},
    };
    for (const Refused& r : kRefused) {
        const nlohmann::json* v = root.get_raw(r.key);
        if (v && r.on(*v)) root.fail(r.key, r.why);
    }
    // Read by every release, 0.19.8 included (data_pipeline/config.py
    // get_data_efficiency_config). The engine acts on two flags of their own, whatever
    // data_efficiency.enabled says: data_sampling.curriculum_learning.enabled (engine.py
    // deepspeed_io hands DeepSpeedDataLoader a difficulty-ordered sampler) and
    // data_routing.random_ltd.enabled (engine.py: a RandomLTDScheduler drops tokens in the layers
    // convert_to_random_ltd wrapped).
    if (const nlohmann::json* de = root.get_raw("data_efficiency")) {
        if (flag_on(de, {"data_sampling", "curriculum_learning", "enabled"})) {
            root.fail("data_efficiency",
                      "data_sampling.curriculum_learning is not implemented by zerospeed; it "
                      "would change which samples each step trains on (DeepSpeed 0.19.8's data "
                      "sampler orders them by difficulty)");
        }
        if (flag_on(de, {"data_routing", "random_ltd", "enabled"})) {
            root.fail("data_efficiency",
                      "data_routing.random_ltd is not implemented by zerospeed; it would change "
                      "what the layers compute (DeepSpeed 0.19.8 drops tokens in them)");
        }
        root.unsupported("data_efficiency",
                         "not implemented (its curriculum and random-LTD, the parts that change "
                         "training, are off here)");
    }
    // Accepted without effect: they tune DeepSpeed's Python side only.
    root.known({"zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "vocabulary_size",
                "disable_python_gc", "dataloader_drop_last", "log_level"});
    if (root.get_bool("managed_gradient_accumulation").value_or(true) == false) {
        root.note_unsupported("managed_gradient_accumulation", "false is not implemented");
    }
    if (root.get_choice("gradient_allreduce_op", {"mean", "sum"}, true).value_or(0) == 1) {
        root.note_unsupported("gradient_allreduce_op", "\"sum\" is not implemented");
    }
}

}  // namespace

const char* to_string(SchedulerKind k) {
    switch (k) {
        case SchedulerKind::constant:
            return "constant";
        case SchedulerKind::warmup_lr:
            return "WarmupLR";
        case SchedulerKind::warmup_decay_lr:
            return "WarmupDecayLR";
        case SchedulerKind::warmup_cosine_lr:
            return "WarmupCosineLR";
        case SchedulerKind::one_cycle:
            return "OneCycle";
        case SchedulerKind::lr_range_test:
            return "LRRangeTest";
    }
    return "?";
}

const char* to_string(Precision p) {
    switch (p) {
        case Precision::f32:
            return "fp32";
        case Precision::bf16:
            return "bf16";
        case Precision::fp16:
            return "fp16";
    }
    return "?";
}

const char* to_string(OffloadDevice d) {
    switch (d) {
        case OffloadDevice::none:
            return "none";
        case OffloadDevice::cpu:
            return "cpu";
        case OffloadDevice::nvme:
            return "nvme";
    }
    return "?";
}

const char* to_string(DataType t) {
    switch (t) {
        case DataType::fp32:
            return "fp32";
        case DataType::fp16:
            return "fp16";
        case DataType::bf16:
            return "bf16";
    }
    return "?";
}

optim::Options OptimizerConfig::options() const {
    optim::Options o;
    o.kind = kind;
    o.beta1 = static_cast<float>(beta1);
    o.beta2 = static_cast<float>(beta2);
    o.eps = static_cast<float>(eps);
    o.weight_decay = static_cast<float>(weight_decay);
    o.bias_correction = bias_correction;
    o.momentum = static_cast<float>(momentum);
    o.nesterov = nesterov;
    o.lr_decay = static_cast<float>(lr_decay);
    o.max_coeff = static_cast<float>(max_coeff);
    o.min_coeff = static_cast<float>(min_coeff);
    o.eps_inside_sqrt = eps_inside_sqrt;
    return o;
}

namespace {

// The Trainer's resolution of "auto" (transformers' integrations/deepspeed.py
// trainer_config_process and trainer_config_finalize), from the run's flags and the model: each
// replaced value is recorded.
std::vector<std::string> resolve_auto(nlohmann::json& j, const AutoValues& a, int world_size) {
    std::vector<std::string> out;
    if (!j.is_object()) return out;
    auto is_auto = [](const nlohmann::json* v) {
        return v && v->is_string() && v->get_ref<const std::string&>() == "auto";
    };
    auto at = [&](std::initializer_list<const char*> path) -> nlohmann::json* {
        nlohmann::json* v = &j;
        for (const char* k : path) {
            if (!v->is_object() || !v->contains(k)) return nullptr;
            v = &(*v)[k];
        }
        return v;
    };
    auto set = [&](std::initializer_list<const char*> path, const nlohmann::json& value,
                   const char* from) {
        nlohmann::json* v = at(path);
        if (!is_auto(v)) return;
        *v = value;
        std::string name;
        for (const char* k : path) {
            if (!name.empty()) name += '.';
            name += k;
        }
        out.push_back(fmt::format("{} = {} ({})", name, value.dump(), from));
    };
    const int64_t micro = a.micro_batch.value_or(8), accum = a.grad_accum.value_or(1);
    set({"train_micro_batch_size_per_gpu"}, micro,
        a.micro_batch ? "--micro-batch" : "the Trainer's default; --micro-batch sets it");
    set({"gradient_accumulation_steps"}, accum,
        a.grad_accum ? "--grad-accum" : "the Trainer's default; --grad-accum sets it");
    // train_batch_size from the resolved (or written) micro-batch and accumulation.
    auto number = [&](const char* k, int64_t def) {
        const nlohmann::json* v = at({k});
        return v && v->is_number_integer() ? v->get<int64_t>() : def;
    };
    set({"train_batch_size"},
        number("train_micro_batch_size_per_gpu", micro) *
            number("gradient_accumulation_steps", accum) * world_size,
        "micro-batch x accumulation x ranks");
    const double lr = a.lr.value_or(5e-5);
    const char* lr_from = a.lr ? "--lr" : "the Trainer's default; --lr sets it";
    set({"optimizer", "params", "lr"}, lr, lr_from);
    set({"optimizer", "params", "betas"}, nlohmann::json::array({0.9, 0.999}),
        "the Trainer's adam_beta1/2");
    set({"optimizer", "params", "eps"}, 1e-8, "the Trainer's adam_epsilon");
    set({"optimizer", "params", "weight_decay"}, a.weight_decay.value_or(0.0),
        a.weight_decay ? "--weight-decay" : "the Trainer's default; --weight-decay sets it");
    set({"scheduler", "params", "warmup_min_lr"}, 0.0, "the Trainer's");
    set({"scheduler", "params", "warmup_max_lr"}, lr, lr_from);
    set({"scheduler", "params", "warmup_num_steps"}, a.warmup.value_or(0),
        a.warmup ? "--warmup" : "the Trainer's default; --warmup sets it");
    if (a.steps) set({"scheduler", "params", "total_num_steps"}, *a.steps, "--steps");
    set({"gradient_clipping"}, a.max_grad_norm.value_or(1.0),
        a.max_grad_norm ? "--max-grad-norm" : "the Trainer's default; --max-grad-norm sets it");
    if (a.hidden_size > 0) {
        const int64_t h = a.hidden_size;
        set({"zero_optimization", "reduce_bucket_size"}, h * h, "hidden_size^2");
        set({"zero_optimization", "stage3_prefetch_bucket_size"},
            static_cast<int64_t>(0.9 * static_cast<double>(h * h)), "0.9 x hidden_size^2");
        set({"zero_optimization", "stage3_param_persistence_threshold"}, 10 * h,
            "10 x hidden_size");
    }
    return out;
}

}  // namespace

TrainConfig parse_ds_config(const std::string& json_text, const std::string& source, int world_size,
                            const AutoValues* autos) {
    ZS_CHECK_T(ConfigError, world_size >= 1, "{}: world size must be >= 1, got {}", source,
               world_size);
    nlohmann::json j = io::parse_json(json_text, source);
    // Tensor parallelism first: the batch triple is for the data-parallel ranks, world / tp
    // (DeepSpeed's AutoTP: train_batch_size = micro x accumulation x dp). The key is validated
    // with the rest below.
    int tp = 1;
    if (const auto t = j.find("tensor_parallel");
        t != j.end() && t->is_object() && t->contains("autotp_size") &&
        (*t)["autotp_size"].is_number_integer() && (*t)["autotp_size"].get<int64_t>() >= 1 &&
        (*t)["autotp_size"].get<int64_t>() <= 4096) {
        tp = static_cast<int>((*t)["autotp_size"].get<int64_t>());
    }
    if (autos && autos->tp) {
        ZS_CHECK_T(ConfigError, tp == 1 || tp == *autos->tp,
                   "{}: tensor_parallel.autotp_size {} and --tp {} disagree", source, tp,
                   *autos->tp);
        tp = *autos->tp;
    }
    ZS_CHECK_T(
        ConfigError, tp >= 1 && world_size % tp == 0,
        "{}: tensor parallelism {} does not divide the {} ranks (tensor_parallel.autotp_size "
        "or --tp)",
        source, tp, world_size);
    // Sequence parallelism (DeepSpeed-Ulysses) likewise: DeepSpeedConfig divides the world by
    // sequence_parallel_size before resolving the batch triple.
    int sp = 1;
    if (const auto t = j.find("sequence_parallel_size"); t != j.end() && t->is_number_integer() &&
                                                         t->get<int64_t>() >= 1 &&
                                                         t->get<int64_t>() <= 4096) {
        sp = static_cast<int>(t->get<int64_t>());
    }
    if (autos && autos->sp) {
        ZS_CHECK_T(ConfigError, sp == 1 || sp == *autos->sp,
                   "{}: sequence_parallel_size {} and --sp {} disagree", source, sp, *autos->sp);
        sp = *autos->sp;
    }
    int ring = 1;
    if (const auto t = j.find("ring_parallel_size"); t != j.end() && t->is_number_integer() &&
                                                     t->get<int64_t>() >= 1 &&
                                                     t->get<int64_t>() <= 4096) {
        ring = static_cast<int>(t->get<int64_t>());
    }
    if (autos && autos->ring) {
        ZS_CHECK_T(ConfigError, ring == 1 || ring == *autos->ring,
                   "{}: ring_parallel_size {} and --ring {} disagree", source, ring, *autos->ring);
        ring = *autos->ring;
    }
    ZS_CHECK_T(ConfigError, sp >= 1 && world_size % (int64_t{tp} * sp) == 0,
               "{}: sequence parallelism {} (sequence_parallel_size or --sp) x tensor parallelism "
               "{} does not divide the {} ranks",
               source, sp, tp, world_size);
    ZS_CHECK_T(ConfigError, ring >= 1 && world_size % (int64_t{tp} * sp * ring) == 0,
               "{}: ring attention {} (ring_parallel_size or --ring) x sequence parallelism {} x "
               "tensor parallelism {} does not divide the {} ranks",
               source, ring, sp, tp, world_size);
    // Pipeline parallelism: pipeline.stages (an integer; "auto" or absent: --pp or 1).
    int pp = 1;
    if (const auto t = j.find("pipeline"); t != j.end() && t->is_object()) {
        if (const auto st = t->find("stages"); st != t->end() && st->is_number_integer() &&
                                               st->get<int64_t>() >= 1 &&
                                               st->get<int64_t>() <= 4096) {
            pp = static_cast<int>(st->get<int64_t>());
        }
    }
    if (autos && autos->pp) {
        ZS_CHECK_T(ConfigError, pp == 1 || pp == *autos->pp,
                   "{}: pipeline.stages {} and --pp {} disagree", source, pp, *autos->pp);
        pp = *autos->pp;
    }
    ZS_CHECK_T(ConfigError, pp >= 1 && world_size % (int64_t{tp} * sp * ring * pp) == 0,
               "{}: pipeline parallelism {} (pipeline.stages or --pp) x sequence parallelism {} x "
               "ring attention {} x tensor parallelism {} does not divide the {} ranks",
               source, pp, sp, ring, tp, world_size);
    world_size /= tp * sp * ring * pp;
    // Expert parallelism is carved out of the data-parallel ranks: it leaves the batch alone.
    int ep = 1;
    if (const auto t = j.find("expert_parallel_size"); t != j.end() && t->is_number_integer() &&
                                                       t->get<int64_t>() >= 1 &&
                                                       t->get<int64_t>() <= 4096) {
        ep = static_cast<int>(t->get<int64_t>());
    }
    if (autos && autos->ep) {
        ZS_CHECK_T(ConfigError, ep == 1 || ep == *autos->ep,
                   "{}: expert_parallel_size {} and --ep {} disagree", source, ep, *autos->ep);
        ep = *autos->ep;
    }
    ZS_CHECK_T(ConfigError, ep >= 1 && world_size % ep == 0,
               "{}: expert parallelism {} (expert_parallel_size or --ep) does not divide the {} "
               "data-parallel ranks (experts are sharded over ep of the data-parallel ranks)",
               source, ep, world_size);
    ZS_CHECK_T(ConfigError, ep == 1 || (sp == 1 && ring == 1),
               "{}: expert_parallel_size {} with sequence_parallel_size {} / ring_parallel_size {} "
               "is not implemented (the expert data-parallel group would have to span the "
               "sequence-parallel ranks)",
               source, ep, sp, ring);
    std::vector<std::string> resolved;
    if (autos) resolved = resolve_auto(j, *autos, world_size);
    Diagnostics diag;
    Section root(j, source, "", diag, false);
    TrainConfig c;
    c.source = source;
    c.world_size = world_size;
    c.tensor_parallel_size = tp;
    c.sequence_parallel_size = sp;
    c.ring_parallel_size = ring;
    c.expert_parallel_size = ep;
    root.get_int("expert_parallel_size", 1, 4096);
    if (std::optional<Section> t = root.get_section("tensor_parallel", false)) {
        t->get_int("autotp_size", 1, 4096);
    }
    root.get_int("sequence_parallel_size", 1, 4096);
    root.get_int("ring_parallel_size", 1, 4096);

    // DeepSpeedConfig.__init__ resolves elasticity first: it writes the batch triple.
    std::optional<BatchConfig> elastic = parse_elasticity(root, world_size, c.elasticity);
    c.batch = parse_batch(root, world_size, elastic);
    c.optimizer = parse_optimizer(root);
    c.scheduler = parse_scheduler(root);
    c.gradient_clipping = root.get_number("gradient_clipping", 0.0, kInf).value_or(1.0);
    c.fp16 = parse_fp16(root);
    c.bf16 = parse_bf16(root);
    ZS_CHECK_T(ConfigError, !(c.fp16.enabled && c.bf16.enabled),
               "{}: fp16.enabled and bf16.enabled cannot both be true", source);
    c.precision = c.bf16.enabled   ? Precision::bf16
                  : c.fp16.enabled ? Precision::fp16
                                   : Precision::f32;
    c.zero = parse_zero(root);
    if (c.fp16.fp16_master_weights_and_grads && c.zero.stage == 0) {
        ZS_THROW(ConfigError, "{}: fp16.fp16_master_weights_and_grads needs ZeRO stage 1, 2 or 3",
                 source);
    }
    if (c.bf16.bf16_master_weights_and_grads && c.zero.stage == 0) {
        ZS_THROW(ConfigError, "{}: bf16.bf16_master_weights_and_grads needs ZeRO stage 1, 2 or 3",
                 source);
    }
    c.activation_checkpointing = parse_activation_checkpointing(root);
    c.moe = parse_moe(root);
    c.pipeline = parse_pipeline(root, pp);
    c.steps_per_print = root.get_int("steps_per_print", 1, kI64Max);
    c.wall_clock_breakdown = root.get_bool("wall_clock_breakdown").value_or(false);
    c.dump_state = root.get_bool("dump_state").value_or(false);
    c.prescale_gradients = root.get_bool("prescale_gradients").value_or(false);
    c.gradient_predivide_factor =
        root.get_number("gradient_predivide_factor", 0.0, kInf).value_or(1.0);
    if (c.gradient_predivide_factor == 0.0) {
        root.fail("gradient_predivide_factor", "expected a number > 0, got 0");
    }
    // DeepSpeed lower-cases the value and takes fp32, fp16 or bf16.
    if (std::optional<size_t> i =
            root.get_choice("communication_data_type", {"fp32", "fp16", "bf16"}, true)) {
        c.communication_data_type = *i == 0   ? DataType::fp32
                                    : *i == 1 ? DataType::fp16
                                              : DataType::bf16;
    }
    if (std::optional<int64_t> seed = root.get_int("seed", 0, kI64Max)) {
        c.seed = static_cast<uint64_t>(*seed);
    }
    c.checkpoint = parse_checkpoint(root);
    c.aio = parse_aio(root);
    parse_data_types(root, c);
    c.csv_monitor = parse_monitor(root, "csv_monitor");
    c.tensorboard = parse_monitor(root, "tensorboard");
    if (c.tensorboard.enabled) {
        root.note_unsupported("tensorboard", "planned: use csv_monitor meanwhile");
    }
    // Settings parsed and then applied in a form that computes the same: say exactly what
    // happens instead of leaving them silent.
    // DeepSpeed reduces the gradients of the sequence-data-parallel group in this dtype (fp32 by
    // default); zerospeed reduces every gradient in fp32. The Ulysses all-to-alls move the
    // compute dtype, as DeepSpeed's do.
    if (std::optional<size_t> i =
            root.get_choice("seq_parallel_communication_data_type", {"fp32", "fp16", "bf16"}, true);
        i && *i != 0) {
        root.note_unsupported(
            "seq_parallel_communication_data_type",
            fmt::format("gradients are reduced in fp32, not {}", *i == 1 ? "fp16" : "bf16"));
    }
    if (c.communication_data_type && *c.communication_data_type != DataType::fp32) {
        root.note_unsupported("communication_data_type",
                              fmt::format("gradients are reduced in fp32, not {}",
                                          to_string(*c.communication_data_type)));
    }
    if (c.grad_accum_dtype && *c.grad_accum_dtype != DataType::fp32) {
        root.note_unsupported("data_types.grad_accum_dtype",
                              fmt::format("gradients are accumulated in fp32, not {}",
                                          to_string(*c.grad_accum_dtype)));
    }
    // offload_optimizer and offload_param (stage 3, 16-bit compute) are implemented
    // (zero/offload.h). With fp32 compute the parameters are the f32 master weights, which
    // offload_optimizer moves; offload_param then has nothing of its own to move.
    if (c.zero.offload_param.device != OffloadDevice::none && c.zero.stage == 3 &&
        c.precision == Precision::f32) {
        if (c.zero.offload_param.device == OffloadDevice::cpu) {
            diag.notes.push_back(fmt::format(
                "{}: zero_optimization.offload_param.device \"cpu\" with fp32: the parameters "
                "are the master weights, in host memory on CPU ranks; nothing is moved",
                source));
        } else {
            root.note_unsupported("zero_optimization.offload_param",
                                  "device \"nvme\" with fp32 compute: the parameters are the "
                                  "f32 master weights and stay in memory (offload them with "
                                  "offload_optimizer, or train in bf16/fp16)");
        }
    }
    note_unsupported_sections(root);
    root.finish();

    c.warnings = std::move(diag.warnings);
    c.unsupported = std::move(diag.unsupported);
    c.notes = std::move(diag.notes);
    c.resolved_auto = std::move(resolved);
    for (const std::string& r : c.resolved_auto) log_info("{}: \"auto\" resolved: {}", source, r);
    return c;
}

TrainConfig load_ds_config(const std::string& path, int world_size, const AutoValues* autos) {
    return parse_ds_config(io::read_file(path), path, world_size, autos);
}

}  // namespace zs::train
