#include "zero/tiers.h"

#include <algorithm>

#include "base/error.h"

namespace zs::zero {

TierAdvice advise_tiers(const MemoryEstimate& e, const TierInput& in) {
    ZS_CHECK_T(ConfigError, in.memory_cap > 0, "--memory-cap: expected a positive size");
    const int64_t psi = in.shard_elems, A = std::max<int64_t>(in.micro_batches, 1);
    // Bytes per element of an optimizer record (master f32 unless f32 compute or bf16 masters,
    // states of 4 or 2 bytes) and of a gradient record (f32, bf16 with bf16 masters).
    const int64_t rec =
        (in.ct == 4 || in.bf16_master ? 0 : 4) + in.n_states * (in.bf16_states ? 2 : 4);
    const int64_t gb = in.bf16_master ? 2 : 4;
    const int64_t sub = std::min(in.sub_group_size, std::max<int64_t>(in.largest_group_shard, 1));
    const bool grads_off = in.stage >= 2;
    TierAdvice out;
    auto finish = [&](TierOption o) {
        const double disk =
            in.disk_bw > 0 ? static_cast<double>(o.disk_read + o.disk_write) / in.disk_bw : 0.0;
        o.step_overlapped = std::max(in.compute_s, disk);
        o.step_serial = in.compute_s + disk;
        o.fits = o.memory <= in.memory_cap;
        out.options.push_back(o);
    };
    finish({"none", e.peak, 0, 0, 0, 0, false});
    // The optimizer off memory: its records, and the gradient shards at stages 2-3, replaced by
    // the step's buffers (records + gradient slots).
    const int64_t opt_mem = e.peak - e.master - e.optimizer - (grads_off ? e.grads : 0) +
                            in.buffer_count * sub * (rec + (grads_off ? 4 : 0)) +
                            (in.bf16_master ? sub * 4 * (2 + in.n_states) : 0);  // f32 scratch
    const int64_t opt_rw = rec * psi;
    const int64_t grad_rw = grads_off ? A * gb * psi : 0;
    if (in.stage >= 1) {
        if (!in.cpu_device) finish({"optimizer cpu", opt_mem, 0, 0, 0, 0, false});
        finish({"optimizer nvme", opt_mem, opt_rw + grad_rw, opt_rw + grad_rw, 0, 0, false});
    }
    if (in.stage == 3 && in.ct != 4) {
        const int64_t p = in.ct * psi;
        finish({"params nvme",
                opt_mem - e.params + (in.param_buffer_count + 1) * in.ct * in.largest_group_shard,
                opt_rw + grad_rw + (2 * A + 1) * p, opt_rw + grad_rw + p, 0, 0, false});
    }
    for (size_t i = 0; i < out.options.size(); ++i) {
        if (out.options[i].fits) {
            out.advice = static_cast<int>(i);
            break;
        }
    }
    return out;
}

}  // namespace zs::zero
