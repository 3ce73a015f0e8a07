// zerospeed estimate: per-rank memory and communication of a training configuration, computed
// from the same layout and allocation pattern the engine and the model use (so it is exact by
// construction up to allocator alignment), before anything runs.
//
// Model states (params, grads, optimizer) per stage are in zero/engine.h's table; activations come
// from models::Transformer::activation_bytes; the engine's transients are the full gradients of
// the groups in flight (stages 2-3) and the gathered weights of the groups in use (stage 3).
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "models/transformer.h"

namespace zs::zero {

struct EstimateInput {
    int world = 1;
    int stage = 0;
    int n_states = 2;  // optimizer states per parameter (Adam 2, SGD/Lion 1)
    int64_t micro_batch = 1, seq_len = 128, grad_accum = 1;
    // Stage 3 (zero_optimization keys): how much is gathered at once.
    int64_t prefetch_numel = 50'000'000, max_live_numel = 1'000'000'000,
            persistence_threshold = 100'000;
};

struct MemoryEstimate {
    int64_t params = 0, grads = 0, optimizer = 0;  // model states, per rank
    int64_t activations = 0;                       // saved across the step
    int64_t transient = 0;                         // largest extra set alive at once
    int64_t peak = 0;                              // all of the above
    int64_t comm_bytes = 0;                        // sent per rank per optimizer step
    int64_t n_params = 0;
    std::string report() const;
};

MemoryEstimate estimate(const models::Transformer& model, const EstimateInput& in);

// Bytes of model states per parameter at a stage and world size (for "the largest model that
// fits"): compute dtype bytes `ct`, Adam-style optimizer with n_states.
double model_state_bytes_per_param(int stage, int world, int ct, int n_states);

}  // namespace zs::zero
