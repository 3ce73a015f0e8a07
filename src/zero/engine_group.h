// Engine's per-group state, shared by engine.cpp and engine_offload.cpp (not a public header).
#pragma once

#include <cstddef>

#include "comm/communicator.h"
#include "core/tensor.h"
#include "zero/engine.h"

namespace zs::zero {

struct Engine::Group {
    Tensor master;      // f32 [S] (stage >= 1) or [P] (stage 0); may alias the compute weights
    Tensor states[2];   // optimizer states, shaped like master
    Tensor full_w;      // ct [P]: stages 0-2 always; stage 3 while gathered
    Tensor shard_w;     // ct [S]: stage 3 (aliases master when ct is f32)
    Tensor full_g;      // f32 [P]: stages 0-1 always; stages 2-3 during backward
    Tensor shard_g;     // f32 [S]: reduced gradient shard (stages >= 1)
    Tensor reduce_out;  // f32 [S]: in-flight reduce-scatter output
    bool master_aliases_compute = false;
    int refs = 0;
    int backwards = 0;  // backward uses this step (the last one reduces at stages 0-1)
    bool gathered = false, gather_pending = false, persistent = false;
    comm::Work gather_work;
    bool reduce_pending = false;
    comm::Work reduce_work;
    // ZeRO++ buffers of the collective in flight (i8, packed as zero/quantize.h describes):
    Tensor gather_send, gather_recv;  // qwZ: this rank's packed shard [B], every rank's [W * B]
    Tensor a2a_send, a2a_recv;        // qgZ: packed gradient chunks [W * B], sent and received
    // hpZ: this rank's slice of the gathered weights within its sub-group of H ranks, ct [P / H],
    // elements [j P / H, (j + 1) P / H) for sub-group rank j; valid from the first release after
    // an update until the next.
    Tensor sec_w;
    bool sec_valid = false;
    // Gradient offload: whether this step's records are written, and what the last write held.
    bool grad_stored = false;
    double grad_sq = 0;
    bool grad_finite = true;
};

inline std::byte* bytes_of(const Tensor& t) { return static_cast<std::byte*>(t.data_ptr()); }

}  // namespace zs::zero
