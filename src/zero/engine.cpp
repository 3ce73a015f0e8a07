// Engine's construction and weights: the groups' flat buffers and shards, ZeRO++'s hpZ and
// quantization checks, loading and initialising weights, gathering a group, the master and state
// shards (checkpoints), and refreshing the compute weights after a step. The hooks are in
// engine_hooks.cpp, the step in engine_step.cpp, the offload paths in engine_offload.cpp.
#include "zero/engine.h"

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
#include "zero/engine_group.h"

namespace zs::zero {

using core::MemCategory;

Engine::Engine(const models::ParamLayout& layout, models::ParamBinding& binding,
               comm::Communicator& dp, Config cfg, DType compute_dtype, optim::Options opt,
               std::function<std::vector<int>(int)> grad_groups)
    : layout_(layout),
      binding_(binding),
      dp_(dp),
      cfg_(cfg),
      ct_(compute_dtype),
      optimizer_(opt),
      grad_groups_(std::move(grad_groups)),
      rank_(dp.rank()),
      world_(dp.size()) {
    ZS_CHECK_T(ConfigError, cfg_.stage >= 0 && cfg_.stage <= 3,
               "zero_optimization.stage must be 0, 1, 2 or 3 (got {})", cfg_.stage);
    const bool f32 = ct_ == DType::f32;
    bfm_ = cfg_.bf16_master;
    bfs_ = cfg_.bf16_states;
    ZS_CHECK_T(ConfigError, !bfs_ || bfm_,
               "bf16.bf16_optimizer_states requires bf16_master_weights_and_grads: true");
    if (bfm_) {
        ZS_CHECK_T(ConfigError, ct_ == DType::bf16,
                   "bf16.bf16_master_weights_and_grads needs bf16 compute (bf16.enabled), not {}",
                   core::to_string(ct_));
        ZS_CHECK_T(ConfigError, cfg_.stage >= 1,
                   "bf16.bf16_master_weights_and_grads needs ZeRO stage 1, 2 or 3 (stage {})",
                   cfg_.stage);
        ZS_CHECK_T(NotSupported, cfg_.device.is_cpu(),
                   "bf16.bf16_master_weights_and_grads: the bf16-master update runs on the CPU "
                   "only (the model is on {})",
                   cfg_.device.str());
        ZS_CHECK_T(NotSupported, optimizer_.options().kind != optim::Kind::lamb,
                   "bf16.bf16_master_weights_and_grads: not with LAMB (its trust ratios need f32 "
                   "master tensors); the element-wise optimizers are supported");
    }
    sdt_ = bfs_ ? DType::bf16 : DType::f32;
    // Offloaded optimizer: master weights (unless they are the compute weights) and states live
    // in the store, not here (setup_offload).
    const bool off = cfg_.offload.optimizer != Tier::memory;
    // Gradient offload: stages 2-3 whenever there is an optimizer record (setup_offload).
    offload_grads_ = off && cfg_.stage >= 2 && (!f32 || optimizer_.n_states() > 0);
    for (int g = 0; g < layout.n_groups(); ++g) {
        comm::Communicator* gc = cfg_.group_comm ? cfg_.group_comm(g) : nullptr;
        group_comms_ = group_comms_ || (gc != nullptr && gc != &dp_);
        comms_.push_back(gc ? gc : &dp_);
        GroupShard s;
        s.rank = comms_.back()->rank();
        s.world = comms_.back()->size();
        s.numel = holds(g) ? layout.group(g).numel : 0;
        s.padded = (s.numel + s.world - 1) / s.world * s.world;
        s.size = s.padded / s.world;
        s.begin = cfg_.stage == 0 ? 0 : s.rank * s.size;
        s.end = cfg_.stage == 0 ? s.numel : std::min(s.numel, s.begin + s.size);
        s.end = std::max(s.end, s.begin);
        if (cfg_.stage == 0) s.size = s.padded;
        shards_.push_back(s);

        auto gr = std::make_unique<Group>();
        const int64_t P = s.padded, S = s.size;
        auto zeros = [this](int64_t n, DType t, MemCategory c) {
            return Tensor::zeros({n}, t, cfg_.device, c);
        };
        switch (cfg_.stage) {
            case 0:
                gr->full_w = zeros(P, ct_, MemCategory::params);
                gr->master = f32 ? gr->full_w : zeros(P, DType::f32, MemCategory::optimizer);
                gr->full_g = zeros(P, DType::f32, MemCategory::grads);
                break;
            case 1:
            case 2:
                gr->full_w = zeros(P, ct_, MemCategory::params);
                gr->master = f32 ? gr->full_w.slice(0, s.begin, s.begin + S)
                                 : (off ? Tensor() : zeros(S, DType::f32, MemCategory::optimizer));
                if (cfg_.stage == 1) gr->full_g = zeros(P, DType::f32, MemCategory::grads);
                if (!offload_grads_) gr->shard_g = zeros(S, DType::f32, MemCategory::grads);
                break;
            case 3:
                gr->master = off && !f32 ? Tensor() : zeros(S, DType::f32, MemCategory::optimizer);
                // Offloaded parameters: the shard lives in the store (setup_offload).
                gr->shard_w = f32 ? gr->master
                              : cfg_.offload.param != Tier::memory
                                  ? Tensor()
                                  : zeros(S, ct_, MemCategory::params);
                if (!offload_grads_) gr->shard_g = zeros(S, DType::f32, MemCategory::grads);
                gr->persistent = P <= cfg_.persistence_threshold;
                break;
            default:
                ZS_ASSERT(false);
        }
        gr->master_aliases_compute = f32;
        // bf16 masters are the compute weights' shard (compute_shard): no separate copy.
        if (bfm_) gr->master = Tensor();
        for (int i = 0; i < optimizer_.n_states() && !off; ++i) {
            gr->states[i] = zeros(cfg_.stage == 0 ? P : S, sdt_, MemCategory::optimizer);
        }
        groups_.push_back(std::move(gr));
        bind(g);
    }
    ZS_CHECK_T(ConfigError, !group_comms_ || optimizer_.options().kind != optim::Kind::lamb,
               "zero: LAMB's per-parameter norms over groups with their own data-parallel "
               "communicators (expert parameters) are not implemented");
    check_quantization();
    setup_hpz();
    setup_offload();
}

Tensor Engine::compute_shard(int g) const {
    const Group& gr = *groups_[static_cast<size_t>(g)];
    const GroupShard& s = shards_[static_cast<size_t>(g)];
    if (cfg_.stage == 3) return gr.shard_w;
    return gr.full_w.slice(0, s.begin, s.begin + s.size);
}

void Engine::round_bf16(float* p, int64_t n) {
    for (int64_t i = 0; i < n; ++i) p[i] = core::bf16_to_f32(core::f32_to_bf16(p[i]));
}

void Engine::bf16_update(int g, int64_t a, int64_t b, void* st0, void* st1, const float* grad,
                         const core::bf16* grad16, float lr, int64_t step, float grad_scale) {
    Tensor cw = compute_shard(g);
    ZS_ASSERT(cw.defined(), "zero: group {}'s compute shard is not in memory", g);
    // In tiles whose f32 copies stay in cache (the update is element-wise, so the same
    // arithmetic): the f32 master is the bf16 master (= compute weights) widened; the optimizer
    // writes the compute copy back rounded to nearest even, which is the new bf16 master. The
    // tiles are split over the threads in one parallel region (the optimizer's own region inside
    // runs on the calling thread): one join per call, not one per tile, which under a loaded
    // machine each can cost a scheduler quantum.
    constexpr int64_t kTile = int64_t{1} << 17;
    const auto tile = static_cast<size_t>(std::min(kTile, b - a));
    const auto nt = static_cast<size_t>(std::max(1, omp_get_max_threads()));
    upd_master_.resize(tile * nt);
    if (bfs_) {
        upd_s0_.resize(tile * nt);
        upd_s1_.resize(tile * nt);
    }
    if (grad16) upd_grad_.resize(tile * nt);
    const auto* w = static_cast<const core::bf16*>(cw.data_ptr());
    const size_t es = state_es();
    const int64_t tiles = (b - a + kTile - 1) / kTile;
    std::exception_ptr error;
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < tiles; ++k) {
        const auto th = static_cast<size_t>(omp_get_thread_num());
        const int64_t t = a + k * kTile, e = std::min(b, t + kTile);
        const auto n = static_cast<size_t>(e - t), off = static_cast<size_t>(t - a);
        float* master = upd_master_.data() + th * tile;
        core::convert_bf16_to_f32(master, w + t, n);
        void* q0 = st0 ? static_cast<std::byte*>(st0) + off * es : nullptr;
        void* q1 = st1 ? static_cast<std::byte*>(st1) + off * es : nullptr;
        auto* p0 = static_cast<float*>(q0);
        auto* p1 = static_cast<float*>(q1);
        if (bfs_ && q0) {
            p0 = upd_s0_.data() + th * tile;
            core::convert_bf16_to_f32(p0, static_cast<const core::bf16*>(q0), n);
        }
        if (bfs_ && q1) {
            p1 = upd_s1_.data() + th * tile;
            core::convert_bf16_to_f32(p1, static_cast<const core::bf16*>(q1), n);
        }
        const float* gt = grad ? grad + off : nullptr;
        if (grad16) {
            float* gw = upd_grad_.data() + th * tile;
            core::convert_bf16_to_f32(gw, grad16 + off, n);
            gt = gw;
        }
        try {
            optimizer_.step(segments_of(g, t, e, master, p0, p1, gt), lr, step, grad_scale);
        } catch (...) {
#pragma omp critical(zs_bf16_update_error)
            if (!error) error = std::current_exception();
        }
        if (bfs_ && q0) core::convert_f32_to_bf16(static_cast<core::bf16*>(q0), p0, n);
        if (bfs_ && q1) core::convert_f32_to_bf16(static_cast<core::bf16*>(q1), p1, n);
    }
    if (error) std::rethrow_exception(error);
}

