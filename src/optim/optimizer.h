// Optimizers over flat fp32 partitions (a ZeRO shard is an offset + size of a flat buffer):
// AdamW (decoupled weight decay), Adam (L2, DeepSpeed's adam_w_mode = false), SGD (momentum,
// Nesterov), Lion, Adagrad and LAMB, matching torch.optim.AdamW / Adam / SGD / Adagrad (which
// DeepSpeedCPUAdagrad also computes), lion-pytorch and DeepSpeed's FusedLamb.
//
// One fused pass per element: read grad (scaled on the fly by 1/loss_scale * clip coefficient),
// master, states; write master, states and the bf16/f16/f32 compute copy. All segments of a step
// run in ONE OpenMP parallel region split into cache-sized chunks, so many small segments
// (biases, norms) do not each pay a fork/join. Deterministic: each element is updated by exactly
// one thread with the same arithmetic whatever the thread count.
//
// LAMB scales each parameter TENSOR's update by a trust ratio ||w|| / ||update||, so it needs
// norms over whole tensors while a ZeRO shard may hold only part of one. It therefore runs in two
// phases around a caller-side reduction (zero::Engine sums over data-parallel ranks):
//   std::vector<double> sq(2 * n_tensors, 0.0);            // per Segment::param: ||w||^2, ||u||^2
//   opt.lamb_moments(segs, grad_scale, sq);                // m, v updated; partial sums added
//   /* sum sq over every rank holding part of the tensors */
//   opt.lamb_apply(segs, lr, step, sq);                    // w -= lr' * ratio * u; compute copy
// step() does both with no reduction in between (exact when the segments hold whole tensors).
#pragma once

#include <cstdint>
#include <span>

#include "core/dtype.h"
#include "ops/adam.h"

namespace zs::optim {

enum class Kind { adamw, adam, sgd, lion, adagrad, lamb };
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
    float max_coeff = 10.0f;                 // lamb: trust ratio clamped to [min_coeff, max_coeff]
    float min_coeff = 0.01f;                 // lamb
    bool eps_inside_sqrt = false;            // lamb: sqrt(v + eps) instead of sqrt(v) + eps
};

// One contiguous run of parameters sharing a weight-decay flag.
struct Segment {
    float* master = nullptr;      // [n] fp32 master weights, updated in place
    const float* grad = nullptr;  // [n] fp32 gradients
    float* state0 = nullptr;      // [n] adam/lamb m / sgd momentum / lion m / adagrad sum
    float* state1 = nullptr;      // [n] adam/lamb v
    void* compute = nullptr;      // [n] compute copy written in the same pass (nullptr: none)
    core::DType compute_dtype = core::DType::f32;
    int64_t n = 0;
    bool decay = true;
    // LAMB: index of the parameter tensor this run belongs to; runs with the same index (parts of
    // one tensor, e.g. a tensor cut by a shard boundary) share one trust ratio. -1 in step(): a
    // tensor of its own. Other optimizers ignore it.
    int param = -1;
};

class Optimizer {
public:
    explicit Optimizer(const Options& o);
    // States per element: adam/adamw/lamb 2, lion 1, adagrad 1 (the sum of squares), sgd 1 with
    // momentum else 0.
    int n_states() const;
    const Options& options() const { return o_; }
    // One update at learning rate lr; `step` counts from 1 (bias correction); every gradient is
    // multiplied by grad_scale first.
    void step(std::span<const Segment> segments, float lr, int64_t step, float grad_scale) const;
    // The scalars of the same AdamW / Adam step for a device kernel (ops::adam_update), computed
    // as step() computes them; `decay` false for a segment exempt from weight decay. Kind must be
    // adamw or adam.
    ops::AdamStep adam_step(float lr, int64_t step, float grad_scale, bool decay) const;

    // LAMB phase 1: update m (state0) and v (state1) of every segment, gradients multiplied by
    // grad_scale, and ADD each segment's ||w||^2 and ||u||^2 (u = the update before lr and trust
    // ratio, see optimizer.cpp) to sq_norms[2 * param] and sq_norms[2 * param + 1]. Every segment
    // needs 0 <= param < sq_norms.size() / 2. Master weights are not changed. Deterministic:
    // fixed chunks summed in a fixed order.
    void lamb_moments(std::span<const Segment> segments, float grad_scale,
                      std::span<double> sq_norms) const;
    // LAMB phase 2: w -= step_size * ratio(param) * u, with the COMPLETE squared norms of each
    // tensor (summed over all its segments on all ranks), and write the compute copy. Call with
    // the same segments and step as lamb_moments, before the gradients or states change.
    void lamb_apply(std::span<const Segment> segments, float lr, int64_t step,
                    std::span<const double> sq_norms) const;

private:
    Options o_;
};

// Sum of squares of the gradients (in double), and whether all are finite; vectorised,
// deterministic for a given thread count.
double sum_squares(std::span<const Segment> segments);
bool all_finite(std::span<const Segment> segments);

}  // namespace zs::optim
