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
