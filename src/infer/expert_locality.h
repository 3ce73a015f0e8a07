// Speculative MoE, measured (the "at least measure" step): how often consecutive decode
// steps of a sequence route it to the same experts, per MoE layer, and how many all-to-all rows a
// co-location policy would save under expert parallelism over `ep` ranks (experts [r E/ep,
// (r+1) E/ep) on rank r, as models::Moe shards them).
//
// Baseline: the sequence's token stays on its home rank; averaged over the home ranks, a
// token-layer sends k (ep - 1) / ep of its k rows to other ranks (and gets them back). Policy
// (Speculative MoE's token pre-scheduling): before each layer, the token sits on the rank holding
// most of that layer's experts at the sequence's previous step (ties: the lowest rank); it sends
// the rows whose experts are elsewhere. Moving the token row itself there is not counted (one row
// instead of up to k), so the saving is an upper bound. Fed by models::Transformer's routing
// observer (one observe per MoE layer per decode step of one sequence).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace zs::infer {

class ExpertLocality {
public:
    // `row_bytes`: bytes a routed row moves out and back (C x (compute dtype + f32)).
    ExpertLocality(int64_t n_layers, int64_t n_experts, int top_k, int64_t ep, int64_t row_bytes);

    // The sequence's top_k experts at `layer` for its next step (consecutive calls at one layer
    // are consecutive steps).
    void observe(int64_t layer, const int32_t* experts);

    struct Layer {
        int64_t steps = 0;     // steps with a previous one to compare against
        int64_t same_set = 0;  // steps whose expert set equals the previous step's
        int64_t overlap = 0;   // sum over steps of |experts ∩ previous experts|
        // Rows sent to other ranks over those steps, x ep (so integral): home placement
        // averaged over the home ranks, and the co-location policy.
        int64_t remote_home_x_ep = 0, remote_colocated_x_ep = 0;
    };
    const std::vector<Layer>& layers() const { return layers_; }
    int64_t steps() const;
    double same_set_rate() const;     // over every layer's steps
    double overlap_per_step() const;  // mean |experts ∩ previous| (of top_k)
    double bytes_home() const;        // all-to-all bytes of the compared steps, baseline
    double bytes_colocated() const;   // ... under the co-location policy
    std::string report() const;       // one line

private:
    int64_t n_experts_, ep_, row_bytes_;
    int top_k_;
    std::vector<Layer> layers_;
    std::vector<std::vector<int32_t>> prev_;  // per layer: the last step's experts (sorted)
};

}  // namespace zs::infer
