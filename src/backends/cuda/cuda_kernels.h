// The CUDA kernel table: cuBLAS for matmuls (cuda_matmul.cpp), our own kernels for everything
// else (one .cu per op family, reached through launch.h from cuda_kernels.cpp).
//
// Every kernel runs on the context's single stream, in call order, and returns without waiting,
// except the ops that must raise zs::Error for bad user input (embedding ids, cross-entropy
// targets, rope positions): they read a device-side flag back, which synchronises the stream.
// cross_entropy also synchronises to return its count. Outputs of a call that raised are
// unspecified.
#pragma once

#include <memory>

#include "backends/cuda/cuda_backend.h"
#include "ops/kernels.h"

namespace zs::backends::cuda {

using core::Tensor;

class CudaKernels final : public ops::Kernels {
public:
    explicit CudaKernels(std::shared_ptr<CudaContext> ctx) : ctx_(std::move(ctx)) {}
    const char* name() const override { return "cuda"; }

    void matmul(const Tensor& out, const Tensor& a, const Tensor& b, const ops::MatmulOptions& opts,
                const Tensor& bias) override;
    void sum_rows(const Tensor& out, const Tensor& in, bool accumulate) override;
    // q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k weights in the file layout (quant.cu); q5_k and
    // q8_k: NotSupported.
    void quant_linear(const Tensor& out, const Tensor& x, const core::QTensor& w,
                      const Tensor& bias, float beta) override;

    void layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd,
                           const Tensor& x, const Tensor& w, const Tensor& b, float eps) override;
    void layernorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& db,
                            const Tensor& dout, const Tensor& x, const Tensor& w,
                            const Tensor& mean, const Tensor& rstd) override;
    void rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& w,
                         float eps) override;
    void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dout, const Tensor& x,
                          const Tensor& w, const Tensor& rstd) override;

    void gelu_forward(const Tensor& out, const Tensor& x, ops::GeluKind kind) override;
    void gelu_backward(const Tensor& dx, const Tensor& dout, const Tensor& x,
                       ops::GeluKind kind) override;
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
    void paged_kv_write(const Tensor& k_cache, const Tensor& v_cache, const Tensor& k,
                        const Tensor& v, std::span<const ops::SeqSlice> seqs) override;
    void paged_attention_forward(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                                 const Tensor& v_cache, std::span<const ops::SeqSlice> seqs,
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

    void adam_update(const Tensor& master, const Tensor& m, const Tensor& v, const Tensor& compute,
                     const Tensor& grad, const ops::AdamStep& step) override;

private:
    // The stream, with the context's device made current on the calling thread.
    cudaStream_t stream() const;

    std::shared_ptr<CudaContext> ctx_;
};

}  // namespace zs::backends::cuda