void Engine::setup_hpz() {
    const int64_t H = cfg_.hpz_partition_size;
    ZS_CHECK_T(ConfigError, H >= 0 && (H <= 1 || world_ % H == 0),
               "zero_optimization.zero_hpz_partition_size {} must divide the data-parallel size "
               "{} (hpZ keeps a secondary copy of the weights over sub-groups of that many "
               "consecutive data-parallel ranks; 0 or 1 turns it off)",
               H, world_);
    if (H <= 1) return;
    if (cfg_.stage != 3) {
        if (rank_ == 0) {
            log_info(
                "zero: zero_hpz_partition_size has no effect here (ZeRO++ hpZ applies to stage 3 "
                "weight gathers; stage {})",
                cfg_.stage);
        }
        return;
    }
    // Collective over dp_, at construction on every rank: consecutive ranks form a sub-group.
    const int h = static_cast<int>(H);
    hpz_ = dp_.split(rank_ / h, rank_);
    ZS_CHECK(hpz_->size() == h && hpz_->rank() == rank_ % h,
             "zero: hpZ sub-group of rank {}: rank {} of {}, expected {} of {}", rank_,
             hpz_->rank(), hpz_->size(), rank_ % h, h);
    int64_t bytes = 0;
    int n = 0, own = 0;
    for (int g = 0; g < layout_.n_groups(); ++g) {
        Group& gr = *groups_[static_cast<size_t>(g)];
        own += comms_[static_cast<size_t>(g)] != &dp_ ? 1 : 0;
        if (!hierarchical(g)) continue;
        gr.sec_w = Tensor::zeros({shards_[static_cast<size_t>(g)].padded / h}, ct_, cfg_.device,
                                 MemCategory::params);
        bytes += static_cast<int64_t>(gr.sec_w.nbytes());
        ++n;
    }
    if (rank_ != 0) return;
    log_info(
        "zero: hpZ: backward gathers run over {} sub-groups of {} ranks from a secondary "
        "partition of {} group(s), {} per rank",
        world_ / h, h, n, core::format_bytes(bytes));
    if (own > 0) {
        log_info(
            "zero: hpZ does not apply to the {} group(s) with their own data-parallel "
            "communicator (expert parameters): their gathers run over that communicator",
            own);
    }
}

