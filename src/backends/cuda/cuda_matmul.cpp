// Matmul on CUDA through cuBLAS (cublasGemmStridedBatchedEx_64, fp32 compute: bf16 runs on tensor
// cores, f32 stays true f32, never TF32), then our epilogue kernel for the bias.
//
// Layout: cuBLAS is column-major. A row-major operand is the transpose of a column-major one, so
// any matrix with a unit stride in one of its last two dims maps to (op, ld) without a copy. The
// product is computed as out = op(a) op(b) when out is column-major, else as
// out^T = op(b)^T op(a)^T. Batch dims are merged wherever a, b and out stride them uniformly; the
// innermost merged run is one strided-batched call (a 2-D b has batch stride 0) and any outer run
// is a host loop.
//
// f32 x f32 -> bf16 has no cuBLAS kernel: it is computed into an f32 temporary and rounded once
// in the epilogue, like the CPU path does.
//
// quant_linear (block-quantized weights in the file layout, quant.cu: q8_0, q4_0, q4_1, q5_0,
// q5_1, q4_k, q6_k): up to kQuantGemvMaxRows activation rows take the GEMV that reads the blocks
// directly. More rows (prefill) dequantize a slice of weight rows
// into a scratch tile of the activations' dtype (bf16: tensor cores) and multiply it with the
// cuBLAS path above, tile after tile on the one stream, so the scratch is reused and bounded
// (kQuantTileBytes) and no full-precision copy of the matrix lives on the device. This costs one
// write and one read of the tile per call; against a fused dequantize-in-shared-memory GEMM that
// is small beside the M x N x K product once M is large enough to leave the GEMV.
#include <algorithm>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/launch.h"
#include "core/quant.h"

