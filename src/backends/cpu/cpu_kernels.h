// The CPU kernel table: oneDNN for matmuls (AMX / AVX-512 bf16 where the CPU has them), our own
// vectorised OpenMP kernels for everything else. One .cpp per op family implements its methods.
#pragma once

#include <memory>
#include <string>

#include "backends/cpu/qgemv.h"
#include "ops/kernels.h"

namespace zs::backends::cpu {

using core::Tensor;

// Which matmul kernels this CPU gets, decided at run time (the same binary serves an AMX machine
// and an AVX-512-only one): oneDNN's ISA (ONEDNN_MAX_CPU_ISA can lower it, e.g. to test the
// non-AMX path on an AMX machine), whether bf16 products are native there or widened to f32, and
// whether OpenBLAS recognised this CPU (Debian's OpenBLAS falls back to slow generic kernels on
// cores it does not know; then its route is not taken: OPENBLAS_CORETYPE=SkylakeX overrides).
struct MatmulRoutes {
    std::string onednn_isa;    // "avx512_core_amx (AMX bf16/int8)", ...
    bool native_bf16 = false;  // AMX or AVX-512 BF16: bf16 GEMMs stay in bf16
    // oneDNN (2.x) runs 16-bit matmuls from avx512_core up (emulated below AVX-512 BF16); on an
    // AVX2 CPU it has none, and every product with a 16-bit operand runs on f32 copies.
    bool onednn_16bit = false;
    std::string openblas_core;   // openblas_get_corename(): "SkylakeX", "Prescott", ...
    bool openblas_used = false;  // f32 GEMMs with a row-major right operand go to OpenBLAS
};
const MatmulRoutes& matmul_routes();
// One line for logs, `make test`, `make bench` and `zerospeed doctor`.
std::string describe_matmul_routes();

class CpuKernels final : public ops::Kernels {
public:
    CpuKernels();
    ~CpuKernels() override;
    const char* name() const override { return "cpu"; }

    void matmul(const Tensor& out, const Tensor& a, const Tensor& b, const ops::MatmulOptions& opts,
                const Tensor& bias) override;
    void sum_rows(const Tensor& out, const Tensor& in, bool accumulate) override;
    void quant_linear(const Tensor& out, const Tensor& x, const core::QTensor& w,
                      const Tensor& bias, float beta) override;  // qgemv.cpp
    // quant_linear for x with more than kSkinnyMaxRows rows, by the given route (qgemv.h's
    // QuantPrefill; quant_linear passes `best`). Public for the benchmarks and tests.
    void quant_prefill(const Tensor& out, const Tensor& x, const core::QTensor& w,
                       const Tensor& bias, float beta, QuantPrefill route);  // qgemv.cpp
    void quant_swiglu(const Tensor& out, const Tensor& x, const core::QTensor& w_gate_up,
                      const core::QTensor& w_down, const Tensor& h, const Tensor& a,
                      float beta) override;
    void quant_norm_linear(const Tensor& out, const Tensor& x, const ops::RmsNormFold& norm,
                           const core::QTensor& w, const Tensor& bias, float beta) override;
    void quant_norm_swiglu(const Tensor& out, const Tensor& x, const ops::RmsNormFold& norm,
                           const core::QTensor& w_gate_up, const core::QTensor& w_down,
                           const Tensor& h, const Tensor& a, float beta) override;  // qgemv.cpp

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
    void attention_merge(const Tensor& out, const Tensor& lse, const Tensor& part_out,
                         const Tensor& part_lse) override;
    void paged_kv_write(const Tensor& k_cache, const Tensor& v_cache, const Tensor& k,
                        const Tensor& v, std::span<const ops::SeqSlice> seqs) override;
    void paged_attention_forward(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                                 const Tensor& v_cache, std::span<const ops::SeqSlice> seqs,
                                 const ops::AttentionOptions& opts) override;
    void paged_kv_write_quant(const ops::PagedKvCache& cache, const Tensor& k, const Tensor& v,
                              std::span<const ops::SeqSlice> seqs) override;
    void paged_attention_forward_quant(const Tensor& out, const Tensor& q,
                                       const ops::PagedKvCache& cache,
                                       std::span<const ops::SeqSlice> seqs,
                                       const ops::AttentionOptions& opts) override;

    void ulysses_pack_heads(const Tensor& send, const Tensor& x, int64_t at,
                            int64_t repeat) override;
    void ulysses_unpack_heads(const Tensor& x, const Tensor& recv, int64_t at,
                              int64_t repeat) override;
    void ulysses_pack_seq(const Tensor& send, const Tensor& full) override;
    void ulysses_unpack_seq(const Tensor& full, const Tensor& recv) override;

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