bool Engine::hierarchical(int g) const {
    return hpz_ != nullptr && comms_[static_cast<size_t>(g)] == &dp_ &&
           !groups_[static_cast<size_t>(g)]->persistent;
}

void Engine::check_quantization() {
    ZS_CHECK_T(ConfigError,
               cfg_.quantized_gradients_bits == 8 || cfg_.quantized_gradients_bits == 4,
               "zero_optimization.zero_quantized_gradients_bits must be 8 or 4 (got {})",
               cfg_.quantized_gradients_bits);
    ZS_CHECK_T(ConfigError, cfg_.quant_block > 0 && cfg_.quant_block % 2 == 0,
               "zero: the quantization block must be a positive even number of elements (got {})",
               cfg_.quant_block);
    bool qw = false, qg = false;
    for (int g = 0; g < layout_.n_groups(); ++g) {
        qw = qw || quantize_weights(g);
        qg = qg || quantize_grads(g);
    }
    ZS_CHECK_T(NotSupported, (!qw && !qg) || cfg_.device.is_cpu(),
               "zero: ZeRO++ quantized communication (zero_quantized_weights / "
               "zero_quantized_gradients) on {}: the quantization kernels run on the CPU only",
               cfg_.device.str());
    if (rank_ != 0) return;
    // DeepSpeed applies the ZeRO++ keys at stage 3 only and ignores them silently elsewhere;
    // zerospeed says what it does with them.
    if (cfg_.quantized_weights) {
        if (qw) {
            log_info(
                "zero: qwZ: stage 3 gathers weights as int8 per block of {} (one f32 scale each)",
                cfg_.quant_block);
        } else {
            log_info(
                "zero: zero_quantized_weights has no effect here (it applies to stage 3 "
                "weight all-gathers over more than one rank; stage {}, {} rank(s))",
                cfg_.stage, world_);
        }
    }
    if (cfg_.quantized_gradients) {
        if (qg) {
            log_info(
                "zero: qgZ: gradients reduce-scatter as an all-to-all of int{} per block of {} "
                "(one f32 scale each), summed in f32",
                cfg_.quantized_gradients_bits, cfg_.quant_block);
        } else {
            log_info(
                "zero: zero_quantized_gradients has no effect here (it applies to stage 2-3 "
                "gradient reduce-scatters over more than one rank; stage {}, {} rank(s))",
                cfg_.stage, world_);
        }
    }
}

