// Engine's per-group hooks (zero/engine.h GroupHooks): binding a group's weights for compute, the
// all-gathers launched ahead and waited on (prefetch), releasing them after use, and the gradient
// reduce-scatters of stages 2 and 3, launched and completed in the backward's order.
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

// ------------------------------------------------------------------------------------- hooks

void Engine::bind(int g) {
    Group& gr = *groups_[static_cast<size_t>(g)];
    const GroupShard& s = shards_[static_cast<size_t>(g)];
    // A group this rank's pipeline stage does not hold binds nothing.
    Tensor w = gr.full_w.defined() && s.numel > 0 ? gr.full_w.slice(0, 0, s.numel) : Tensor();
    Tensor gd = gr.full_g.defined() && s.numel > 0 ? gr.full_g.slice(0, 0, s.numel) : Tensor();
    binding_.bind_group(g, w, gd);
}

void Engine::launch_gather(int g, bool backward) {
    Group& gr = *groups_[static_cast<size_t>(g)];
    const GroupShard& s = shards_[static_cast<size_t>(g)];
    gr.full_w = Tensor::empty({s.padded}, ct_, cfg_.device, MemCategory::params);
    // Offloaded parameters: the shard is read (ahead, by prefetch) before its gather.
    if (!(backward && gr.sec_valid)) param_fetch(g);
    if (backward && gr.sec_valid) {
        // hpZ: the secondary shards of the sub-group, unquantized: the weights of the forward.
        gr.gather_work = hpz_->allgather(gr.full_w, gr.sec_w);
    } else if (s.world == 1) {
        // One rank: the gathered weights are the shard (no collective and its staging copies).
        gr.full_w.copy_from(gr.shard_w);
        gr.gather_work = comm::Work();
    } else if (quantize_weights(g)) {
        // qwZ: this rank's shard as int8 codes + scales, one byte range; dequantized on arrival.
        const QuantFormat f{8, cfg_.quant_block};
        const int64_t nb = packed_bytes(s.size, f);
        gr.gather_send = Tensor::empty({nb}, DType::i8, cfg_.device, MemCategory::buffers);
        gr.gather_recv =
            Tensor::empty({nb * s.world}, DType::i8, cfg_.device, MemCategory::buffers);
        quantize(gr.shard_w, f, bytes_of(gr.gather_send));
        gr.gather_work = comm(g).allgather(gr.gather_recv, gr.gather_send);
    } else {
        gr.gather_work = comm(g).allgather(gr.full_w, gr.shard_w);
    }
    gr.gather_pending = true;
    live_numel_ += s.padded;
}

void Engine::wait_gather(int g) {
    Group& gr = *groups_[static_cast<size_t>(g)];
    if (!gr.gather_pending) return;
    gr.gather_work.wait();
    gr.gather_pending = false;
    if (gr.gather_recv.defined()) {
        // Every rank's shard, its own included, from the same codes: identical weights on all.
        const GroupShard& s = shards_[static_cast<size_t>(g)];
        const QuantFormat f{8, cfg_.quant_block};
        const int64_t nb = packed_bytes(s.size, f);
        for (int r = 0; r < s.world; ++r) {
            dequantize(bytes_of(gr.gather_recv) + r * nb, f,
                       gr.full_w.slice(0, r * s.size, (r + 1) * s.size));
        }
        gr.gather_send = Tensor();
        gr.gather_recv = Tensor();
    }
    gr.gathered = true;
    // Offloaded parameters: the shard is released once gathered (it is on the tier unchanged).
    param_store(g, false);
}

