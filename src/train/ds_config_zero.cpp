// zero_optimization → ZeroConfig: the stage, buckets, stage-3 knobs, offload sections, DeepSpeed's
// aliases and deprecated spellings, ZeRO++'s quantized communication (qwZ, qgZ) and hierarchical
// partitioning (hpZ), and what zerospeed does not implement (MiCS, ...).
#include "train/ds_config_zero.h"

#include <limits>

#include <fmt/format.h>

#include "base/error.h"

namespace zs::train {
namespace {

constexpr int64_t kI64Min = std::numeric_limits<int64_t>::min();
constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();

OffloadDevice parse_device(Section& s) {
    // pydantic's str enum: case-sensitive.
    switch (s.get_choice("device", {"none", "cpu", "nvme"}, false).value_or(0)) {
        case 1:
            return OffloadDevice::cpu;
        case 2:
            return OffloadDevice::nvme;
        default:
            return OffloadDevice::none;
    }
}

// zero/offload_config.py
void parse_offload_param(Section& z, OffloadParamConfig& o) {
    std::optional<Section> s = z.get_section("offload_param", true);
    if (!s) return;
    o.device = parse_device(*s);
    o.nvme_path = s->get_string("nvme_path").value_or("");
    o.pin_memory = s->get_bool("pin_memory").value_or(true);
    o.buffer_count = s->get_int("buffer_count", 0, kI64Max).value_or(5);
    o.buffer_size = s->get_int("buffer_size", 0, kI64Max).value_or(100'000'000);
    o.max_in_cpu = s->get_int("max_in_cpu", 0, kI64Max).value_or(1'000'000'000);
    if (o.device == OffloadDevice::nvme && o.nvme_path.empty()) {
        s->fail("nvme_path", "required when device is \"nvme\"");
    }
    s->finish();
}

void parse_offload_optimizer(Section& z, OffloadOptimizerConfig& o) {
    std::optional<Section> s = z.get_section("offload_optimizer", true);
    if (!s) return;
    o.device = parse_device(*s);
    o.nvme_path = s->get_string("nvme_path").value_or("");
    o.pin_memory = s->get_bool("pin_memory").value_or(true);
    o.buffer_count = s->get_int("buffer_count", 0, kI64Max).value_or(4);
    o.pipeline_read = s->get_bool("pipeline_read").value_or(false);
    o.pipeline_write = s->get_bool("pipeline_write").value_or(false);
    o.fast_init = s->get_bool("fast_init").value_or(false);
    o.ratio = s->get_number("ratio", 0.0, 1.0).value_or(1.0);
    o.super_offload = s->get_bool("super_offload").value_or(false);
    o.cpuadam_cores_perc = s->get_number("cpuadam_cores_perc", 0.0, 1.0).value_or(0.8);
    if (o.device == OffloadDevice::nvme && o.nvme_path.empty()) {
        s->fail("nvme_path", "required when device is \"nvme\"");
    }
    if (o.fast_init) {
        s->warn("fast_init", "has no effect: the swap files are written once at start either way");
    }
    if (o.super_offload) s->note_unsupported("super_offload", "not implemented");
    s->finish();
}

// A field DeepSpeed accepts under two names (pydantic alias + populate_by_name).
std::optional<int64_t> aliased_int(Section& z, const char* alias, const char* name, int64_t lo) {
    std::optional<int64_t> a = z.get_int(alias, lo, kI64Max), n = z.get_int(name, lo, kI64Max);
    if (a && n) z.fail(name, fmt::format("given twice (also as '{}')", alias));
    return a ? a : n;
}
std::optional<bool> aliased_bool(Section& z, const char* alias, const char* name) {
    std::optional<bool> a = z.get_bool(alias), n = z.get_bool(name);
    if (a && n) z.fail(name, fmt::format("given twice (also as '{}')", alias));
    return a ? a : n;
}

}  // namespace

// zero/config.py: DeepSpeedZeroConfig and its validators.
ZeroConfig parse_zero(Section& root) {
    ZeroConfig z;
    root.known({"zero_optimization", "allgather_size"});
    const nlohmann::json* raw = root.get_raw("zero_optimization");
    if (raw && raw->is_boolean()) {  // the deprecated boolean form: stage 1 when true
        root.warn("zero_optimization",
                  "the boolean form is deprecated; use {\"stage\": N} (read as stage 1 / 0)");
        if (raw->get<bool>()) {
            z.stage = 1;
            z.allgather_bucket_size =
                root.get_int("allgather_size", 0, kI64Max).value_or(500'000'000);
        }
        return z;
    }
    std::optional<Section> maybe = root.get_section("zero_optimization", true);
    if (!maybe) return z;
    Section& s = *maybe;
    z.stage = static_cast<int>(s.get_int("stage", 0, 3).value_or(0));
    z.contiguous_gradients = s.get_bool("contiguous_gradients").value_or(true);
    z.reduce_scatter = s.get_bool("reduce_scatter").value_or(true);
    // DeepSpeed 0.19.6 and earlier accept 0 (zero/config.py: ge=0); 0.19.7 refuses it (gt=0).
    // The bucket size only groups reductions, which zerospeed runs per parameter group anyway.
    z.reduce_bucket_size = s.get_int("reduce_bucket_size", 0, kI64Max).value_or(500'000'000);
    if (z.reduce_bucket_size == 0) {
        s.warn("reduce_bucket_size",
               "0 is accepted as DeepSpeed 0.19.6 and earlier accept it (0.19.7 and later refuse "
               "it); zerospeed reduces each parameter group whole, so the value does not change "
               "what is computed");
    }
    z.use_multi_rank_bucket_allreduce =
        s.get_bool("use_multi_rank_bucket_allreduce").value_or(true);
    z.allgather_partitions = s.get_bool("allgather_partitions").value_or(true);
    z.allgather_bucket_size = s.get_int("allgather_bucket_size", 0, kI64Max).value_or(500'000'000);
    z.overlap_comm = s.get_bool("overlap_comm").value_or(z.stage == 3);
    z.compute_grad_norm = s.get_bool("compute_grad_norm").value_or(true);
    if (!z.compute_grad_norm && z.stage != 1 && z.stage != 2) {
        s.fail("compute_grad_norm", "false is supported only with ZeRO stage 1 or 2");
    }
    z.load_from_fp32_weights = s.get_bool("load_from_fp32_weights").value_or(true);
    z.elastic_checkpoint = s.get_bool("elastic_checkpoint").value_or(false);
    parse_offload_param(s, z.offload_param);
    parse_offload_optimizer(s, z.offload_optimizer);
    // Deprecated spellings of the offload sections.
    if (std::optional<bool> v = s.get_bool("cpu_offload")) {
        if (s.has("offload_optimizer")) {
            s.fail("cpu_offload", "cannot be given together with offload_optimizer");
        }
        s.warn("cpu_offload", "deprecated; use offload_optimizer: {\"device\": \"cpu\"}");
        if (*v) z.offload_optimizer.device = OffloadDevice::cpu;
    }
    if (std::optional<bool> v = s.get_bool("cpu_offload_param")) {
        if (s.has("offload_param")) {
            s.fail("cpu_offload_param", "cannot be given together with offload_param");
        }
        s.warn("cpu_offload_param", "deprecated; use offload_param: {\"device\": \"cpu\"}");
        if (*v) z.offload_param.device = OffloadDevice::cpu;
    }
    if (s.get_bool("cpu_offload_use_pin_memory")) {
        s.warn("cpu_offload_use_pin_memory",
               "deprecated and without effect; use offload_*.pin_memory");
    }
    if (z.offload_optimizer.ratio < 1.0 && z.stage != 3) {
        s.fail("offload_optimizer", "partial offload (ratio < 1) is supported only with stage 3");
    }
    if (z.offload_param.device != OffloadDevice::none && z.stage != 3) {
        s.warn("offload_param",
               fmt::format("applies to ZeRO stage 3 only; ignored at stage {}", z.stage));
    }
    z.sub_group_size = s.get_int("sub_group_size", 0, kI64Max).value_or(1'000'000'000);
    z.stage3_prefetch_bucket_size =
        aliased_int(s, "stage3_prefetch_bucket_size", "prefetch_bucket_size", 0)
            .value_or(50'000'000);
    z.stage3_param_persistence_threshold =
        aliased_int(s, "stage3_param_persistence_threshold", "param_persistence_threshold", 0)
            .value_or(100'000);
    z.stage3_model_persistence_threshold =
        aliased_int(s, "stage3_model_persistence_threshold", "model_persistence_threshold", 0)
            .value_or(kI64Max);
    z.stage3_max_live_parameters =
        aliased_int(s, "stage3_max_live_parameters", "max_live_parameters", 0)
            .value_or(1'000'000'000);
    z.stage3_max_reuse_distance =
        aliased_int(s, "stage3_max_reuse_distance", "max_reuse_distance", 0)
            .value_or(1'000'000'000);
    std::optional<bool> g16 = aliased_bool(s, "stage3_gather_16bit_weights_on_model_save",
                                           "gather_16bit_weights_on_model_save");
    if (std::optional<bool> g = s.get_bool("stage3_gather_fp16_weights_on_model_save")) {
        s.warn("stage3_gather_fp16_weights_on_model_save",
               "deprecated; use stage3_gather_16bit_weights_on_model_save");
        if (g16) {
            s.fail("stage3_gather_fp16_weights_on_model_save",
                   "cannot be given together with stage3_gather_16bit_weights_on_model_save");
        }
        g16 = g;
    }
    z.stage3_gather_16bit_weights_on_model_save = g16.value_or(false);
    z.stage3_module_granularity_threshold = aliased_int(s, "stage3_module_granularity_threshold",
                                                        "module_granularity_threshold", kI64Min)
                                                .value_or(0);
    z.stage3_use_all_reduce_for_fetch_params =
        aliased_bool(s, "stage3_use_all_reduce_for_fetch_params", "use_all_reduce_for_fetch_params")
            .value_or(false);
    z.stage3_allgather_sequential =
        aliased_bool(s, "stage3_allgather_sequential", "allgather_sequential").value_or(false);
    z.ignore_unused_parameters = s.get_bool("ignore_unused_parameters").value_or(true);
    z.legacy_stage1 = s.get_bool("legacy_stage1").value_or(false);
    z.round_robin_gradients = s.get_bool("round_robin_gradients").value_or(false);
    z.parameter_alignment = s.get_bool("parameter_alignment").value_or(false);
    // hpZ: the engine checks that it divides the data-parallel size (zero/engine.h).
    z.zero_hpz_partition_size = s.get_int("zero_hpz_partition_size", 0, kI64Max).value_or(1);
    z.zero_quantized_weights = s.get_bool("zero_quantized_weights").value_or(false);
    z.zero_quantized_nontrainable_weights =
        s.get_bool("zero_quantized_nontrainable_weights").value_or(false);
    z.zero_quantized_gradients = s.get_bool("zero_quantized_gradients").value_or(false);
    // zerospeed's own key: qgZ's int8 (default) or int4 codes.
    if (std::optional<int64_t> bits =
            s.get_int("zero_quantized_gradients_bits", kI64Min, kI64Max)) {
        if (*bits != 8 && *bits != 4) {
            s.fail("zero_quantized_gradients_bits",
                   fmt::format("expected 8 or 4 (int8 or int4 gradient codes), got {}", *bits));
        }
        z.zero_quantized_gradients_bits = static_cast<int>(*bits);
    }
    z.memory_efficient_linear = s.get_bool("memory_efficient_linear").value_or(true);
    z.pipeline_loading_checkpoint = s.get_bool("pipeline_loading_checkpoint").value_or(false);
    z.override_module_apply = s.get_bool("override_module_apply").value_or(true);
    z.log_trace_cache_warnings = s.get_bool("log_trace_cache_warnings").value_or(false);
    z.enable_sanity_checks = s.get_bool("enable_sanity_checks").value_or(false);
    s.known({"save_muon_momentum_buffer_in_memory"});
    // MiCS: DeepSpeed 0.19.7 and later refuse these keys (runtime/config.py
    // _REMOVED_ZERO_CONFIG_KEYS); older configs still carry them.
    z.mics_shard_size = s.get_int("mics_shard_size", kI64Min, kI64Max).value_or(-1);
    z.mics_hierarchical_params_gather =
        s.get_bool("mics_hierarchical_params_gather").value_or(false);

    // ZeRO++ qwZ (zero_quantized_weights), qgZ (zero_quantized_gradients) and hpZ
    // (zero_hpz_partition_size) are implemented (zero/engine.h): qwZ and hpZ at stage 3, qgZ at
    // stages 2-3, over more than one rank; elsewhere they are accepted without effect (the engine
    // logs so), as DeepSpeed ignores them below stage 3.
    // What zerospeed does not implement (MiCS, ZenFlow, ...), when asked for.
    if (z.elastic_checkpoint) s.note_unsupported("elastic_checkpoint", "not implemented");
    if (z.legacy_stage1) s.note_unsupported("legacy_stage1", "not implemented");
    if (z.zero_quantized_nontrainable_weights) {
        s.note_unsupported("zero_quantized_nontrainable_weights", "not implemented");
    }
    if (z.mics_shard_size > 0) {
        s.note_unsupported("mics_shard_size",
                           "MiCS is not implemented (DeepSpeed 0.19.7 and later refuse the key)");
    }
    s.unsupported("zeropp_loco_param",
                  "LoCo-ZeRO++ is not implemented (DeepSpeed 0.19.8 refuses the key)");
    s.unsupported("zenflow", "ZenFlow is not implemented");
    s.unsupported("leaf_module", "ZeRO-3 leaf modules are not implemented");
    s.finish();
    return z;
}

}  // namespace zs::train
