#include "train/trainer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <omp.h>

#include "base/error.h"
#include "base/log.h"
#include "base/progress.h"
#include "base/timer.h"
#include "core/backend.h"
#include "io/atomic_file.h"
#include "io/checksum.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "ops/matmul.h"
#include "parallel/pipeline.h"
#include "parallel/ring.h"
#include "parallel/tensor_parallel.h"
#include "train/hf_export.h"
#include "train/pipeline_stage.h"

namespace zs::train {

namespace fs = std::filesystem;
using core::DType;
using core::Tensor;

namespace {

// The ds_config "moe" section onto the model's gating; refused for a dense model.
void apply_moe_gating(const MoeGatingConfig& g, const std::string& source, models::MoeConfig& m) {
    if (!g.given) return;
    ZS_CHECK_T(ConfigError, m.n_experts > 0,
               "{}: \"moe\" section given for a dense model (no experts in its config.json)",
               source);
    if (g.capacity_factor) m.capacity_factor = static_cast<float>(*g.capacity_factor);
    if (g.eval_capacity_factor)
        m.eval_capacity_factor = static_cast<float>(*g.eval_capacity_factor);
    if (g.min_capacity) m.min_capacity = *g.min_capacity;
    if (g.drop_tokens) m.drop_tokens = *g.drop_tokens;
    if (g.router_z_loss_coef) m.z_loss_coef = static_cast<float>(*g.router_z_loss_coef);
}

DType compute_dtype(Precision p) {
    switch (p) {
        case Precision::bf16:
            return DType::bf16;
        case Precision::f32:
        case Precision::fp16:  // CPU kernels have no fp16 path: f32 compute, DeepSpeed's scaling
            return DType::f32;
    }
    return DType::f32;
}

// This rank's matmul throughput in the compute dtype: the denominator of MFU.
double measure_peak_flops(DType t) {
    const int64_t n = 768;
    Tensor a = Tensor::empty({n, n}, t, core::Device::cpu(), core::MemCategory::buffers);
    Tensor b = Tensor::empty({n, n}, t, core::Device::cpu(), core::MemCategory::buffers);
    Tensor c = Tensor::empty({n, n}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
    a.fill(0.5);
    b.fill(0.25);
    ops::matmul(c, a, b);
    // The best of several short rounds: a round slowed by other work on the machine (the other
    // ranks starting up) would understate the peak and inflate the reported MFU.
    double best = 0;
    for (int round = 0; round < 5; ++round) {
        Timer tm;
        int iters = 0;
        while (tm.seconds() < 0.05) {
            ops::matmul(c, a, b);
            ++iters;
        }
        best = std::max(best, 2.0 * static_cast<double>(n * n * n) * iters / tm.seconds());
    }
    return best;
}

}  // namespace

Trainer::Trainer(models::ModelConfig model, TrainConfig cfg, RunOptions run,
                 comm::Communicator& world)
    : mcfg_(std::move(model)),
      cfg_(std::move(cfg)),
      run_(std::move(run)),
      world_(world),
      schedule_(cfg_.scheduler, cfg_.optimizer),
      scaler_(cfg_.fp16) {
    const int tp = cfg_.tensor_parallel_size, ulysses = cfg_.sequence_parallel_size,
              ring = cfg_.ring_parallel_size, sp = ulysses * ring;
    const int pp = cfg_.pipeline.stages;
    ZS_CHECK_T(ConfigError, cfg_.world_size * tp * sp * pp == world_.size(),
               "{}: parsed for {} data-parallel x {} pipeline x {} sequence-parallel x {} "
               "tensor-parallel ranks but running on {}",
               cfg_.source, cfg_.world_size, pp, sp, tp, world_.size());
    ZS_CHECK_T(ConfigError, run_.seq_len > 0 && run_.seq_len <= mcfg_.max_positions,
               "--seq-len {} must be in [1, {}] (the model's max positions)", run_.seq_len,
               mcfg_.max_positions);
    ZS_CHECK_T(ConfigError, ring > 1 || run_.seq_len % sp == 0,
               "--seq-len {} is not divisible by sequence_parallel_size {} (each of the sp ranks "
               "takes an equal slice of every sequence)",
               run_.seq_len, sp);
    ZS_CHECK_T(ConfigError, ring == 1 || run_.seq_len % (2 * int64_t{sp}) == 0,
               "--seq-len {} is not divisible by 2 x ring_parallel_size {} x "
               "sequence_parallel_size {} = {} (ring attention cuts every sequence into 2 x ring "
               "zig-zag chunks, each split evenly over the Ulysses ranks)",
               run_.seq_len, ring, ulysses, 2 * sp);
    if (cfg_.seed) run_.seed = *cfg_.seed;
    apply_moe_gating(cfg_.moe, cfg_.source, mcfg_.moe);
    models::RunConfig rc;
    rc.compute_dtype = compute_dtype(cfg_.precision);
    rc.activation_checkpointing = cfg_.activation_checkpointing.given;
    rc.device = run_.device;
    // The process grid: ZeRO runs over the dense data-parallel group (dp x sp ranks: DeepSpeed's
    // seq_data_parallel group), the model over the tp and sp groups.
    parallel::Sizes sz;
    sz.tp = tp;
    sz.sp = sp;
    sz.ring = ring;
    sz.pp = pp;
    sz.ep = cfg_.expert_parallel_size;
    topo_ = std::make_unique<parallel::Topology>(world_, sz);
    parallel::check_model(topo_->sizes(), {mcfg_.model_type, mcfg_.n_heads, mcfg_.n_kv_heads,
                                           mcfg_.moe.n_experts, mcfg_.n_layers});
    dp_ = &topo_->group(parallel::Group::dense_dp);
    data_dp_ = &topo_->group(parallel::Group::dp);
    if (sp > 1) {
        // sp_: every sequence-parallel rank (loss and token counts); the model takes the Ulysses
        // and ring parts.
        sp_ = &topo_->group(parallel::Group::sp);
        if (ulysses > 1) rc.sp = &topo_->group(parallel::Group::ulysses);
        if (ring > 1) rc.ring = &topo_->group(parallel::Group::ring);
    }
    if (tp > 1) {
        tp_ = &topo_->group(parallel::Group::tp);
        rc.tp = tp_;
        ZS_CHECK_T(ConfigError, cfg_.optimizer.kind != optim::Kind::lamb,
                   "{}: Lamb under tensor parallelism needs its trust-ratio norms summed over the "
                   "tp group, which is not implemented yet",
                   cfg_.source);
        full_model_ = std::make_unique<models::Transformer>(mcfg_, models::RunConfig{});
    }
    if (cfg_.expert_parallel_size > 1) {
        // DeepSpeed-MoE: experts sharded over the ep group, their gradients reduced (and ZeRO
        // partitioned) over the expert data-parallel group; dense parameters over dp_.
        ZS_CHECK_T(ConfigError, mcfg_.mlp == models::MlpKind::moe,
                   "{}: expert_parallel_size {} needs a mixture-of-experts model; {} is dense",
                   cfg_.source, cfg_.expert_parallel_size, mcfg_.model_type);
        ep_ = &topo_->group(parallel::Group::ep);
        edp_ = &topo_->group(parallel::Group::edp);
        rc.ep = ep_;
        if (!full_model_) {
            full_model_ = std::make_unique<models::Transformer>(mcfg_, models::RunConfig{});
        }
    }
    model_ = std::make_unique<models::Transformer>(mcfg_, rc);
    if (pp > 1) setup_pipeline();
    // Gradient norm over every element of the whole model once: an element held by c
    // tensor-parallel ranks (norms, positions and output biases on all tp ranks, replicated KV
    // heads on tp / num_key_value_heads) has the same gradient on each, so each counts 1 / c.
    for (size_t i = 0; i < model_->layout().params().size(); ++i) {
        std::vector<zero::Engine::NormWeight> w;
        for (const models::Transformer::TpCopies& c :
             model_->tp_copies(static_cast<models::ParamId>(i))) {
            w.push_back({c.begin, c.end, 1.0 / c.copies});
        }
        norm_weight_.push_back(std::move(w));
    }
    if (tied_ && pp_->rank() == pp_->size() - 1) {
        // The tied embedding counts once in the norm: on the first stage.
        for (models::ParamId id : model_->layout().group(model_->embed_group()).params)
            norm_weight_[static_cast<size_t>(id)].clear();
    }
    zero::Config zc;
    zc.stage = cfg_.zero.stage;
    zc.overlap_comm = cfg_.zero.overlap_comm || cfg_.zero.stage >= 2;
    zc.prefetch_numel = cfg_.zero.stage3_prefetch_bucket_size;
    zc.max_live_numel = cfg_.zero.stage3_max_live_parameters;
    zc.persistence_threshold = cfg_.zero.stage3_param_persistence_threshold;
    zc.decay_all = run_.decay_all;
    zc.device = run_.device;
    zc.quantized_weights = cfg_.zero.zero_quantized_weights;
    zc.quantized_gradients = cfg_.zero.zero_quantized_gradients;
    zc.quantized_gradients_bits = cfg_.zero.zero_quantized_gradients_bits;
    // hpZ: the engine splits the dp group into sub-groups of consecutive dp ranks (one host under
    // the topology's rank order) and refuses a size that does not divide dp.
    zc.hpz_partition_size = cfg_.zero.zero_hpz_partition_size;
    if (pp_) zc.owns = [this](int g) { return holds_group(g); };
    if (ep_) {
        const int first_expert_group = model_->expert_group(0);
        zc.group_comm = [this, first_expert_group](int g) {
            return g >= first_expert_group ? edp_ : nullptr;
        };
    }
    // ZeRO-Offload / ZeRO-Infinity: the optimizer's master weights and states on the cpu tier or
    // in NVMe swap files, streamed per sub-group through the step (zero/offload.h).
    const OffloadOptimizerConfig& oo = cfg_.zero.offload_optimizer;
    zc.offload.optimizer = oo.device == OffloadDevice::nvme  ? zero::Tier::nvme
                           : oo.device == OffloadDevice::cpu ? zero::Tier::cpu
                                                             : zero::Tier::memory;
    zc.offload.nvme_path = oo.nvme_path;
    zc.offload.sub_group_size = cfg_.zero.sub_group_size;
    zc.offload.buffer_count = oo.buffer_count;
    zc.offload.pin_memory = oo.pin_memory;
    zc.offload.pipeline_read = oo.pipeline_read;
    zc.offload.pipeline_write = oo.pipeline_write;
    zc.offload.optimizer_ratio = oo.ratio;
    zc.offload.aio = cfg_.aio;
    // offload_param: ZeRO-3 with 16-bit compute (ds_config.cpp lists the fp32 case).
    const OffloadParamConfig& op = cfg_.zero.offload_param;
    if (cfg_.zero.stage == 3 && rc.compute_dtype != DType::f32) {
        zc.offload.param = op.device == OffloadDevice::nvme  ? zero::Tier::nvme
                           : op.device == OffloadDevice::cpu ? zero::Tier::cpu
                                                             : zero::Tier::memory;
    }
    zc.offload.param_nvme_path = op.nvme_path;
    zc.offload.param_buffer_count = op.buffer_count;
    zc.offload.param_buffer_size = op.buffer_size;
    zc.offload.param_max_in_cpu = op.max_in_cpu;
    zc.offload.param_pin_memory = op.pin_memory;
    // bf16 master weights, gradients and (optionally) optimizer states (zero/engine.h).
    zc.bf16_master = cfg_.bf16.bf16_master_weights_and_grads;
    zc.bf16_states = cfg_.bf16.bf16_optimizer_states;
    engine_ = std::make_unique<zero::Engine>(model_->layout(), model_->binding(), *dp_, zc,
                                             rc.compute_dtype, cfg_.optimizer.options(),
                                             [this](int g) { return model_->grad_groups(g); });
    if (pp_) {
        stage_ = std::make_unique<TransformerStage>(
            *model_, *engine_, chunks_, pp, pp_->rank(),
            cfg_.batch.train_micro_batch_size_per_gpu * run_.seq_len);
    }
    if (!run_.data_dir.empty()) {
        train_ds_ = io::TokenDataset::open(run_.data_dir, "train");
        ZS_CHECK_T(ConfigError, train_ds_->index().vocab_size <= mcfg_.vocab_size,
                   "{}: dataset vocabulary {} exceeds the model's vocab_size {}", run_.data_dir,
                   train_ds_->index().vocab_size, mcfg_.vocab_size);
        if (!train_ds_->index().val.empty()) val_ds_ = io::TokenDataset::open(run_.data_dir, "val");
        sampler_ =
            std::make_unique<io::SequenceSampler>(train_ds_->size(), run_.seq_len, run_.seed);
    }
    peak_flops_ = measure_peak_flops(rc.compute_dtype);
    // Peak memory reports cover training, not this start-up measurement.
    core::backend(core::Device::cpu()).memory().reset_peak();
    for (const std::string& w : cfg_.unsupported) {  // parse_ds_config logged the warnings
        if (world_.rank() == 0) log_warn("{}", w);
    }
    for (const std::string& n : cfg_.notes) {
        if (world_.rank() == 0) log_info("{}", n);
    }
    if (cfg_.csv_monitor.enabled && world_.rank() == 0) {
        csv_ = std::make_unique<CsvMonitor>(cfg_.csv_monitor);
        log_info("csv_monitor: writing per-metric CSV files to {}", csv_->dir());
    }
    if (cfg_.precision == Precision::fp16 && world_.rank() == 0) {
        log_warn(
            "{}: fp16 on CPU computes in f32 (no fp16 CPU kernels) with DeepSpeed's loss scaling",
            cfg_.source);
    }
}

Trainer::~Trainer() = default;

Tensor Trainer::local_group(int g, const Tensor& full) const {
    const models::ParamLayout& fl = full_model_->layout();
    const models::ParamLayout& ll = model_->layout();
    Tensor out = Tensor::zeros({ll.group(g).numel}, DType::f32, core::Device::cpu(),
                               core::MemCategory::buffers);
    for (models::ParamId id : ll.group(g).params) {
        const models::ParamInfo& fp = fl.param(id);
        const models::ParamInfo& lp = ll.param(id);
        const Tensor whole = full.slice(0, fp.offset, fp.offset + fp.numel()).view(fp.shape);
        out.slice(0, lp.offset, lp.offset + lp.numel())
            .view(lp.shape)
            .copy_from(model_->tp_slice(id, whole));
    }
    return out;
}

Tensor Trainer::whole_index(int g, int& whole_group) const {
    const models::ParamLayout& fl = full_model_->layout();
    const models::ParamLayout& ll = model_->layout();
    Tensor out = Tensor::empty({ll.group(g).numel}, DType::i64, core::Device::cpu(),
                               core::MemCategory::buffers);
    std::fill_n(out.data<int64_t>(), out.numel(), int64_t{-1});
    whole_group = -1;
    for (models::ParamId id : ll.group(g).params) {
        const models::ParamInfo& lp = ll.param(id);
        const models::ParamInfo& fp = fl.param(fl.id(lp.name));
        ZS_ASSERT(whole_group < 0 || whole_group == fp.group,
                  "group {} maps into two whole-model groups", ll.group(g).name);
        whole_group = fp.group;
        Tensor whole =
            Tensor::empty(fp.shape, DType::i64, core::Device::cpu(), core::MemCategory::buffers);
        int64_t* w = whole.data<int64_t>();
        for (int64_t k = 0; k < fp.numel(); ++k) w[k] = fp.offset + k;
        out.slice(0, lp.offset, lp.offset + lp.numel())
            .view(lp.shape)
            .copy_from(model_->tp_slice(id, whole));
    }
    return out;
}

Tensor Trainer::gather_whole_group_ep(int fg, int state) {
    // This rank's groups holding parts of whole group fg (block l: its dense group and its
    // experts' group), gathered over their data-parallel groups, with each element's index in
    // fg; then every rank's, over the world (each tp and ep rank holds other parts; data-parallel
    // replicas send the same values twice, harmlessly).
    std::vector<Tensor> vals, idxs;
    int64_t n = 0;
    for (int g = 0; g < model_->layout().n_groups(); ++g) {
        int wg = -1;
        Tensor idx = whole_index(g, wg);
        if (wg != fg) continue;
        vals.push_back(engine_->gather_group(g, state).contiguous());
        idxs.push_back(idx);
        n += idx.numel();
    }
    const int R = world_.size();
    auto i64 = [](int64_t k) {
        return Tensor::empty({k}, DType::i64, core::Device::cpu(), core::MemCategory::buffers);
    };
    Tensor cnt = i64(1), cnts = i64(R);
    cnt.data<int64_t>()[0] = n;
    world_.allgather(cnts, cnt).wait();
    const int64_t* c = cnts.data<int64_t>();
    const int64_t nmax = *std::max_element(c, c + R);
    Tensor v = Tensor::zeros({nmax}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
    Tensor ix = i64(nmax);
    std::fill_n(ix.data<int64_t>(), nmax, int64_t{-1});
    int64_t at = 0;
    for (size_t i = 0; i < vals.size(); ++i) {
        const int64_t k = idxs[i].numel();
        v.slice(0, at, at + k).copy_from(vals[i].slice(0, 0, k));
        ix.slice(0, at, at + k).copy_from(idxs[i]);
        at += k;
    }
    Tensor all_v =
        Tensor::empty({R * nmax}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
    Tensor all_i = i64(R * nmax);
    world_.allgather(all_v, v).wait();
    world_.allgather(all_i, ix).wait();
    const int64_t nf = full_model_->layout().group(fg).numel;
    Tensor whole = Tensor::zeros({nf}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
    float* w = whole.data<float>();
    for (int64_t j = 0; j < R * nmax; ++j) {
        const int64_t f = all_i.data<int64_t>()[j];
        if (f >= 0 && f < nf) w[f] = all_v.data<float>()[j];
    }
    return whole;
}

Tensor Trainer::gather_whole_group(int g, int state) {
    if (ep_) return gather_whole_group_ep(g, state);
    Tensor local = engine_->gather_group(g, state);  // this rank's group, over dp
    if (!tp_) return local;
    const int T = tp_->size();
    const int64_t nf = full_model_->layout().group(g).numel;
    // The tp ranks' groups differ in size only by the vocabulary's shorter last shard: gather
    // them padded to the largest, with each element's index in the whole group.
    Tensor n = Tensor::empty({1}, DType::i64, core::Device::cpu(), core::MemCategory::buffers);
    Tensor ns = Tensor::empty({T}, DType::i64, core::Device::cpu(), core::MemCategory::buffers);
    n.data<int64_t>()[0] = local.numel();
    tp_->allgather(ns, n).wait();
    const int64_t* cnt = ns.data<int64_t>();
    const int64_t nmax = *std::max_element(cnt, cnt + T);
    Tensor vals =
        Tensor::zeros({nmax}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
    Tensor idx = Tensor::zeros({nmax}, DType::i64, core::Device::cpu(), core::MemCategory::buffers);
    vals.slice(0, 0, local.numel()).copy_from(local);
    int wg = -1;
    idx.slice(0, 0, local.numel()).copy_from(whole_index(g, wg));
    Tensor all_v =
        Tensor::empty({T * nmax}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
    Tensor all_i =
        Tensor::empty({T * nmax}, DType::i64, core::Device::cpu(), core::MemCategory::buffers);
    tp_->allgather(all_v, vals).wait();
    tp_->allgather(all_i, idx).wait();
    Tensor whole = Tensor::empty({nf}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
    std::vector<uint8_t> seen(static_cast<size_t>(nf), 0);
    float* w = whole.data<float>();
    for (int r = 0; r < T; ++r) {
        const float* v = all_v.data<float>() + r * nmax;
        const int64_t* ix = all_i.data<int64_t>() + r * nmax;
        for (int64_t j = 0; j < cnt[r]; ++j) {
            if (ix[j] == -1) continue;  // padding between parameters
            ZS_CHECK(ix[j] >= 0 && ix[j] < nf, "group {}: tp rank {} element {} maps to {} of {}",
                     full_model_->layout().group(g).name, r, j, ix[j], nf);
            w[ix[j]] = v[j];  // replicated parameters: every rank holds the same values
            seen[static_cast<size_t>(ix[j])] = 1;
        }
    }
    ZS_CHECK(std::find(seen.begin(), seen.end(), 0) == seen.end(),
             "group {}: the tensor-parallel shards do not cover the whole group",
             full_model_->layout().group(g).name);
    return whole;
}

void Trainer::load_by_name(const std::function<Tensor(int)>& full_group) {
    const models::ParamLayout& fl = full_model_->layout();
    const models::ParamLayout& ll = model_->layout();
    std::map<int, Tensor> cache;  // the whole model's groups, as needed
    for (int g = 0; g < ll.n_groups(); ++g) {
        Tensor out = Tensor::zeros({ll.group(g).numel}, DType::f32, core::Device::cpu(),
                                   core::MemCategory::buffers);
        for (models::ParamId id : ll.group(g).params) {
            const models::ParamInfo& lp = ll.param(id);
            const models::ParamInfo& fp = fl.param(fl.id(lp.name));
            auto it = cache.find(fp.group);
            if (it == cache.end()) it = cache.emplace(fp.group, full_group(fp.group)).first;
            const Tensor whole =
                it->second.slice(0, fp.offset, fp.offset + fp.numel()).view(fp.shape);
            out.slice(0, lp.offset, lp.offset + lp.numel())
                .view(lp.shape)
                .copy_from(model_->tp_slice(id, whole));
        }
        engine_->load_group(g, out);
    }
}

void Trainer::init_random() {
    if (!full_model_) return engine_->init_weights(run_.seed);
    if (ep_) {
        // Expert parallelism: each parameter from the whole model's initial values by name.
        const models::ParamLayout& fl = full_model_->layout();
        return load_by_name([&](int fg) {
            Tensor full = Tensor::zeros({fl.group(fg).numel}, DType::f32, core::Device::cpu(),
                                        core::MemCategory::buffers);
            for (models::ParamId id : fl.group(fg).params) {
                models::init_param_values(fl.param(id), id, run_.seed,
                                          full.data<float>() + fl.param(id).offset);
            }
            return full;
        });
    }
    // Tensor parallelism: each rank's part of the whole model's initial values, so any tp starts
    // from the same weights.
    const models::ParamLayout& fl = full_model_->layout();
    for (int g = 0; g < fl.n_groups(); ++g) {
        Tensor full = Tensor::zeros({fl.group(g).numel}, DType::f32, core::Device::cpu(),
                                    core::MemCategory::buffers);
        for (models::ParamId id : fl.group(g).params) {
            models::init_param_values(fl.param(id), id, run_.seed,
                                      full.data<float>() + fl.param(id).offset);
        }
        engine_->load_group(g, local_group(g, full));
    }
}

void Trainer::init_from(const models::WeightSource& src) {
    if (ep_) {
        return load_by_name([&](int fg) { return models::load_hf_group(*full_model_, fg, src); });
    }
    for (int g = 0; g < model_->layout().n_groups(); ++g) {
        engine_->load_group(g, full_model_
                                   ? local_group(g, models::load_hf_group(*full_model_, g, src))
                                   : models::load_hf_group(*model_, g, src));
    }
}

void Trainer::load_batch(int64_t first, int64_t count, const io::TokenDataset& ds,
                         const io::SequenceSampler* sampler, int64_t base,
                         models::TrainBatch& out) {
    const int64_t T = run_.seq_len;
    // Sequence parallelism: this rank's slice of each window (inputs [t0, t0 + Tl), targets one
    // token later); the model places it at positions [t0, t0 + Tl). Under ring attention the
    // slice is the Ulysses rank's part of its ring rank's two zig-zag chunks: one or two runs.
    const int64_t Tl = sp_ ? T / sp_->size() : T, t0 = sp_ ? Tl * sp_->rank() : 0;
    std::vector<std::pair<int64_t, int64_t>> runs;  // [start, length) within the window
    if (cfg_.ring_parallel_size > 1) {
        const parallel::Coords& c = topo_->coords();
        const std::vector<int64_t> pos =
            parallel::zigzag_positions(c.ring, cfg_.ring_parallel_size, T);
        for (int64_t i = c.ulysses * Tl; i < (c.ulysses + 1) * Tl; ++i) {
            const int64_t p = pos[static_cast<size_t>(i)];
            if (!runs.empty() && runs.back().first + runs.back().second == p) {
                ++runs.back().second;
            } else {
                runs.push_back({p, 1});
            }
        }
    } else {
        runs.push_back({t0, Tl});
    }
    if (!out.input_ids.defined() || out.input_ids.size(0) != count) {
        out.input_ids =
            Tensor::empty({count, Tl}, DType::i32, core::Device::cpu(), core::MemCategory::buffers);
        out.targets =
            Tensor::empty({count, Tl}, DType::i32, core::Device::cpu(), core::MemCategory::buffers);
    }
    const int64_t n_seq = (ds.size() - 1) / T;
    std::vector<int32_t> buf(static_cast<size_t>(Tl + 1));
    for (int64_t i = 0; i < count; ++i) {
        int64_t seq = sampler ? sampler->peek(base + first + i) : (first + i) % n_seq;
        int64_t at = i * Tl;
        for (const auto& [start, len] : runs) {
            ds.read(seq * T + start, len + 1, buf.data());
            std::copy(buf.begin(), buf.begin() + len, out.input_ids.data<int32_t>() + at);
            std::copy(buf.begin() + 1, buf.begin() + len + 1, out.targets.data<int32_t>() + at);
            at += len;
        }
    }
}

StepStats Trainer::step() {
    ZS_CHECK(train_ds_ != nullptr, "train: no dataset (--data)");
    // Data-parallel ranks read different sequences; tensor- and sequence-parallel ranks the same
    // ones (the latter each its own slice of them).
    const int W = data_dp_->size(), r = data_dp_->rank();
    std::vector<models::TrainBatch> batches(
        static_cast<size_t>(cfg_.batch.gradient_accumulation_steps));
    for (int64_t k = 0; k < cfg_.batch.gradient_accumulation_steps; ++k) {
        load_batch((k * W + r) * cfg_.batch.train_micro_batch_size_per_gpu,
                   cfg_.batch.train_micro_batch_size_per_gpu, *train_ds_, sampler_.get(), 0,
                   batches[static_cast<size_t>(k)]);
    }
    StepStats s = step(batches);
    // The data always advances, as DeepSpeed's data loader does on a skipped step.
    for (int64_t i = 0; i < cfg_.batch.train_batch_size; ++i) sampler_->next();
    return s;
}

StepStats Trainer::step(const std::vector<models::TrainBatch>& batches) {
    Timer tm;
    const int W = dp_->size();
    const int64_t accum = static_cast<int64_t>(batches.size());
    ZS_CHECK(accum == cfg_.batch.gradient_accumulation_steps,
             "step: {} micro-batches given; gradient_accumulation_steps is {}", accum,
             cfg_.batch.gradient_accumulation_steps);
    // T: this rank's tokens per sequence (seq_len / sp under sequence parallelism), T_all the
    // sequence's.
    const int64_t micro = batches.front().input_ids.size(0), T = batches.front().input_ids.size(1);
    const int64_t T_all = T * (sp_ ? sp_->size() : 1);
    const double loss_scale = scaler_.scale();
    // Offload traffic of the whole step: parameter and gradient records move during the
    // micro-batches too.
    const int64_t rd = engine_->offload_bytes_read(), wr = engine_->offload_bytes_written();
    engine_->begin_step(static_cast<int>(accum));
    double loss_sum = 0;
    StepStats s;
    model_->take_a2a_bytes();  // what evaluation sent belongs to no step
    model_->take_expert_load();
    // DeepSpeed's gradient averaging over the W data-parallel ranks: by default the sum is divided
    // by W after the reduction (divided by gradient_predivide_factor before and multiplied by
    // predivide / W after); prescale_gradients divides by W before. The pre-reduction part is
    // folded into the loss scale, the post-reduction factor into the optimizer's gradient scale.
    // Under sequence parallelism W counts the sp ranks too (DeepSpeed averages over its
    // seq_data_parallel group) and each rank's loss is the mean over its own T tokens: the
    // average over W is the mean over every token of the step, the unsharded loss.
    const double pre = cfg_.prescale_gradients ? W : cfg_.gradient_predivide_factor;
    const double post = cfg_.prescale_gradients ? 1.0 : cfg_.gradient_predivide_factor / W;
    const auto ce_scale = static_cast<float>(1.0 / (static_cast<double>(micro * T * accum) * pre));
    if (pp_) {
        ZS_CHECK_T(ShapeError, micro * T == stage_->boundary_shape()[0],
                   "step: micro-batches of {} x {} tokens; the pipeline was set up for {} rows",
                   micro, T, stage_->boundary_shape()[0]);
        stage_->begin_step(batches, ce_scale, static_cast<float>(loss_scale));
        Timer ph;
        pipe_check_ran_ = pipe_check_;
        parallel::run_schedule(pipe_schedule_, *pp_, *stage_, &pipe_stats_);
        s.forward_s += ph.seconds();  // the whole schedule: forwards, backwards and transfers
        loss_sum = stage_->loss().loss_sum;
        if (pipe_schedule_.split_backward && ++pipe_steps_ == 2) replan_pipeline();
    } else {
        for (const models::TrainBatch& batch : batches) {
            // The load-balancing loss is per micro-batch (mean over this rank's tokens): weighted
            // like the mean token loss, 1 / (accum x pre) of it per micro-batch.
            models::LossStats st =
                model_->forward_backward(batch, ce_scale, static_cast<float>(loss_scale),
                                         engine_.get(), 1.0 / (static_cast<double>(accum) * pre));
            loss_sum += st.loss_sum + (mcfg_.moe.train_aux_coef() * st.aux_loss +
                                       mcfg_.moe.z_loss_coef * st.z_loss) *
                                          static_cast<double>(micro * T);
            s.forward_s += st.forward_s;
            s.head_s += st.head_s;
            s.backward_s += st.backward_s;
            Timer em;
            engine_->end_micro_batch();
            s.grad_sync_s += em.seconds();
        }
    }
    s.a2a_bytes = model_->take_a2a_bytes();
    if (mcfg_.mlp == models::MlpKind::moe) {
        // Every data-parallel rank's routing (tp ranks route alike: dp_ counts each token once).
        const std::vector<double> load = model_->take_expert_load();
        Tensor t = Tensor::zeros({static_cast<int64_t>(load.size())}, DType::f32,
                                 core::Device::cpu(), core::MemCategory::buffers);
        for (size_t e = 0; e < load.size(); ++e) t.data<float>()[e] = static_cast<float>(load[e]);
        if (dp_->size() > 1) dp_->allreduce(t, comm::ReduceOp::sum).wait();
        double total = 0;
        for (size_t e = 0; e < load.size(); ++e) total += t.data<float>()[e];
        for (size_t e = 0; e < load.size(); ++e)
            s.expert_load.push_back(total > 0 ? t.data<float>()[e] / total : 0.0);
    }
    Timer phase;
    engine_->finish_grads();
    // Tied embeddings across pipeline stages: the first stage's gradient (the lookup's) and the
    // last's (the output projection's) sum to the whole gradient, on both.
    if (tied_)
        tied_->allreduce(engine_->reduced_grads(model_->embed_group()), comm::ReduceOp::sum).wait();
    s.grad_sync_s += phase.seconds();
    phase.reset();
    // Unscaled gradient norm, overflow check, clipping (DeepSpeed's clip_grad_norm_).
    double sq = tp_ || pp_ ? engine_->grad_sq_norm(norm_weight_) : engine_->grad_sq_norm();
    bool finite = cfg_.precision != Precision::fp16 || engine_->grads_finite();
    for (comm::Communicator* c : {tp_, pp_}) {
        if (!c) continue;
        Tensor t = Tensor::empty({2}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
        t.data<float>()[0] = static_cast<float>(sq);
        t.data<float>()[1] = finite ? 0.0f : 1.0f;
        c->allreduce(t, comm::ReduceOp::sum).wait();
        sq = t.data<float>()[0];
        finite = t.data<float>()[1] == 0.0f;
    }
    double norm = std::sqrt(sq) * post / loss_scale;
    bool overflow = !std::isfinite(norm) || !finite;
    s.loss_scale = loss_scale;
    s.grad_norm = norm;
    if (!overflow) {
        double clip = 1.0;
        if (cfg_.gradient_clipping > 0) {
            double coef = cfg_.gradient_clipping / (norm + 1e-6);
            if (coef < 1.0) clip = coef;
        }
        const int64_t applied = steps_done_ + 1;
        s.lr = schedule_.lr(steps_done_);
        if (std::optional<Betas> b = schedule_.betas(steps_done_)) {
            log_debug("OneCycle momentum schedule: beta1 {} (zerospeed keeps the configured betas)",
                      b->beta1);
        }
        engine_->step(static_cast<float>(s.lr), applied,
                      static_cast<float>(clip * post / loss_scale));
        s.offload_read_bytes = engine_->offload_bytes_read() - rd;
        s.offload_write_bytes = engine_->offload_bytes_written() - wr;
        s.offload_times = engine_->offload_times();
        ++steps_done_;
    } else {
        ++skipped_;
        s.skipped = true;
        if (cfg_.precision != Precision::fp16) {
            ZS_THROW(Error, "step {}: the gradient norm is not finite ({}) — the run diverged",
                     steps_done_ + 1, norm);
        }
        if (world_.rank() == 0) {
            log_warn("fp16 overflow at loss scale {}: skipping the step", loss_scale);
        }
    }
    scaler_.update(overflow);
    s.optimizer_s = phase.seconds();
    tokens_seen_ += cfg_.batch.train_batch_size * T_all;
    Tensor l = Tensor::empty({1}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
    l.data<float>()[0] = static_cast<float>(loss_sum);
    // Over dp x sp: sequence-parallel ranks hold different tokens' losses, tensor-parallel ranks
    // the same ones.
    dp_->allreduce(l, comm::ReduceOp::sum).wait();
    if (pp_) pp_->allreduce(l, comm::ReduceOp::sum).wait();  // the last stage's
    s.loss = l.data<float>()[0] / static_cast<double>(cfg_.batch.train_batch_size * T_all);
    s.step = steps_done_;
    s.seconds = tm.seconds();
    const double tokens = static_cast<double>(cfg_.batch.train_batch_size * T_all);
    s.tokens_per_s = tokens / s.seconds;
    const double flops_per_token =
        6.0 * static_cast<double>(mcfg_.n_params()) +
        12.0 * static_cast<double>(mcfg_.n_layers * mcfg_.q_dim() * T_all);
    // Every rank computes a share of these FLOPs (data, sequence, tensor and pipeline ranks alike).
    s.mfu = s.tokens_per_s * flops_per_token / (peak_flops_ * world_.size());
    return s;
}

double Trainer::evaluate() {
    if (!val_ds_) return NAN;
    const int W = data_dp_->size(), r = data_dp_->rank();
    const int64_t micro = cfg_.batch.train_micro_batch_size_per_gpu;
    double sum = 0, count = 0;
    models::TrainBatch batch;
    // Evaluation mode (MoE: eval_capacity_factor), back to training whatever happens.
    struct EvalMode {
        models::Transformer* m;
        explicit EvalMode(models::Transformer* t) : m(t) {
            if (m) m->set_training(false);
        }
        ~EvalMode() {
            if (m) m->set_training(true);
        }
        EvalMode(const EvalMode&) = delete;
        EvalMode& operator=(const EvalMode&) = delete;
    } eval_mode(model_.get());
    for (int64_t j = 0; j < run_.eval_batches; ++j) {
        load_batch((j * W + r) * micro, micro, *val_ds_, nullptr, 0, batch);
        models::LossStats st =
            pp_ ? pipeline_loss(batch) : model_->forward_loss(batch, engine_.get());
        sum += st.loss_sum;
        count += static_cast<double>(st.n_tokens);
    }
    Tensor t = Tensor::empty({2}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
    t.data<float>()[0] = static_cast<float>(sum);
    t.data<float>()[1] = static_cast<float>(count);
    dp_->allreduce(t, comm::ReduceOp::sum).wait();
    if (pp_) pp_->allreduce(t, comm::ReduceOp::sum).wait();
    return t.data<float>()[0] / std::max(1.0f, t.data<float>()[1]);
}

std::string Trainer::memory_report() const { return core::memory_stats().report(); }

std::vector<StepStats> Trainer::train() {
    const bool lead = world_.rank() == 0;
    std::unique_ptr<std::ofstream> metrics;
    bool jsonl = run_.metrics_path.size() > 6 && run_.metrics_path.ends_with(".jsonl");
    if (lead && !run_.metrics_path.empty()) {
        if (!fs::path(run_.metrics_path).parent_path().empty())
            fs::create_directories(fs::path(run_.metrics_path).parent_path());
        bool exists = fs::exists(run_.metrics_path) && run_.resume;
        metrics = std::make_unique<std::ofstream>(run_.metrics_path,
                                                  exists ? std::ios::app : std::ios::trunc);
        ZS_CHECK_T(IoError, metrics->good(), "cannot write metrics to '{}'", run_.metrics_path);
        if (!jsonl && !exists) {
            *metrics << "step,loss,val_loss,lr,grad_norm,loss_scale,skipped,tokens,tokens_per_s,"
                        "mfu,peak_bytes,elapsed_s";
            // MoE: the bytes this rank's all-to-alls sent and each expert's share of the routing.
            if (mcfg_.mlp == models::MlpKind::moe) {
                *metrics << ",a2a_bytes";
                for (int64_t e = 0; e < mcfg_.moe.n_experts; ++e) *metrics << ",load_e" << e;
            }
            *metrics << "\n";
        }
    }
    std::vector<StepStats> out;
    Timer total;
    const int64_t start = steps_done_;
    Progress progress("train", run_.steps - start, "step", 0.25);
    double tok_rate = 0;
    while (steps_done_ < run_.steps) {
        StepStats s = step();
        out.push_back(s);
        tok_rate = tok_rate == 0 ? s.tokens_per_s : 0.8 * tok_rate + 0.2 * s.tokens_per_s;
        double val = NAN;
        bool last = steps_done_ >= run_.steps;
        if ((run_.eval_interval > 0 && steps_done_ % run_.eval_interval == 0) || last)
            val = evaluate();
        int64_t peak = core::memory_stats().peak_total;
        if (csv_) {  // DeepSpeed's events, x = samples seen
            const int64_t samples = steps_done_ * cfg_.batch.train_batch_size;
            csv_->write("Train/Samples/train_loss", s.loss, samples);
            csv_->write("Train/Samples/lr", s.lr, samples);
            if (cfg_.precision == Precision::fp16)
                csv_->write("Train/Samples/loss_scale", s.loss_scale, samples);
            if (!std::isnan(val)) csv_->write("Train/Samples/eval_loss", val, samples);
            if (cfg_.wall_clock_breakdown) {
                csv_->write("Train/Samples/elapsed_time_ms_forward", 1e3 * s.forward_s, samples);
                csv_->write("Train/Samples/elapsed_time_ms_backward", 1e3 * s.backward_s, samples);
                csv_->write("Train/Samples/elapsed_time_ms_backward_allreduce", 1e3 * s.grad_sync_s,
                            samples);
                csv_->write("Train/Samples/elapsed_time_ms_step", 1e3 * s.optimizer_s, samples);
            }
        }
        if (lead) {
            std::string extra =
                fmt::format("loss {:.4f} | lr {:.2e} | {:.0f} tok/s | MFU {:.1f}% | peak {}",
                            s.loss, s.lr, tok_rate, 100 * s.mfu, core::format_bytes(peak));
            if (!std::isnan(val))
                extra += fmt::format(" | val {:.4f} (ppl {:.1f})", val, std::exp(val));
            if (run_.progress) progress.update(steps_done_ - start, extra);
            // DeepSpeed prints nothing without steps_per_print; zerospeed every 10 steps.
            const bool print_step = steps_done_ % cfg_.steps_per_print.value_or(10) == 0;
            if (print_step && !run_.progress) log_info("step {} | {}", steps_done_, extra);
            if (print_step && cfg_.wall_clock_breakdown) {
                const double other = s.seconds - s.forward_s - s.head_s - s.backward_s -
                                     s.grad_sync_s - s.optimizer_s;
                log_info(
                    "step {} time (ms) | forward {:.1f} | head (logits, loss, its backward) {:.1f} "
                    "| backward {:.1f} | gradient reduction wait {:.1f} | norm + optimizer step "
                    "{:.1f} | other {:.1f} | total {:.1f}",
                    steps_done_, 1e3 * s.forward_s, 1e3 * s.head_s, 1e3 * s.backward_s,
                    1e3 * s.grad_sync_s, 1e3 * s.optimizer_s, 1e3 * other, 1e3 * s.seconds);
                if (cfg_.zero.offload_optimizer.device != OffloadDevice::none) {
                    log_info("step {} offload_optimizer: read {}, wrote {} ({}/s through the step)",
                             steps_done_, core::format_bytes(s.offload_read_bytes),
                             core::format_bytes(s.offload_write_bytes),
                             core::format_bytes(static_cast<int64_t>(
                                 static_cast<double>(s.offload_read_bytes + s.offload_write_bytes) /
                                 std::max(s.optimizer_s, 1e-9))));
                    const zero::OffloadTimes& ot = s.offload_times;
                    log_info(
                        "step {} offload (s) | forward+backward: {} read, {} written; parameter "
                        "read wait {:.2f} | gradient write wait {:.2f} | gradient records {:.2f} "
                        "| optimizer: {} read, {} written; parameter wait {:.2f} | record read "
                        "wait {:.2f} | record write wait {:.2f} | update {:.2f}",
                        steps_done_, core::format_bytes(s.offload_read_bytes - ot.step_read_bytes),
                        core::format_bytes(s.offload_write_bytes - ot.step_write_bytes),
                        ot.param_wait_s, ot.grad_write_wait_s, ot.grad_record_s,
                        core::format_bytes(ot.step_read_bytes),
                        core::format_bytes(ot.step_write_bytes), ot.step_param_wait_s,
                        ot.step_read_wait_s, ot.step_write_wait_s, ot.step_update_s);
                }
            }
            if (metrics) {
                double el = total.seconds();
                if (jsonl) {
                    nlohmann::json j = {{"step", s.step},
                                        {"loss", s.loss},
                                        {"lr", s.lr},
                                        {"grad_norm", s.grad_norm},
                                        {"loss_scale", s.loss_scale},
                                        {"skipped", s.skipped},
                                        {"tokens", tokens_seen_},
                                        {"tokens_per_s", s.tokens_per_s},
                                        {"mfu", s.mfu},
                                        {"peak_bytes", peak},
                                        {"elapsed_s", el}};
                    if (!std::isnan(val)) j["val_loss"] = val;
                    if (mcfg_.mlp == models::MlpKind::moe) {
                        j["a2a_bytes"] = s.a2a_bytes;
                        for (size_t e = 0; e < s.expert_load.size(); ++e)
                            j[fmt::format("load_e{}", e)] = s.expert_load[e];
                    }
                    if (cfg_.zero.offload_optimizer.device != OffloadDevice::none ||
                        cfg_.zero.offload_param.device != OffloadDevice::none) {
                        // This rank's bytes from / to the offload tier in the optimizer step.
                        j["offload_read_bytes"] = s.offload_read_bytes;
                        j["offload_write_bytes"] = s.offload_write_bytes;
                        const zero::OffloadTimes& ot = s.offload_times;
                        j["offload_step_read_bytes"] = ot.step_read_bytes;
                        j["offload_step_write_bytes"] = ot.step_write_bytes;
                        if (cfg_.wall_clock_breakdown) {
                            j["offload_param_wait_s"] = ot.param_wait_s;
                            j["offload_grad_write_wait_s"] = ot.grad_write_wait_s;
                            j["offload_grad_record_s"] = ot.grad_record_s;
                            j["offload_step_param_wait_s"] = ot.step_param_wait_s;
                            j["offload_step_read_wait_s"] = ot.step_read_wait_s;
                            j["offload_step_write_wait_s"] = ot.step_write_wait_s;
                            j["offload_step_update_s"] = ot.step_update_s;
                        }
                    }
                    if (cfg_.wall_clock_breakdown) {
                        j["forward_s"] = s.forward_s;
                        j["head_s"] = s.head_s;
                        j["backward_s"] = s.backward_s;
                        j["grad_sync_s"] = s.grad_sync_s;
                        j["optimizer_s"] = s.optimizer_s;
                        j["step_s"] = s.seconds;
                    }
                    *metrics << j.dump() << "\n";
                } else {
                    *metrics << fmt::format(
                        "{},{:.6f},{},{:.6e},{:.6f},{},{},{},{:.1f},{:.4f},{},{:.2f}", s.step,
                        s.loss, std::isnan(val) ? std::string() : fmt::format("{:.6f}", val), s.lr,
                        s.grad_norm, s.loss_scale, s.skipped ? 1 : 0, tokens_seen_, s.tokens_per_s,
                        s.mfu, peak, el);
                    if (mcfg_.mlp == models::MlpKind::moe) {
                        *metrics << "," << s.a2a_bytes;
                        for (double v : s.expert_load) *metrics << fmt::format(",{:.6f}", v);
                    }
                    *metrics << "\n";
                }
                metrics->flush();
            }
        }
        if (!run_.save_dir.empty() &&
            ((run_.save_interval > 0 && steps_done_ % run_.save_interval == 0) ||
             (last && run_.save_final))) {
            save_checkpoint();
        }
    }
    // --steps 0 (or a target already reached at start-up, with nothing resumed) still writes the
    // checkpoint asked for: the weights as loaded, to reshard or convert.
    if (out.empty() && !run_.save_dir.empty() && steps_done_ == 0) save_checkpoint();
    if (lead && run_.progress && !out.empty())
        progress.finish(fmt::format("{:.0f} tok/s", tok_rate));
    return out;
}

// ------------------------------------------------------------------------------ checkpoints

void Trainer::save_checkpoint() {
    // A checkpoint holds the whole model's groups (the tensor- and expert-parallel-free layout)
    // split into ranges, one file per data-parallel rank (and pipeline stage): the same at any
    // tp, ep and pp, so it loads at any dp x pp x tp x ep. Without tensor or expert parallelism
    // each rank writes the elements it owns; with them, the groups are gathered whole and tp rank
    // 0 of each data-parallel rank writes its dp share. Under pipeline parallelism each stage
    // writes the groups it holds (empty ranges for the others; the tied embedding from the first
    // stage only), so the files cover every group once.
    const int r = world_.rank();
    const int pp = pp_ ? pp_->size() : 1, pr = pp_ ? pp_->rank() : 0;
    const int W = full_model_ ? dp_->size() * pp : world_.size();    // files
    const int q = full_model_ ? pr * dp_->size() + dp_->rank() : r;  // this rank's file
    const bool writer = !tp_ || tp_->rank() == 0;
    const std::string tag = fmt::format("step-{}", steps_done_);
    const std::string final_dir = run_.save_dir + "/" + tag, tmp = final_dir + ".tmp";
    if (r == 0) {
        fs::remove_all(tmp);
        fs::create_directories(tmp);
    }
    world_.barrier();
    // Every rank writes the elements it owns: master weights and optimizer states per group,
    // streamed: each tensor is produced (read from the offload tier when it is there) as the
    // file reaches it and dropped after, so the save holds one group's field at a time.
    std::vector<io::TensorSpec> specs;
    std::vector<std::function<Tensor()>> produce;
    auto add = [&](std::string name, Tensor t) {
        specs.push_back({std::move(name), t.dtype(), t.shape()});
        produce.push_back([t] { return t; });
    };
    nlohmann::json ranges = nlohmann::json::array();
    for (int g = 0; g < whole_model().layout().n_groups(); ++g) {
        const bool tied_copy = tied_ && pr == pp - 1 && g == model_->embed_group();
        if (!holds_group(g) || tied_copy) {
            const int64_t n = whole_model().layout().group(g).numel;
            ranges.push_back({n, n});
            continue;
        }
        if (full_model_) {
            const auto [b, e] = parallel::shard_range(whole_model().layout().group(g).numel,
                                                      dp_->rank(), dp_->size());
            Tensor m = gather_whole_group(g, -1);
            if (writer) add(fmt::format("master.{}", g), m.slice(0, b, e).clone());
            for (int i = 0; i < engine_->n_states(); ++i) {
                Tensor st = gather_whole_group(g, i);
                if (writer) add(fmt::format("state{}.{}", i, g), st.slice(0, b, e).clone());
            }
            ranges.push_back({b, e});
            continue;
        }
        auto [b, e] = engine_->owned_range(g);
        const zero::GroupShard& s = engine_->shard(g);
        int64_t off = engine_->stage() == 0 ? 0 : b - s.begin;
        // The engine's views, copied to the host when they live on a device.
        const core::Device host = core::Device::cpu();
        const int64_t len = e - b;
        specs.push_back({fmt::format("master.{}", g), engine_->master_dtype(), {len}});
        produce.push_back([this, g, off, len, host] {
            return engine_->master_shard(g).slice(0, off, off + len).to(host);
        });
        for (int i = 0; i < engine_->n_states(); ++i) {
            specs.push_back({fmt::format("state{}.{}", i, g), engine_->state_dtype(), {len}});
            produce.push_back([this, g, i, off, len, host] {
                return engine_->state_part(g, i, off, off + len).to(host);
            });
        }
        ranges.push_back({b, e});
    }
    io::fault_point("ckpt.write");
    if (writer) {
        const std::string file = fmt::format("rank{:05d}-of-{:05d}.safetensors", q, W);
        io::save_safetensors_streamed(tmp + "/" + file, specs,
                                      [&](size_t i) { return produce[i](); },
                                      {{"ranges", ranges.dump()}});
        io::fault_point("ckpt.write");
    }
    produce.clear();
    world_.barrier();
    // stage3_gather_16bit_weights_on_model_save: the consolidated model in the training's 16-bit
    // dtype (bf16 or fp16; f32 for an f32 run), as DeepSpeed's save_16bit_model writes it, inside
    // the checkpoint so it is committed with it: <save>/<tag>/hf16/ (an HF directory).
    if (cfg_.zero.stage3_gather_16bit_weights_on_model_save) {
        export_hf(tmp + "/hf16", cfg_.precision == Precision::bf16   ? core::DType::bf16
                                 : cfg_.precision == Precision::fp16 ? core::DType::f16
                                                                     : core::DType::f32);
    }
    if (r == 0) {
        nlohmann::json m;
        m["format"] = "zerospeed-checkpoint";
        m["version"] = 1;
        m["step"] = steps_done_;
        m["skipped_steps"] = skipped_;
        m["tokens_seen"] = tokens_seen_;
        m["world_size"] = world_.size();
        m["tensor_parallel_size"] = tp_ ? tp_->size() : 1;
        m["sequence_parallel_size"] = cfg_.sequence_parallel_size;
        m["ring_parallel_size"] = cfg_.ring_parallel_size;
        m["pipeline_parallel_size"] = pp;
        m["expert_parallel_size"] = ep_ ? ep_->size() : 1;
        m["tokenizer_source"] = run_.tokenizer_source;
        m["zero_stage"] = engine_->stage();
        m["optimizer_states"] = engine_->n_states();
        m["model_config"] = io::parse_json(models::to_hf_config_json(mcfg_), "model config");
        nlohmann::json groups = nlohmann::json::array();
        for (const auto& g : whole_model().layout().groups())
            groups.push_back({{"name", g.name}, {"numel", g.numel}});
        m["groups"] = groups;
        nlohmann::json shards = nlohmann::json::array();
        for (int k = 0; k < W; ++k) {
            std::string f = fmt::format("rank{:05d}-of-{:05d}.safetensors", k, W);
            io::fault_point("ckpt.write");
            shards.push_back({{"file", f}, {"sha256", io::sha256_file(tmp + "/" + f)}});
        }
        m["shards"] = shards;
        if (sampler_)
            m["sampler"] = {{"epoch", sampler_->state().epoch},
                            {"position", sampler_->state().position}};
        auto ss = scaler_.state();
        m["loss_scaler"] = {{"scale", ss.scale},
                            {"cur_iter", ss.cur_iter},
                            {"last_overflow_iter", ss.last_overflow_iter},
                            {"cur_hysteresis", ss.cur_hysteresis}};
        m["seed"] = run_.seed;
        io::write_file_atomic(tmp + "/manifest.json", m.dump(2) + "\n");
        io::fault_point("ckpt.write");
        // Commit: rename the directory, then point `latest` at it (the last write).
        fs::remove_all(final_dir);
        fs::rename(tmp, final_dir);
        io::fsync_parent_dir(final_dir);
        io::fault_point("ckpt.write");
        io::write_file_atomic(run_.save_dir + "/latest", tag + "\n");
        // Old checkpoints go only after the new one is committed.
        std::vector<std::pair<int64_t, fs::path>> old;
        for (const auto& e : fs::directory_iterator(run_.save_dir)) {
            std::string n = e.path().filename().string();
            if (e.is_directory() && n.rfind("step-", 0) == 0 &&
                n.find(".tmp") == std::string::npos) {
                old.emplace_back(std::stoll(n.substr(5)), e.path());
            }
        }
        std::sort(old.begin(), old.end());
        for (size_t i = 0; i + static_cast<size_t>(std::max(1, run_.keep_checkpoints)) < old.size();
             ++i) {
            fs::remove_all(old[i].second);
        }
        log_info("saved checkpoint {}", final_dir);
    }
    world_.barrier();
}

void Trainer::load_checkpoint(const std::string& path) {
    std::string dir = path;
    if (fs::exists(path + "/latest")) {
        std::string tag = io::read_file(path + "/latest");
        while (!tag.empty() && (tag.back() == '\n' || tag.back() == ' ')) tag.pop_back();
        dir = path + "/" + tag;
    }
    ZS_CHECK_T(
        IoError, fs::exists(dir + "/manifest.json"),
        "{}: not a complete checkpoint (no manifest.json; an interrupted save never commits one)",
        dir);
    nlohmann::json m = io::load_json(dir + "/manifest.json");
    ZS_CHECK_T(IoError, m.value("format", "") == "zerospeed-checkpoint",
               "{}/manifest.json: not a zerospeed checkpoint", dir);
    const auto& groups = m.at("groups");
    const models::ParamLayout& wl = whole_model().layout();  // a checkpoint's layout
    ZS_CHECK_T(IoError, static_cast<int>(groups.size()) == wl.n_groups(),
               "{}: checkpoint has {} parameter groups; this model has {}", dir, groups.size(),
               wl.n_groups());
    for (int g = 0; g < wl.n_groups(); ++g) {
        ZS_CHECK_T(
            IoError, groups[static_cast<size_t>(g)].at("numel").get<int64_t>() == wl.group(g).numel,
            "{}: group {} has {} elements in the checkpoint but {} in this model (another model?)",
            dir, wl.group(g).name, groups[static_cast<size_t>(g)].at("numel").get<int64_t>(),
            wl.group(g).numel);
    }
    ZS_CHECK_T(IoError, m.at("optimizer_states").get<int>() == engine_->n_states(),
               "{}: checkpoint has {} optimizer states per parameter; {} needs {}", dir,
               m.at("optimizer_states").get<int>(), to_string(cfg_.optimizer.kind),
               engine_->n_states());
    std::vector<io::SafetensorsFile> files;
    std::vector<nlohmann::json> file_ranges;
    for (const auto& sh : m.at("shards")) {
        std::string f = dir + "/" + sh.at("file").get<std::string>();
        ZS_CHECK_T(IoError, fs::exists(f), "{}: shard is missing", f);
        std::string want = sh.at("sha256").get<std::string>(), got = io::sha256_file(f);
        ZS_CHECK_T(IoError, got == want,
                   "{}: corrupt shard: sha256 {} but manifest.json expects {}", f, got, want);
        files.push_back(io::SafetensorsFile::open(f));
        file_ranges.push_back(
            io::parse_json(files.back().metadata().at("ranges"), f + " (ranges)"));
    }
    const int ns = engine_->n_states();
    // The ranges of each whole group the files hold: [b, e) with its master and states.
    struct Piece {
        int64_t b = 0, e = 0;
        Tensor m, s[2];
    };
    std::vector<std::vector<Piece>> all(static_cast<size_t>(wl.n_groups()));
    for (int g = 0; g < wl.n_groups(); ++g) {
        std::vector<Piece>& pieces = all[static_cast<size_t>(g)];
        for (size_t q = 0; q < files.size(); ++q) {
            const nlohmann::json& rg = file_ranges[q][static_cast<size_t>(g)];
            Piece p{rg[0].get<int64_t>(), rg[1].get<int64_t>(), {}, {}};
            if (p.e <= p.b) continue;
            p.m = files[q].tensor(fmt::format("master.{}", g));
            for (int i = 0; i < ns; ++i) p.s[i] = files[q].tensor(fmt::format("state{}.{}", i, g));
            if (full_model_) {  // read element-wise below as f32 (bf16 masters / states)
                p.m = p.m.to(DType::f32);
                for (int i = 0; i < ns; ++i) p.s[i] = p.s[i].to(DType::f32);
            }
            ZS_CHECK_T(IoError, p.m.numel() == p.e - p.b,
                       "{}: group {}: a shard's range [{}, {}) holds {} elements", dir,
                       wl.group(g).name, p.b, p.e, p.m.numel());
            pieces.push_back(std::move(p));
        }
        if (!full_model_) {
            for (const Piece& p : pieces) engine_->set_state_range(g, p.b, p.m, p.s[0], p.s[1]);
        }
        std::sort(pieces.begin(), pieces.end(),
                  [](const Piece& x, const Piece& y) { return x.b < y.b; });
    }
    // Tensor or expert parallelism: each of this rank's stored elements looked up in the whole
    // group holding it.
    for (int g = 0; full_model_ && g < model_->layout().n_groups(); ++g) {
        const zero::GroupShard& sh = engine_->shard(g);
        const int64_t n = sh.end - sh.begin;
        if (n <= 0) continue;  // none of it here (another pipeline stage's group)
        int wg = -1;
        const Tensor idx = whole_index(g, wg);
        if (wg < 0) continue;
        const std::vector<Piece>& pieces = all[static_cast<size_t>(wg)];
        auto buf = [&] {
            return Tensor::zeros({n}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
        };
        Tensor lm = buf(), ls[2];
        for (int i = 0; i < ns; ++i) ls[i] = buf();
        size_t at = 0;
        for (int64_t j = 0; j < n; ++j) {
            const int64_t f = idx.data<int64_t>()[sh.begin + j];
            if (f < 0) continue;  // padding between parameters
            if (at >= pieces.size() || f < pieces[at].b || f >= pieces[at].e) {
                auto it = std::upper_bound(pieces.begin(), pieces.end(), f,
                                           [](int64_t v, const Piece& p) { return v < p.b; });
                ZS_CHECK_T(IoError, it != pieces.begin() && f < std::prev(it)->e,
                           "{}: element {} of group {} is in no shard", dir, f, wl.group(wg).name);
                at = static_cast<size_t>(std::prev(it) - pieces.begin());
            }
            const Piece& p = pieces[at];
            lm.data<float>()[j] = p.m.data<float>()[f - p.b];
            for (int i = 0; i < ns; ++i) ls[i].data<float>()[j] = p.s[i].data<float>()[f - p.b];
        }
        engine_->set_state_range(g, sh.begin, lm, ls[0], ls[1]);
    }
    engine_->refresh_compute_weights();
    steps_done_ = m.at("step").get<int64_t>();
    skipped_ = m.value("skipped_steps", int64_t{0});
    tokens_seen_ = m.value("tokens_seen", int64_t{0});
    if (sampler_ && m.contains("sampler")) {
        sampler_->set_state(
            {m["sampler"].at("epoch").get<int64_t>(), m["sampler"].at("position").get<int64_t>()});
    }
    const auto& ls = m.at("loss_scaler");
    scaler_.set_state({ls.at("scale").get<double>(), ls.at("cur_iter").get<int64_t>(),
                       ls.at("last_overflow_iter").get<int64_t>(),
                       ls.at("cur_hysteresis").get<int>()});
    if (world_.rank() == 0) {
        const int saved_tp = m.value("tensor_parallel_size", 1);
        log_info("resumed from {} (step {}, saved at world size {}{}, ZeRO stage {})", dir,
                 steps_done_, m.at("world_size").get<int>(),
                 saved_tp > 1 ? fmt::format(" = {} dp x {} tp",
                                            m.at("world_size").get<int>() / saved_tp, saved_tp)
                              : std::string(),
                 m.at("zero_stage").get<int>());
    }
}

void Trainer::export_hf(const std::string& dir, core::DType dtype) {
    ZS_CHECK_T(NotSupported, pp_ == nullptr,
               "export to {}: under pipeline parallelism each stage holds only its blocks; resume "
               "the checkpoint with pipeline.stages 1 (any world size) and export from there",
               dir);
    std::vector<io::NamedTensor> tensors;
    for (int g = 0; g < whole_model().layout().n_groups(); ++g) {
        Tensor full = gather_whole_group(g, -1);
        if (world_.rank() != 0) continue;
        for (auto& [name, t] : models::export_hf_group(whole_model(), g, full))
            tensors.push_back({name, t.to(dtype).contiguous()});
    }
    if (world_.rank() == 0) {
        fs::create_directories(dir);
        io::save_safetensors(dir + "/model.safetensors", tensors, {{"format", "pt"}});
        models::ModelConfig exported = mcfg_;
        exported.torch_dtype = dtype;  // the weights as written
        io::write_file_atomic(dir + "/config.json", models::to_hf_config_json(exported));
        write_hf_extras(run_.tokenizer_source, mcfg_, dir);
    }
    world_.barrier();
}

}  // namespace zs::train