bool Engine::quantize_weights(int g) const {
    return cfg_.quantized_weights && cfg_.stage == 3 && shards_[static_cast<size_t>(g)].world > 1;
}

bool Engine::quantize_grads(int g) const {
    return cfg_.quantized_gradients && cfg_.stage >= 2 && shards_[static_cast<size_t>(g)].world > 1;
}

Engine::~Engine() {
    // Gradient writes in flight: their buffers must outlive them.
    try {
        grad_drain();
    } catch (const std::exception& e) {
        log_warn("zero: a gradient write failed during shutdown: {}", e.what());
    }
    try {
        param_drain();
    } catch (const std::exception& e) {
        log_warn("zero: a parameter write failed during shutdown: {}", e.what());
    }
    // Parameter reads issued ahead and never used: their buffers must outlive them.
    for (ParamRead& pr : pread_) {
        try {
            if (pr.pending) pr.work.wait();
        } catch (const std::exception& e) {
            log_warn("zero: a parameter read ahead failed during shutdown: {}", e.what());
        }
    }
    // Complete what is in flight so no collective references freed buffers.
    for (auto& gr : groups_) {
        try {
            if (gr->gather_pending) gr->gather_work.wait();
            if (gr->reduce_pending) gr->reduce_work.wait();
        } catch (const std::exception& e) {
            log_warn("zero: a collective failed during shutdown: {}", e.what());
        }
    }
}

// ----------------------------------------------------------------------------------- weights

