// Engine's offload paths (ZeRO-Offload / ZeRO-Infinity, zero/offload.h): the tiers' setup,
// gradient records, parameter shards on the tier, optimizer records and the streamed optimizer
// step (Deep Optimizer States' overlap).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>

#include "base/error.h"
#include "base/log.h"
#include "base/timer.h"
#include "core/half.h"
#include "core/host_memory.h"
#include "core/memory.h"
#include "io/atomic_file.h"
#include "ops/activation.h"
#include "zero/engine.h"
#include "zero/engine_group.h"

namespace zs::zero {

using core::MemCategory;

// ------------------------------------------------------------------------------------ offload

void Engine::setup_offload() {
    const OffloadConfig& o = cfg_.offload;
    // Offloaded runs: large host blocks go back to the system when freed, so resident memory
    // follows what is in use (a memory cap sees the engine's tracked peak, not a high-water
    // heap).
    // The group-sized buffers that come and go group after group (gathered weights, full and
    // reduced gradients) reuse freed blocks of their size, up to two of the largest of each kept,
    // instead of being page-faulted in again each time.
    if (o.param != Tier::memory || o.optimizer != Tier::memory) {
        size_t wmax = 0, gmax = 0;
        for (const GroupShard& s : shards_) {
            wmax = std::max(wmax, static_cast<size_t>(s.padded) * core::dtype_size(ct_));
            gmax = std::max(gmax, static_cast<size_t>(s.padded) * sizeof(float));
        }
        core::return_large_host_blocks(size_t{16} << 20, 2 * (wmax + gmax));
    }
    if (o.param != Tier::memory) {
        ZS_CHECK_T(ConfigError, cfg_.stage == 3,
                   "zero_optimization.offload_param: needs ZeRO stage 3 (stage {})", cfg_.stage);
        ZS_CHECK_T(ConfigError, ct_ != DType::f32,
                   "zero_optimization.offload_param: with f32 compute the parameters are the f32 "
                   "master weights; offload them with offload_optimizer, or train in bf16/fp16");
        ZS_CHECK_T(NotSupported, cfg_.device.is_cpu(),
                   "zero_optimization.offload_param: CPU ranks only (the model is on {})",
                   cfg_.device.str());
        ZS_CHECK_T(ConfigError, o.param_buffer_count >= 1,
                   "zero_optimization.offload_param.buffer_count: expected >= 1, got {}",
                   o.param_buffer_count);
        pstore_ = std::make_unique<SwapStore>(o.param, o, rank_, o.param_nvme_path,
                                              o.param_pin_memory, "param");
        param_off_.assign(static_cast<size_t>(layout_.n_groups()), 0);
        pread_.resize(static_cast<size_t>(layout_.n_groups()));
        int64_t in_cpu = 0, n_off = 0, bytes = 0;
        for (int g = 0; g < layout_.n_groups(); ++g) {
            const int64_t S = shards_[static_cast<size_t>(g)].size;
            ZS_CHECK_T(ConfigError, S <= o.param_buffer_size,
                       "zero_optimization.offload_param.buffer_size {} is smaller than group {}'s "
                       "shard of {} elements",
                       o.param_buffer_size, layout_.group(g).name, S);
            Group& gr = *groups_[static_cast<size_t>(g)];
            // nvme: the first groups up to max_in_cpu elements stay in memory.
            if (o.param == Tier::nvme && in_cpu + S <= o.param_max_in_cpu) {
                in_cpu += S;
                gr.shard_w = Tensor::zeros({S}, ct_, cfg_.device, MemCategory::params);
                continue;
            }
            param_off_[static_cast<size_t>(g)] = 1;
            param_hold(g);
            gr.shard_w.zero();
            param_store(g, true);
            ++n_off;
            bytes += static_cast<int64_t>(param_bytes(g));
        }
        param_drain();
        if (rank_ == 0) {
            log_info(
                "zero: offload_param {}: {} of {} groups' weight shards ({}) off memory{}, read "
                "ahead {} groups along the execution order",
                to_string(o.param), n_off, layout_.n_groups(), core::format_bytes(bytes),
                o.param == Tier::nvme ? ", files under " + pstore_->dir() : std::string(),
                o.param_buffer_count);
        }
    }
    if (o.optimizer == Tier::memory) return;
    ZS_CHECK_T(ConfigError, cfg_.stage >= 1,
               "zero_optimization.offload_optimizer: device \"{}\" needs ZeRO stage 1, 2 or 3 "
               "(stage 0 keeps no optimizer partition to offload)",
               to_string(o.optimizer));
    ZS_CHECK_T(NotSupported, cfg_.device.is_cpu(),
               "zero_optimization.offload_optimizer: the offloaded optimizer step runs on the CPU "
               "only (the model is on {})",
               cfg_.device.str());
    ZS_CHECK_T(NotSupported, optimizer_.options().kind != optim::Kind::lamb,
               "zero_optimization.offload_optimizer: LAMB's per-tensor trust ratios need whole "
               "tensors in memory; offload is implemented for the element-wise optimizers");
    ZS_CHECK_T(ConfigError, o.sub_group_size >= 1,
               "zero_optimization.sub_group_size: expected >= 1 with offload, got {}",
               o.sub_group_size);
    ZS_CHECK_T(ConfigError, o.buffer_count >= 1,
               "zero_optimization.offload_optimizer.buffer_count: expected >= 1, got {}",
               o.buffer_count);
    swap_master_ = ct_ != DType::f32 && !bfm_;
    subs_of_.resize(static_cast<size_t>(layout_.n_groups()));
    size_t max_bytes = 0;
    for (int g = 0; g < layout_.n_groups(); ++g) {
        const int64_t S = shards_[static_cast<size_t>(g)].size;
        for (int64_t a = 0; a < S; a += o.sub_group_size) {
            subs_of_[static_cast<size_t>(g)].push_back(static_cast<int>(subs_.size()));
            subs_.push_back({g, a, std::min(S, a + o.sub_group_size)});
            max_bytes = std::max(max_bytes, record_bytes(subs_.back()));
        }
    }
    if (offload_fields() == 0) {
        if (rank_ == 0) {
            log_info("zero: offload_optimizer: nothing to offload (f32 weights, {} keeps no state)",
                     optim::to_string(optimizer_.options().kind));
        }
        return;
    }
    // offload_optimizer.ratio (DeepSpeed's partial offload, stage 3): the first
    // floor((1 - ratio) x n) sub-groups stay in memory (stage3.py's assignment), the rest go to
    // the tier. Their records stream through the same step, so training is the same arithmetic.
    ZS_CHECK_T(ConfigError, o.optimizer_ratio >= 0.0 && o.optimizer_ratio <= 1.0,
               "zero_optimization.offload_optimizer.ratio: expected a number in [0, 1], got {}",
               o.optimizer_ratio);
    ZS_CHECK_T(ConfigError, o.optimizer_ratio == 1.0 || cfg_.stage == 3,
               "zero_optimization.offload_optimizer.ratio: partial offload (ratio {} < 1) is "
               "supported only with stage 3 (stage {})",
               o.optimizer_ratio, cfg_.stage);
    n_resident_ =
        static_cast<int>(std::floor((1.0 - o.optimizer_ratio) * static_cast<double>(subs_.size())));
    store_ =
        std::make_unique<SwapStore>(o.optimizer, o, rank_, o.nvme_path, o.pin_memory, "optimizer");
    if (n_resident_ > 0) {
        mstore_ = std::make_unique<SwapStore>(Tier::cpu, o, rank_, "", false, "optimizer");
    }
    const size_t nbuf = std::min(static_cast<size_t>(o.buffer_count), subs_.size());
    for (size_t i = 0; i < std::max<size_t>(nbuf, 1); ++i) {
        slots_.emplace_back(max_bytes, o.pin_memory, MemCategory::optimizer);
    }
    // Every record starts as zeros (master weights are set by load_group / init_weights).
    std::memset(slots_[0].data(), 0, slots_[0].capacity());
    for (size_t i = 0; i < subs_.size(); ++i) {
        opt_store(static_cast<int>(i))
            .write(static_cast<int>(i), slots_[0], record_bytes(subs_[i]))
            .wait();
    }
    if (offload_grads_) {
        ZS_ASSERT(offload_fields() > 0);
        gstore_ =
            std::make_unique<SwapStore>(o.optimizer, o, rank_, o.nvme_path, o.pin_memory, "grad");
        if (n_resident_ > 0) {
            mgstore_ = std::make_unique<SwapStore>(Tier::cpu, o, rank_, "", false, "grad");
        }
        size_t max_grad = 0;
        for (const SubGroup& sg : subs_) {
            max_grad = std::max(max_grad, static_cast<size_t>(sg.b - sg.a) * sizeof(float));
        }
        for (size_t i = 0; i < slots_.size(); ++i) {
            gslots_.emplace_back(max_grad, o.pin_memory, MemCategory::grads);
        }
        gbuf_bytes_ = max_grad / sizeof(float) * grad_es();
    }
    if (rank_ == 0) {
        int64_t total = 0;
        for (const SubGroup& sg : subs_) total += static_cast<int64_t>(record_bytes(sg));
        log_info(
            "zero: offload_optimizer {}: {} per rank ({}{} {} state(s)) in {} sub-groups of <= {} "
            "elements, {} buffers of {}{}{}",
            to_string(o.optimizer), core::format_bytes(total),
            swap_master_ ? "f32 master weights + " : "", optimizer_.n_states(),
            core::to_string(sdt_), subs_.size(), o.sub_group_size, slots_.size(),
            core::format_bytes(static_cast<int64_t>(max_bytes)),
            o.optimizer == Tier::nvme ? ", files under " + store_->dir() : std::string(),
            o.pipeline_read || o.pipeline_write ? "; pipelined" : "");
        if (o.optimizer_ratio < 1.0) {
            int64_t resident = 0;
            for (int i = 0; i < n_resident_; ++i) {
                const SubGroup& sg = subs_[static_cast<size_t>(i)];
                resident += static_cast<int64_t>(record_bytes(sg)) +
                            (offload_grads_ ? (sg.b - sg.a) * static_cast<int64_t>(grad_es()) : 0);
            }
            log_info(
                "zero: offload_optimizer.ratio {}: the first {} of {} sub-groups stay in memory "
                "({} with their gradients), {} on {}",
                o.optimizer_ratio, n_resident_, subs_.size(), core::format_bytes(resident),
                subs_.size() - static_cast<size_t>(n_resident_), to_string(o.optimizer));
        }
        if (offload_grads_) {
            int64_t gbytes = 0;
            for (const SubGroup& sg : subs_)
                gbytes += (sg.b - sg.a) * static_cast<int64_t>(grad_es());
            log_info("zero: gradient offload {}: the reduced {} gradient shards ({}) per rank{}",
                     to_string(o.optimizer), bfm_ ? "bf16" : "f32", core::format_bytes(gbytes),
                     o.optimizer == Tier::nvme ? ", files under " + gstore_->dir() : std::string());
        }
    }
}

// --------------------------------------------------------------------------- gradient offload

void Engine::grad_drain() {
    // Every write is waited for, the first error rethrown after the others are done.
    std::exception_ptr first;
    for (io::AioWork& w : gwrites_) {
        try {
            w.wait();
        } catch (...) {
            if (!first) first = std::current_exception();
        }
    }
    gwrites_.clear();
    // The buffers are reused by the next group's records.
    for (io::AlignedBuffer& b : gbufs_) gfree_.push_back(std::move(b));
    gbufs_.clear();
    if (first) std::rethrow_exception(first);
}

Tensor Engine::grad_load(int g) const {
    ZS_ASSERT(gwrites_.empty(), "zero: gradient records read while written");
    const Group& gr = *groups_[static_cast<size_t>(g)];
    const int64_t S = shards_[static_cast<size_t>(g)].size;
    Tensor out = Tensor::zeros({S}, DType::f32, core::Device::cpu(), MemCategory::grads);
    if (!gr.grad_stored) return out;
    for (int id : subs_of_[static_cast<size_t>(g)]) {
        const SubGroup& sg = subs_[static_cast<size_t>(id)];
        const size_t n = static_cast<size_t>(sg.b - sg.a);
        grad_store_of(id).read(id, gslots_[0], n * grad_es()).wait();
        if (bfm_) {
            core::convert_bf16_to_f32(out.data<float>() + sg.a,
                                      reinterpret_cast<const core::bf16*>(gslots_[0].data()), n);
        } else {
            std::memcpy(out.data<float>() + sg.a, gslots_[0].data(), n * sizeof(float));
        }
    }
    return out;
}

void Engine::grad_store(int g) {
    Group& gr = *groups_[static_cast<size_t>(g)];
    // One group's writes in flight at a time: they overlap the next group's backward.
    Timer t;
    grad_drain();
    times_.grad_write_wait_s += t.seconds();
    t.reset();
    // The in-memory accumulation, element for element: zeros (begin_step) + the first shard,
    // then the sum so far + each next one. The first is done in place in the reduce-scatter's
    // output (0 + x: -0 becomes +0, as there).
    const std::vector<int>& ids = subs_of_[static_cast<size_t>(g)];
    const bool first = !gr.grad_stored;
    Tensor acc = first ? gr.reduce_out : grad_load(g);
    if (!first) ops::add(acc, acc, gr.reduce_out);
    float* d = acc.data<float>();
    // Each sub-group's record from a reused buffer, written at once. In tiles that stay in
    // cache: the first micro-batch's 0 + x, then the record (bf16 gradients: rounded to nearest
    // even by the conversion, and the rounded values widened back for the norm).
    for (int id : ids) {
        const SubGroup& sg = subs_[static_cast<size_t>(id)];
        const size_t n = static_cast<size_t>(sg.b - sg.a);
        if (gfree_.empty()) {
            gfree_.emplace_back(gbuf_bytes_, cfg_.offload.pin_memory, MemCategory::grads);
        }
        gbufs_.push_back(std::move(gfree_.back()));
        gfree_.pop_back();
        std::byte* buf = gbufs_.back().data();
        constexpr size_t kTile = 4096;
        for (size_t a = 0; a < n; a += kTile) {
            const size_t m = std::min(kTile, n - a);
            float* x = d + sg.a + static_cast<int64_t>(a);
            if (first) {
                for (size_t i = 0; i < m; ++i) x[i] = 0.0f + x[i];
            }
            if (bfm_) {
                auto* h = reinterpret_cast<core::bf16*>(buf) + a;
                core::convert_f32_to_bf16(h, x, m);
                core::convert_bf16_to_f32(x, h, m);
            } else {
                std::memcpy(buf + a * sizeof(float), x, m * sizeof(float));
            }
        }
        gwrites_.push_back(grad_store_of(id).write(id, gbufs_.back(), n * grad_es()));
    }
    gr.grad_sq = grad_part(g, d, {});
    // The squares are summed in double, which no finite f32 values overflow: the sum is finite
    // exactly when every gradient is.
    gr.grad_finite = std::isfinite(gr.grad_sq);
    gr.reduce_out = Tensor();
    gr.grad_stored = true;
    times_.grad_record_s += t.seconds();
}

size_t Engine::param_bytes(int g) const {
    return static_cast<size_t>(shards_[static_cast<size_t>(g)].size) * core::dtype_size(ct_);
}

io::AlignedBuffer Engine::param_buffer(int g) {
    const size_t cap = io::aio_padded(param_bytes(g));
    for (size_t i = 0; i < pfree_.size(); ++i) {
        if (pfree_[i].capacity() != cap) continue;
        io::AlignedBuffer b = std::move(pfree_[i]);
        pfree_.erase(pfree_.begin() + static_cast<std::ptrdiff_t>(i));
        return b;
    }
    return io::AlignedBuffer(param_bytes(g), cfg_.offload.param_pin_memory, MemCategory::params);
}

void Engine::param_recycle(io::AlignedBuffer&& buf) {
    if (buf.capacity() == 0) return;
    pfree_.push_back(std::move(buf));
    // As many free buffers as reads run ahead, and one: the oldest others are freed.
    const size_t keep =
        static_cast<size_t>(std::max<int64_t>(1, cfg_.offload.param_buffer_count)) + 1;
    if (pfree_.size() > keep) pfree_.erase(pfree_.begin());
}

void Engine::param_hold(int g) {
    Group& gr = *groups_[static_cast<size_t>(g)];
    ParamRead& pr = pread_[static_cast<size_t>(g)];
    param_wait_write(g);
    pr.buf = param_buffer(g);
    gr.shard_w =
        Tensor::wrap(pr.buf.data(), {shards_[static_cast<size_t>(g)].size}, ct_, cfg_.device);
}

void Engine::param_wait_write(int g) {
    for (auto it = pwrites_.begin(); it != pwrites_.end(); ++it) {
        if (it->g != g) continue;
        ParamWrite w = std::move(*it);
        pwrites_.erase(it);
        w.work.wait();
        param_recycle(std::move(w.buf));
        return;
    }
}

void Engine::param_drain() {
    std::exception_ptr first;
    while (!pwrites_.empty()) {
        ParamWrite w = std::move(pwrites_.front());
        pwrites_.pop_front();
        try {
            w.work.wait();
            param_recycle(std::move(w.buf));
        } catch (...) {
            if (!first) first = std::current_exception();
        }
    }
    if (first) std::rethrow_exception(first);
}

void Engine::param_prefetch_start() {
    if (!pstore_ || recording_) return;
    int64_t ahead = cfg_.offload.param_buffer_count;
    for (size_t i = 0; i < trace_.size() && ahead > 0; ++i) {
        const int g = trace_[i].g;
        if (!param_offloaded(g) ||
            (trace_[i].backward && groups_[static_cast<size_t>(g)]->sec_valid))
            continue;
        param_read_ahead(g);
        --ahead;
    }
}

void Engine::param_read_ahead(int g) {
    if (!param_offloaded(g)) return;
    Group& gr = *groups_[static_cast<size_t>(g)];
    ParamRead& pr = pread_[static_cast<size_t>(g)];
    if (gr.shard_w.defined() || pr.pending) return;
    // Its write-back (the optimizer's) completes first: the file is renamed over when done.
    param_wait_write(g);
    pr.buf = param_buffer(g);
    pr.work = pstore_->read(g, pr.buf, param_bytes(g));
    pr.pending = true;
}

void Engine::param_fetch(int g) {
    if (!param_offloaded(g)) return;
    Group& gr = *groups_[static_cast<size_t>(g)];
    if (gr.shard_w.defined()) return;
    param_read_ahead(g);
    ParamRead& pr = pread_[static_cast<size_t>(g)];
    pr.pending = false;
    Timer t;
    pr.work.wait();
    (in_step_ ? times_.step_param_wait_s : times_.param_wait_s) += t.seconds();
    // The shard is a view of the buffer read into, held until param_store.
    gr.shard_w =
        Tensor::wrap(pr.buf.data(), {shards_[static_cast<size_t>(g)].size}, ct_, cfg_.device);
}

void Engine::param_store(int g, bool write) {
    if (!param_offloaded(g)) return;
    Group& gr = *groups_[static_cast<size_t>(g)];
    if (!gr.shard_w.defined()) return;
    gr.shard_w = Tensor();
    ParamRead& pr = pread_[static_cast<size_t>(g)];
    if (!write) {
        param_recycle(std::move(pr.buf));
        return;
    }
    // Written from the buffer itself, in flight while the caller goes on (step() waits for all
    // of them, a read of the group for its own); at most buffer_count writes in flight.
    ParamWrite w{g, pstore_->write(g, pr.buf, param_bytes(g)), std::move(pr.buf)};
    pwrites_.push_back(std::move(w));
    while (pwrites_.size() >
           static_cast<size_t>(std::max<int64_t>(1, cfg_.offload.param_buffer_count))) {
        ParamWrite old = std::move(pwrites_.front());
        pwrites_.pop_front();
        Timer t;
        old.work.wait();
        (in_step_ ? times_.step_param_wait_s : times_.param_wait_s) += t.seconds();
        param_recycle(std::move(old.buf));
    }
}

int Engine::offload_fields() const { return (swap_master_ ? 1 : 0) + optimizer_.n_states(); }

size_t Engine::record_bytes(const SubGroup& sg) const {
    // [master f32 (swap_master_)][state 0][state 1], each state of state_es() bytes per element.
    return static_cast<size_t>(sg.b - sg.a) *
           ((swap_master_ ? sizeof(float) : 0) +
            state_es() * static_cast<size_t>(optimizer_.n_states()));
}

namespace {

// Field f of a record of n elements: its byte offset and element size.
struct FieldAt {
    size_t offset = 0, es = 4;
};
FieldAt field_at(int f, size_t n, bool swap_master, size_t state_es) {
    if (swap_master) {
        return f == 0 ? FieldAt{0, sizeof(float)}
                      : FieldAt{n * sizeof(float) + static_cast<size_t>(f - 1) * n * state_es,
                                state_es};
    }
    return {static_cast<size_t>(f) * n * state_es, state_es};
}

}  // namespace

std::vector<Tensor> Engine::read_group(int g) const {
    const int64_t S = shards_[static_cast<size_t>(g)].size;
    std::vector<Tensor> fields;
    for (int f = 0; f < offload_fields(); ++f) {
        const DType t = swap_master_ && f == 0 ? DType::f32 : sdt_;
        fields.push_back(Tensor::empty({S}, t, core::Device::cpu(), MemCategory::optimizer));
    }
    for (int id : subs_of_[static_cast<size_t>(g)]) {
        const SubGroup& sg = subs_[static_cast<size_t>(id)];
        opt_store(id).read(id, slots_[0], record_bytes(sg)).wait();
        const size_t n = static_cast<size_t>(sg.b - sg.a);
        for (size_t f = 0; f < fields.size(); ++f) {
            const FieldAt at = field_at(static_cast<int>(f), n, swap_master_, state_es());
            std::memcpy(bytes_of(fields[f]) + static_cast<size_t>(sg.a) * at.es,
                        slots_[0].data() + at.offset, n * at.es);
        }
    }
    return fields;
}

void Engine::write_group(int g, const std::vector<Tensor>& fields) const {
    for (int id : subs_of_[static_cast<size_t>(g)]) {
        const SubGroup& sg = subs_[static_cast<size_t>(id)];
        const size_t n = static_cast<size_t>(sg.b - sg.a);
        for (size_t f = 0; f < fields.size(); ++f) {
            const FieldAt at = field_at(static_cast<int>(f), n, swap_master_, state_es());
            std::memcpy(slots_[0].data() + at.offset,
                        bytes_of(fields[f]) + static_cast<size_t>(sg.a) * at.es, n * at.es);
        }
        opt_store(id).write(id, slots_[0], record_bytes(sg)).wait();
    }
}

Tensor Engine::state_part(int g, int i, int64_t a, int64_t b) const {
    const Group& gr = *groups_[static_cast<size_t>(g)];
    if (!store_) return gr.states[i].slice(0, a, b);
    return field_part(g, (swap_master_ ? 1 : 0) + i, a, b);
}

Tensor Engine::field_part(int g, int f, int64_t a, int64_t b) const {
    const DType t = swap_master_ && f == 0 ? DType::f32 : sdt_;
    Tensor out = Tensor::empty({b - a}, t, core::Device::cpu(), MemCategory::buffers);
    for (int id : subs_of_[static_cast<size_t>(g)]) {
        const SubGroup& sg = subs_[static_cast<size_t>(id)];
        const int64_t lo = std::max(a, sg.a), hi = std::min(b, sg.b);
        if (hi <= lo) continue;
        opt_store(id).read(id, slots_[0], record_bytes(sg)).wait();
        const FieldAt at = field_at(f, static_cast<size_t>(sg.b - sg.a), swap_master_, state_es());
        std::memcpy(bytes_of(out) + static_cast<size_t>(lo - a) * at.es,
                    slots_[0].data() + at.offset + static_cast<size_t>(lo - sg.a) * at.es,
                    static_cast<size_t>(hi - lo) * at.es);
    }
    return out;
}

void Engine::page_in(int g) const {
    if (!store_) return;
    Group& gr = *groups_[static_cast<size_t>(g)];
    std::vector<Tensor> fields = read_group(g);
    size_t f = 0;
    if (swap_master_) gr.master = fields[f++];
    for (int i = 0; i < optimizer_.n_states(); ++i) gr.states[i] = fields[f++];
}

void Engine::page_out(int g, bool write) const {
    if (!store_) return;
    Group& gr = *groups_[static_cast<size_t>(g)];
    if (write) {
        std::vector<Tensor> fields;
        if (swap_master_) fields.push_back(gr.master);
        for (int i = 0; i < optimizer_.n_states(); ++i) fields.push_back(gr.states[i]);
        write_group(g, fields);
    }
    if (swap_master_) gr.master = Tensor();
    for (int i = 0; i < optimizer_.n_states(); ++i) gr.states[i] = Tensor();
}

void Engine::offload_step(float lr, int64_t step, float grad_scale) {
    const size_t N = subs_.size(), B = slots_.size();
    const bool ahead = cfg_.offload.pipeline_read && B >= 2;
    std::vector<io::AioWork> reads(N), greads(N), writes(B);  // writes: the last from each buffer
    std::vector<bool> issued(N, false);
    auto read = [&](size_t i) {
        Timer t;
        writes[i % B].wait();  // the buffer's previous sub-group is stored
        times_.step_write_wait_s += t.seconds();
        reads[i] = opt_store(static_cast<int>(i))
                       .read(static_cast<int>(i), slots_[i % B], record_bytes(subs_[i]));
        // Gradient offload: the sub-group's gradients come with it (zeros when none were
        // written this step).
        const SubGroup& sg = subs_[i];
        const size_t gn = static_cast<size_t>(sg.b - sg.a) * grad_es();
        if (gstore_ && groups_[static_cast<size_t>(sg.g)]->grad_stored) {
            greads[i] =
                grad_store_of(static_cast<int>(i)).read(static_cast<int>(i), gslots_[i % B], gn);
        } else if (gstore_) {
            std::memset(gslots_[i % B].data(), 0, gn);
        }
        issued[i] = true;
    };
    try {
        for (size_t i = 0; i < N; ++i) {
            if (!issued[i]) read(i);
            // Deep Optimizer States: the next sub-groups' reads (as many as there are other
            // buffers whose writes are done) and the previous ones' writes are in flight while
            // this one is updated.
            for (size_t k = i + 1; ahead && k < std::min(N, i + B); ++k) {
                if (issued[k]) continue;
                if (!writes[k % B].test()) break;
                read(k);
            }
            Timer t;
            reads[i].wait();
            greads[i].wait();
            times_.step_read_wait_s += t.seconds();
            const SubGroup& sg = subs_[i];
            // Parameter offload: the group's compute shard is in memory while its sub-groups
            // are updated (written back after its last one).
            if (i > 0 && subs_[i - 1].g != sg.g) param_store(subs_[i - 1].g, true);
            if (i == 0 || subs_[i - 1].g != sg.g) {
                param_fetch(sg.g);
                // The next group's shard is read while this group's sub-groups are updated.
                for (size_t k = i + 1; k < N; ++k) {
                    if (subs_[k].g == sg.g) continue;
                    param_read_ahead(subs_[k].g);
                    break;
                }
            }
            auto* rec = reinterpret_cast<float*>(slots_[i % B].data());
            const int64_t n = sg.b - sg.a;
            if (bfm_) {
                // bf16 masters: the record holds the states only; bf16 gradient records widen.
                t.reset();
                const int ns = optimizer_.n_states();
                std::byte* st = slots_[i % B].data();
                bf16_update(
                    sg.g, sg.a, sg.b, ns > 0 ? st : nullptr,
                    ns > 1 ? st + static_cast<size_t>(n) * state_es() : nullptr, nullptr,
                    gstore_ ? reinterpret_cast<const core::bf16*>(gslots_[i % B].data()) : nullptr,
                    lr, step, grad_scale);
                times_.step_update_s += t.seconds();
                writes[i % B] = opt_store(static_cast<int>(i))
                                    .write(static_cast<int>(i), slots_[i % B], record_bytes(sg));
                io::fault_point("offload.write");
                if (!cfg_.offload.pipeline_write) writes[i % B].wait();
                continue;
            }
            t.reset();
            float* master = swap_master_
                                ? rec
                                : groups_[static_cast<size_t>(sg.g)]->master.data<float>() + sg.a;
            float* st = rec + (swap_master_ ? n : 0);
            const int ns = optimizer_.n_states();
            const float* grad =
                gstore_ ? reinterpret_cast<const float*>(gslots_[i % B].data()) : nullptr;
            optimizer_.step(segments_of(sg.g, sg.a, sg.b, master, ns > 0 ? st : nullptr,
                                        ns > 1 ? st + n : nullptr, grad),
                            lr, step, grad_scale);
            times_.step_update_s += t.seconds();
            writes[i % B] = opt_store(static_cast<int>(i))
                                .write(static_cast<int>(i), slots_[i % B], record_bytes(sg));
            io::fault_point("offload.write");  // ZS_FAULT=offload.write:N: SIGKILL mid-step
            if (!cfg_.offload.pipeline_write) writes[i % B].wait();
        }
        Timer t;
        for (io::AioWork& w : writes) w.wait();
        times_.step_write_wait_s += t.seconds();
        if (N > 0) param_store(subs_[N - 1].g, true);
    } catch (...) {
        // Nothing may still use the buffers; the first error is the one reported.
        for (io::AioWork& w : greads) {
            try {
                w.wait();
            } catch (const std::exception&) {
            }
        }
        for (io::AioWork& w : reads) {
            try {
                w.wait();
            } catch (const std::exception&) {
            }
        }
        for (io::AioWork& w : writes) {
            try {
                w.wait();
            } catch (const std::exception&) {
            }
        }
        throw;
    }
}

}  // namespace zs::zero
