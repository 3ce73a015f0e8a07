// DeepSpeed's learning-rate schedules (deepspeed/runtime/lr_schedules.py) with its step indexing:
// the scheduler is built with last_batch_iteration = -1 (which sets the initial lr) and stepped
// after every *applied* optimizer step. So optimizer step k (1-based) runs at lr_at(k - 2):
// lr_at(-1) is the construction-time value (WarmupLR / WarmupDecayLR / OneCycle: the minimum;
// WarmupCosineLR: 0, as DeepSpeed's get_lr returns before it has started).
#pragma once

#include <cstdint>
#include <string>

namespace zs::train {

enum class ScheduleKind { constant, warmup_lr, warmup_decay_lr, warmup_cosine_lr, one_cycle };
const char* to_string(ScheduleKind k);

struct ScheduleConfig {
    ScheduleKind kind = ScheduleKind::constant;
    double lr = 1e-3;  // the optimizer's lr (constant schedule; WarmupCosineLR's base)
    // WarmupLR / WarmupDecayLR / WarmupCosineLR
    double warmup_min_lr = 0.0, warmup_max_lr = 1e-3;
    int64_t warmup_num_steps = 1000;
    bool warmup_log = true;  // warmup_type: "log" (default) or "linear"
    int64_t total_num_steps = 0;
    double warmup_min_ratio = 0.0, cos_min_ratio = 1e-4;
    // OneCycle
    double cycle_min_lr = 0.0, cycle_max_lr = 0.0, decay_lr_rate = 0.0;
    double cycle_first_step_size = 2000, cycle_second_step_size = -1;  // -1: = first
    int64_t cycle_first_stair_count = 0, cycle_second_stair_count = -1;
    double decay_step_size = 0;
    bool cycle_momentum = true;
    double cycle_min_mom = 0.8, cycle_max_mom = 0.9, decay_mom_rate = 0.0;
};

class LrSchedule {
public:
    explicit LrSchedule(ScheduleConfig c);
    // The lr DeepSpeed's scheduler holds at last_batch_iteration = it (it >= -1).
    double lr_at(int64_t it) const;
    // The lr of the optimizer step `step` (1-based count of applied steps).
    double lr_for_step(int64_t step) const { return lr_at(step - 2); }
    // OneCycle's cycled beta1 (momentum) at iteration it, or < 0 when it does not cycle momentum.
    double beta1_at(int64_t it) const;
    const ScheduleConfig& config() const { return c_; }

private:
    double one_cycle_scale(int64_t it) const;
    ScheduleConfig c_;
};

}  // namespace zs::train
