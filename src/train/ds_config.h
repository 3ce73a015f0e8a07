// DeepSpeed's ds_config.json, parsed once into typed structs with DeepSpeed's key names, defaults
// and rules (DeepSpeed 0.19: runtime/config.py, zero/config.py, zero/offload_config.py,
// precision_config.py, lr_schedules.py, activation_checkpointing/config.py, monitor/config.py).
//
// Errors: a wrong type or value raises ConfigError "<source>: <key.path>: expected ..., got ...".
// Warnings: an unknown key is logged (zs::log_warn) and kept in TrainConfig::warnings with a
// "did you mean" suggestion; a DeepSpeed setting zerospeed parses but does not implement is listed
// in TrainConfig::unsupported (for the CLI to print). No JSON leaves ds_config.cpp.
//
//   TrainConfig c = load_ds_config("ds_config.json", /*world_size=*/8);
//   c.batch.gradient_accumulation_steps;  // resolved as DeepSpeed does
//   LrSchedule sched(c.scheduler, c.optimizer);  // train/lr_schedule.h
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "io/aio.h"
#include "optim/optimizer.h"

namespace zs::train {

// train_batch_size = train_micro_batch_size_per_gpu * gradient_accumulation_steps * world_size.
// Any two determine the third; one alone sets gradient_accumulation_steps = 1 (DeepSpeed's
// _set_batch_related_parameters). With elasticity enabled, the "elasticity" block decides all
// three instead (ElasticityConfig).
struct BatchConfig {
    int64_t train_batch_size = 0;
    int64_t train_micro_batch_size_per_gpu = 0;
    int64_t gradient_accumulation_steps = 0;
};

// "elasticity": one global batch that splits evenly over many data-parallel sizes, so a job can
// be restarted on another number of ranks without changing what it computes. The batch is the
// candidate, among (highly composite number) x (a micro-batch size or their LCM), that fits the
// most rank counts in [min_gpus, max_gpus], ties going to the larger batch (prefer_larger_batch)
// or the smaller; the micro-batch is the largest of micro_batch_sizes that divides
// batch / world_size, and accumulation is what is left. Version 0.2 works per node
// (num_gpus_per_node / model_parallel_size data-parallel ranks each) and, for a world size
// outside the list, falls back to the largest multiple of micro x world <= max_train_batch_size.
// As DeepSpeed 0.19.6 and 0.19.7 compute it (elasticity/elasticity.py compute_elastic_config,
// called by DeepSpeedConfig.__init__; before 0.19.6 the micro-batch sizes' LCM could exceed the
// max, deepspeedai/DeepSpeed#8237). DeepSpeed 0.19.8 removed the feature and refuses the block.
//
//   max_train_batch_size 2000, micro_batch_sizes [2, 4, 6], version 0.2, 4 ranks:
//   candidates 840*2 = 1680 and 360*4 = 240*6 = 120*12 (LCM) = 1440; 1680 fits more rank
//   counts (32) -> batch 1680, micro 6 (1680 / 4 = 420 = 6 * 70), gradient_accumulation_steps 70.
struct ElasticityConfig {
    bool enabled = false;
    int64_t max_train_batch_size = 2000;
    std::vector<int64_t> micro_batch_sizes = {2, 4, 6};
    int64_t min_gpus = 1, max_gpus = 10000;
    int64_t num_gpus_per_node = 1;    // version 0.2
    int64_t model_parallel_size = 1;  // version 0.2 (> 1 is refused for 0.1)
    double min_time = 0;              // minutes; for the resource scheduler only
    double version = 0.2;             // 0.1 or 0.2
    bool prefer_larger_batch = true;
    bool ignore_non_elastic_batch_info = false;  // else batch keys next to the block are an error
    // Derived for the run's world size: the data-parallel sizes the batch fits (DeepSpeed's
    // valid_gpus), sorted.
    std::vector<int64_t> valid_world_sizes;
};

// "optimizer": {"type", "params"}. "Adam" means AdamW unless params.adam_w_mode is false;
// "AdamW" is AdamW whatever adam_w_mode says. Defaults are those of the optimizer DeepSpeed
// builds (FusedAdam / DeepSpeedCPUAdam, torch.optim.SGD, FusedLion, torch.optim.Adagrad,
// FusedLamb).
struct OptimizerConfig {
    bool given = false;  // an "optimizer" section was present (else AdamW with these defaults)
    std::string type;    // as written: "Adam", "adamw", "SGD", "Lion", "Lamb"
    optim::Kind kind = optim::Kind::adamw;
    double lr = 1e-3;
    double beta1 = 0.9, beta2 = 0.999;  // Adam/AdamW/Lion/Lamb
    double eps = 1e-8;                  // Adam/AdamW/Lamb (Adagrad: 1e-10)
    double lr_decay = 0.0;              // Adagrad
    double weight_decay = 0.0;          // torch_adam + AdamW: torch's default 0.01
    bool bias_correction = true;        // Adam/AdamW/Lamb
    double momentum = 0.0;              // SGD (dampening must be 0)
    bool nesterov = false;              // SGD
    bool torch_adam = false;            // DeepSpeed: use torch.optim.Adam(W) (same math)
    double max_coeff = 10.0;            // Lamb: trust ratio clamp (FusedLamb's defaults)
    double min_coeff = 0.01;            // Lamb
    bool eps_inside_sqrt = false;       // Lamb: sqrt(v + eps) instead of sqrt(v) + eps

