// The CPU kernel table: oneDNN for matmuls (AMX / AVX-512 bf16 where the CPU has them), our own
// vectorised OpenMP kernels for everything else. One .cpp per op family implements its methods.
#pragma once

#include <memory>

#include "ops/kernels.h"

namespace zs::backends::cpu {

using core::Tensor;

class CpuKernels final : public ops::Kernels {
public:
    CpuKernels();
    ~CpuKernels() override;
    const char* name() const override { return "cpu"; }

    void matmul(const Tensor& out, const Tensor& a, const Tensor& b, const ops::MatmulOptions& opts,
                const Tensor& bias) override;
    void sum_rows(const Tensor& out, const Tensor& in, bool accumulate) override;

    void layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd,
                           const Tensor& x, const Tensor& w, const Tensor& b, float eps) override;
    void layernorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& db,
                            const Tensor& dout, const Tensor& x, const Tensor& w,
                            const Tensor& mean, const Tensor& rstd) override;
    void rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& w,
                         float eps) override;
    void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dout, const Tensor& x,
                          const Tensor& w, const Tensor& rstd) override;

    void gelu_forward(const Tensor& out, const Tensor& x) override;
    void gelu_backward(const Tensor& dx, const Tensor& dout, const Tensor& x) override;
    void silu_forward(const Tensor& out, const Tensor& x) override;
    void silu_backward(const Tensor& dx, const Tensor& dout, const Tensor& x) override;
    void swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) override;
    void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                         const Tensor& gate, const Tensor& up) override;
    void add(const Tensor& out, const Tensor& a, const Tensor& b) override;
    void scale(const Tensor& out, const Tensor& a, float alpha) override;

    void softmax_forward(const Tensor& out, const Tensor& x) override;
    void softmax_backward(const Tensor& dx, const Tensor& dout, const Tensor& out) override;

    void rope(const Tensor& x, const Tensor& positions, const ops::RopeTable& table,
              bool inverse) override;

    void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                           const Tensor& v, const ops::AttentionOptions& opts) override;
    void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                            const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& out, const Tensor& lse,
                            const ops::AttentionOptions& opts) override;

    void embedding_forward(const Tensor& out, const Tensor& ids, const Tensor& table,
                           bool accumulate) override;
    void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids) override;

    int64_t cross_entropy(const Tensor& losses, const Tensor& dlogits, const Tensor& logits,
                          const Tensor& targets, const ops::CrossEntropyOptions& opts) override;

    void topk_router_forward(const Tensor& weights, const Tensor& indices, const Tensor& probs,
                             const Tensor& logits, const ops::RouterOptions& opts) override;
    void topk_router_backward(const Tensor& dlogits, const Tensor& dweights, const Tensor& dprobs,
                              const Tensor& probs, const Tensor& indices,
                              const ops::RouterOptions& opts) override;

private:
    bool matmul_bf16_via_f32(const Tensor& out, const Tensor& a, const Tensor& b,
                             const ops::MatmulOptions& opts, const Tensor& bias);
    struct MatmulCache;  // oneDNN engine, stream and primitive cache (matmul.cpp)
    std::unique_ptr<MatmulCache> mm_;
};

}  // namespace zs::backends::cpu
