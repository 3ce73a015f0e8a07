// DeepSpeed's fp16 loss scaling (deepspeed/runtime/fp16/loss_scaler.py), as its ZeRO optimizers
// (stages 1-3) use it. fp16.loss_scale > 0: that static scale. 0: DynamicLossScaler, starting at
// 2^initial_scale_power. Every step reports whether its gradients overflowed; an overflowed step
// is skipped. On an overflow the hysteresis counter (starting at `hysteresis`) counts down; once
// it is at 1 the scale halves (not below min_loss_scale). After loss_scale_window consecutive
// good steps the scale doubles and the counter refills; with consecutive_hysteresis the counter
// refills after every good step instead. An overflow with the scale already at min_loss_scale and
// no hysteresis left raises (DeepSpeed stops the run there too).
//
// NOTE(dscfg): DeepSpeed's ZeRO-0 fp16 optimizers (FP16_Optimizer) use their own update with no
// hysteresis: every overflow halves the scale. zerospeed uses the ZeRO 1-3 behaviour at all stages.
#pragma once

#include <cstdint>

#include "train/ds_config.h"

namespace zs::train {

class LossScaler {
public:
    // fp16 disabled: a static scale of 1 (DeepSpeed's CreateLossScaler for bf16/fp32).
    explicit LossScaler(const Fp16Config& c, bool raise_at_min_scale = true);

    double scale() const { return scale_; }
    bool dynamic() const { return dynamic_; }

    // Record this step's overflow status; returns whether to skip the optimizer step (= overflow).
    // Throws zs::Error when the dynamic scale cannot go lower (see above).
    bool update(bool overflow);

    struct State {
        double scale;
        int64_t cur_iter, last_overflow_iter;
        int cur_hysteresis;
    };
    State state() const { return {scale_, cur_iter_, last_overflow_iter_, cur_hysteresis_}; }
    void set_state(const State& s);

private:
    Fp16Config c_;
    bool dynamic_;
    bool raise_at_min_scale_;
    double scale_;
    int64_t cur_iter_ = 0, last_overflow_iter_ = -1;
    int cur_hysteresis_;
};

}  // namespace zs::train
