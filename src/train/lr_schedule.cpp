#include "train/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace zs::train {

const char* to_string(ScheduleKind k) {
    switch (k) {
        case ScheduleKind::constant:
            return "constant";
        case ScheduleKind::warmup_lr:
            return "WarmupLR";
        case ScheduleKind::warmup_decay_lr:
            return "WarmupDecayLR";
        case ScheduleKind::warmup_cosine_lr:
            return "WarmupCosineLR";
        case ScheduleKind::one_cycle:
            return "OneCycle";
    }
    return "?";
}

LrSchedule::LrSchedule(ScheduleConfig c) : c_(c) {
    c_.warmup_num_steps = std::max<int64_t>(2, c_.warmup_num_steps);  // DeepSpeed: max(2, n)
    if (c_.cycle_second_step_size < 0) c_.cycle_second_step_size = c_.cycle_first_step_size;
    if (c_.cycle_second_stair_count < 0) c_.cycle_second_stair_count = c_.cycle_first_stair_count;
    if (c_.kind == ScheduleKind::one_cycle) {
        ZS_CHECK_T(ConfigError, c_.cycle_first_step_size > 0,
                   "scheduler.params.cycle_first_step_size must be positive, got {}",
                   c_.cycle_first_step_size);
    }
}

double LrSchedule::one_cycle_scale(int64_t it) const {
    const double first = c_.cycle_first_step_size, second = c_.cycle_second_step_size;
    const double total = first + second, step_ratio = first / total;
    const double bi = static_cast<double>(it + 1);
    const double cycle = std::floor(1 + bi / total);
    const double x = 1.0 + bi / total - cycle;
    double scale;
    int64_t stairs;
    if (x <= step_ratio) {
        scale = x / step_ratio;
        stairs = c_.cycle_first_stair_count;
    } else {
        scale = (x - 1) / (step_ratio - 1);
        stairs = c_.cycle_second_stair_count;
    }
    if (stairs > 0) {
        double ci = std::fmod(bi, total);
        double pos = ci <= first ? ci * static_cast<double>(stairs) / first
                                 : (total - ci) * static_cast<double>(stairs) / second;
        scale = std::floor(pos) / static_cast<double>(stairs);
    }
    return scale;
}

double LrSchedule::lr_at(int64_t it) const {
    const double W = static_cast<double>(c_.warmup_num_steps);
    auto warmup_gamma = [&](int64_t i) {
        return c_.warmup_log ? std::log(static_cast<double>(i + 1)) / std::log(W)
                             : static_cast<double>(i) / W;
    };
    switch (c_.kind) {
        case ScheduleKind::constant:
            return c_.lr;
        case ScheduleKind::warmup_lr:
        case ScheduleKind::warmup_decay_lr: {
            if (it < 0) return c_.warmup_min_lr;
            double gamma;
            if (it < c_.warmup_num_steps) {
                gamma = warmup_gamma(it);
            } else if (c_.kind == ScheduleKind::warmup_lr) {
                gamma = 1.0;
            } else {
                gamma = std::max(0.0, static_cast<double>(c_.total_num_steps - it) /
                                          std::max(1.0, static_cast<double>(c_.total_num_steps -
                                                                            c_.warmup_num_steps)));
            }
            return c_.warmup_min_lr + (c_.warmup_max_lr - c_.warmup_min_lr) * gamma;
        }
        case ScheduleKind::warmup_cosine_lr: {
            if (it < 0) return 0.0;
            double ratio;
            if (it < c_.warmup_num_steps) {
                ratio = c_.warmup_min_ratio + warmup_gamma(it) * (1.0 - c_.warmup_min_ratio);
            } else {
                double real_last = static_cast<double>(it - c_.warmup_num_steps + 1);
                double real_total =
                    std::max(1.0, static_cast<double>(c_.total_num_steps - c_.warmup_num_steps));
                double prog = std::min(1.0, real_last / real_total);
                ratio = std::max(0.0, c_.cos_min_ratio + (1.0 - c_.cos_min_ratio) *
                                                             (1 + std::cos(M_PI * prog)) / 2);
            }
            return c_.lr * ratio;
        }
        case ScheduleKind::one_cycle: {
            if (it < 0) return c_.cycle_min_lr;
            const double total = c_.cycle_first_step_size + c_.cycle_second_step_size;
            if (static_cast<double>(it) < total) {
                return c_.cycle_min_lr + (c_.cycle_max_lr - c_.cycle_min_lr) * one_cycle_scale(it);
            }
            if (c_.decay_lr_rate == 0.0 || c_.decay_step_size == 0.0) return c_.cycle_min_lr;
            double interval = (static_cast<double>(it) - total + 1) / c_.decay_step_size;
            return c_.cycle_min_lr / (1 + c_.decay_lr_rate * interval);
        }
    }
    return c_.lr;
}

double LrSchedule::beta1_at(int64_t it) const {
    if (c_.kind != ScheduleKind::one_cycle || !c_.cycle_momentum) return -1.0;
    if (it < 0) return c_.cycle_min_mom;
    const double total = c_.cycle_first_step_size + c_.cycle_second_step_size;
    if (static_cast<double>(it) < total) {
        return c_.cycle_max_mom - (c_.cycle_max_mom - c_.cycle_min_mom) * one_cycle_scale(it);
    }
    if (c_.decay_mom_rate == 0.0 || c_.decay_step_size == 0.0) return c_.cycle_max_mom;
    double interval = (static_cast<double>(it) - total + 1) / c_.decay_step_size;
    return c_.cycle_max_mom * (1 + c_.decay_mom_rate * interval);
}

}  // namespace zs::train
