#include "ops/kernels.h"

#include <array>

#include "base/error.h"

namespace zs::ops {

void Kernels::not_supported(std::string_view op) const {
    ZS_THROW(NotSupported, "op '{}' is not implemented by the {} backend", op, name());
}

// Every default throws NotSupported naming the op; a backend overrides what it implements.
void Kernels::matmul(const Tensor&, const Tensor&, const Tensor&, const MatmulOptions&,
                     const Tensor&) {
    not_supported("matmul");
}
void Kernels::sum_rows(const Tensor&, const Tensor&, bool) { not_supported("sum_rows"); }
void Kernels::quant_linear(const Tensor&, const Tensor&, const core::QTensor&, const Tensor&,
                           float) {
    not_supported("quant_linear");
}
void Kernels::quant_swiglu(const Tensor& out, const Tensor& x, const core::QTensor& w_gate_up,
                           const core::QTensor& w_down, const Tensor& h, const Tensor& a,
                           float beta) {
    const int64_t F = w_down.cols();
    quant_linear(h, x, w_gate_up, Tensor(), 0.0f);
    swiglu_forward(a, h.slice(1, 0, F), h.slice(1, F, 2 * F));
    quant_linear(out, a, w_down, Tensor(), beta);
}
void Kernels::quant_norm_linear(const Tensor& out, const Tensor& x, const RmsNormFold& norm,
                                const core::QTensor& w, const Tensor& bias, float beta) {
    rmsnorm_forward(norm.normed, Tensor(), x, norm.weight, norm.eps);
    quant_linear(out, norm.normed, w, bias, beta);
}
void Kernels::quant_norm_swiglu(const Tensor& out, const Tensor& x, const RmsNormFold& norm,
                                const core::QTensor& w_gate_up, const core::QTensor& w_down,
                                const Tensor& h, const Tensor& a, float beta) {
    rmsnorm_forward(norm.normed, Tensor(), x, norm.weight, norm.eps);
    quant_swiglu(out, norm.normed, w_gate_up, w_down, h, a, beta);
}
void Kernels::layernorm_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                const Tensor&, const Tensor&, float) {
    not_supported("layernorm_forward");
}
void Kernels::layernorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                 const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
    not_supported("layernorm_backward");
}
void Kernels::rmsnorm_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, float) {
    not_supported("rmsnorm_forward");
}
void Kernels::rmsnorm_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                               const Tensor&, const Tensor&) {
    not_supported("rmsnorm_backward");
}
void Kernels::gelu_forward(const Tensor&, const Tensor&, GeluKind) {
    not_supported("gelu_forward");
}
void Kernels::gelu_backward(const Tensor&, const Tensor&, const Tensor&, GeluKind) {
    not_supported("gelu_backward");
}
void Kernels::silu_forward(const Tensor&, const Tensor&) { not_supported("silu_forward"); }
void Kernels::silu_backward(const Tensor&, const Tensor&, const Tensor&) {
    not_supported("silu_backward");
}
void Kernels::swiglu_forward(const Tensor&, const Tensor&, const Tensor&) {
    not_supported("swiglu_forward");
}
void Kernels::swiglu_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                              const Tensor&) {
    not_supported("swiglu_backward");
}
void Kernels::add(const Tensor&, const Tensor&, const Tensor&) { not_supported("add"); }
void Kernels::adam_update(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                          const AdamStep&) {
    not_supported("adam_update");
}
void Kernels::scale(const Tensor&, const Tensor&, float) { not_supported("scale"); }
void Kernels::softmax_forward(const Tensor&, const Tensor&) { not_supported("softmax_forward"); }
void Kernels::softmax_backward(const Tensor&, const Tensor&, const Tensor&) {
    not_supported("softmax_backward");
}
void Kernels::rope(const Tensor&, const Tensor&, const RopeTable&, bool) { not_supported("rope"); }
void Kernels::attention_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                const Tensor&, const AttentionOptions&) {
    not_supported("attention_forward");
}
void Kernels::attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                 const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                 const Tensor&, const AttentionOptions&) {
    not_supported("attention_backward");
}
void Kernels::attention_merge(const Tensor&, const Tensor&, const Tensor&, const Tensor&) {
    not_supported("attention_merge");
}
void Kernels::ulysses_pack_heads(const Tensor&, const Tensor&, int64_t, int64_t) {
    not_supported("ulysses_pack_heads");
}
void Kernels::ulysses_unpack_heads(const Tensor&, const Tensor&, int64_t, int64_t) {
    not_supported("ulysses_unpack_heads");
}
void Kernels::ulysses_pack_seq(const Tensor&, const Tensor&) { not_supported("ulysses_pack_seq"); }
void Kernels::ulysses_unpack_seq(const Tensor&, const Tensor&) {
    not_supported("ulysses_unpack_seq");
}
void Kernels::paged_kv_write(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                             std::span<const SeqSlice>) {
    not_supported("paged_kv_write");
}
void Kernels::paged_attention_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                      std::span<const SeqSlice>, const AttentionOptions&) {
    not_supported("paged_attention_forward");
}
void Kernels::paged_kv_write_quant(const PagedKvCache&, const Tensor&, const Tensor&,
                                   std::span<const SeqSlice>) {
    not_supported("paged_kv_write (quantized cache)");
}
void Kernels::paged_attention_forward_quant(const Tensor&, const Tensor&, const PagedKvCache&,
                                            std::span<const SeqSlice>, const AttentionOptions&) {
    not_supported("paged_attention_forward (quantized cache)");
}
void Kernels::embedding_forward(const Tensor&, const Tensor&, const Tensor&, bool) {
    not_supported("embedding_forward");
}
void Kernels::embedding_backward(const Tensor&, const Tensor&, const Tensor&) {
    not_supported("embedding_backward");
}
int64_t Kernels::cross_entropy(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                               const CrossEntropyOptions&) {
    not_supported("cross_entropy");
}
void Kernels::topk_router_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                  const RouterOptions&) {
    not_supported("topk_router_forward");
}
void Kernels::topk_router_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                   const Tensor&, const RouterOptions&) {
    not_supported("topk_router_backward");
}

namespace {
// NOTE(zs): like core's backend table, written at start-up only and read-only afterwards.
std::array<std::unique_ptr<Kernels>, core::kNumDeviceTypes>& table() {
    static std::array<std::unique_ptr<Kernels>, core::kNumDeviceTypes> t;
    return t;
}
}  // namespace

Kernels& kernels_for(core::Device device) {
    auto& k = table()[static_cast<int>(device.type)];
    if (!k) {
        ZS_THROW(NotSupported,
                 "no kernels registered for device '{}' (call backends::register_all() at "
                 "start-up; CUDA needs a -DZS_CUDA=ON build and a GPU)",
                 device.str());
    }
    return *k;
}

bool has_kernels(core::DeviceType type) { return table()[static_cast<int>(type)] != nullptr; }

void register_kernels(core::DeviceType type, std::unique_ptr<Kernels> kernels) {
    table()[static_cast<int>(type)] = std::move(kernels);
}

}  // namespace zs::ops
