// ops::Kernels: the per-device kernel table behind the op API.
//
// The free functions in ops/<family>.h validate their arguments (shapes, dtypes, devices) and then
// call the Kernels of the output's device; a backend (backends/cpu, backends/cuda) overrides what
// it implements, and every method it does not override throws NotSupported naming the backend and
// the op. Kernels may therefore assume validated arguments. Kernel tables are registered once at
// start-up by backends::register_all() and are read-only afterwards.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "core/tensor.h"
#include "ops/activation.h"
#include "ops/adam.h"
#include "ops/attention.h"
#include "ops/loss.h"
#include "ops/matmul.h"
#include "ops/moe.h"
#include "ops/paged_attention.h"
#include "ops/rope.h"
#include "ops/ulysses.h"

namespace zs::ops {

class Kernels {
public:
    virtual ~Kernels() = default;
    virtual const char* name() const = 0;

    virtual void matmul(const Tensor& out, const Tensor& a, const Tensor& b,
                        const MatmulOptions& opts, const Tensor& bias);
    virtual void sum_rows(const Tensor& out, const Tensor& in, bool accumulate);
    // ops::quant_linear_forward; out [M, N], x [M, K] with unit column strides.
    virtual void quant_linear(const Tensor& out, const Tensor& x, const core::QTensor& w,
                              const Tensor& bias, float beta);
    // ops::quant_swiglu_forward; the default composes quant_linear, swiglu_forward, quant_linear.
    virtual void quant_swiglu(const Tensor& out, const Tensor& x, const core::QTensor& w_gate_up,
                              const core::QTensor& w_down, const Tensor& h, const Tensor& a,
                              float beta);
    // The RmsNormFold forms of both (ops/matmul.h); the defaults run rmsnorm_forward into
    // norm.normed, then quant_linear / quant_swiglu on it.
    virtual void quant_norm_linear(const Tensor& out, const Tensor& x, const RmsNormFold& norm,
                                   const core::QTensor& w, const Tensor& bias, float beta);
    virtual void quant_norm_swiglu(const Tensor& out, const Tensor& x, const RmsNormFold& norm,
                                   const core::QTensor& w_gate_up, const core::QTensor& w_down,
                                   const Tensor& h, const Tensor& a, float beta);

    virtual void layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd,
                                   const Tensor& x, const Tensor& w, const Tensor& b, float eps);
    virtual void layernorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& db,
                                    const Tensor& dout, const Tensor& x, const Tensor& w,
                                    const Tensor& mean, const Tensor& rstd);
    virtual void rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x,
                                 const Tensor& w, float eps);
    virtual void rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dout,
                                  const Tensor& x, const Tensor& w, const Tensor& rstd);

    virtual void gelu_forward(const Tensor& out, const Tensor& x, GeluKind kind);
    virtual void gelu_backward(const Tensor& dx, const Tensor& dout, const Tensor& x,
                               GeluKind kind);
    virtual void silu_forward(const Tensor& out, const Tensor& x);
    virtual void silu_backward(const Tensor& dx, const Tensor& dout, const Tensor& x);
    virtual void swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up);
    virtual void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                                 const Tensor& gate, const Tensor& up);
    virtual void add(const Tensor& out, const Tensor& a, const Tensor& b);
    virtual void scale(const Tensor& out, const Tensor& a, float alpha);

    virtual void softmax_forward(const Tensor& out, const Tensor& x);
    virtual void softmax_backward(const Tensor& dx, const Tensor& dout, const Tensor& out);

    // inverse == false: forward rotation; true: rotate by -angle (the backward).
    virtual void rope(const Tensor& x, const Tensor& positions, const RopeTable& table,
                      bool inverse);

    virtual void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q,
                                   const Tensor& k, const Tensor& v, const AttentionOptions& opts);
    virtual void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                    const Tensor& dout, const Tensor& q, const Tensor& k,
                                    const Tensor& v, const Tensor& out, const Tensor& lse,
                                    const AttentionOptions& opts);
    virtual void attention_merge(const Tensor& out, const Tensor& lse, const Tensor& part_out,
                                 const Tensor& part_lse);
    // Paged KV cache (ops/paged_attention.h): block tables are host spans on every device.
    virtual void paged_kv_write(const Tensor& k_cache, const Tensor& v_cache, const Tensor& k,
                                const Tensor& v, std::span<const SeqSlice> seqs);
    virtual void paged_attention_forward(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                                         const Tensor& v_cache, std::span<const SeqSlice> seqs,
                                         const AttentionOptions& opts);
    // The same over a quantized cache (cache.quant != none), read in place.
    virtual void paged_kv_write_quant(const PagedKvCache& cache, const Tensor& k, const Tensor& v,
                                      std::span<const SeqSlice> seqs);
    virtual void paged_attention_forward_quant(const Tensor& out, const Tensor& q,
                                               const PagedKvCache& cache,
                                               std::span<const SeqSlice> seqs,
                                               const AttentionOptions& opts);

    // Ulysses sequence parallelism's layout moves around its all-to-alls (ops/ulysses.h).
    virtual void ulysses_pack_heads(const Tensor& send, const Tensor& x, int64_t at,
                                    int64_t repeat);
    virtual void ulysses_unpack_heads(const Tensor& x, const Tensor& recv, int64_t at,
                                      int64_t repeat);
    virtual void ulysses_pack_seq(const Tensor& send, const Tensor& full);
    virtual void ulysses_unpack_seq(const Tensor& full, const Tensor& recv);

    virtual void embedding_forward(const Tensor& out, const Tensor& ids, const Tensor& table,
                                   bool accumulate);
    virtual void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids);

    virtual int64_t cross_entropy(const Tensor& losses, const Tensor& dlogits, const Tensor& logits,
                                  const Tensor& targets, const CrossEntropyOptions& opts);

    virtual void topk_router_forward(const Tensor& weights, const Tensor& indices,
                                     const Tensor& probs, const Tensor& logits,
                                     const RouterOptions& opts);
    virtual void topk_router_backward(const Tensor& dlogits, const Tensor& dweights,
                                      const Tensor& dprobs, const Tensor& probs,
                                      const Tensor& indices, const RouterOptions& opts);

    // ops/adam.h: one flat segment's AdamW / Adam update (device optimizers; the CPU runs
    // optim::Optimizer instead).
    virtual void adam_update(const Tensor& master, const Tensor& m, const Tensor& v,
                             const Tensor& compute, const Tensor& grad, const AdamStep& step);

protected:
    [[noreturn]] void not_supported(std::string_view op) const;
};

// The kernels for a device. Throws NotSupported when that device has none registered.
Kernels& kernels_for(core::Device device);
bool has_kernels(core::DeviceType type);
// Start-up only (see backends::register_all()).
void register_kernels(core::DeviceType type, std::unique_ptr<Kernels> kernels);

}  // namespace zs::ops
