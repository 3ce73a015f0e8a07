// Offload tier advice (`zerospeed estimate --memory-cap`): for one rank's memory cap, which
// offload tiers to use and the step time they predict from measured compute and disk bandwidth.
//
// Options, in order (the first that fits the cap is the advice):
//   none            everything in memory: MemoryEstimate::peak
//   optimizer cpu   master weights and optimizer states (and, stages 2-3, the gradient shards)
//                   in host memory: on a GPU rank this frees device memory; on a CPU rank the
//                   host memory *is* the rank's memory, so it frees nothing (offered only off
//                   the CPU)
//   optimizer nvme  the same on NVMe: memory peak - master - optimizer (- grads at stages 2-3)
//                   + the step's buffers: buffer_count sub-groups of a record + an f32
//                   gradient slot (+ bf16 masters: the f32 scratch of the update)
//   optimizer nvme, ratio r
//                   stage 3 (offload_optimizer.ratio, DeepSpeed's partial offload): the first
//                   (1 - r) of the shard keeps its records and gradient records in memory, the
//                   disk moves r of the bytes. Listed before the full offload when a ratio below
//                   the configured one fits the cap (the smallest, in steps of 0.05); the
//                   configured ratio, when < 1, replaces the full offload's line.
//   params nvme     stage 3 only, with the optimizer on NVMe (at the configured ratio): the
//                   compute-weight shards too, - params + (param_buffer_count + 1) x the
//                   largest group's shard
// Disk bytes per step and rank, A micro-batches, Ψ this rank's shard elements, r the bytes per
// element of an optimizer record (f32 master when the compute dtype is not f32 and the masters
// are not bf16, + states of 4 bytes, 2 with bf16_states), g the gradient record's (4; 2 with
// bf16 masters), ct the compute dtype's bytes:
//   optimizer records   read r Ψ, write r Ψ
//   gradient records    (stages 2-3) write A g Ψ, read A g Ψ (micro-batches after the first and
//                       the step read them back)
//   parameter shards    (params nvme) read (2 A + 1) ct Ψ (forward and backward gathers, the
//                       step), write ct Ψ
// Predicted step: max(compute, disk bytes / disk bandwidth) with the transfers overlapped (the
// engine's pipelined reads and writes, Deep Optimizer States), and compute + disk / bandwidth
// without overlap. Compute: 6 Ψ_model tokens / the measured matmul rate (+ the optimizer's
// element-wise update, ignored).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "zero/estimate.h"

namespace zs::zero {

struct TierInput {
    int64_t memory_cap = 0;           // bytes per rank
    int stage = 3;                    // ZeRO stage of the estimate
    int64_t micro_batches = 1;        // A: gradient accumulation steps
    int64_t shard_elems = 0;          // Ψ: elements of this rank's shard of every group
    int64_t largest_group_shard = 0;  // elements
    int ct = 2;                       // compute dtype bytes
    int n_states = 2;
    int64_t sub_group_size = 1'000'000'000;
    int64_t buffer_count = 4;
    int64_t param_buffer_count = 5;
    double ratio = 1.0;      // offload_optimizer.ratio (stage 3)
    bool cpu_device = true;  // the rank computes on the CPU (cpu tier frees nothing)
    double compute_s = 0;    // measured or predicted compute per step, seconds
    double disk_bw = 0;      // bytes/s, direct I/O (0: unknown)
    // bf16 master weights (no master field in the records, 2-byte gradient records) and bf16
    // optimizer states (2-byte state fields): zero/engine.h's Config::bf16_master / _states.
    bool bf16_master = false, bf16_states = false;
};

struct TierOption {
    std::string name;  // "none", "optimizer cpu", "optimizer nvme[, ratio r]", "params nvme"
    int64_t memory = 0;
    int64_t disk_read = 0, disk_write = 0;  // per step and rank
    double step_overlapped = 0;             // max(compute, disk / bw)
    double step_serial = 0;                 // compute + disk / bw
    bool fits = false;
};

// Every option that applies (cpu only off the CPU; ratio and params nvme only at stage 3), in the
// order above; `advice` is the index of the first that fits, -1 when none does.
struct TierAdvice {
    std::vector<TierOption> options;
    int advice = -1;
};
TierAdvice advise_tiers(const MemoryEstimate& e, const TierInput& in);

}  // namespace zs::zero