    // The optim layer's options (floats) for these settings.
    optim::Options options() const;
};

enum class SchedulerKind {
    constant,
    warmup_lr,
    warmup_decay_lr,
    warmup_cosine_lr,
    one_cycle,
    lr_range_test
};
const char* to_string(SchedulerKind k);  // DeepSpeed's type name ("WarmupLR"...), or "constant"

enum class WarmupType { log, linear };

// "scheduler": {"type", "params"}, with the defaults of DeepSpeed's scheduler constructors (the
// ones ds_config reaches; the argparse defaults in lr_schedules.py differ and do not apply).
struct SchedulerConfig {
    SchedulerKind kind = SchedulerKind::constant;  // no "scheduler": the optimizer's lr
    // WarmupLR, WarmupDecayLR, WarmupCosineLR
    int64_t warmup_num_steps = 1000;  // DeepSpeed uses max(2, warmup_num_steps)
    WarmupType warmup_type = WarmupType::log;
    double warmup_min_lr = 0.0;           // WarmupLR, WarmupDecayLR
    std::optional<double> warmup_max_lr;  // WarmupLR: optimizer lr; WarmupDecayLR: 0.001
    int64_t total_num_steps = 0;          // WarmupDecayLR, WarmupCosineLR (required)
    double warmup_min_ratio = 0.0;        // WarmupCosineLR
    double cos_min_ratio = 1e-4;          // WarmupCosineLR
    // OneCycle
    double cycle_min_lr = 0.0, cycle_max_lr = 0.0;  // required
    double decay_lr_rate = 0.0;
    double cycle_first_step_size = 2000;
    std::optional<double> cycle_second_step_size;     // default: cycle_first_step_size
    int64_t cycle_first_stair_count = 0;              // 0: continuous
    std::optional<int64_t> cycle_second_stair_count;  // default: cycle_first_stair_count
    double decay_step_size = 0;                       // 0: no post-cycle decay
    bool cycle_momentum = true;  // cycles beta1 (and sets beta2 = 0.99) for optimizers with betas
    double cycle_min_mom = 0.8, cycle_max_mom = 0.9, decay_mom_rate = 0.0;
    // LRRangeTest
    double lr_range_test_min_lr = 1e-3;
    int64_t lr_range_test_step_size = 2000;
    double lr_range_test_step_rate = 1.0;
    bool lr_range_test_staircase = false;
};

enum class Precision { f32, bf16, fp16 };
const char* to_string(Precision p);

struct Fp16Config {
    bool enabled = false;
    bool auto_cast = false;
    double loss_scale = 0;  // 0: dynamic loss scaling; > 0: this static scale
    int initial_scale_power = 16;
    int64_t loss_scale_window = 1000;
    int hysteresis = 2;
    bool consecutive_hysteresis = false;
    int64_t min_loss_scale = 1;
    bool fp16_master_weights_and_grads = false;
};

struct Bf16Config {  // "bf16" (or the old name "bfloat16")
    bool enabled = false;
    bool immediate_grad_update = false;
    bool check_grad_overflow = true;
    bool bf16_master_weights_and_grads = false;
    bool bf16_optimizer_states = false;
};

enum class OffloadDevice { none, cpu, nvme };
const char* to_string(OffloadDevice d);

struct OffloadParamConfig {  // zero_optimization.offload_param (stage 3 only)
    OffloadDevice device = OffloadDevice::none;
    std::string nvme_path;
    bool pin_memory = true;
    int64_t buffer_count = 5;
    int64_t buffer_size = 100'000'000;
    int64_t max_in_cpu = 1'000'000'000;
};

struct OffloadOptimizerConfig {  // zero_optimization.offload_optimizer
    OffloadDevice device = OffloadDevice::none;
    std::string nvme_path;
    bool pin_memory = true;
    int64_t buffer_count = 4;
    bool pipeline_read = false, pipeline_write = false;
    bool fast_init = false;
    double ratio = 1.0;  // < 1 (partial offload) needs stage 3
    bool super_offload = false;
    double cpuadam_cores_perc = 0.8;
};

// zero_optimization. Sizes count elements. The stage3_* keys are DeepSpeed's aliases of
// prefetch_bucket_size, param_persistence_threshold... (both spellings are accepted).
struct ZeroConfig {
    int stage = 0;
    bool contiguous_gradients = true;
    bool reduce_scatter = true;
    int64_t reduce_bucket_size = 500'000'000;
    bool use_multi_rank_bucket_allreduce = true;
    bool allgather_partitions = true;
    int64_t allgather_bucket_size = 500'000'000;
    bool overlap_comm = false;  // default: stage == 3
    bool compute_grad_norm = true;
    bool load_from_fp32_weights = true;
    bool elastic_checkpoint = false;
    OffloadParamConfig offload_param;
    OffloadOptimizerConfig offload_optimizer;
    int64_t sub_group_size = 1'000'000'000;
    int64_t stage3_prefetch_bucket_size = 50'000'000;
    int64_t stage3_param_persistence_threshold = 100'000;
    int64_t stage3_model_persistence_threshold = std::numeric_limits<int64_t>::max();
    int64_t stage3_max_live_parameters = 1'000'000'000;
    int64_t stage3_max_reuse_distance = 1'000'000'000;
    bool stage3_gather_16bit_weights_on_model_save = false;
    int64_t stage3_module_granularity_threshold = 0;
    bool stage3_use_all_reduce_for_fetch_params = false;
    bool stage3_allgather_sequential = false;
    bool ignore_unused_parameters = true;
    bool legacy_stage1 = false;
    bool round_robin_gradients = false;
    bool parameter_alignment = false;
    int64_t zero_hpz_partition_size = 1;
    bool zero_quantized_weights = false;
    bool zero_quantized_nontrainable_weights = false;
    bool zero_quantized_gradients = false;
    // zerospeed extension (DeepSpeed has no such key): qgZ's code width, 8 (int8, the default)
    // or 4 (int4, two per byte: the width DeepSpeed's two-hop qgZ kernels use).
    int zero_quantized_gradients_bits = 8;
    bool memory_efficient_linear = true;
    bool pipeline_loading_checkpoint = false;
    bool override_module_apply = true;
    bool log_trace_cache_warnings = false;
    bool enable_sanity_checks = false;
    int64_t mics_shard_size = -1;  // refused by DeepSpeed 0.19.7+; parsed for older configs
    bool mics_hierarchical_params_gather = false;
};

// zerospeed's "moe" section: DeepSpeed passes these to deepspeed.moe.layer.MoE(...), not through
// ds_config, so they have no DeepSpeed key. Absent: the model's own gating (HF Mixtral/Qwen2-MoE:
// no capacity limit, no z-loss). The drop rule is DeepSpeed's with use_rts and
// top2_2nd_expert_sampling false (tokens kept in order; true is refused by name).
struct MoeGatingConfig {
    bool given = false;  // a "moe" section was present
    std::optional<double> capacity_factor, eval_capacity_factor, router_z_loss_coef;
    std::optional<int64_t> min_capacity;
    std::optional<bool> drop_tokens;
};

struct ActivationCheckpointingConfig {
    bool given = false;  // an "activation_checkpointing" section was present
    bool partition_activations = false;
    bool cpu_checkpointing = false;
    bool contiguous_memory_optimization = false;
    std::optional<int64_t> number_checkpoints;
    bool synchronize_checkpoint_boundary = false;
    bool profile = false;
};

// DeepSpeed's "pipeline" section (PipelineModule's settings) plus zerospeed's schedule keys.
struct PipelineConfig {
    int stages = 1;  // pipeline.stages or --pp: pipeline ranks (pp)
    // pipeline.partition: DeepSpeed's partition_method — "parameters" (balance the blocks'
    // parameter counts, the embedding counted with the first stage and the head with the last) or
    // "uniform" (equal numbers of blocks), or zerospeed's "flops" (balance the estimated training
    // compute, the LM head and the stages' recompute included: train/pipeline_stage.h).
    enum class Partition { parameters, uniform, flops, time } partition = Partition::parameters;
    std::string schedule = "1f1b";  // pipeline.schedule (zerospeed): gpipe, 1f1b, interleaved
    int virtual_stages = 1;         // pipeline.virtual_stages (zerospeed): chunks per rank
};

enum class TagValidation { warn, ignore, fail };

struct CheckpointConfig {
    TagValidation tag_validation = TagValidation::warn;  // "Warn" | "Ignore" | "Fail", any case
    bool load_universal = false;
    bool use_node_local_storage = false;
    bool parallel_write_pipeline_stage = false;
};

struct MonitorConfig {  // csv_monitor, tensorboard
    bool enabled = false;
    std::string output_path;
    std::string job_name = "DeepSpeedJobName";
};

// A dtype name as DeepSpeed accepts it ("fp16", "bf16", "fp32" and aliases).
enum class DataType { fp32, fp16, bf16 };
const char* to_string(DataType t);

struct TrainConfig {
    std::string source;  // file name, for messages
    int world_size = 1;  // data-parallel ranks the batch triple was resolved for
    // tensor_parallel.autotp_size (DeepSpeed's AutoTP training key) or --tp: the ranks split into
    // world_size (dp) x tensor_parallel_size (tp), tp fastest (parallel/topology.h).
    int tensor_parallel_size = 1;
    // sequence_parallel_size (DeepSpeed-Ulysses) or --sp: the ranks split into world_size (dp) x
    // sequence_parallel_size (sp) x tensor_parallel_size (tp), tp fastest, then sp; the batch
    // triple is for the dp ranks (DeepSpeed: world / sp), and each sp rank trains on seq_len / sp
    // tokens of the same sequences.
    int sequence_parallel_size = 1;
    // The "pipeline" section or --pp: the ranks split into dp x pp x sp x tp (pp outermost); the
    // batch triple is for the dp ranks, and gradient_accumulation_steps is the number of
    // micro-batches each pipeline step runs.
    PipelineConfig pipeline;
    // ring_parallel_size (zerospeed's key; DeepSpeed has none) or --ring: ring attention's degree,
    // composed with Ulysses as USP: the sequence-parallel ranks are sequence_parallel_size
    // (Ulysses, fastest) x ring_parallel_size, the world dp x that x tp, and each rank trains on
    // its seq_len / (sp x ring) tokens: the u-th slice of its ring rank's two zig-zag chunks.
    int ring_parallel_size = 1;
    // expert_parallel_size (zerospeed's key for what DeepSpeed sets as the MoE layer's ep_size)
    // or --ep: expert parallelism carved out of the world_size data-parallel ranks (ep consecutive
    // dp ranks share one copy of the experts, E / ep each; parallel/topology.h). ep must divide
    // world_size (and the model's experts: checked with the model). The batch triple is
    // unchanged: every dp rank still reads its own micro-batches.
    int expert_parallel_size = 1;