void Engine::load_group(int g, const Tensor& full) {
    if (!holds(g)) return;
    const GroupShard& s = shards_[static_cast<size_t>(g)];
    Group& gr = *groups_[static_cast<size_t>(g)];
    ZS_CHECK_T(ShapeError, full.numel() == s.numel && full.dtype() == DType::f32,
               "zero: group {} expects f32 [{}], got {}", layout_.group(g).name, s.numel,
               full.str());
    Tensor flat = full.contiguous().view({s.numel});
    if (!bfm_) {  // bf16 masters are the compute weights, set below (no record touched)
        page_in(g);
        if (cfg_.stage == 0) {
            gr.master.slice(0, 0, s.numel).copy_from(flat);
        } else if (s.end > s.begin) {
            gr.master.slice(0, 0, s.end - s.begin).copy_from(flat.slice(0, s.begin, s.end));
        }
        page_out(g, true);
    }
    if (cfg_.stage <= 2) {
        if (!gr.master_aliases_compute || cfg_.stage > 0)
            gr.full_w.slice(0, 0, s.numel).copy_from(flat);
    } else {
        if (!gr.master_aliases_compute && s.end > s.begin) {
            param_fetch(g);
            gr.shard_w.slice(0, 0, s.end - s.begin).copy_from(flat.slice(0, s.begin, s.end));
            param_store(g, true);
        }
        gr.gathered = false;
        gr.full_w = Tensor();
        gr.sec_valid = false;
        bind(g);
    }
}

void Engine::init_weights(uint64_t seed) {
    for (int g = 0; g < layout_.n_groups(); ++g) {
        if (!holds(g)) continue;
        const models::GroupInfo& gi = layout_.group(g);
        Tensor full =
            Tensor::zeros({gi.numel}, DType::f32, core::Device::cpu(), MemCategory::buffers);
        float* p = full.data<float>();
        for (models::ParamId id : gi.params) {
            const models::ParamInfo& pi = layout_.param(id);
            models::init_param_values(pi, id, seed, p + pi.offset);
        }
        load_group(g, full);
    }
}

Tensor Engine::gather_group(int g, int state) {
    const GroupShard& s = shards_[static_cast<size_t>(g)];
    Group& gr = *groups_[static_cast<size_t>(g)];
    ZS_CHECK(state < optimizer_.n_states(), "gather_group: state {} of {}", state,
             optimizer_.n_states());
    if (s.numel == 0) return Tensor::zeros({0}, DType::f32, core::Device::cpu());
    Tensor src;
    if (state < 0 && bfm_) {
        param_fetch(g);
        src = compute_shard(g).to(DType::f32);
        param_store(g, false);
    } else {
        page_in(g);
        src = state < 0 ? gr.master : gr.states[state];
        page_out(g, false);
        if (src.dtype() != DType::f32) src = src.to(DType::f32);  // bf16 states
    }
    // On the CPU the clone (or the gathered buffer) is returned itself; elsewhere it is copied.
    if (cfg_.stage == 0 || s.world == 1)
        return src.slice(0, 0, s.numel).clone(MemCategory::buffers).to(core::Device::cpu());
    Tensor full = Tensor::empty({s.padded}, DType::f32, cfg_.device, MemCategory::buffers);
    Tensor mine = src.clone(MemCategory::buffers);  // [S]
    comm(g).allgather(full, mine).wait();
    return full.slice(0, 0, s.numel).to(core::Device::cpu());
}

Tensor Engine::master_shard(int g) const {
    const GroupShard& s = shards_[static_cast<size_t>(g)];
    if (bfm_) {
        // The bf16 compute shard (stage 3 with offloaded parameters: read from the tier).
        if (param_offloaded(g) && !groups_[static_cast<size_t>(g)]->shard_w.defined()) {
            Tensor out = Tensor::empty({s.size}, ct_, core::Device::cpu(), MemCategory::buffers);
            io::AlignedBuffer buf(param_bytes(g), cfg_.offload.param_pin_memory,
                                  MemCategory::buffers);
            pstore_->read(g, buf, param_bytes(g)).wait();
            std::memcpy(out.data_ptr(), buf.data(), param_bytes(g));
            return out.slice(0, 0, s.end - s.begin);
        }
        return compute_shard(g).slice(0, 0, s.end - s.begin);
    }
    if (store_ && swap_master_) return field_part(g, 0, 0, s.end - s.begin);
    return groups_[static_cast<size_t>(g)]->master.slice(0, 0, s.end - s.begin);
}