void Engine::prefetch() {
    if (cfg_.stage != 3 || recording_) return;
    if (pstore_) {
        // Parameter offload: read the shards of the next groups of the recorded order ahead.
        int64_t ahead = cfg_.offload.param_buffer_count;
        for (size_t i = cursor_; i < trace_.size() && ahead > 0; ++i) {
            const int g = trace_[i].g;
            const Group& gr = *groups_[static_cast<size_t>(g)];
            if (gr.gathered || gr.gather_pending || !param_offloaded(g)) continue;
            param_read_ahead(g);
            --ahead;
        }
    }
    int64_t budget = cfg_.prefetch_numel;
    for (size_t i = cursor_; i < trace_.size() && budget > 0; ++i) {
        const int g = trace_[i].g;
        Group& gr = *groups_[static_cast<size_t>(g)];
        const GroupShard& s = shards_[static_cast<size_t>(g)];
        if (gr.gathered || gr.gather_pending) continue;
        if (live_numel_ + s.padded > cfg_.max_live_numel) break;
        launch_gather(g, trace_[i].backward);
        budget -= s.padded;
    }
}

void Engine::acquire(int g, bool backward) {
    Group& gr = *groups_[static_cast<size_t>(g)];
    ++gr.refs;
    if (cfg_.stage != 3) return;
    if (recording_) {
        trace_.push_back({g, backward});
    } else if (cursor_ < trace_.size() && trace_[cursor_].g == g) {
        ++cursor_;
    } else if (!trace_.empty() && trace_[0].g == g && trace_[0].backward == backward) {
        // A new pass from the recorded order's start without a begin_step: an evaluation's
        // forward (or the next one's). It follows the order's forward prefix; without this the
        // first evaluation would switch prefetch off for the rest of training.
        cursor_ = 1;
    } else {
        // The execution order changed (it should not): stop prefetching rather than guess.
        log_debug("zero: group {} out of the recorded order; prefetch disabled", g);
        trace_.clear();
        cursor_ = 0;
    }
    if (!gr.gathered) {
        if (!gr.gather_pending) launch_gather(g, backward);
        wait_gather(g);
        bind(g);
    }
    prefetch();
}

void Engine::release(int g) {
    Group& gr = *groups_[static_cast<size_t>(g)];
    ZS_ASSERT(gr.refs > 0, "zero: group {} released more often than acquired", g);
    if (--gr.refs > 0 || cfg_.stage != 3 || gr.persistent) return;
    // Keep it when it is used again next (e.g. the head's forward then backward).
    if (!recording_ && cursor_ < trace_.size() && trace_[cursor_].g == g) return;
    if (hierarchical(g) && !gr.sec_valid) {
        // hpZ: keep this rank's slice of the weights just used, for the backward gathers.
        const int64_t q = gr.sec_w.numel(), j = hpz_->rank();
        gr.sec_w.copy_from(gr.full_w.slice(0, j * q, (j + 1) * q));
        gr.sec_valid = true;
    }
    gr.full_w = Tensor();
    gr.gathered = false;
    live_numel_ -= shards_[static_cast<size_t>(g)].padded;
    bind(g);
}

void Engine::ensure_grads(int g) {
    Group& gr = *groups_[static_cast<size_t>(g)];
    if (cfg_.stage <= 1) return;  // permanent full gradients
    if (gr.reduce_pending) complete_reduce(g);
    if (!gr.full_g.defined()) {
        gr.full_g = Tensor::zeros({shards_[static_cast<size_t>(g)].padded}, DType::f32, cfg_.device,
                                  MemCategory::grads);
        bind(g);
    }
}