    BatchConfig batch;
    ElasticityConfig elasticity;  // when enabled, `batch` is what it derived for world_size
    OptimizerConfig optimizer;
    SchedulerConfig scheduler;
    double gradient_clipping = 1.0;  // DeepSpeed's default; 0 disables clipping

    Precision precision = Precision::f32;  // from fp16.enabled / bf16.enabled
    Fp16Config fp16;
    Bf16Config bf16;
    ZeroConfig zero;
    // "aio": the NVMe swap files' io_uring settings (io/aio.h; thread_count or its newer name
    // intra_op_parallelism). use_gds true is listed as unsupported (no GPUDirect Storage).
    io::AioConfig aio;
    ActivationCheckpointingConfig activation_checkpointing;
    MoeGatingConfig moe;

    std::optional<int64_t> steps_per_print;  // DeepSpeed: none (no periodic progress report)
    bool wall_clock_breakdown = false;
    bool dump_state = false;
    bool prescale_gradients = false;
    double gradient_predivide_factor = 1.0;
    std::optional<DataType> communication_data_type;  // none: the gradients' own dtype
    std::optional<DataType> grad_accum_dtype;         // data_types.grad_accum_dtype
    std::optional<uint64_t> seed;                     // zerospeed extension (DeepSpeed has none)
    CheckpointConfig checkpoint;
    MonitorConfig csv_monitor;
    MonitorConfig tensorboard;