Tensor Engine::state_shard(int g, int i) const {
    const GroupShard& s = shards_[static_cast<size_t>(g)];
    if (store_) {
        return read_group(g)[static_cast<size_t>((swap_master_ ? 1 : 0) + i)].slice(
            0, 0, s.end - s.begin);
    }
    return groups_[static_cast<size_t>(g)]->states[i].slice(0, 0, s.end - s.begin);
}

std::pair<int64_t, int64_t> Engine::owned_range(int g) const {
    const GroupShard& s = shards_[static_cast<size_t>(g)];
    if (cfg_.stage == 0)
        return s.rank == 0 ? std::make_pair(int64_t{0}, s.numel) : std::make_pair(s.numel, s.numel);
    return {s.begin, s.end};
}

void Engine::set_state_range(int g, int64_t begin, const Tensor& master, const Tensor& state0,
                             const Tensor& state1) {
    const GroupShard& s = shards_[static_cast<size_t>(g)];
    Group& gr = *groups_[static_cast<size_t>(g)];
    const int64_t n = master.numel();
    // This rank stores [s.begin, s.end) of the group (everything at stage 0).
    int64_t lo = std::max(begin, s.begin), hi = std::min(begin + n, s.end);
    if (hi <= lo) return;
    const int64_t src = lo - begin, dst = lo - s.begin, len = hi - lo;
    if (bfm_) {
        // bf16 masters: into the compute weights (stages 1-2: this rank's shard of them; the
        // rest comes with refresh_compute_weights' all-gather).
        param_fetch(g);
        compute_shard(g)
            .slice(0, dst, dst + len)
            .copy_from(master.view({n}).slice(0, src, src + len));
        param_store(g, true);
    }
    page_in(g);
    if (!bfm_)
        gr.master.slice(0, dst, dst + len).copy_from(master.view({n}).slice(0, src, src + len));
    const Tensor* st[2] = {&state0, &state1};
    for (int i = 0; i < optimizer_.n_states(); ++i) {
        ZS_CHECK_T(IoError, st[i]->defined() && st[i]->numel() == n,
                   "checkpoint: optimizer state {} of group {} is missing or has the wrong size", i,
                   layout_.group(g).name);
        gr.states[i].slice(0, dst, dst + len).copy_from(st[i]->view({n}).slice(0, src, src + len));
    }
    page_out(g, true);
}

void Engine::refresh_compute_weights() {
    for (int g = 0; g < layout_.n_groups(); ++g) {
        Group& gr = *groups_[static_cast<size_t>(g)];
        const GroupShard& s = shards_[static_cast<size_t>(g)];
        if (!bfm_) page_in(g);  // bf16 masters are the compute weights: no record needed
        struct Drop {           // the paged-in copies go whatever happens below
            const Engine& e;
            int g;
            ~Drop() { e.page_out(g, false); }
        } drop{*this, g};
        switch (cfg_.stage) {
            case 0:
                if (!gr.master_aliases_compute) gr.full_w.copy_from(gr.master);
                break;
            case 1:
            case 2: {
                if (!gr.master_aliases_compute && !bfm_)
                    gr.full_w.slice(0, s.begin, s.begin + s.size).copy_from(gr.master);
                if (s.world > 1 && s.numel > 0) {
                    Tensor mine =
                        gr.full_w.slice(0, s.begin, s.begin + s.size).clone(MemCategory::buffers);
                    comm(g).allgather(gr.full_w, mine).wait();
                }
                break;
            }
            case 3:
                if (!gr.master_aliases_compute && !bfm_) {
                    param_fetch(g);
                    gr.shard_w.copy_from(gr.master);
                    param_store(g, true);
                }
                gr.sec_valid = false;
                if (gr.full_w.defined()) {
                    wait_gather(g);
                    gr.full_w = Tensor();
                    gr.gathered = false;
                    live_numel_ -= s.padded;
                    bind(g);
                }
                break;
            default:
                ZS_ASSERT(false);
        }
    }
}

}  // namespace zs::zero
