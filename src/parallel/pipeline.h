// The pipeline interpreter: one loop that executes any PipeSchedule's instruction list
// (pipeline_schedule.h) on one pipeline rank, calling the stage's compute and moving activations
// and gradients over the pp communicator. The stage (the model's range of blocks, or a test's
// toy) knows nothing of the schedule; the schedule knows nothing of the model.
//
// Transfers: sends are posted non-blocking and their buffers kept until the Work completes (the
// last wait is before the optimizer step); a receive blocks until its message is in. Shapes are
// agreed once: the stage states the activation shape of a micro-batch and every message of the
// step has it (activations and their gradients alike), so nothing but the payload crosses the
// wire. Messages are matched by their order on each (peer, kind) pair, which validate() checks;
// tags: activations kPipeActTag, gradients kPipeGradTag.
#pragma once

#include <vector>

#include "comm/communicator.h"
#include "core/tensor.h"
#include "parallel/pipeline_schedule.h"

namespace zs::parallel {

inline constexpr int kPipeActTag = 7101;
inline constexpr int kPipeGradTag = 7102;

class PipeStage {
public:
    virtual ~PipeStage() = default;
    // The shape and dtype of every activation (and activation gradient) crossing a stage boundary.
    virtual core::Shape boundary_shape() const = 0;
    virtual core::DType boundary_dtype() const { return core::DType::f32; }
    // F of (mb, chunk): `in` is the received activation (undefined on virtual stage 0, which reads
    // its batch itself); writes the activation to send into `out` (allocated by the interpreter
    // with boundary_shape; ignored on the last virtual stage).
    virtual void forward(int mb, int chunk, const core::Tensor& in, const core::Tensor& out) = 0;
    // Fused backward, or its input half B: `grad_out` is the received gradient of the output
    // (undefined on the last virtual stage, which starts from its loss); writes the gradient of
    // the input into `grad_in` (ignored on virtual stage 0).
    virtual void backward(int mb, int chunk, const core::Tensor& grad_out,
                          const core::Tensor& grad_in) = 0;
    virtual void backward_input(int mb, int chunk, const core::Tensor& grad_out,
                                const core::Tensor& grad_in);
    // W: the weight gradient deferred by backward_input.
    virtual void backward_weight(int mb, int chunk);
    virtual void optimizer_step() = 0;
};

// What one run measured on this rank: each compute instruction's span (seconds on the steady
// clock, which every process of a host shares), in execution order.
struct PipeRunStats {
    std::vector<PipeSpan> spans;
    double start = 0, end = 0;  // the run's first and last instant
    double compute_s() const;
};

// Runs rank `pp.rank()`'s list of `s` on `stage`. Throws Error naming the instruction when the
// schedule is not this rank's or a transfer fails. With `stats`, records the compute spans.
void run_schedule(const PipeSchedule& s, comm::Communicator& pp, PipeStage& stage,
                  PipeRunStats* stats = nullptr);

// The measured timeline of every pp rank (collective over pp): each rank's spans, shifted so the
// earliest start is 0, with busy time and makespan as simulate() reports them.
PipeTimeline gather_timeline(const PipeRunStats& mine, comm::Communicator& pp);

// The mean F, B and W of a measured timeline's spans (a fused backward counts as B, with W 0 when
// there is no split one), comm 0: the costs to simulate the schedule with, or to place the Zero
// Bubble schedules' Ws by.
PipeCosts mean_costs(const PipeTimeline& tl);

}  // namespace zs::parallel