    std::vector<std::string> warnings;       // unknown keys, with "did you mean" suggestions
    std::vector<std::string> unsupported;    // DeepSpeed settings zerospeed does not implement
    std::vector<std::string> notes;          // how a setting is honoured, where worth stating
    std::vector<std::string> resolved_auto;  // "optimizer.params.lr = 5e-05 (--lr)", ...
};

// What resolves the Hugging Face Trainer's "auto" placeholders, as the Trainer would: the run's
// flags (unset: the Trainer's defaults) and the model. Each resolved value is logged and listed in
// TrainConfig::resolved_auto.
struct AutoValues {
    std::optional<int64_t> micro_batch;   // --micro-batch (Trainer: per_device_train_batch_size 8)
    std::optional<int64_t> grad_accum;    // --grad-accum (1)
    std::optional<double> lr;             // --lr (learning_rate 5e-5)
    std::optional<double> weight_decay;   // --weight-decay (0)
    std::optional<int64_t> warmup;        // --warmup (warmup_steps 0)
    std::optional<double> max_grad_norm;  // --max-grad-norm (1.0)
    std::optional<int64_t> steps;         // --steps (total_num_steps)
    int64_t hidden_size = 0;              // the model's (ZeRO bucket sizes); 0: unknown
    std::optional<int> tp;                // --tp (tensor_parallel.autotp_size; must agree)
    std::optional<int> sp;                // --sp (sequence_parallel_size; must agree)
    std::optional<int> pp;                // --pp (pipeline.stages; must agree)
    std::optional<int> ring;              // --ring (ring_parallel_size; must agree)
    std::optional<int> ep;                // --ep (expert_parallel_size; must agree)
};

// Parse `json_text` (the contents of `source`) for `world_size` data-parallel ranks. Throws
// ConfigError on invalid settings (IoError on malformed JSON); logs each warning. With `autos`,
// "auto" values are resolved from it first (optimizer and scheduler params, batch sizes,
// gradient_clipping, ZeRO bucket sizes); without, "auto" outside the sections where DeepSpeed
// reads it as the default is an error naming the flag that would supply it.
TrainConfig parse_ds_config(const std::string& json_text, const std::string& source, int world_size,
                            const AutoValues* autos = nullptr);
// Read and parse the file at `path` (IoError when it cannot be read).
TrainConfig load_ds_config(const std::string& path, int world_size,
                           const AutoValues* autos = nullptr);

// The closest of `candidates` to `key` (case-insensitive edit distance, at most
// max(2, |key| / 3)), or "" when none is close.
std::string did_you_mean(const std::string& key, const std::vector<std::string>& candidates);

}  // namespace zs::train
