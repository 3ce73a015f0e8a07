// Optimizers over flat fp32 partitions (a ZeRO shard is an offset + size of a flat buffer):
// AdamW (decoupled weight decay), Adam (L2, DeepSpeed's adam_w_mode = false), SGD (momentum,
// Nesterov), Lion and Adagrad, matching torch.optim.AdamW / Adam / SGD / Adagrad (which
// DeepSpeedCPUAdagrad also computes) and lion-pytorch.
//
// One fused pass per element: read grad (scaled on the fly by 1/loss_scale * clip coefficient),
// master, states; write master, states and the bf16/f16/f32 compute copy. All segments of a step
// run in ONE OpenMP parallel region split into cache-sized chunks, so many small segments
// (biases, norms) do not each pay a fork/join. Deterministic: each element is updated by exactly
// one thread with the same arithmetic whatever the thread count.
#pragma once

#include <cstdint>
#include <span>

#include "core/dtype.h"

namespace zs::optim {

enum class Kind { adamw, adam, sgd, lion, adagrad };
const char* to_string(Kind k);

struct Options {
    Kind kind = Kind::adamw;
    float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
    float weight_decay = 0.0f;
    bool bias_correction = true;
    float momentum = 0.0f;                   // sgd
    bool nesterov = false;                   // sgd
    float lr_decay = 0.0f;                   // adagrad: lr / (1 + (step - 1) lr_decay)
    float initial_accumulator_value = 0.0f;  // adagrad (the caller fills state0 with it)
};

// One contiguous run of parameters sharing a weight-decay flag.
struct Segment {
    float* master = nullptr;      // [n] fp32 master weights, updated in place
    const float* grad = nullptr;  // [n] fp32 gradients
    float* state0 = nullptr;      // [n] adam m / sgd momentum / lion m
    float* state1 = nullptr;      // [n] adam v
    void* compute = nullptr;      // [n] compute copy written in the same pass (nullptr: none)
    core::DType compute_dtype = core::DType::f32;
    int64_t n = 0;
    bool decay = true;
};

class Optimizer {
public:
    explicit Optimizer(const Options& o);
    // States per element: adam/adamw 2, lion 1, adagrad 1 (the sum of squares), sgd 1 with
    // momentum else 0.
    int n_states() const;
    const Options& options() const { return o_; }
    // One update at learning rate lr; `step` counts from 1 (bias correction); every gradient is
    // multiplied by grad_scale first.
    void step(std::span<const Segment> segments, float lr, int64_t step, float grad_scale) const;

private:
    Options o_;
};

// Sum of squares of the gradients (in double), and whether all are finite; vectorised,
// deterministic for a given thread count.
double sum_squares(std::span<const Segment> segments);
bool all_finite(std::span<const Segment> segments);

}  // namespace zs::optim