namespace zs::backends::cuda {

using core::DType;

namespace {

// A logical matrix [rows, cols]: element (i, j) at i * s0 + j * s1.
struct Mat {
    int64_t rows, cols, s0, s1;
    Mat t() const { return {cols, rows, s1, s0}; }
};

Mat logical(const Tensor& x, bool trans) {
    Mat m{x.size(-2), x.size(-1), x.stride(-2), x.stride(-1)};
    return trans ? m.t() : m;
}

// cuBLAS view of a logical matrix: op(stored) == it, stored column-major with leading dim ld.
struct BlasMat {
    cublasOperation_t op;
    int64_t ld;
};

std::optional<BlasMat> as_blas(const Mat& m) {
    const int64_t r = m.rows, c = m.cols;
    if (m.s0 == 1 || r <= 1) {  // column-major: (i, j) at i + j * ld
        int64_t ld = c <= 1 ? std::max<int64_t>(r, 1) : m.s1;
        if (ld >= std::max<int64_t>(r, 1)) return BlasMat{CUBLAS_OP_N, ld};
    }
    if (m.s1 == 1 ||
        c <= 1) {  // row-major = transpose of column-major [c, r]: (i, j) at j + i * ld
        int64_t ld = r <= 1 ? std::max<int64_t>(c, 1) : m.s0;
        if (ld >= std::max<int64_t>(c, 1)) return BlasMat{CUBLAS_OP_T, ld};
    }
    return std::nullopt;
}

// One GEMM shape for cuBLAS: C[m, n] = op(A)[m, k] op(B)[k, n], all column-major. `swap` means A
// is the tensor b and B the tensor a (the out^T form).
struct Plan {
    bool swap;
    int64_t m, n, k;
    BlasMat A, B, C;
};

std::optional<Plan> plan(const Mat& out, const Mat& a, const Mat& b) {
    // Direct: out = a b, out column-major.
    if (auto c = as_blas(out); c && c->op == CUBLAS_OP_N) {
        auto A = as_blas(a), B = as_blas(b);
        if (A && B) return Plan{false, out.rows, out.cols, a.cols, *A, *B, *c};
    }
    // Transposed: out^T = b^T a^T, out^T column-major.
    if (auto c = as_blas(out.t()); c && c->op == CUBLAS_OP_N) {
        auto A = as_blas(b.t()), B = as_blas(a.t());
        if (A && B) return Plan{true, out.cols, out.rows, a.cols, *A, *B, *c};
    }
    return std::nullopt;
}

cudaDataType_t blas_type(DType t) { return t == DType::bf16 ? CUDA_R_16BF : CUDA_R_32F; }

FloatType float_type(DType t) { return t == DType::bf16 ? FloatType::bf16 : FloatType::f32; }

NdArg nd_arg(const Tensor& t) {
    NdArg a;
    a.data = t.data_ptr();
    a.type = float_type(t.dtype());
    a.ndim = t.dim();
    for (int i = 0; i < t.dim(); ++i) {
        a.shape[i] = t.size(i);
        a.strides[i] = t.stride(i);
    }
    return a;
}

// A batch dimension after merging: size and the element stride of a, b and out along it.
struct BatchDim {
    int64_t size, sa, sb, so;
};

std::vector<BatchDim> merged_batch(const Tensor& out, const Tensor& a, const Tensor& b) {
    std::vector<BatchDim> dims;  // outermost first
    const bool b_batched = b.dim() > 2;
    for (int i = 0; i < out.dim() - 2; ++i) {
        if (out.size(i) == 1) continue;
        BatchDim d{out.size(i), a.stride(i), b_batched ? b.stride(i) : 0, out.stride(i)};
        if (!dims.empty()) {
            BatchDim& p = dims.back();
            if (p.sa == d.sa * d.size && p.sb == d.sb * d.size && p.so == d.so * d.size) {
                p = {p.size * d.size, d.sa, d.sb, d.so};
                continue;
            }
        }
        dims.push_back(d);
    }
    return dims;
}

}  // namespace

void CudaKernels::matmul(const Tensor& out, const Tensor& a, const Tensor& b,
                         const ops::MatmulOptions& opts, const Tensor& bias) {
    const int64_t k = opts.trans_a ? a.size(-2) : a.size(-1);
    const FloatType bias_type = bias.defined() ? float_type(bias.dtype()) : FloatType::f32;
    const void* bias_ptr = bias.defined() ? bias.data_ptr() : nullptr;
    cudaStream_t s = stream();
    NdArg out_nd = nd_arg(out);
    if (k == 0) {
        // Nothing to multiply: out = beta * out (+ bias); out is not read when beta == 0.
        launch_matmul_epilogue(s, out_nd, opts.beta != 0.0f ? &out_nd : nullptr, opts.beta,
                               bias_ptr, bias_type);
        return;
    }
    Mat ma = logical(a, opts.trans_a), mb = logical(b, opts.trans_b), mo = logical(out, false);
    std::optional<Plan> p = plan(mo, ma, mb);
    // Operands no plan can take (e.g. rows that overlap) are copied contiguous; an output that
    // cuBLAS cannot write, or an f32 -> bf16 product, goes through an f32 temporary.
    if (!p && !as_blas(ma)) return matmul(out, a.contiguous(), b, opts, bias);
    if (!p && !as_blas(mb)) return matmul(out, a, b.contiguous(), opts, bias);
    const bool via_temp = !p || (a.dtype() == DType::f32 && out.dtype() == DType::bf16);
    Tensor c = out;
    if (via_temp) {
        c = Tensor::empty(out.shape(), DType::f32, out.device(), core::MemCategory::buffers);
        if (opts.beta != 0.0f) {
            NdArg c_nd = nd_arg(c);
            launch_matmul_epilogue(s, c_nd, &out_nd, 1.0f, nullptr, FloatType::f32);
        }
        p = plan(logical(c, false), ma, mb);
        ZS_ASSERT(p.has_value(), "matmul: no cuBLAS plan for a contiguous output");
    }

    const std::vector<BatchDim> dims = merged_batch(c, a, b);
    // The innermost merged dim is the cuBLAS batch; outer dims are looped here.
    BatchDim inner = dims.empty() ? BatchDim{1, 0, 0, 0} : dims.back();
    int64_t outer_count = 1;
    for (size_t i = 0; i + 1 < dims.size(); ++i) outer_count *= dims[i].size;

    const Plan& pl = *p;
    const Tensor& A = pl.swap ? b : a;
    const Tensor& B = pl.swap ? a : b;
    const int64_t strideA = pl.swap ? inner.sb : inner.sa;
    const int64_t strideB = pl.swap ? inner.sa : inner.sb;
    const cudaDataType_t in_type = blas_type(a.dtype());
    const cudaDataType_t out_type = blas_type(c.dtype());
    const float alpha = opts.alpha, beta = opts.beta;
    const size_t in_es = a.element_size(), out_es = c.element_size();
    {
        std::lock_guard<std::mutex> lock(ctx_->cublas_mutex());
        for (int64_t o = 0; o < outer_count; ++o) {
            // Element offsets of this outer batch index (row-major over the outer dims).
            int64_t rem = o, off_a = 0, off_b = 0, off_o = 0;
            for (size_t i = dims.size() > 1 ? dims.size() - 1 : 0; i-- > 0;) {
                int64_t idx = rem % dims[i].size;
                rem /= dims[i].size;
                off_a += idx * dims[i].sa;
                off_b += idx * dims[i].sb;
                off_o += idx * dims[i].so;
            }
            const int64_t offA = pl.swap ? off_b : off_a, offB = pl.swap ? off_a : off_b;
            const auto* pa = static_cast<const char*>(A.data_ptr()) + offA * in_es;
            const auto* pb = static_cast<const char*>(B.data_ptr()) + offB * in_es;
            auto* pc = static_cast<char*>(c.data_ptr()) + off_o * out_es;
            ZS_CUBLAS_CHECK(cublasGemmStridedBatchedEx_64(
                ctx_->cublas(), pl.A.op, pl.B.op, pl.m, pl.n, pl.k, &alpha, pa, in_type, pl.A.ld,
                strideA, pb, in_type, pl.B.ld, strideB, &beta, pc, out_type, pl.C.ld, inner.so,
                inner.size, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        }
    }
    if (via_temp) {
        NdArg c_nd = nd_arg(c);
        launch_matmul_epilogue(s, out_nd, &c_nd, 1.0f, bias_ptr, bias_type);
    } else if (bias_ptr != nullptr) {
        launch_matmul_epilogue(s, out_nd, &out_nd, 1.0f, bias_ptr, bias_type);
    }
}

namespace {

// Scratch budget of one prefill tile of dequantized weights.
constexpr int64_t kQuantTileBytes = int64_t{32} << 20;

QuantArg quant_arg(const core::QTensor& w) {
    ZS_CHECK_T(NotSupported, w.layout() == core::QLayout::rows,
               "quant_linear: the cuda kernels read the file layout; {} is repacked for the CPU "
               "(QTensor::to(Device::cuda()) copies the rows layout)",
               w.str());
    QuantArg a;
    a.data = w.data();
    a.row_bytes = w.row_bytes();
    size_t align = 1;
    switch (w.type()) {
        case core::QType::q8_0:
            a.type = QuantType::q8_0;
            align = 2;
            break;
        case core::QType::q4_k:
            a.type = QuantType::q4_k;
            align = 4;
            break;
        case core::QType::q4_0:
            a.type = QuantType::q4_0;
            break;
        case core::QType::q4_1:
            a.type = QuantType::q4_1;
            break;
        case core::QType::q5_0:
            a.type = QuantType::q5_0;
            break;
        case core::QType::q5_1:
            a.type = QuantType::q5_1;
            break;
        case core::QType::q6_k:
            a.type = QuantType::q6_k;
            break;
        case core::QType::q5_k:
        case core::QType::q8_k:
            ZS_THROW(NotSupported,
                     "quant_linear: the cuda backend has kernels for q8_0, q4_0, q4_1, q5_0, q5_1, "
                     "q4_k and q6_k weights, not {} ({})",
                     core::to_string(w.type()), w.str());
    }
    ZS_CHECK_T(NotSupported, reinterpret_cast<uintptr_t>(w.data()) % align == 0,
               "quant_linear: {} starts at a device address that is not {}-byte aligned", w.str(),
               align);
    return a;
}

}  // namespace

void CudaKernels::quant_linear(const Tensor& out, const Tensor& x, const core::QTensor& w,
                               const Tensor& bias, float beta) {
    const QuantArg qa = quant_arg(w);
    const int64_t M = x.size(0), K = x.size(1), N = w.rows();
    ZS_CHECK_T(ShapeError, K % core::qtype_traits(w.type()).block_size == 0,
               "quant_linear: K = {} is not a multiple of {}'s block of {}", K,
               core::to_string(w.type()), core::qtype_traits(w.type()).block_size);
    if (M == 0 || N == 0) return;
    const FloatType bias_type = bias.defined() ? float_type(bias.dtype()) : FloatType::f32;
    if (M <= kQuantGemvMaxRows) {
        const RowsArg xa{x.data_ptr(), x.stride(0), float_type(x.dtype())};
        const RowsArg oa{out.data_ptr(), out.stride(0), float_type(out.dtype())};
        launch_quant_gemv(stream(), qa, N, K, xa, M, oa, beta,
                          bias.defined() ? bias.data_ptr() : nullptr, bias_type);
        return;
    }
    const int64_t row_tile_bytes = std::max<int64_t>(K * static_cast<int64_t>(x.element_size()), 1);
    int64_t tile_rows = std::min(N, std::max<int64_t>(kQuantTileBytes / row_tile_bytes, 1));
    if (tile_rows >= 64 && tile_rows < N) tile_rows -= tile_rows % 64;
    Tensor tile =
        Tensor::empty({tile_rows, K}, x.dtype(), out.device(), core::MemCategory::buffers);
    for (int64_t n0 = 0; n0 < N; n0 += tile_rows) {
        const int64_t nn = std::min(tile_rows, N - n0);
        QuantArg part = qa;
        part.data = w.data() + n0 * w.row_bytes();
        launch_quant_dequantize(stream(), part, nn, K, tile.data_ptr(), float_type(x.dtype()));
        matmul(out.slice(1, n0, n0 + nn), x, tile.slice(0, 0, nn), {.trans_b = true, .beta = beta},
               bias.defined() ? bias.slice(0, n0, n0 + nn) : Tensor());
    }
}

}  // namespace zs::backends::cuda
