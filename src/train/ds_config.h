// DeepSpeed's ds_config.json, parsed once into typed structs with DeepSpeed's key names, defaults
// and rules (batch-size triple, "Adam" meaning AdamW unless adam_w_mode is false, fp16/bf16,
// zero_optimization, schedulers). Unknown keys produce a warning with a "did you mean" suggestion;
// DeepSpeed keys zerospeed parses but does not implement yet are listed as warnings too
// (docs/CONFIG.md). Wrong types or values raise ConfigError naming the key path, the value and
// what is allowed. No JSON leaves this file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "optim/optimizer.h"
#include "train/loss_scaler.h"
#include "train/lr_schedule.h"

namespace zs::train {

enum class Precision { f32, bf16, fp16 };
const char* to_string(Precision p);

enum class OffloadDevice { none, cpu, nvme };

struct ZeroSettings {
    int stage = 0;
    bool contiguous_gradients = true;
    bool overlap_comm = false;  // DeepSpeed: false, but true for stage 3
    bool reduce_scatter = true;
    int64_t reduce_bucket_size = 500'000'000;
    int64_t allgather_bucket_size = 500'000'000;
    bool allgather_partitions = true;
    int64_t stage3_prefetch_bucket_size = 50'000'000;
    int64_t stage3_max_live_parameters = 1'000'000'000;
    int64_t stage3_max_reuse_distance = 1'000'000'000;
    int64_t stage3_param_persistence_threshold = 100'000;
    bool stage3_gather_16bit_weights_on_model_save = false;
    OffloadDevice offload_optimizer = OffloadDevice::none;
    OffloadDevice offload_param = OffloadDevice::none;
    std::string nvme_path;
    bool pin_memory = false;
    int64_t sub_group_size = 1'000'000'000;
};

struct TrainConfig {
    std::string source;
    int world_size = 1;
    int64_t train_batch_size = 0, micro_batch = 0, grad_accum = 0;

    std::string optimizer_type = "AdamW";  // as written (Adam, AdamW, SGD, Lion)
    optim::Options optimizer;
    double lr = 1e-3;
    ScheduleConfig scheduler;
    double gradient_clipping = 0.0;  // 0: off

    Precision precision = Precision::f32;
    LossScalerConfig fp16;

    ZeroSettings zero;
    bool activation_checkpointing = false;  // any activation_checkpointing section present
    int64_t steps_per_print = 10;
    bool wall_clock_breakdown = false;
    std::optional<uint64_t> seed;

    bool csv_monitor = false;
    std::string csv_output_path, csv_job_name = "zerospeed";

    std::vector<std::string> warnings;  // unknown keys (with suggestions), unimplemented keys
};

// world_size: ranks in the data-parallel group (resolves the batch-size triple).
TrainConfig parse_ds_config(const std::string& json_text, const std::string& source,
                            int world_size);
TrainConfig load_ds_config(const std::string& path, int world_size);

// The closest of `candidates` to `key` within edit distance 3, or "".
std::string did_you_mean(const std::string& key, const std::vector<std::string>& candidates);

}  // namespace zs::train
