// DeepSpeed's learning-rate schedules (deepspeed/runtime/lr_schedules.py: WarmupLR, WarmupDecayLR,
// WarmupCosineLR, OneCycle, LRRangeTest) and a constant schedule when none is configured.
//
// Step indexing, exactly as DeepSpeedEngine drives them: the scheduler is built with
// last_batch_iteration = -1, which already writes an lr into the optimizer, and scheduler.step()
// runs after every *applied* optimizer step (a step skipped for an fp16 overflow does not advance
// it). So `lr(n)` below, n = the number of optimizer steps applied so far, is the lr the next
// optimizer step uses; DeepSpeed's last_batch_iteration is then n - 1. The first step (n = 0)
// runs at the construction-time lr: WarmupLR / WarmupDecayLR: warmup_min_lr, and so does the
// second (log(1) = 0, 0 / W = 0); WarmupCosineLR: 0 (its get_lr before the first step);
// OneCycle: cycle_min_lr; LRRangeTest: lr_range_test_min_lr.
#pragma once

#include <cstdint>
#include <optional>

#include "train/ds_config.h"

namespace zs::train {

// OneCycle with cycle_momentum writes (beta1, 0.99) into the optimizer's betas: beta1 cycles
// inversely to the lr, and beta2 is set to 0.99 whatever the config said.
struct Betas {
    double beta1, beta2;
};

class LrSchedule {
public:
    // `base_lr`: the optimizer's lr (the constant schedule; WarmupLR's default warmup_max_lr;
    // WarmupCosineLR scales it). `has_betas`: the optimizer has betas (Adam/AdamW/Lion); OneCycle
    // cycles momentum only then, as DeepSpeed does.
    LrSchedule(const SchedulerConfig& c, double base_lr, bool has_betas);
    LrSchedule(const SchedulerConfig& c, const OptimizerConfig& o);

    // The lr of the optimizer step that follows `applied` applied steps (applied >= 0).
    double lr(int64_t applied) const;
    // OneCycle's betas for that step, or nullopt when the schedule leaves the betas alone.
    std::optional<Betas> betas(int64_t applied) const;

    const SchedulerConfig& config() const { return c_; }

private:
    double warmup_gamma(int64_t it) const;     // WarmupLR family, it = last_batch_iteration >= 0
    double one_cycle_scale(int64_t it) const;  // OneCycle's scale factor at iteration it

    SchedulerConfig c_;
    double base_lr_;
    bool cycle_momentum_;
    int64_t warmup_steps_;  // max(2, warmup_num_steps)
    double warmup_max_lr_;
    double first_, second_, total_;                 // OneCycle half-cycle sizes (float, as DS)
    int64_t first_stairs_ = 0, second_stairs_ = 0;  // OneCycle stair counts
};

}  // namespace zs::train
