#include "zero/inference.h"

#include <algorithm>
#include <cstring>
#include <exception>

#include "base/error.h"
#include "base/log.h"
#include "core/host_memory.h"

namespace zs::zero {

using core::DType;
using core::MemCategory;

namespace {

bool is_block(const models::Transformer& m, int g) {
    return g >= m.block_group(0) && g < m.head_group();
}

}  // namespace

StreamMemory stream_memory(const models::Transformer& model, int64_t prefetch) {
    StreamMemory m;
    const auto es = static_cast<int64_t>(core::dtype_size(model.run_config().compute_dtype));
    for (int g = 0; g < model.layout().n_groups(); ++g) {
        const int64_t b = model.layout().group(g).numel * es;
        if (is_block(model, g)) {
            m.streamed += b;
            m.largest_block = std::max(m.largest_block, b);
        } else {
            m.resident += b;
        }
    }
    const auto padded = static_cast<int64_t>(io::aio_padded(static_cast<size_t>(m.largest_block)));
    m.buffers = (std::max<int64_t>(prefetch, 0) + 1) * padded;
    return m;
}

WeightStream::WeightStream(models::Transformer& model, const models::WeightSource& src,
                           StreamConfig cfg)
    : model_(model), cfg_(std::move(cfg)), ct_(model.run_config().compute_dtype) {
    ZS_CHECK_T(ConfigError, cfg_.tier != Tier::memory,
               "--offload-weights: expected nvme or cpu (memory keeps every weight resident)");
    ZS_CHECK_T(ConfigError, cfg_.tier != Tier::nvme || !cfg_.path.empty(),
               "--offload-path: required with --offload-weights nvme (the directory of the "
               "weight files)");
    ZS_CHECK_T(ConfigError, cfg_.prefetch >= 1,
               "weight streaming: the read-ahead must be >= 1 block (got {})", cfg_.prefetch);
    ZS_CHECK_T(NotSupported, model.tp_size() == 1 && model.ep_size() == 1,
               "--offload-weights: tensor- or expert-parallel inference streams no weights (not "
               "implemented)");
    ZS_CHECK_T(NotSupported, model.config().mlp != models::MlpKind::moe,
               "--offload-weights: MoE models are not implemented");
    ZS_CHECK_T(NotSupported, model.run_config().device.is_cpu(),
               "--offload-weights: CPU models only (the model is on {})",
               model.run_config().device.str());
    // A memory cap must see what is in use: host blocks of 1 MiB and more (the embedding's, each
    // block's conversion temporaries while the tier is filled) go back to the system when freed
    // instead of staying in the heap (measured on SmolLM2-135M: 151 -> 79 MB resident after load;
    // the stream's own buffers are pooled, so decoding maps nothing new per forward).
    core::return_large_host_blocks(size_t{1} << 20);
    mem_ = stream_memory(model, cfg_.prefetch);
    if (cfg_.memory_cap > 0) {
        const int64_t asked = cfg_.prefetch;
        while (mem_.total() > cfg_.memory_cap && cfg_.prefetch > 1) {
            mem_ = stream_memory(model, --cfg_.prefetch);
        }
        ZS_CHECK_T(ConfigError, mem_.total() <= cfg_.memory_cap,
                   "--memory-cap {}: the embedding and head ({}) and 2 block buffers of {} need {} "
                   "(weight streaming keeps at least the block in use and the next one)",
                   core::format_bytes(cfg_.memory_cap), core::format_bytes(mem_.resident),
                   core::format_bytes(mem_.largest_block), core::format_bytes(mem_.total()));
        if (cfg_.prefetch < asked) {
            log_info("zero-inference: read-ahead {} -> {} blocks to fit --memory-cap {}", asked,
                     cfg_.prefetch, core::format_bytes(cfg_.memory_cap));
        }
    }
    OffloadConfig oc;
    oc.aio = cfg_.aio;
    store_ = std::make_unique<SwapStore>(cfg_.tier, oc, 0, cfg_.path, cfg_.pin, "weights");
    const int n = model.layout().n_groups();
    resident_.resize(static_cast<size_t>(n));
    slots_.resize(static_cast<size_t>(n));
    // One group in memory at a time while the tier is filled.
    io::AlignedBuffer staging;
    for (int g = 0; g < n; ++g) {
        const int64_t numel = model.layout().group(g).numel;
        Tensor w = Tensor::zeros({numel}, ct_, core::Device::cpu(), MemCategory::params);
        models::fill_hf_group(model, g, src, w);
        if (!streamed(g)) {
            resident_[static_cast<size_t>(g)] = w;
            model.binding().bind_group(g, w, Tensor());
            continue;
        }
        if (staging.capacity() < bytes(g)) {
            staging = io::AlignedBuffer(static_cast<size_t>(mem_.largest_block), cfg_.pin,
                                        MemCategory::params);
        }
        std::memcpy(staging.data(), w.data_ptr(), bytes(g));
        store_->write(g, staging, bytes(g)).wait();
        model.binding().bind_group(g, Tensor(), Tensor());
    }
    staging = io::AlignedBuffer();
    for (int64_t i = 0; i <= cfg_.prefetch; ++i) {
        bufs_.emplace_back(static_cast<size_t>(mem_.largest_block), cfg_.pin, MemCategory::params);
        free_.push_back(static_cast<int>(i));
    }
    log_info(
        "zero-inference: {} blocks ({}) streamed from {}{}, {} resident, {} buffers of {} "
        "(read ahead {})",
        model.config().n_layers, core::format_bytes(mem_.streamed), to_string(cfg_.tier),
        cfg_.tier == Tier::nvme ? " files under " + store_->dir() : std::string(),
        core::format_bytes(mem_.resident), bufs_.size(), core::format_bytes(mem_.largest_block),
        cfg_.prefetch);
}

WeightStream::~WeightStream() {
    try {
        settle();  // the buffers must outlive the reads in flight
    } catch (const std::exception& e) {
        log_warn("zero-inference: a weight read failed during shutdown: {}", e.what());
    }
}

void WeightStream::settle() {
    std::exception_ptr first;
    for (Slot& s : slots_) {
        try {
            s.read.wait();
        } catch (...) {
            if (!first) first = std::current_exception();
        }
    }
    if (first) std::rethrow_exception(first);
}

bool WeightStream::streamed(int g) const { return is_block(model_, g); }

size_t WeightStream::bytes(int g) const {
    return static_cast<size_t>(model_.layout().group(g).numel) * core::dtype_size(ct_);
}

void WeightStream::issue(int g) {
    Slot& s = slots_[static_cast<size_t>(g)];
    if (s.buf >= 0 || free_.empty()) return;
    s.buf = free_.back();
    free_.pop_back();
    s.read = store_->read(g, bufs_[static_cast<size_t>(s.buf)], bytes(g));
}

void WeightStream::before_forward(int g) {
    if (!streamed(g)) return;
    // Blocks still bound come from a forward that threw between the hooks (one block at a time
    // is bound otherwise): release them, or their buffers would never come back.
    for (int o = 0; o < static_cast<int>(slots_.size()); ++o) {
        if (slots_[static_cast<size_t>(o)].bound) after_forward(o);
    }
    Slot& s = slots_[static_cast<size_t>(g)];
    ZS_CHECK(s.buf >= 0 || !free_.empty(), "zero-inference: no free buffer for block group {}", g);
    issue(g);
    s.read.wait();
    model_.binding().bind_group(g,
                                Tensor::wrap(bufs_[static_cast<size_t>(s.buf)].data(),
                                             {model_.layout().group(g).numel}, ct_),
                                Tensor());
    s.bound = true;
    // Read ahead along the forward's order, cyclically (the next forward starts at block 0).
    const int first = model_.block_group(0), L = static_cast<int>(model_.config().n_layers);
    for (int64_t k = 1; k <= cfg_.prefetch && k < L; ++k) {
        issue(first + static_cast<int>((g - first + k) % L));
    }
}

void WeightStream::after_forward(int g) {
    if (!streamed(g)) return;
    Slot& s = slots_[static_cast<size_t>(g)];
    if (!s.bound) return;
    model_.binding().bind_group(g, Tensor(), Tensor());
    free_.push_back(s.buf);
    s.buf = -1;
    s.bound = false;
}

BatchKvCache::BatchKvCache(const models::ModelConfig& cfg, int64_t batch, int64_t max_tokens,
                           core::DType dtype) {
    ZS_CHECK_T(ConfigError, batch >= 1, "--batch: expected >= 1, got {}", batch);
    for (int64_t b = 0; b < batch; ++b) seqs_.emplace_back(cfg, max_tokens, dtype);
}

void BatchKvCache::attend(int layer, const ops::AttentionOptions& opts, const Tensor& q,
                          const Tensor& k, const Tensor& v, const Tensor& out) {
    const int64_t B = batch(), N = q.size(0);
    ZS_CHECK_T(ShapeError, N % B == 0, "BatchKvCache: {} tokens are not {} equal segments", N, B);
    const int64_t n = N / B;
    for (int64_t b = 0; b < B; ++b) {
        seqs_[static_cast<size_t>(b)].attend(
            layer, opts, q.slice(0, b * n, (b + 1) * n), k.slice(0, b * n, (b + 1) * n),
            v.slice(0, b * n, (b + 1) * n), out.slice(0, b * n, (b + 1) * n));
    }
}

void BatchKvCache::commit(int64_t n_new) {
    for (models::ContiguousKvCache& s : seqs_) s.commit(n_new);
}

}  // namespace zs::zero
