// The schedules' formulas, written in DeepSpeed's operation order so results agree to the last
// bit or two with deepspeed.runtime.lr_schedules (the test compares to 1e-12 relative).
#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "base/error.h"

namespace zs::train {

LrSchedule::LrSchedule(const SchedulerConfig& c, double base_lr, bool has_betas)
    : c_(c),
      base_lr_(base_lr),
      cycle_momentum_(c.kind == SchedulerKind::one_cycle && c.cycle_momentum && has_betas),
      warmup_steps_(std::max<int64_t>(2, c.warmup_num_steps)),
      warmup_max_lr_(c.warmup_max_lr.value_or(base_lr)),
      first_(c.cycle_first_step_size),
      second_(c.cycle_second_step_size.value_or(c.cycle_first_step_size)),
      total_(first_ + second_),
      first_stairs_(c.cycle_first_stair_count),
      second_stairs_(c.cycle_second_stair_count.value_or(c.cycle_first_stair_count)) {
    if (c_.kind == SchedulerKind::one_cycle) {
        ZS_CHECK_T(ConfigError, first_ > 0 && second_ >= 0,
                   "scheduler.params: OneCycle needs cycle_first_step_size > 0 and "
                   "cycle_second_step_size >= 0, got {} and {}",
                   first_, second_);
    }
    if (c_.kind == SchedulerKind::lr_range_test) {
        ZS_CHECK_T(ConfigError, c_.lr_range_test_step_size > 0,
                   "scheduler.params.lr_range_test_step_size must be > 0, got {}",
                   c_.lr_range_test_step_size);
    }
}

LrSchedule::LrSchedule(const SchedulerConfig& c, const OptimizerConfig& o)
    : LrSchedule(c, o.lr, o.kind != optim::Kind::sgd) {}

double LrSchedule::warmup_gamma(int64_t it) const {
    const double inverse_log_warm_up = 1.0 / std::log(static_cast<double>(warmup_steps_));
    if (c_.warmup_type == WarmupType::log) {
        return inverse_log_warm_up * std::log(static_cast<double>(it + 1));
    }
    return static_cast<double>(it) / static_cast<double>(warmup_steps_);
}

double LrSchedule::one_cycle_scale(int64_t it) const {
    const double batch_iteration = static_cast<double>(it + 1);
    const double step_ratio = first_ / total_;
    const double cycle = std::floor(1 + batch_iteration / total_);
    const double x = 1. + batch_iteration / total_ - cycle;
    double scale;
    int64_t stairs;
    if (x <= step_ratio) {
        scale = x / step_ratio;
        stairs = first_stairs_;
    } else {
        scale = (x - 1) / (step_ratio - 1);
        stairs = second_stairs_;
    }
    if (stairs > 0) {  // quantised from the integer offset in the cycle, as DeepSpeed does
        const double cycle_iteration = std::fmod(batch_iteration, total_);
        const double position =
            cycle_iteration <= first_
                ? cycle_iteration * static_cast<double>(stairs) / first_
                : (total_ - cycle_iteration) * static_cast<double>(stairs) / second_;
        scale = std::floor(position) / static_cast<double>(stairs);
    }
    return scale;
}

double LrSchedule::lr(int64_t applied) const {
    ZS_ASSERT(applied >= 0, "applied steps {} < 0", applied);
    const int64_t it = applied - 1;  // DeepSpeed's last_batch_iteration
    switch (c_.kind) {
        case SchedulerKind::constant:
            return base_lr_;
        case SchedulerKind::warmup_lr:
        case SchedulerKind::warmup_decay_lr: {
            if (it < 0) return c_.warmup_min_lr;
            double gamma;
            if (it < warmup_steps_) {
                gamma = warmup_gamma(it);
            } else if (c_.kind == SchedulerKind::warmup_lr) {
                gamma = 1.0;
            } else {
                gamma = std::max(0.0, static_cast<double>(c_.total_num_steps - it) /
                                          std::max(1.0, static_cast<double>(c_.total_num_steps -
                                                                            warmup_steps_)));
            }
            return c_.warmup_min_lr + ((warmup_max_lr_ - c_.warmup_min_lr) * gamma);
        }
        case SchedulerKind::warmup_cosine_lr: {
            if (it < 0) return 0.0;
            double ratio;
            if (it < warmup_steps_) {
                ratio = c_.warmup_min_ratio + warmup_gamma(it) * (1. - c_.warmup_min_ratio);
            } else {
                const double real_last_step = static_cast<double>(it - warmup_steps_ + 1);
                const double real_total_steps =
                    static_cast<double>(std::max<int64_t>(1, c_.total_num_steps - warmup_steps_));
                const double progress = std::min(1.0, real_last_step / real_total_steps);
                ratio = (1 + std::cos(std::numbers::pi * progress)) / 2;
                ratio = std::max(0.0, c_.cos_min_ratio + (1. - c_.cos_min_ratio) * ratio);
            }
            return base_lr_ * ratio;
        }
        case SchedulerKind::one_cycle: {
            if (it < 0) return c_.cycle_min_lr;
            if (static_cast<double>(it) < total_) {
                return c_.cycle_min_lr + (c_.cycle_max_lr - c_.cycle_min_lr) * one_cycle_scale(it);
            }
            if (c_.decay_step_size == 0 || c_.decay_lr_rate == 0) return c_.cycle_min_lr;
            const double decay_interval =
                (static_cast<double>(it) - total_ + 1) / c_.decay_step_size;
            return c_.cycle_min_lr / (1 + c_.decay_lr_rate * decay_interval);
        }
        case SchedulerKind::lr_range_test: {
            const double step_size = static_cast<double>(c_.lr_range_test_step_size);
            double interval = static_cast<double>(it + 1) / step_size;
            if (c_.lr_range_test_staircase) interval = std::floor(interval);
            return c_.lr_range_test_min_lr * (1 + c_.lr_range_test_step_rate * interval);
        }
    }
    return base_lr_;
}

std::optional<Betas> LrSchedule::betas(int64_t applied) const {
    ZS_ASSERT(applied >= 0, "applied steps {} < 0", applied);
    if (!cycle_momentum_) return std::nullopt;
    constexpr double kBeta2 = 0.99;  // DeepSpeed's OneCycle overwrites beta2 with 0.99
    const int64_t it = applied - 1;
    // At construction DeepSpeed writes cycle_min_mom, though the cycle formula at iteration -1
    // would give cycle_max_mom.
    if (it < 0) return Betas{c_.cycle_min_mom, kBeta2};
    if (static_cast<double>(it) < total_) {
        return Betas{c_.cycle_max_mom - (c_.cycle_max_mom - c_.cycle_min_mom) * one_cycle_scale(it),
                     kBeta2};
    }
    if (c_.decay_step_size == 0 || c_.decay_mom_rate == 0) return Betas{c_.cycle_max_mom, kBeta2};
    const double decay_interval = (static_cast<double>(it) - total_ + 1) / c_.decay_step_size;
    return Betas{c_.cycle_max_mom * (1 + c_.decay_mom_rate * decay_interval), kBeta2};
}

}  // namespace zs::train