void Engine::launch_reduce(int g) {
    Group& gr = *groups_[static_cast<size_t>(g)];
    const GroupShard& s = shards_[static_cast<size_t>(g)];
    if (gr.reduce_pending) complete_reduce(g);
    // Bound the gradients in flight (stages 2-3 free a group's full gradients only when its
    // reduce-scatter completes): finish the older ones, keep the newest overlapping with compute.
    if (cfg_.stage >= 2) {
        while (!in_flight_.empty()) {
            int older = in_flight_.front();
            in_flight_.pop_front();
            complete_reduce(older);
        }
        in_flight_.push_back(g);
    }
    if (cfg_.stage == 0) {
        if (s.world > 1) gr.reduce_work = comm(g).allreduce(gr.full_g, comm::ReduceOp::sum);
    } else if (s.world == 1) {
        // One rank: the reduced shard is the gradient itself (a sum over one rank), not a copy.
        gr.reduce_out = gr.full_g;
        gr.reduce_work = comm::Work();
    } else if (quantize_grads(g)) {
        // qgZ: chunk j (rank j's shard) of this rank's gradients, quantized, goes to rank j.
        const QuantFormat f{cfg_.quantized_gradients_bits, cfg_.quant_block};
        const int64_t nb = packed_bytes(s.size, f);
        gr.a2a_send = Tensor::empty({nb * s.world}, DType::i8, cfg_.device, MemCategory::buffers);
        gr.a2a_recv = Tensor::empty({nb * s.world}, DType::i8, cfg_.device, MemCategory::buffers);
        for (int j = 0; j < s.world; ++j) {
            quantize(gr.full_g.slice(0, j * s.size, (j + 1) * s.size), f,
                     bytes_of(gr.a2a_send) + j * nb);
        }
        gr.reduce_work = comm(g).all_to_all(gr.a2a_recv, gr.a2a_send);
        // The collective reads only the packed copy: the full gradients can go now.
        gr.full_g = Tensor();
        bind(g);
    } else {
        gr.reduce_out = Tensor::empty({s.size}, DType::f32, cfg_.device, MemCategory::grads);
        gr.reduce_work = comm(g).reduce_scatter(gr.reduce_out, gr.full_g);
    }
    gr.reduce_pending = true;
    if (!cfg_.overlap_comm) complete_reduce(g);
}

void Engine::complete_reduce(int g) {
    Group& gr = *groups_[static_cast<size_t>(g)];
    if (!gr.reduce_pending) return;
    if (cfg_.stage == 0 && shards_[static_cast<size_t>(g)].world == 1) {
        gr.reduce_pending = false;
        return;
    }
    gr.reduce_work.wait();
    gr.reduce_pending = false;
    if (cfg_.stage == 0) return;
    if (gr.a2a_recv.defined()) {
        // qgZ: the W chunks received for this rank's shard, dequantized and summed in f32 in
        // rank order (the same order, so the same bits, on every rank).
        const GroupShard& s = shards_[static_cast<size_t>(g)];
        const QuantFormat f{cfg_.quantized_gradients_bits, cfg_.quant_block};
        const int64_t nb = packed_bytes(s.size, f);
        gr.reduce_out = Tensor::empty({s.size}, DType::f32, cfg_.device, MemCategory::grads);
        dequantize(bytes_of(gr.a2a_recv), f, gr.reduce_out);
        for (int r = 1; r < s.world; ++r) {
            dequantize_add(bytes_of(gr.a2a_recv) + r * nb, f, gr.reduce_out);
        }
        gr.a2a_send = Tensor();
        gr.a2a_recv = Tensor();
    }
    if (cfg_.stage == 1) {
        gr.shard_g.copy_from(gr.reduce_out);
        if (bfm_) round_bf16(gr.shard_g.data<float>(), gr.shard_g.numel());
    } else {
        // Stages 2-3: accumulate this micro-batch's reduced shard (in memory, or in its records
        // on the tier); drop the full gradients.
        gr.full_g = Tensor();  // the reduction is complete
        bind(g);
        if (offload_grads_) {
            grad_store(g);
        } else {
            ops::add(gr.shard_g, gr.shard_g, gr.reduce_out);
            if (bfm_) round_bf16(gr.shard_g.data<float>(), gr.shard_g.numel());
        }
    }
    gr.reduce_out = Tensor();
}

void Engine::before_forward(int g) { acquire(g, false); }
void Engine::after_forward(int g) { release(g); }

void Engine::before_backward(int g) {
    acquire(g, true);
    for (int gg : grad_groups_(g)) ensure_grads(gg);
}

void Engine::after_backward(int g) {
    release(g);
    // Counted per group: a pipeline stage interleaves micro-batches across its chunks, so the
    // last backward of one group need not be in the last micro-batch the stage finishes.
    const bool last = ++groups_[static_cast<size_t>(g)]->backwards >= n_micro_;
    if (cfg_.stage >= 2 || last) launch_reduce(g);
}

}  // namespace zs::zero
