// DeepSpeed's fp16 loss scaler (deepspeed/runtime/fp16/loss_scaler.py): a static scale when
// fp16.loss_scale > 0, else DynamicLossScaler: start at 2^initial_scale_power; on an overflow,
// count down `hysteresis` before halving (not below min_loss_scale) and skip the step; after
// loss_scale_window steps without overflow, double. consecutive_hysteresis refills the
// hysteresis on every good step.
#pragma once

#include <cstdint>

namespace zs::train {

struct LossScalerConfig {
    double loss_scale = 0;  // > 0: static
    int initial_scale_power = 16;
    int64_t loss_scale_window = 1000;
    int hysteresis = 2;
    bool consecutive_hysteresis = false;
    double min_loss_scale = 1;
};

class LossScaler {
public:
    explicit LossScaler(const LossScalerConfig& c);
    double scale() const { return scale_; }
    bool dynamic() const { return dynamic_; }
    // Record this step's overflow status (true = skip the optimizer step). Throws zs::Error when
    // an overflow happens at the minimum scale (DeepSpeed raises there too).
    void update(bool overflow);

    struct State {
        double scale;
        int64_t cur_iter, last_overflow_iter;
        int cur_hysteresis;
    };
    State state() const { return {scale_, cur_iter_, last_overflow_iter_, cur_hysteresis_}; }
    void set_state(const State& s);

private:
    LossScalerConfig c_;
    bool dynamic_;
    double scale_;
    int64_t cur_iter_ = 0, last_overflow_iter_ = -1;
    int cur_hysteresis_;
};

}  // namespace zs::train
