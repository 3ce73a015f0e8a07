#include "models/kv_cache.h"

#include "base/error.h"
#include "ops/attention.h"

namespace zs::models {

ContiguousKvCache::ContiguousKvCache(const ModelConfig& cfg, int64_t max_tokens, DType dtype,
                                     core::Device device)
    : max_(max_tokens) {
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        k_.push_back(Tensor::empty({max_tokens, cfg.n_kv_heads, cfg.head_dim}, dtype, device,
                                   core::MemCategory::kv_cache));
        v_.push_back(Tensor::empty({max_tokens, cfg.n_kv_heads, cfg.head_dim}, dtype, device,
                                   core::MemCategory::kv_cache));
    }
}

void ContiguousKvCache::attend(int layer, const ops::AttentionOptions& opts, const Tensor& q,
                               const Tensor& k, const Tensor& v, const Tensor& out) {
    const int64_t n = q.size(0);
    ZS_CHECK_T(ShapeError, len_ + n <= max_, "KV cache full: {} + {} tokens exceed its {}", len_, n,
               max_);
    const auto l = static_cast<size_t>(layer);
    k_[l].slice(0, len_, len_ + n).copy_from(k);
    v_[l].slice(0, len_, len_ + n).copy_from(v);
    ops::attention_forward(out.unsqueeze(0), Tensor(), q.unsqueeze(0),
                           k_[l].slice(0, 0, len_ + n).unsqueeze(0),
                           v_[l].slice(0, 0, len_ + n).unsqueeze(0), opts);
}

void ContiguousKvCache::commit(int64_t n_new) { len_ += n_new; }

}  // namespace zs::models
