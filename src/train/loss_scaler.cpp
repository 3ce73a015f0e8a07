// DynamicLossScaler.update_scale, step for step (cur_iter counts every update, skipped or not).
#include "train/loss_scaler.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace zs::train {

LossScaler::LossScaler(const Fp16Config& c, bool raise_at_min_scale)
    : c_(c),
      dynamic_(c.enabled && c.loss_scale == 0),
      raise_at_min_scale_(raise_at_min_scale),
      scale_(!c.enabled ? 1.0
             : dynamic_ ? std::ldexp(1.0, c.initial_scale_power)
                        : c.loss_scale),
      cur_hysteresis_(c.hysteresis) {}

bool LossScaler::update(bool overflow) {
    if (!dynamic_) return overflow;
    const double min_scale = static_cast<double>(c_.min_loss_scale);
    if (overflow) {
        if (c_.hysteresis == 1 || cur_hysteresis_ == 1) {
            if (scale_ == min_scale && raise_at_min_scale_) {
                ZS_THROW(Error,
                         "fp16: gradients overflow with the loss scale already at "
                         "min_loss_scale ({}); stopping, as DeepSpeed does",
                         c_.min_loss_scale);
            }
            scale_ = std::max(scale_ / 2.0, min_scale);
        } else {
            --cur_hysteresis_;
        }
        last_overflow_iter_ = cur_iter_;
    } else {
        if (c_.consecutive_hysteresis) cur_hysteresis_ = c_.hysteresis;
        // Good steps since the last overflow, this one not counted.
        const int64_t stable_interval = (cur_iter_ - last_overflow_iter_) - 1;
        if (stable_interval > 0 && stable_interval % c_.loss_scale_window == 0) {
            if (!c_.consecutive_hysteresis) cur_hysteresis_ = c_.hysteresis;
            scale_ *= 2.0;
        }
    }
    ++cur_iter_;
    return overflow;
}

void LossScaler::set_state(const State& s) {
    scale_ = s.scale;
    cur_iter_ = s.cur_iter;
    last_overflow_iter_ = s.last_overflow_iter;
    cur_hysteresis_ = s.cur_hysteresis;
}

}  // namespace zs::train
