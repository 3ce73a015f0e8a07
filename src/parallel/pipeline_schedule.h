// Pipeline schedules as data (DeepSpeed's PipelineEngine, Megatron-LM's interleaved 1F1B, and
// Zero Bubble Pipeline Parallelism, Qi et al. 2023). A schedule is, for each of the P pipeline
// ranks, the list of instructions it runs for one optimizer step of M micro-batches: compute
// (forward F, fused backward, or the backward split into its input-gradient half B and its
// weight-gradient half W), the point-to-point transfers around them, and the optimizer step. One
// function per policy generates it; `validate` checks any schedule; `simulate` runs it on paper
// from F/B/W costs; `run_schedule` (pipeline.h) executes it on a stage.
//
// Virtual stages: with V chunks per rank (interleaved 1F1B) the model is cut into P x V pieces and
// rank r holds pieces v = c * P + r for c = 0..V-1 (Megatron-LM's layout). Without interleaving
// V = 1 and virtual stage = rank. Activations flow from virtual stage v to v + 1 (the rank to the
// right, wrapping to rank 0 from rank P - 1 for the next chunk), gradients back.
//
// Policies (m = micro-batches, p = stages, F/B/W the costs, a fused backward B + W; bubble = idle
// fraction of the step, see below):
//   gpipe        all forwards, then all backwards. Bubble (p-1)/(m+p-1); m activations held.
//   1f1b         p - r - 1 warm-up forwards on rank r, then one forward one backward, then the
//                cool-down backwards (DeepSpeed's TrainSchedule). Same bubble; at most p - r held.
//   interleaved  1F1B over V chunks per rank (Megatron-LM): bubble (p-1)/(V m + p - 1) at
//                (p - r - 1) * 2 + (V - 1) p + 1 held; m must be a multiple of p.
//   zb-h1        Zero Bubble's H1: 1F1B's order of forwards and input-gradient backwards B, the
//                weight gradients W deferred into the time 1F1B idles (rank r keeps up to r + 1
//                pending), so a rank never holds more than 1F1B's p activations. Idle time per
//                step (p-1)(F+B-W) against 1F1B's (p-1)(F+B+W): a third when F = B = W.
//   zb-h2        H2: 2 (p - r) - 2 warm-up forwards and up to 2 r + 1 pending Ws (2p - 1
//                activations): idle (p-1)(F+B-2W), zero when F = B = W.
// The ZB policies' W placement comes from a discrete-event run on the given costs; with costs
// measured on the real stages the Ws land where the real idle time is.
//
// Step time: a rank's span runs from its first compute to its last. When steps overlap (a rank's
// optimizer step waits only for its own gradients, as with the paper's post-validation) the
// period is the largest span; otherwise the makespan. The idle times above are period - work.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace zs::parallel {

enum class PipeOp : uint8_t {
    forward,          // F of micro-batch mb, chunk c
    backward,         // fused backward (input and weight gradients)
    backward_input,   // B: the input gradient only (the weight-gradient GEMMs deferred)
    backward_weight,  // W: the deferred weight gradient
    recv_act,         // the activation of (mb, c) from the previous virtual stage
    send_act,         // the activation of (mb, c) to the next virtual stage
    recv_grad,        // the gradient of (mb, c)'s output from the next virtual stage
    send_grad,        // the gradient of (mb, c)'s input to the previous virtual stage
    optimizer_step,   // once, last
};
const char* to_string(PipeOp op);

enum class PipePolicy : uint8_t { gpipe, one_f_one_b, interleaved, zb_h1, zb_h2 };
const char* to_string(PipePolicy p);  // "gpipe", "1f1b", "interleaved", "zb-h1", "zb-h2"
// The policy named `name` (the strings above), or ConfigError naming `what` and the choices.
PipePolicy parse_pipe_policy(const std::string& name, const std::string& what);

struct PipeInstr {
    PipeOp op = PipeOp::forward;
    int mb = -1;    // micro-batch; -1 for optimizer_step
    int chunk = 0;  // this rank's chunk (virtual stage chunk * P + rank)
    bool operator==(const PipeInstr& o) const {
        return op == o.op && mb == o.mb && chunk == o.chunk;
    }
};
// "F3", "B3", "W3", "BW3" (fused), "F3.1" (chunk 1), "recv_act 3", "step".
std::string to_string(const PipeInstr& i);

