// Engine's step: gradient accumulation over micro-batches, the reduced gradients, their norm and
// finiteness (clipping, the loss scaler), and the optimizer step on each rank's shards (LAMB's
// trust ratios included), on the device or through the offload tiers (engine_offload.cpp).
#include <algorithm>
#include <cmath>
#include <cstring>

#include <omp.h>

#include "base/error.h"
#include "base/log.h"
#include "base/timer.h"
#include "core/half.h"
#include "core/memory.h"
#include "ops/activation.h"
#include "ops/adam.h"
#include "zero/engine.h"
#include "zero/engine_group.h"

namespace zs::zero {

using core::MemCategory;

// -------------------------------------------------------------------------------------- step

void Engine::begin_step(int n_micro) {
    times_ = OffloadTimes();
    n_micro_ = std::max(1, n_micro);
    micro_ = 0;
    cursor_ = 0;
    for (auto& gr : groups_) {
        gr->backwards = 0;
        if (gr->full_g.defined() && cfg_.stage <= 1) gr->full_g.zero();
        if (gr->shard_g.defined()) gr->shard_g.zero();
        gr->grad_stored = false;
        gr->grad_sq = 0;
        gr->grad_finite = true;
    }
}

void Engine::end_micro_batch() { ++micro_; }

void Engine::finish_grads() {
    for (int g = 0; g < layout_.n_groups(); ++g) complete_reduce(g);
    in_flight_.clear();
    if (offload_grads_) grad_drain();
}

Tensor Engine::reduced_grads(int g) const {
    ZS_CHECK_T(NotSupported, !offload_grads_,
               "zero: the reduced gradients of group {} are on the offload tier (offload_optimizer "
               "at stage {}), not in memory",
               layout_.group(g).name, cfg_.stage);
    const Group& gr = *groups_[static_cast<size_t>(g)];
    return cfg_.stage == 0 ? gr.full_g : gr.shard_g;
}

Tensor Engine::host_grads(int g) const {
    if (offload_grads_) return grad_load(g);
    const Group& gr = *groups_[static_cast<size_t>(g)];
    return (cfg_.stage == 0 ? gr.full_g : gr.shard_g).to(core::Device::cpu());
}

std::vector<optim::Segment> Engine::segments() {
    // Raw host pointers, for optim::Optimizer on the CPU (step() uses device_step elsewhere).
    ZS_ASSERT(cfg_.device.is_cpu(), "zero: optimizer segments on {}", cfg_.device.str());
    std::vector<optim::Segment> segs;
    for (int g = 0; g < layout_.n_groups(); ++g) {
        Group& gr = *groups_[static_cast<size_t>(g)];
        auto state = [&](int i) {
            return optimizer_.n_states() > i ? gr.states[i].data<float>() : nullptr;
        };
        std::vector<optim::Segment> part =
            segments_of(g, 0, gr.master.numel(), gr.master.data<float>(), state(0), state(1));
        segs.insert(segs.end(), part.begin(), part.end());
    }
    return segs;
}

std::vector<optim::Segment> Engine::segments_of(int g, int64_t a, int64_t b, float* master,
                                                float* state0, float* state1,
                                                const float* grad_ab) {
    const GroupShard& s = shards_[static_cast<size_t>(g)];
    Group& gr = *groups_[static_cast<size_t>(g)];
    // grad addresses shard-local element 0 (grad_ab: element a).
    const float* grad = grad_ab           ? grad_ab - a
                        : cfg_.stage == 0 ? gr.full_g.data<float>()
                                          : gr.shard_g.data<float>();
    std::vector<optim::Segment> segs;
    for (models::ParamId id : layout_.group(g).params) {
        const models::ParamInfo& p = layout_.param(id);
        int64_t lo = std::max(p.offset, s.begin + a);
        int64_t hi = std::min({p.offset + p.numel(), s.end, s.begin + b});
        if (hi <= lo) continue;
        int64_t local = lo - s.begin;  // index into shard-sized buffers
        optim::Segment seg{};
        seg.master = master + (local - a);
        seg.grad = grad + local;
        seg.state0 = state0 ? state0 + (local - a) : nullptr;
        seg.state1 = state1 ? state1 + (local - a) : nullptr;
        seg.n = hi - lo;
        seg.decay = cfg_.decay_all || p.weight_decay;
        seg.param = id;
        seg.compute = nullptr;
        seg.compute_dtype = ct_;
        if (!gr.master_aliases_compute) {
            size_t es = core::dtype_size(ct_);
            if (cfg_.stage <= 2) {
                seg.compute =
                    static_cast<char*>(gr.full_w.data_ptr()) + static_cast<size_t>(lo) * es;
            } else {
                seg.compute =
                    static_cast<char*>(gr.shard_w.data_ptr()) + static_cast<size_t>(local) * es;
            }
        }
        segs.push_back(seg);
    }
    return segs;
}

double Engine::grad_sq_norm() { return grad_sq_norm({}); }

double Engine::grad_part(int g, const float* grad,
                         std::span<const std::vector<NormWeight>> weight) const {
    const GroupShard& s = shards_[static_cast<size_t>(g)];
    double part = 0;
    for (models::ParamId id : layout_.group(g).params) {
        const models::ParamInfo& p = layout_.param(id);
        const int64_t lo = std::max(p.offset, s.begin);
        const int64_t hi = std::min(p.offset + p.numel(), s.end);
        auto add = [&](int64_t a, int64_t b, double w) {
            if (b <= a) return;
            optim::Segment seg{};
            seg.grad = grad + (a - s.begin);
            seg.n = b - a;
            part += w * optim::sum_squares({&seg, 1});
        };
        if (weight.empty()) {
            add(lo, hi, 1.0);
            continue;
        }
        ZS_CHECK_T(ShapeError, static_cast<size_t>(id) < weight.size(),
                   "grad_sq_norm: no weight for parameter {}", id);
        for (const NormWeight& w : weight[static_cast<size_t>(id)]) {
            add(std::max(lo, p.offset + w.begin), std::min(hi, p.offset + w.end), w.weight);
        }
    }
    return part;
}

bool Engine::grad_finite_part(int g, const float* grad) const {
    const GroupShard& s = shards_[static_cast<size_t>(g)];
    std::vector<optim::Segment> segs;
    for (models::ParamId id : layout_.group(g).params) {
        const models::ParamInfo& p = layout_.param(id);
        int64_t lo = std::max(p.offset, s.begin), hi = std::min(p.offset + p.numel(), s.end);
        if (hi <= lo) continue;
        optim::Segment seg{};
        seg.grad = grad + (lo - s.begin);
        seg.n = hi - lo;
        segs.push_back(seg);
    }
    return optim::all_finite(segs);
}

double Engine::grad_sq_norm(std::span<const std::vector<NormWeight>> weight) {
    double local = 0;
    for (int g = 0; g < layout_.n_groups(); ++g) {
        const GroupShard& s = shards_[static_cast<size_t>(g)];
        double part = 0;
        if (offload_grads_ && weight.empty()) {
            part = groups_[static_cast<size_t>(g)]->grad_sq;  // taken when written
        } else {
            const Tensor grads = host_grads(g);
            part = grad_part(g, grads.data<float>(), weight);
        }
        // Stage 0 with groups of their own communicators: every rank of group g's communicator
        // holds the same reduced gradients, and the sum below runs over the engine's ranks.
        local += cfg_.stage == 0 && group_comms_ ? part / s.world : part;
    }
    if (world_ == 1 || (cfg_.stage == 0 && !group_comms_)) return local;
    Tensor t = Tensor::empty({1}, DType::f32, core::Device::cpu(), MemCategory::buffers);
    t.data<float>()[0] = static_cast<float>(local);
    dp_.allreduce(t, comm::ReduceOp::sum).wait();
    return t.data<float>()[0];
}

bool Engine::grads_finite() {
    // The gradients of every parameter's owned part (padding excluded), on the host.
    bool ok = true;
    for (int g = 0; g < layout_.n_groups() && ok; ++g) {
        if (offload_grads_) {
            ok = groups_[static_cast<size_t>(g)]->grad_finite;  // taken when written
        } else {
            ok = grad_finite_part(g, host_grads(g).data<float>());
        }
    }
    if (world_ == 1 || (cfg_.stage == 0 && !group_comms_)) return ok;
    Tensor t = Tensor::empty({1}, DType::f32, core::Device::cpu(), MemCategory::buffers);
    t.data<float>()[0] = ok ? 0.0f : 1.0f;
    dp_.allreduce(t, comm::ReduceOp::max).wait();
    return t.data<float>()[0] == 0.0f;
}

void Engine::lamb_step(std::span<const optim::Segment> segs, float lr, int64_t step,
                       float grad_scale) {
    // Per parameter: ||w||^2 and ||u||^2 over this rank's part of it (see optim/optimizer.h).
    const size_t n = 2 * layout_.params().size();
    std::vector<double> sq(n, 0.0);
    optimizer_.lamb_moments(segs, grad_scale, sq);
    if (cfg_.stage > 0 && world_ > 1) {
        // Shards cut parameters: add the partial sums of every rank. NOTE(lamb): they travel as
        // f64 bit patterns in an allgather (the comm layer reduces f32 at best, which would cost
        // the norms 9 digits) and are added in rank order, so every rank gets the same sums.
        Tensor mine = Tensor::empty({static_cast<int64_t>(n)}, DType::i64, core::Device::cpu(),
                                    MemCategory::buffers);
        Tensor all = Tensor::empty({static_cast<int64_t>(n) * world_}, DType::i64,
                                   core::Device::cpu(), MemCategory::buffers);
        std::memcpy(mine.data_ptr(), sq.data(), n * sizeof(double));
        dp_.allgather(all, mine).wait();
        const auto* parts = static_cast<const double*>(all.data_ptr());
        for (size_t i = 0; i < n; ++i) {
            double total = 0;
            for (size_t r = 0; r < static_cast<size_t>(world_); ++r) total += parts[r * n + i];
            sq[i] = total;
        }
    }
    optimizer_.lamb_apply(segs, lr, step, sq);
}

void Engine::device_step(float lr, int64_t step, float grad_scale) {
    const optim::Kind kind = optimizer_.options().kind;
    ZS_CHECK_T(NotSupported, kind == optim::Kind::adamw || kind == optim::Kind::adam,
               "zero: the {} optimizer step on {} needs a device optimizer kernel; only AdamW "
               "and Adam have one (ops::adam_update)",
               optim::to_string(kind), cfg_.device.str());
    // The runs of segments(), as tensor views on the device: one kernel per parameter part.
    for (int g = 0; g < layout_.n_groups(); ++g) {
        const GroupShard& s = shards_[static_cast<size_t>(g)];
        Group& gr = *groups_[static_cast<size_t>(g)];
        const Tensor& grads = cfg_.stage == 0 ? gr.full_g : gr.shard_g;
        for (models::ParamId id : layout_.group(g).params) {
            const models::ParamInfo& p = layout_.param(id);
            int64_t lo = std::max(p.offset, s.begin), hi = std::min(p.offset + p.numel(), s.end);
            if (hi <= lo) continue;
            const int64_t a = lo - s.begin, b = hi - s.begin;  // indices into shard-sized buffers
            Tensor compute;
            if (!gr.master_aliases_compute) {
                compute = cfg_.stage <= 2 ? gr.full_w.slice(0, lo, hi) : gr.shard_w.slice(0, a, b);
            }
            ops::adam_update(
                gr.master.slice(0, a, b), gr.states[0].slice(0, a, b), gr.states[1].slice(0, a, b),
                compute, grads.slice(0, a, b),
                optimizer_.adam_step(lr, step, grad_scale, cfg_.decay_all || p.weight_decay));
        }
    }
}

void Engine::step(float lr, int64_t step, float grad_scale) {
    in_step_ = true;
    const int64_t rd0 = offload_bytes_read(), wr0 = offload_bytes_written();
    step_body(lr, step, grad_scale);
    // Parameter offload: the shards written back are on the tier (a failed write fails this
    // step), and the next forward's first shards are read from now on.
    if (pstore_) {
        Timer t;
        param_drain();
        times_.step_param_wait_s += t.seconds();
        param_prefetch_start();
    }
    in_step_ = false;
    times_.step_read_bytes = offload_bytes_read() - rd0;
    times_.step_write_bytes = offload_bytes_written() - wr0;
}

void Engine::step_body(float lr, int64_t step, float grad_scale) {
    if (store_) {
        offload_step(lr, step, grad_scale);
    } else if (bfm_) {
        // bf16 masters in memory: group by group (stage 3 with offloaded parameters: its shard
        // fetched), in chunks of f32 scratch; element-wise, so the same arithmetic.
        constexpr int64_t kChunk = 1 << 20;
        for (int g = 0; g < layout_.n_groups(); ++g) {
            Group& gr = *groups_[static_cast<size_t>(g)];
            const int64_t S = shards_[static_cast<size_t>(g)].size;
            param_fetch(g);
            for (int64_t a = 0; a < S; a += kChunk) {
                const int64_t b = std::min(S, a + kChunk);
                auto state = [&](int i) -> void* {
                    return optimizer_.n_states() > i
                               ? static_cast<void*>(bytes_of(gr.states[i]) +
                                                    static_cast<size_t>(a) * state_es())
                               : nullptr;
                };
                bf16_update(g, a, b, state(0), state(1), nullptr, nullptr, lr, step, grad_scale);
            }
            param_store(g, true);
        }
    } else if (!cfg_.device.is_cpu()) {
        device_step(lr, step, grad_scale);
    } else if (optimizer_.options().kind == optim::Kind::lamb) {
        ZS_CHECK_T(NotSupported, !pstore_,
                   "zero_optimization.offload_param: LAMB needs every parameter in memory at once");
        lamb_step(segments(), lr, step, grad_scale);
    } else if (pstore_) {
        // Parameter offload: one group's shard in memory at a time (the update is element-wise,
        // so group by group is the same arithmetic).
        for (int g = 0; g < layout_.n_groups(); ++g) {
            Group& gr = *groups_[static_cast<size_t>(g)];
            param_fetch(g);
            auto state = [&](int i) {
                return optimizer_.n_states() > i ? gr.states[i].data<float>() : nullptr;
            };
            optimizer_.step(
                segments_of(g, 0, gr.master.numel(), gr.master.data<float>(), state(0), state(1)),
                lr, step, grad_scale);
            param_store(g, true);
        }
    } else {
        optimizer_.step(segments(), lr, step, grad_scale);
    }
    for (int g = 0; g < layout_.n_groups(); ++g) {
        Group& gr = *groups_[static_cast<size_t>(g)];
        const GroupShard& s = shards_[static_cast<size_t>(g)];
        if ((cfg_.stage == 1 || cfg_.stage == 2) && s.world > 1 && s.numel > 0) {
            Tensor mine = gr.full_w.slice(0, s.begin, s.begin + s.size).clone(MemCategory::buffers);
            comm(g).allgather(gr.full_w, mine).wait();
        }
        // hpZ: the secondary shards are stale too; refreshed by the next forward's gathers.
        gr.sec_valid = false;
        if (cfg_.stage == 3 && gr.full_w.defined()) {
            // Gathered copies are stale now; they are gathered again on next use.
            wait_gather(g);
            gr.full_w = Tensor();
            gr.gathered = false;
            live_numel_ -= s.padded;
            bind(g);
        }
    }
    recording_ = false;
}

}  // namespace zs::zero
