#include "models/kv_cache.h"

#include "base/error.h"
#include "ops/attention.h"

namespace zs::models {

ContiguousKvCache::ContiguousKvCache(const ModelConfig& cfg, int64_t max_tokens, DType dtype,
                                     core::Device device)
    : max_(max_tokens), head_major_(device.is_cpu()) {
    const core::Shape shape = head_major_ ? core::Shape{cfg.n_kv_heads, max_tokens, cfg.head_dim}
                                          : core::Shape{max_tokens, cfg.n_kv_heads, cfg.head_dim};
    for (int64_t l = 0; l < cfg.n_layers; ++l) {
        k_.push_back(Tensor::empty(shape, dtype, device, core::MemCategory::kv_cache));
        v_.push_back(Tensor::empty(shape, dtype, device, core::MemCategory::kv_cache));
    }
}

Tensor ContiguousKvCache::by_token(const Tensor& t) const {
    return head_major_ ? t.transpose(0, 1) : t;
}

void ContiguousKvCache::attend(int layer, const ops::AttentionOptions& opts, const Tensor& q,
                               const Tensor& k, const Tensor& v, const Tensor& out) {
    const int64_t n = q.size(0);
    ZS_CHECK_T(ShapeError, len_ + n <= max_, "KV cache full: {} + {} tokens exceed its {}", len_, n,
               max_);
    const auto l = static_cast<size_t>(layer);
    const Tensor kl = by_token(k_[l]), vl = by_token(v_[l]);
    kl.slice(0, len_, len_ + n).copy_from(k);
    vl.slice(0, len_, len_ + n).copy_from(v);
    ops::attention_forward(out.unsqueeze(0), Tensor(), q.unsqueeze(0),
                           kl.slice(0, 0, len_ + n).unsqueeze(0),
                           vl.slice(0, 0, len_ + n).unsqueeze(0), opts);
}

void ContiguousKvCache::commit(int64_t n_new) { len_ += n_new; }

}  // namespace zs::models
