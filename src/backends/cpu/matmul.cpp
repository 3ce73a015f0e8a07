// Matmul on the CPU through oneDNN's matmul primitive: bf16 runs on AMX or AVX-512-BF16 where the
// CPU has them, f32 on AVX-512 FMA. f32 products whose right operand is row-major [K, N] (the
// backward passes' dX = dY W and dW = dY^T X) go to OpenBLAS's sgemm instead, which measured
// 1.1-2.5x oneDNN 2.6 there (docs/BENCHMARKS.md); the choice depends only on the shapes and
// strides, so results stay deterministic run to run. Strided views go straight into oneDNN memory
// descriptors, so transposes and slices cost no copies. Primitives are cached by their full
// signature (creating one costs far more than running a small one).
#include <algorithm>
#include <limits>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <cblas.h>
#include <fmt/format.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/gemv.h"
#include "backends/cpu/parallel.h"
#include "ops/activation.h"

namespace zs::backends::cpu {

using core::DType;

namespace {

const char* isa_name(dnnl::cpu_isa isa) {
    switch (isa) {
        case dnnl::cpu_isa::avx512_core_amx:
            return "avx512_core_amx (AMX bf16/int8)";
        case dnnl::cpu_isa::avx512_core_bf16:
            return "avx512_core_bf16 (AVX-512 BF16)";
        case dnnl::cpu_isa::avx512_core_vnni:
            return "avx512_core_vnni (no native bf16)";
        case dnnl::cpu_isa::avx512_core:
            return "avx512_core (no native bf16)";
        case dnnl::cpu_isa::avx2_vnni:
            return "avx2_vnni (no native bf16)";
        case dnnl::cpu_isa::avx2:
            return "avx2 (no native bf16)";
        default:
            return "older than avx2 (no native bf16)";
    }
}

// OpenBLAS cores with AVX2 or AVX-512 sgemm kernels. Anything else (Debian's 0.3.21 calls CPUs it
// does not know "Prescott" and runs SSE3 kernels, ~5x slower) keeps f32 GEMMs on oneDNN.
bool fast_openblas_core(const std::string& core) {
    for (const char* c : {"Haswell", "SkylakeX", "Cooperlake", "SapphireRapids", "Zen"}) {
        if (core == c) return true;
    }
    return false;
}

}  // namespace

const MatmulRoutes& matmul_routes() {
    static const MatmulRoutes routes = [] {
        MatmulRoutes r;
        const dnnl::cpu_isa isa = dnnl::get_effective_cpu_isa();
        r.onednn_isa = isa_name(isa);
        // Without AVX-512 BF16 / AMX, oneDNN emulates bf16 products (0.3x of its f32 GEMM on an
        // Ice Lake server); matmul_bf16_via_f32 widens them instead.
        r.native_bf16 =
            isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
        r.onednn_16bit = r.native_bf16 || isa == dnnl::cpu_isa::avx512_core ||
                         isa == dnnl::cpu_isa::avx512_core_vnni;
        const char* core = openblas_get_corename();
        r.openblas_core = core ? core : "unknown";
        r.openblas_used = fast_openblas_core(r.openblas_core);
        return r;
    }();
    return routes;
}

std::string describe_matmul_routes() {
    const MatmulRoutes& r = matmul_routes();
    return fmt::format("oneDNN ISA {}: bf16 GEMMs {}; OpenBLAS core {}: {}", r.onednn_isa,
                       r.native_bf16 ? "native" : "widened to f32", r.openblas_core,
                       r.openblas_used
                           ? "f32 GEMMs with a row-major right operand"
                           : "not used (generic kernels; OPENBLAS_CORETYPE=SkylakeX names a core)");
}

struct CpuKernels::MatmulCache {
    dnnl::engine engine{dnnl::engine::kind::cpu, 0};
    std::mutex mu;  // guards prims / lru
    static constexpr size_t kCapacity = 512;
    std::list<std::string> lru;  // front = most recent
    struct Entry {
        dnnl::matmul prim;
        dnnl::memory::desc scratch;  // user-managed scratchpad (see below)
        std::list<std::string>::iterator lru_pos;
    };
    std::unordered_map<std::string, Entry> prims;
};

CpuKernels::CpuKernels() : mm_(std::make_unique<MatmulCache>()) {}
CpuKernels::~CpuKernels() = default;

namespace {

dnnl::memory::data_type dnnl_type(DType t) {
    return t == DType::bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
}

struct MatDesc {
    dnnl::memory::dims dims, strides;
};

// Describe the logical matrix op(t) = [..., R, C] with t's strides (swapping the last two when
// transposed). `batch` is the batch shape of the result; a 2-D operand broadcasts (dims of 1).
MatDesc describe(const Tensor& t, bool trans, const core::Shape& batch) {
    MatDesc d;
    int n = t.dim();
    for (int i = 0; i < batch.ndim(); ++i) {
        if (n > 2) {
            d.dims.push_back(t.size(i));
            d.strides.push_back(t.stride(i));
        } else {
            d.dims.push_back(1);
            d.strides.push_back(0);
        }
    }
    int64_t r = t.size(-2), c = t.size(-1), sr = t.stride(-2), sc = t.stride(-1);
    if (trans) {
        std::swap(r, c);
        std::swap(sr, sc);
    }
    // oneDNN wants a unit stride on the unit-length dims too; make degenerate strides canonical.
    if (r == 1) sr = c == 1 ? 1 : c * sc;
    if (c == 1) sc = sr == 1 && r > 1 ? r : 1;
    if (r == 1 && c == 1) {
        sr = 1;
        sc = 1;
    }
    d.dims.push_back(r);
    d.dims.push_back(c);
    d.strides.push_back(sr);
    d.strides.push_back(sc);
    return d;
}

std::string key_of(const MatDesc& a, const MatDesc& b, const MatDesc& o, DType ta, DType to,
                   int bias_type, float alpha, float beta) {
    std::string k = fmt::format("{}{}{}|{}|{}|", static_cast<int>(ta), static_cast<int>(to),
                                bias_type, alpha, beta);
    for (const MatDesc* d : {&a, &b, &o}) {
        for (size_t i = 0; i < d->dims.size(); ++i)
            k += fmt::format("{}:{},", d->dims[i], d->strides[i]);
        k += '|';
    }
    return k;
}

// out = alpha * op(a) op(b) + beta * out through OpenBLAS, for plain 2-D f32 products whose B is
// row-major [K, N] and big enough to amortise OpenBLAS's packing. Returns false (nothing done)
// for anything else.
bool try_openblas(const Tensor& out, const Tensor& a, const Tensor& b,
                  const ops::MatmulOptions& opts, const Tensor& bias) {
    if (!matmul_routes().openblas_used) return false;
    if (bias.defined() || out.dim() != 2 || a.dim() != 2 || b.dim() != 2) return false;
    if (a.dtype() != DType::f32 || b.dtype() != DType::f32 || out.dtype() != DType::f32)
        return false;
    if (out.stride(1) != 1) return false;
    const int64_t M = out.size(0), N = out.size(1), K = opts.trans_a ? a.size(0) : a.size(1);
    if (std::min({M, N, K}) < 128 || M * N * K < (int64_t{1} << 27)) return false;
    // op(b) as [K, N] must be row-major (unit stride along N): oneDNN's slow case.
    const bool b_rows = opts.trans_b ? b.stride(0) == 1 : b.stride(1) == 1;
    const int64_t ldb = opts.trans_b ? b.stride(1) : b.stride(0);
    if (!b_rows || ldb < N) return false;
    // op(a) as [M, K]: either layout; BLAS takes it as (possibly transposed) row-major.
    const int64_t as_rows = opts.trans_a ? a.stride(0) : a.stride(1);  // stride along K
    const int64_t as_cols = opts.trans_a ? a.stride(1) : a.stride(0);  // stride along M
    CBLAS_TRANSPOSE ta;
    int64_t lda;
    if (as_rows == 1 && as_cols >= K) {
        ta = CblasNoTrans;
        lda = as_cols;
    } else if (as_cols == 1 && as_rows >= M) {
        ta = CblasTrans;
        lda = as_rows;
    } else {
        return false;
    }
    const int64_t limit = std::numeric_limits<int>::max();
    if (std::max({M, N, K, lda, ldb, out.stride(0)}) > limit) return false;
    // OpenBLAS's OpenMP build sizes its team from omp_get_max_threads() at each call, so a
    // thread-rank's own thread count holds.
    cblas_sgemm(CblasRowMajor, ta, CblasNoTrans, static_cast<int>(M), static_cast<int>(N),
                static_cast<int>(K), opts.alpha, a.data<float>(), static_cast<int>(lda),
                b.data<float>(), static_cast<int>(ldb), opts.beta, out.data<float>(),
                static_cast<int>(out.stride(0)));
    return true;
}

bool native_bf16() { return matmul_routes().native_bf16; }

}  // namespace

// bf16 operands on a CPU without native bf16: bf16 operands are widened to f32 (whole when they
// fit in 16 MiB of f32, else a block of output columns at a time; tracked as buffers) and the
// product runs as an f32 matmul. bf16 x bf16 products are exact in f32 and accumulation is f32
// either way, so this is the same computation at the f32 GEMM's speed. Layouts are kept (a
// transposed operand stays transposed), so the f32 product takes the same oneDNN/OpenBLAS route
// as an f32 model's.
bool CpuKernels::matmul_bf16_via_f32(const Tensor& out, const Tensor& a, const Tensor& b,
                                     const ops::MatmulOptions& opts, const Tensor& bias) {
    if (native_bf16() || (a.dtype() != DType::bf16 && b.dtype() != DType::bf16)) return false;
    if (a.dtype() == DType::f16 || b.dtype() == DType::f16) return false;
    if (out.dim() != 2 || a.dim() != 2 || b.dim() != 2) return false;
    if (a.stride(1) != 1 || b.stride(1) != 1) return false;  // rows convert as runs
    const int64_t M = out.size(0), N = out.size(1), K = opts.trans_a ? a.size(0) : a.size(1);
    // Few rows: oneDNN's emulated bf16 is cheaper than widening the weights, where it has one
    // (AVX-512); on an AVX2 CPU there is no 16-bit oneDNN matmul, and blocks bound the copies.
    if (K == 0 || (M < 16 && matmul_routes().onednn_16bit)) return false;
    constexpr int64_t kBudget = int64_t{4} << 20;  // f32 elements (16 MiB) per widened operand
    // A 2-D view with unit inner stride, widened into buf (rows in parallel).
    auto widen = [](const Tensor& t, Tensor& buf) -> Tensor {
        if (t.dtype() == DType::f32) return t;
        const int64_t rows = t.size(0), cols = t.size(1);
        if (!buf.defined() || buf.numel() < rows * cols)
            buf = Tensor::empty({rows * cols}, DType::f32, core::Device::cpu(),
                                core::MemCategory::buffers);
        float* dst = buf.data<float>();
        const auto* src = static_cast<const bf16*>(t.data_ptr());
        const int64_t ld = t.stride(0);
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMinElems)
        for (int64_t r = 0; r < rows; ++r)
            core::convert_bf16_to_f32(dst + r * cols, src + r * ld, static_cast<size_t>(cols));
        return buf.slice(0, 0, rows * cols).view({rows, cols});
    };
    const Tensor bias32 = bias.defined() && bias.dtype() != DType::f32 ? bias.to(DType::f32) : bias;
    Tensor abuf, bbuf;
    // op(t) rows [m0, m1) of an a-operand are t's rows, or t's columns when transposed; op(t)
    // columns [n0, n1) of a b-operand are t's rows when transposed, else its columns. The same
    // slicing serves the operand and its widened copy (same layout).
    auto op_a_rows = [&](const Tensor& t, int64_t m0, int64_t m1) {
        return opts.trans_a ? t.slice(1, m0, m1) : t.slice(0, m0, m1);
    };
    auto op_b_cols = [&](const Tensor& t, int64_t n0, int64_t n1) {
        return opts.trans_b ? t.slice(0, n0, n1) : t.slice(1, n0, n1);
    };
    const bool a_whole = a.dtype() == DType::f32 || M * K <= kBudget;
    const bool b_whole = b.dtype() == DType::f32 || N * K <= kBudget;
    const int64_t mb = a_whole ? M : std::max<int64_t>(16, kBudget / K);
    const int64_t nb = b_whole ? N : std::max<int64_t>(16, kBudget / K);
    // Each operand is widened once when whole; when both are blocked, b's blocks (the weights,
    // usually) are widened once each and a's blocks once per b block.
    const Tensor af = a_whole ? widen(a, abuf) : Tensor();
    const Tensor bf = b_whole ? widen(b, bbuf) : Tensor();
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
        const int64_t n1 = std::min(N, n0 + nb);
        const Tensor bblk = b_whole ? op_b_cols(bf, n0, n1) : widen(op_b_cols(b, n0, n1), bbuf);
        for (int64_t m0 = 0; m0 < M; m0 += mb) {
            const int64_t m1 = std::min(M, m0 + mb);
            const Tensor ablk = a_whole ? op_a_rows(af, m0, m1) : widen(op_a_rows(a, m0, m1), abuf);
            matmul(out.slice(0, m0, m1).slice(1, n0, n1), ablk, bblk, opts,
                   bias32.defined() ? bias32.slice(0, n0, n1) : Tensor());
        }
    }
    return true;
}

