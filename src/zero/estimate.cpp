#include "zero/estimate.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/memory.h"

namespace zs::zero {

double model_state_bytes_per_param(int stage, int world, int ct, int n_states) {
    const double W = world, opt = 4.0 * n_states, master = ct == 4 ? 0.0 : 4.0;
    switch (stage) {
        case 0:
            return ct + 4 + master + opt;
        case 1:
            return ct + 4 + (4 + master + opt) / W;  // full grads + reduced shard
        case 2:
            return ct + (4 + master + opt) / W;
        default:
            return (ct == 4 ? 0.0 : ct / W) + (4 + 4 + opt) / W;
    }
}

MemoryEstimate estimate(const models::Transformer& model, const EstimateInput& in) {
    const models::ParamLayout& lay = model.layout();
    const int W = in.world;
    const int64_t ct = static_cast<int64_t>(core::dtype_size(model.run_config().compute_dtype));
    const bool alias = ct == 4;  // f32 compute: master weights are the compute weights
    MemoryEstimate e;
    int64_t max_padded = 0, embed_padded = 0, total_padded = 0, persistent_padded = 0;
    for (int g = 0; g < lay.n_groups(); ++g) {
        const int64_t n = lay.group(g).numel;
        const int64_t P = (n + W - 1) / W * W, S = P / W;
        max_padded = std::max(max_padded, P);
        total_padded += P;
        if (P <= in.persistence_threshold) persistent_padded += P;
        if (g == model.embed_group()) embed_padded = P;
        e.n_params += n;
        switch (in.stage) {
            case 0:
                e.params += P * ct;
                e.grads += P * 4;
                e.optimizer += (alias ? 0 : P * 4) + in.n_states * P * 4;
                break;
            case 1:
                e.params += P * ct;
                e.grads += P * 4 + S * 4;
                e.optimizer += (alias ? 0 : S * 4) + in.n_states * S * 4;
                break;
            case 2:
                e.params += P * ct;
                e.grads += S * 4;
                e.optimizer += (alias ? 0 : S * 4) + in.n_states * S * 4;
                break;
            default:
                e.params += alias ? 0 : S * ct;
                e.grads += S * 4;
                e.optimizer += S * 4 + in.n_states * S * 4;
                break;
        }
    }
    models::ActivationBytes act = model.activation_bytes(in.micro_batch, in.seq_len);
    e.activations = act.saved;
    // Engine transients: stages 2-3 hold the full gradients of the group in backward plus one
    // in flight (and the embedding's, written by a tied head, from the head to the end); stage 3
    // holds the gathered weights of the group in use and the one prefetched.
    int64_t engine = 0;
    const bool tied = model.config().tied_embeddings;
    if (in.stage >= 2)
        engine += 2 * max_padded * 4 + max_padded / W * 4 + (tied ? embed_padded * 4 : 0);
    if (in.stage == 3) {
        // The group in use plus those prefetched (stage3_prefetch_bucket_size), at most
        // stage3_max_live_parameters, plus the persistent small groups.
        int64_t live = std::min({total_padded, max_padded + in.prefetch_numel, in.max_live_numel});
        engine +=
            (std::min(total_padded, live + persistent_padded) + (tied ? embed_padded : 0)) * ct;
    }
    e.transient = act.transient + engine;
    e.peak = e.params + e.grads + e.optimizer + e.activations + e.transient;
    // Communication per rank per optimizer step (ring algorithms: (W-1)/W of the data each way).
    if (W > 1) {
        const double f = static_cast<double>(W - 1) / W;
        const double psi = static_cast<double>(e.n_params);
        double bytes = 0;
        switch (in.stage) {
            case 0:
                bytes = 2 * f * 4 * psi;  // all-reduce of f32 gradients
                break;
            case 1:
                bytes = f * 4 * psi + f * ct * psi;  // reduce-scatter + all-gather of weights
                break;
            case 2:
                bytes = static_cast<double>(in.grad_accum) * f * 4 * psi + f * ct * psi;
                break;
            default:  // gather for forward and backward, reduce-scatter, every micro-batch
                bytes = static_cast<double>(in.grad_accum) * (2 * f * ct * psi + f * 4 * psi);
                break;
        }
        e.comm_bytes = static_cast<int64_t>(bytes);
    }
    return e;
}

std::string MemoryEstimate::report() const {
    auto b = [](int64_t v) { return core::format_bytes(v); };
    return fmt::format(
        "parameters      {:.2f} M\n"
        "params          {}\n"
        "grads           {}\n"
        "optimizer       {}\n"
        "activations     {} (saved across the step)\n"
        "transient       {} (largest extra set alive at once)\n"
        "peak per rank   {}\n"
        "comm per step   {} sent per rank\n",
        static_cast<double>(n_params) / 1e6, b(params), b(grads), b(optimizer), b(activations),
        b(transient), b(peak), b(comm_bytes));
}

}  // namespace zs::zero
