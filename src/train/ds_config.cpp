#include "train/ds_config.h"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "base/error.h"
#include "io/atomic_file.h"
#include "io/json.h"

namespace zs::train {

using io::JsonReader;

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

std::string did_you_mean(const std::string& key, const std::vector<std::string>& candidates) {
    auto dist = [](const std::string& a, const std::string& b) {
        std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
        for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
        for (size_t i = 1; i <= a.size(); ++i) {
            cur[0] = i;
            for (size_t j = 1; j <= b.size(); ++j) {
                size_t sub =
                    prev[j - 1] + (std::tolower(a[i - 1]) == std::tolower(b[j - 1]) ? 0 : 1);
                cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
            }
            std::swap(prev, cur);
        }
        return prev[b.size()];
    };
    std::string best;
    size_t best_d = 4;
    for (const std::string& c : candidates) {
        size_t d = dist(key, c);
        if (d < best_d) {
            best_d = d;
            best = c;
        }
    }
    return best;
}

namespace {

// Keys a section knows: implemented ones, and DeepSpeed ones parsed but not implemented.
void check_keys(const JsonReader& r, const std::vector<std::string>& known,
                const std::vector<std::string>& unimplemented, std::vector<std::string>& warnings) {
    std::vector<std::string> all = known;
    all.insert(all.end(), unimplemented.begin(), unimplemented.end());
    for (const std::string& k : r.keys()) {
        if (std::find(known.begin(), known.end(), k) != known.end()) continue;
        if (std::find(unimplemented.begin(), unimplemented.end(), k) != unimplemented.end()) {
            warnings.push_back(
                fmt::format("{}: key '{}' is a DeepSpeed setting zerospeed does not "
                            "implement yet; it is ignored (docs/CONFIG.md)",
                            r.file(), r.path_of(k)));
            continue;
        }
        std::string s = did_you_mean(k, all);
        warnings.push_back(fmt::format("{}: unknown key '{}'{}", r.file(), r.path_of(k),
                                       s.empty() ? "" : fmt::format(" (did you mean '{}'?)", s)));
    }
}

OffloadDevice offload(const JsonReader& r, const char* section, ZeroSettings& z) {
    auto o = r.opt_object(section);
    if (!o) return OffloadDevice::none;
    std::string d = o->opt_string("device").value_or("none");
    std::transform(d.begin(), d.end(), d.begin(), [](unsigned char c) { return std::tolower(c); });
    if (o->has("nvme_path")) z.nvme_path = o->get_string("nvme_path");
    z.pin_memory = o->opt_bool("pin_memory").value_or(z.pin_memory);
    if (d == "none") return OffloadDevice::none;
    if (d == "cpu") return OffloadDevice::cpu;
    if (d == "nvme") return OffloadDevice::nvme;
    o->fail("device", fmt::format("expected \"none\", \"cpu\" or \"nvme\", got \"{}\"", d));
}

}  // namespace

TrainConfig parse_ds_config(const std::string& text, const std::string& source, int world) {
    nlohmann::json j = io::parse_json(text, source);
    JsonReader r(j, source);
    TrainConfig c;
    c.source = source;
    c.world_size = world;
    ZS_CHECK_T(ConfigError, world >= 1, "world size must be >= 1 (got {})", world);
    auto& w = c.warnings;
    check_keys(r,
               {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "optimizer", "scheduler", "gradient_clipping", "bf16", "bfloat16", "fp16",
                "zero_optimization", "activation_checkpointing", "steps_per_print",
                "wall_clock_breakdown", "seed", "csv_monitor", "zero_allow_untested_optimizer",
                "zero_force_ds_cpu_optimizer", "prescale_gradients", "gradient_predivide_factor"},
               {"tensorboard",
                "wandb",
                "comet",
                "flops_profiler",
                "autotuning",
                "amp",
                "communication_data_type",
                "data_types",
                "checkpoint",
                "elasticity",
                "curriculum_learning",
                "data_efficiency",
                "compression_training",
                "dump_state",
                "memory_breakdown",
                "sparse_attention",
                "pipeline",
                "aio",
                "nebula",
                "sparse_gradients",
                "disable_allgather",
                "eigenvalue",
                "progressive_layer_drop",
                "load_universal_checkpoint",
                "use_node_local_storage",
                "tensor_parallel",
                "zero_quantized_weights",
                "zero_quantized_gradients",
                "gradient_checkpointing"},
               w);

    // ---- batch sizes (DeepSpeed's _configure_train_batch_size) ----
    auto tbs = r.opt_int("train_batch_size", 1);
    auto mbs = r.opt_int("train_micro_batch_size_per_gpu", 1);
    auto gas = r.opt_int("gradient_accumulation_steps", 1);
    if (tbs && mbs && gas) {
        c.train_batch_size = *tbs, c.micro_batch = *mbs, c.grad_accum = *gas;
    } else if (tbs && mbs) {
        c.train_batch_size = *tbs, c.micro_batch = *mbs, c.grad_accum = *tbs / *mbs / world;
    } else if (tbs && gas) {
        c.train_batch_size = *tbs, c.grad_accum = *gas, c.micro_batch = *tbs / world / *gas;
    } else if (mbs && gas) {
        c.micro_batch = *mbs, c.grad_accum = *gas, c.train_batch_size = *mbs * *gas * world;
    } else if (tbs) {
        c.train_batch_size = *tbs, c.grad_accum = 1, c.micro_batch = *tbs / world;
    } else if (mbs) {
        c.micro_batch = *mbs, c.grad_accum = 1, c.train_batch_size = *mbs * world;
    } else {
        ZS_THROW(ConfigError,
                 "{}: either 'train_batch_size' or 'train_micro_batch_size_per_gpu' must be given",
                 source);
    }
    ZS_CHECK_T(ConfigError,
               c.micro_batch > 0 && c.grad_accum > 0 &&
                   c.train_batch_size == c.micro_batch * c.grad_accum * world,
               "{}: train_batch_size ({}) must equal train_micro_batch_size_per_gpu ({}) x "
               "gradient_accumulation_steps ({}) x world size ({})",
               source, c.train_batch_size, c.micro_batch, c.grad_accum, world);

    // ---- optimizer ----
    if (auto o = r.opt_object("optimizer")) {
        check_keys(*o, {"type", "params"}, {}, w);
        std::string type = o->get_string("type");
        std::string t = type;
        std::transform(t.begin(), t.end(), t.begin(),
                       [](unsigned char ch) { return std::tolower(ch); });
        c.optimizer_type = type;
        static const nlohmann::json kEmpty = nlohmann::json::object();  // outlives the reader
        JsonReader p = o->opt_object("params").value_or(
            JsonReader(kEmpty, source, io::JsonErrorKind::config, o->path_of("params")));
        std::vector<std::string> known = {
            "lr",       "betas",    "eps",        "weight_decay", "adam_w_mode", "bias_correction",
            "momentum", "nesterov", "torch_adam", "fused",        "amsgrad",     "dampening"};
        check_keys(p, known, {}, w);
        c.lr = p.opt_number("lr").value_or(1e-3);
        optim::Options& op = c.optimizer;
        op.weight_decay =
            static_cast<float>(p.opt_number("weight_decay").value_or(t == "sgd" ? 0.0 : 0.01));
        if (t == "adam" || t == "adamw") {
            bool adamw_mode = p.opt_bool("adam_w_mode").value_or(true);
            op.kind = (t == "adamw" || adamw_mode) ? optim::Kind::adamw : optim::Kind::adam;
        } else if (t == "sgd") {
            op.kind = optim::Kind::sgd;
        } else if (t == "lion") {
            op.kind = optim::Kind::lion;
        } else {
            o->fail("type", fmt::format("\"{}\" is not supported (Adam, AdamW, SGD, Lion)", type));
        }
        if (p.has("betas")) {
            std::vector<double> b = p.get_number_array("betas");
            if (b.size() != 2 || b[0] < 0 || b[0] >= 1 || b[1] < 0 || b[1] >= 1) {
                p.fail("betas", "expected two numbers in [0, 1)");
            }
            op.beta1 = static_cast<float>(b[0]);
            op.beta2 = static_cast<float>(b[1]);
        } else if (op.kind == optim::Kind::lion) {
            op.beta1 = 0.9f;
            op.beta2 = 0.99f;
        }
        op.eps = static_cast<float>(p.opt_number("eps").value_or(1e-8));
        op.bias_correction = p.opt_bool("bias_correction").value_or(true);
        op.momentum = static_cast<float>(p.opt_number("momentum").value_or(0.0));
        op.nesterov = p.opt_bool("nesterov").value_or(false);
        if (p.opt_bool("amsgrad").value_or(false)) p.fail("amsgrad", "amsgrad is not supported");
        if (c.lr < 0) p.fail("lr", fmt::format("must be >= 0, got {}", c.lr));
    }
    c.scheduler.lr = c.lr;

    // ---- scheduler ----
    if (auto s = r.opt_object("scheduler")) {
        check_keys(*s, {"type", "params"}, {}, w);
        std::string type = s->get_string("type");
        ScheduleConfig& sc = c.scheduler;
        if (type == "WarmupLR") {
            sc.kind = ScheduleKind::warmup_lr;
        } else if (type == "WarmupDecayLR") {
            sc.kind = ScheduleKind::warmup_decay_lr;
        } else if (type == "WarmupCosineLR") {
            sc.kind = ScheduleKind::warmup_cosine_lr;
        } else if (type == "OneCycle") {
            sc.kind = ScheduleKind::one_cycle;
        } else {
            s->fail("type", fmt::format("\"{}\" is not supported (WarmupLR, WarmupDecayLR, "
                                        "WarmupCosineLR, OneCycle)",
                                        type));
        }
        if (auto p = s->opt_object("params")) {
            check_keys(*p,
                       {"warmup_min_lr",
                        "warmup_max_lr",
                        "warmup_num_steps",
                        "warmup_type",
                        "total_num_steps",
                        "warmup_min_ratio",
                        "cos_min_ratio",
                        "cycle_min_lr",
                        "cycle_max_lr",
                        "decay_lr_rate",
                        "cycle_first_step_size",
                        "cycle_second_step_size",
                        "cycle_first_stair_count",
                        "cycle_second_stair_count",
                        "decay_step_size",
                        "cycle_momentum",
                        "cycle_min_mom",
                        "cycle_max_mom",
                        "decay_mom_rate",
                        "last_batch_iteration"},
                       {}, w);
            sc.warmup_min_lr = p->opt_number("warmup_min_lr").value_or(0.0);
            sc.warmup_max_lr = p->opt_number("warmup_max_lr").value_or(1e-3);
            sc.warmup_num_steps = p->opt_int("warmup_num_steps", 0).value_or(1000);
            std::string wt = p->opt_string("warmup_type").value_or("log");
            if (wt != "log" && wt != "linear")
                p->fail("warmup_type", "expected \"log\" or \"linear\"");
            sc.warmup_log = wt == "log";
            sc.total_num_steps = p->opt_int("total_num_steps", 0).value_or(0);
            if ((sc.kind == ScheduleKind::warmup_decay_lr ||
                 sc.kind == ScheduleKind::warmup_cosine_lr) &&
                !p->has("total_num_steps")) {
                p->fail("total_num_steps", "is required by " + type);
            }
            sc.warmup_min_ratio = p->opt_number("warmup_min_ratio").value_or(0.0);
            sc.cos_min_ratio = p->opt_number("cos_min_ratio").value_or(1e-4);
            if (sc.kind == ScheduleKind::one_cycle) {
                sc.cycle_min_lr = p->get_number("cycle_min_lr");
                sc.cycle_max_lr = p->get_number("cycle_max_lr");
            }
            sc.decay_lr_rate = p->opt_number("decay_lr_rate").value_or(0.0);
            sc.cycle_first_step_size = p->opt_number("cycle_first_step_size").value_or(2000);
            sc.cycle_second_step_size = p->opt_number("cycle_second_step_size").value_or(-1);
            sc.cycle_first_stair_count = p->opt_int("cycle_first_stair_count", 0).value_or(0);
            sc.cycle_second_stair_count = p->opt_int("cycle_second_stair_count", 0).value_or(-1);
            sc.decay_step_size = p->opt_number("decay_step_size").value_or(0);
            sc.cycle_momentum = p->opt_bool("cycle_momentum").value_or(true);
            sc.cycle_min_mom = p->opt_number("cycle_min_mom").value_or(0.8);
            sc.cycle_max_mom = p->opt_number("cycle_max_mom").value_or(0.9);
            sc.decay_mom_rate = p->opt_number("decay_mom_rate").value_or(0.0);
        } else if (sc.kind == ScheduleKind::one_cycle || sc.kind == ScheduleKind::warmup_decay_lr ||
                   sc.kind == ScheduleKind::warmup_cosine_lr) {
            s->fail("params", "is required by " + type);
        }
    }

    c.gradient_clipping = r.opt_number("gradient_clipping").value_or(0.0);
    if (c.gradient_clipping < 0) r.fail("gradient_clipping", "must be >= 0");

    // ---- precision ----
    bool bf16 = false;
    for (const char* key : {"bf16", "bfloat16"}) {
        if (auto b = r.opt_object(key)) {
            check_keys(*b, {"enabled"}, {"immediate_grad_update", "check_grad_overflow"}, w);
            bf16 = bf16 || b->opt_bool("enabled").value_or(false);
        }
    }
    bool fp16 = false;
    if (auto f = r.opt_object("fp16")) {
        check_keys(*f,
                   {"enabled", "auto_cast", "loss_scale", "initial_scale_power",
                    "loss_scale_window", "hysteresis", "consecutive_hysteresis", "min_loss_scale"},
                   {"fp16_master_weights_and_grads"}, w);
        fp16 = f->opt_bool("enabled").value_or(false);
        c.fp16.loss_scale = f->opt_number("loss_scale").value_or(0.0);
        c.fp16.initial_scale_power =
            static_cast<int>(f->opt_int("initial_scale_power", 0, 63).value_or(16));
        c.fp16.loss_scale_window = f->opt_int("loss_scale_window", 1).value_or(1000);
        c.fp16.hysteresis = static_cast<int>(f->opt_int("hysteresis", 1).value_or(2));
        c.fp16.consecutive_hysteresis = f->opt_bool("consecutive_hysteresis").value_or(false);
        c.fp16.min_loss_scale = f->opt_number("min_loss_scale").value_or(1.0);
        if (c.fp16.loss_scale < 0) f->fail("loss_scale", "must be >= 0 (0 = dynamic)");
    }
    ZS_CHECK_T(ConfigError, !(bf16 && fp16), "{}: bf16 and fp16 cannot both be enabled", source);
    c.precision = bf16 ? Precision::bf16 : fp16 ? Precision::fp16 : Precision::f32;

    // ---- ZeRO ----
    if (auto z = r.opt_object("zero_optimization")) {
        check_keys(*z,
                   {"stage",
                    "contiguous_gradients",
                    "overlap_comm",
                    "reduce_scatter",
                    "reduce_bucket_size",
                    "allgather_bucket_size",
                    "allgather_partitions",
                    "stage3_prefetch_bucket_size",
                    "stage3_max_live_parameters",
                    "stage3_max_reuse_distance",
                    "stage3_param_persistence_threshold",
                    "stage3_gather_16bit_weights_on_model_save",
                    "stage3_gather_fp16_weights_on_model_save",
                    "offload_optimizer",
                    "offload_param",
                    "sub_group_size",
                    "round_robin_gradients",
                    "load_from_fp32_weights",
                    "elastic_checkpoint",
                    "cpu_offload",
                    "ignore_unused_parameters"},
                   {"zero_hpz_partition_size", "zero_quantized_weights", "zero_quantized_gradients",
                    "mics_shard_size", "mics_hierarchical_params_gather", "memory_efficient_linear",
                    "pipeline_loading_checkpoint", "override_module_apply", "zeropp_loco_param",
                    "log_trace_cache_warnings", "stage3_module_granularity_threshold"},
                   w);
        ZeroSettings& s = c.zero;
        s.stage = static_cast<int>(z->opt_int("stage", 0, 3).value_or(0));
        s.contiguous_gradients = z->opt_bool("contiguous_gradients").value_or(true);
        s.overlap_comm = z->opt_bool("overlap_comm").value_or(s.stage == 3);
        s.reduce_scatter = z->opt_bool("reduce_scatter").value_or(true);
        s.reduce_bucket_size = z->opt_int("reduce_bucket_size", 1).value_or(s.reduce_bucket_size);
        s.allgather_bucket_size =
            z->opt_int("allgather_bucket_size", 1).value_or(s.allgather_bucket_size);
        s.allgather_partitions = z->opt_bool("allgather_partitions").value_or(true);
        s.stage3_prefetch_bucket_size =
            z->opt_int("stage3_prefetch_bucket_size", 0).value_or(s.stage3_prefetch_bucket_size);
        s.stage3_max_live_parameters =
            z->opt_int("stage3_max_live_parameters", 0).value_or(s.stage3_max_live_parameters);
        s.stage3_max_reuse_distance =
            z->opt_int("stage3_max_reuse_distance", 0).value_or(s.stage3_max_reuse_distance);
        s.stage3_param_persistence_threshold = z->opt_int("stage3_param_persistence_threshold", 0)
                                                   .value_or(s.stage3_param_persistence_threshold);
        s.stage3_gather_16bit_weights_on_model_save =
            z->opt_bool("stage3_gather_16bit_weights_on_model_save")
                .value_or(z->opt_bool("stage3_gather_fp16_weights_on_model_save").value_or(false));
        s.sub_group_size = z->opt_int("sub_group_size", 1).value_or(s.sub_group_size);
        s.offload_optimizer = offload(*z, "offload_optimizer", s);
        s.offload_param = offload(*z, "offload_param", s);
        if (z->opt_bool("cpu_offload").value_or(false)) s.offload_optimizer = OffloadDevice::cpu;
        if (s.offload_param != OffloadDevice::none && s.stage != 3) {
            z->fail("offload_param",
                    "needs stage 3 (DeepSpeed: parameter offload is a ZeRO-3 feature)");
        }
        if (s.offload_optimizer == OffloadDevice::nvme || s.offload_param == OffloadDevice::nvme) {
            w.push_back(
                fmt::format("{}: NVMe offload is not implemented yet; optimizer states and "
                            "parameters stay in host memory",
                            source));
        }
    }

    if (auto a = r.opt_object("activation_checkpointing")) {
        check_keys(*a,
                   {"partition_activations", "cpu_checkpointing", "contiguous_memory_optimization",
                    "number_checkpoints", "synchronize_checkpoint_boundary", "profile"},
                   {}, w);
        c.activation_checkpointing = true;
    }
    c.steps_per_print = r.opt_int("steps_per_print", 1).value_or(10);
    c.wall_clock_breakdown = r.opt_bool("wall_clock_breakdown").value_or(false);
    if (auto s = r.opt_int("seed", 0)) c.seed = static_cast<uint64_t>(*s);
    if (auto m = r.opt_object("csv_monitor")) {
        check_keys(*m, {"enabled", "output_path", "job_name"}, {}, w);
        c.csv_monitor = m->opt_bool("enabled").value_or(false);
        c.csv_output_path = m->opt_string("output_path").value_or("");
        c.csv_job_name = m->opt_string("job_name").value_or("zerospeed");
    }
    return c;
}

TrainConfig load_ds_config(const std::string& path, int world_size) {
    return parse_ds_config(io::read_file(path), path, world_size);
}

}  // namespace zs::train
