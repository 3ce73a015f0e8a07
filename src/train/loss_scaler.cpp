#include "train/loss_scaler.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace zs::train {

LossScaler::LossScaler(const LossScalerConfig& c)
    : c_(c),
      dynamic_(c.loss_scale <= 0),
      scale_(c.loss_scale > 0 ? c.loss_scale : std::ldexp(1.0, c.initial_scale_power)),
      cur_hysteresis_(c.hysteresis) {}

void LossScaler::update(bool overflow) {
    if (!dynamic_) return;
    if (overflow) {
        if (c_.hysteresis == 1 || cur_hysteresis_ == 1) {
            ZS_CHECK(
                scale_ != c_.min_loss_scale,
                "fp16: the loss scale is already at min_loss_scale ({}) and the gradients still "
                "overflow; stopping (as DeepSpeed does)",
                c_.min_loss_scale);
            scale_ = std::max(scale_ / 2.0, c_.min_loss_scale);
        } else {
            --cur_hysteresis_;
        }
        last_overflow_iter_ = cur_iter_;
    } else {
        if (c_.consecutive_hysteresis) cur_hysteresis_ = c_.hysteresis;
        // Good steps since the last overflow, not counting this one (DeepSpeed 0.19).
        const int64_t stable = cur_iter_ - last_overflow_iter_ - 1;
        if (stable > 0 && stable % c_.loss_scale_window == 0) {
            if (!c_.consecutive_hysteresis) cur_hysteresis_ = c_.hysteresis;
            scale_ *= 2.0;
        }
    }
    ++cur_iter_;
}

void LossScaler::set_state(const State& s) {
    scale_ = s.scale;
    cur_iter_ = s.cur_iter;
    last_overflow_iter_ = s.last_overflow_iter;
    cur_hysteresis_ = s.cur_hysteresis;
}

}  // namespace zs::train
