// ContiguousKvCache: the simplest KvAttention, one contiguous K and V buffer per layer for a
// single sequence. `zerospeed generate` and the model tests use it; the serving engine (infer/)
// uses a paged cache instead. On the CPU the buffers are head-major [NKV, max_T, HS], seen by the
// attention as a [max_T, NKV, HS] view: decode reads each kv head's rows as one sequential run
// (the token-major rows of one head are NKV * HS apart, which the prefetchers follow poorly).
//
// attend() appends the new tokens' k/v at positions [len, len + N) and attends the N queries to
// keys [0, len + N) causally (bottom-right aligned), so one prefill call and then one call per
// decoded token give the same results as a full forward. commit() advances len after all layers.
#pragma once

#include <vector>

#include "models/transformer.h"

namespace zs::models {

class ContiguousKvCache final : public KvAttention {
public:
    // K and V live on `device`, the model's (RunConfig::device).
    ContiguousKvCache(const ModelConfig& cfg, int64_t max_tokens, DType dtype,
                      core::Device device = core::Device::cpu());
    void attend(int layer, const ops::AttentionOptions& opts, const Tensor& q, const Tensor& k,
                const Tensor& v, const Tensor& out) override;
    // Call after a forward over N new tokens.
    void commit(int64_t n_new);
    int64_t length() const { return len_; }
    int64_t capacity() const { return max_; }
    void clear() { len_ = 0; }

private:
    // [max_T, NKV, HS] of a layer's buffer (a transposed view when head-major).
    Tensor by_token(const Tensor& t) const;

    int64_t max_, len_ = 0;
    bool head_major_;
    std::vector<Tensor> k_, v_;  // per layer [NKV, max_T, HS] (CPU) or [max_T, NKV, HS]
};

}  // namespace zs::models