struct PipeSchedule {
    PipePolicy policy = PipePolicy::one_f_one_b;
    int stages = 1, micro_batches = 1, chunks = 1;
    bool split_backward = false;                  // B and W separate (the ZB policies)
    std::vector<std::vector<PipeInstr>> by_rank;  // [stages]
    int virtual_stages() const { return stages * chunks; }
};

// Relative compute times of one virtual stage for one micro-batch: F, B (input gradient), W
// (weight gradient; a fused backward costs b + w), and the time a transfer takes to arrive.
struct PipeCosts {
    double f = 1, b = 1, w = 1, comm = 0;
};

// The schedule of `policy` for P stages and M micro-batches (chunks: interleaved only; costs: the
// ZB policies). ConfigError naming the argument for impossible combinations (P < 1, M < 1,
// interleaved with M not a multiple of P or chunks < 2, chunks > 1 with another policy).
PipeSchedule make_pipe_schedule(PipePolicy policy, int stages, int micro_batches, int chunks = 1,
                                const PipeCosts& costs = {});

// The most activations (micro-batch, chunk pairs between the start of their F and the end of
// their W or fused backward) rank r may hold under `policy`: gpipe M V, 1f1b and zb-h1
// min(P - r, M), interleaved min((P - r - 1) * 2 + (V - 1) P + 1, M V), zb-h2 min(2 (P - r) - 1,
// M).
int pipe_memory_bound(PipePolicy policy, int stages, int micro_batches, int chunks, int rank);

// Weight gradients rank r may have pending (B done, W not) at once, counting the one its last B
// just made: ZB-H1 r + 1, ZB-H2 2 r + 1 (rank 0 runs each W right after its B; the later
// stages, which 1F1B leaves holding fewer activations, defer more so that the last
// micro-batches' input gradients reach rank 0 sooner), so a rank holds at most 1F1B's P
// activations (ZB-H1) or 2P - 1 (ZB-H2) counting both kinds; 0 for fused backwards.
int pipe_deferred_w_bound(PipePolicy policy, int stages, int rank);

struct PipeCheck {
    std::vector<int> peak_held;        // per rank: the most activations (F done, B not) at once
    std::vector<int> peak_deferred_w;  // per rank: the most W pending at once
};
// Checks a schedule: every (mb, chunk) forwarded once and backwarded once (fused, or B then W)
// on its rank; every F after the receipt of its input (except virtual stage 0), every backward
// after its F and the receipt of its output's gradient (except the last virtual stage); each
// send after the compute that produces it and matched by exactly one receive in the same order
// on the peer; the optimizer step last; no deadlock (simulated with unit costs, sends
// non-blocking); each rank's peak held activations within pipe_memory_bound. Throws Error naming
// the rank, the instruction and the rule broken.
PipeCheck validate(const PipeSchedule& s);

struct PipeSpan {
    int rank = 0;
    PipeInstr instr;
    double start = 0, end = 0;
};
struct PipeTimeline {
    std::vector<PipeSpan> spans;      // compute instructions only, per rank in execution order
    double makespan = 0;              // the last compute's end (all ranks start at 0)
    std::vector<double> busy;         // per rank: total compute time
    std::vector<double> first, last;  // per rank: its first compute's start, last one's end
    // Rank r's span: from its first compute to its last. Successive steps overlap by the
    // pipeline's skew (rank r starts r forwards late and may end as late; the optimizer step of a
    // rank needs only its own gradients), so a step costs every rank its span, and the
    // pipeline's period is the largest span: for gpipe and 1f1b rank 0's, the makespan.
    double span(int r) const;
    double period() const;
    // Idle fraction of rank r within its span, and of the pipeline over the period: (p-1) /
    // (Vm+p-1) for gpipe, 1f1b and interleaved at rank 0 and overall.
    double bubble(int r) const;
    double bubble() const;
};
// The schedule run on paper: compute takes its cost, a send is posted at once and its data
// arrives `comm` later, a receive waits for it. Throws Error on a deadlock (naming every rank's
// blocking instruction).
PipeTimeline simulate(const PipeSchedule& s, const PipeCosts& costs);

// Theory for the (non-ZB) policies' bubble: (p-1) / (V m + p - 1).
double pipe_theory_bubble(int stages, int micro_batches, int chunks);

}  // namespace zs::parallel
