#include "zero/tiers.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

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
    // offload_optimizer.ratio r (stage 3): the first (1 - r) of the sub-groups keep their records
    // (and gradient records) in memory, the tier moves r of the bytes. By elements: the engine
    // splits by sub-group count, which is this when the sub-groups are of one size.
    const int64_t resident_per_elem = rec + (grads_off ? gb : 0);
    auto resident = [&](double r) {
        return static_cast<int64_t>(std::ceil((1.0 - r) * static_cast<double>(psi))) *
               resident_per_elem;
    };
    auto share = [&](double r, int64_t bytes) {
        return static_cast<int64_t>(std::llround(r * static_cast<double>(bytes)));
    };
    const double ratio = in.stage == 3 ? std::clamp(in.ratio, 0.0, 1.0) : 1.0;
    if (in.stage >= 1) {
        if (!in.cpu_device) finish({"optimizer cpu", opt_mem, 0, 0, 0, 0, false});
        // Stage 3: the smallest ratio (in steps of 0.05) whose memory fits the cap, when one
        // below the configured ratio does: it moves fewer bytes than offloading more.
        if (in.stage == 3 && psi > 0 && in.memory_cap > opt_mem) {
            const double room = static_cast<double>(in.memory_cap - opt_mem) /
                                static_cast<double>(psi * resident_per_elem);
            double r = std::max(0.05, std::ceil((1.0 - room) / 0.05 - 1e-9) * 0.05);
            while (r < ratio && opt_mem + resident(r) > in.memory_cap) r += 0.05;
            if (r < ratio - 1e-9) {
                finish({fmt::format("optimizer nvme, ratio {:.2f}", r), opt_mem + resident(r),
                        share(r, opt_rw + grad_rw), share(r, opt_rw + grad_rw), 0, 0, false});
            }
        }
        finish({ratio < 1.0 ? fmt::format("optimizer nvme, ratio {:.2f}", ratio) : "optimizer nvme",
                opt_mem + resident(ratio), share(ratio, opt_rw + grad_rw),
                share(ratio, opt_rw + grad_rw), 0, 0, false});
    }
    if (in.stage == 3 && in.ct != 4) {
        const int64_t p = in.ct * psi;
        finish({"params nvme",
                opt_mem + resident(ratio) - e.params +
                    (in.param_buffer_count + 1) * in.ct * in.largest_group_shard,
                share(ratio, opt_rw + grad_rw) + (2 * A + 1) * p,
                share(ratio, opt_rw + grad_rw) + p, 0, 0, false});
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