void CpuKernels::matmul(const Tensor& out, const Tensor& a, const Tensor& b,
                        const ops::MatmulOptions& opts, const Tensor& bias) {
    // An f32 product rounded once into a 16-bit out (beta reads out's values first).
    auto via_f32_out = [&](const Tensor& a32, const Tensor& b32, const Tensor& bias32) {
        Tensor tmp = opts.beta != 0.0f ? out.contiguous().to(DType::f32)
                                       : Tensor::empty(out.shape(), DType::f32, out.device(),
                                                       core::MemCategory::buffers);
        matmul(tmp, a32, b32, opts, bias32);
        out.copy_from(tmp);
    };
    // oneDNN has no f32 x f32 -> bf16 matmul: compute in f32, then round once.
    if (a.dtype() == DType::f32 && out.dtype() == DType::bf16) return via_f32_out(a, b, bias);
    // Decode-shaped products (a few rows against a row-major [N, K] weight, the linear layout):
    // a bandwidth-bound kernel that reads each weight row once.
    if (out.dim() == 2 && !opts.trans_a && opts.trans_b && out.size(0) <= kSkinnyMaxRows &&
        a.stride(1) == 1 && b.stride(1) == 1 && out.stride(1) == 1 &&
        (!bias.defined() || bias.dtype() == DType::f32 || bias.dtype() == DType::bf16)) {
        SkinnyArgs g;
        g.m = out.size(0);
        g.n = out.size(1);
        g.k = a.size(1);
        g.a = a.data_ptr();
        g.lda = a.stride(0);
        g.w = b.data_ptr();
        g.ldw = b.stride(0);
        g.out = out.data_ptr();
        g.ldo = out.stride(0);
        g.bias = bias.defined() ? bias.data_ptr() : nullptr;
        g.a_dtype = a.dtype();
        g.w_dtype = b.dtype();
        g.out_dtype = out.dtype();
        g.bias_dtype = bias.defined() ? bias.dtype() : DType::f32;
        g.alpha = opts.alpha;
        g.beta = opts.beta;
        skinny_matmul(g);
        return;
    }
    if (matmul_bf16_via_f32(out, a, b, opts, bias)) return;
    if (!matmul_routes().onednn_16bit) {
        // No 16-bit matmul in oneDNN on this CPU (AVX2): the remaining shapes (few rows,
        // batched, strided operands) on f32 copies of the 16-bit tensors, rounded once into a
        // 16-bit output. bf16 / f16 products are exact in f32, accumulation is f32 either way.
        auto narrow = [](const Tensor& t) {
            return t.defined() && (t.dtype() == DType::bf16 || t.dtype() == DType::f16);
        };
        if (narrow(a) || narrow(b) || narrow(out) || narrow(bias)) {
            auto wide = [&](const Tensor& t) {
                return narrow(t) ? t.contiguous().to(DType::f32) : t;
            };
            if (narrow(out)) return via_f32_out(wide(a), wide(b), wide(bias));
            return matmul(out, wide(a), wide(b), opts, wide(bias));
        }
    }
    if (try_openblas(out, a, b, opts, bias)) return;
    core::Shape batch;
    for (int i = 0; i < out.dim() - 2; ++i) batch.push_back(out.size(i));
    int64_t k = opts.trans_a ? a.size(-2) : a.size(-1);
    if (k == 0) {
        // Nothing to multiply: out = beta * out (+ bias), done on an f32 copy (a rare edge case).
        Tensor t = Tensor::zeros(out.shape(), DType::f32, out.device(), core::MemCategory::buffers);
        if (opts.beta != 0.0f) {
            t.copy_from(out);
            ops::scale(t, t, opts.beta);
        }
        if (bias.defined()) {
            Tensor bf = bias.to(DType::f32);
            float* tp = t.data<float>();
            const float* bp = bf.data<float>();
            int64_t n = out.size(-1);
            for (int64_t i = 0; i < t.numel(); ++i) tp[i] += bp[i % n];
        }
        out.copy_from(t);
        return;
    }
    MatDesc da = describe(a, opts.trans_a, batch);
    MatDesc db = describe(b, opts.trans_b, batch);
    MatDesc dout = describe(out, false, batch);
    int bias_type = bias.defined() ? 1 + static_cast<int>(bias.dtype()) : 0;
    std::string key =
        key_of(da, db, dout, a.dtype(), out.dtype(), bias_type, opts.alpha, opts.beta);

    dnnl::matmul prim;
    dnnl::memory::desc scratch_md;
    {
        std::lock_guard<std::mutex> lock(mm_->mu);
        auto it = mm_->prims.find(key);
        if (it != mm_->prims.end()) {
            mm_->lru.splice(mm_->lru.begin(), mm_->lru, it->second.lru_pos);
            prim = it->second.prim;
            scratch_md = it->second.scratch;
        }
    }
    using md = dnnl::memory::desc;
    md a_md(da.dims, dnnl_type(a.dtype()), da.strides);
    md b_md(db.dims, dnnl_type(b.dtype()), db.strides);
    md o_md(dout.dims, dnnl_type(out.dtype()), dout.strides);
    md bias_md;
    if (bias.defined()) {
        dnnl::memory::dims bd(dout.dims.size(), 1), bs(dout.dims.size(), out.size(-1));
        bd.back() = out.size(-1);
        bs.back() = 1;
        bias_md = md(bd, dnnl_type(bias.dtype()), bs);
    }
    if (!prim) {
        dnnl::primitive_attr attr;
        // User-managed scratchpad: the library's per-primitive scratchpad would be shared by
        // concurrent executions of one cached primitive (thread-ranks, server threads).
        attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        if (opts.alpha != 1.0f) attr.set_output_scales(0, {opts.alpha});
        if (opts.beta != 0.0f) {
            dnnl::post_ops po;
            po.append_sum(opts.beta);
            attr.set_post_ops(po);
        }
        auto desc = bias.defined() ? dnnl::matmul::desc(a_md, b_md, bias_md, o_md)
                                   : dnnl::matmul::desc(a_md, b_md, o_md);
        dnnl::matmul::primitive_desc pd(desc, attr, mm_->engine);
        scratch_md = pd.scratchpad_desc();
        prim = dnnl::matmul(pd);
        std::lock_guard<std::mutex> lock(mm_->mu);
        if (mm_->prims.find(key) == mm_->prims.end()) {
            if (mm_->prims.size() >= MatmulCache::kCapacity) {
                mm_->prims.erase(mm_->lru.back());
                mm_->lru.pop_back();
            }
            mm_->lru.push_front(key);
            mm_->prims.emplace(key, MatmulCache::Entry{prim, scratch_md, mm_->lru.begin()});
        }
    }
    dnnl::stream stream(mm_->engine);
    dnnl::memory am(a_md, mm_->engine, a.data_ptr());
    dnnl::memory bm(b_md, mm_->engine, b.data_ptr());
    dnnl::memory om(o_md, mm_->engine, out.data_ptr());
    std::unordered_map<int, dnnl::memory> args{
        {DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, om}};
    if (bias.defined())
        args.emplace(DNNL_ARG_BIAS, dnnl::memory(bias_md, mm_->engine, bias.data_ptr()));
    // Per-thread scratchpad, grown on demand.
    thread_local std::vector<unsigned char> scratch;
    if (scratch_md.get_size() > 0) {
        if (scratch.size() < scratch_md.get_size()) scratch.resize(scratch_md.get_size());
        args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(scratch_md, mm_->engine, scratch.data()));
    }
    prim.execute(stream, args);
    stream.wait();
}

void CpuKernels::sum_rows(const Tensor& out, const Tensor& in, bool accumulate) {
    Rows r = *ops::rows_of(in);
    float* o = out.data<float>();
    const int64_t C = r.cols;
    // Column blocks in parallel, rows summed in order: deterministic and race-free.
    constexpr int64_t kBlock = 256;
    int64_t nb = (C + kBlock - 1) / kBlock;
    dispatch_float(in.dtype(), [&](auto t) {
        using T = decltype(t);
        const T* base = static_cast<const T*>(in.data_ptr());
#pragma omp parallel for schedule(static) if (r.n * C >= kParallelMinElems)
        for (int64_t blk = 0; blk < nb; ++blk) {
            int64_t c0 = blk * kBlock, c1 = std::min(C, c0 + kBlock);
            for (int64_t c = c0; c < c1; c += kLanes) {
                int n = static_cast<int>(std::min<int64_t>(kLanes, c1 - c));
                VecF acc = accumulate ? vload(o + c, n) : vzero();
                for (int64_t i = 0; i < r.n; ++i) acc = acc + vload(base + i * r.stride + c, n);
                vstore(o + c, acc, n);
            }
        }
    });
}

}  // namespace zs::backends::cpu
