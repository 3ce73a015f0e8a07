// Host glue of the CUDA kernel table (all ops but matmul): turns validated Tensors into the plain
// launch arguments of launch.h, allocates scratch from the device pool, and turns device-side
// reports of bad user input (ids, targets, positions) into zs::Error with the CPU's messages.
#include "backends/cuda/cuda_kernels.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cuda/launch.h"
#include "core/buffer.h"
#include "ops/layout.h"

namespace zs::backends::cuda {

using core::DType;

namespace {

FloatType float_type(const char* op, const Tensor& t) {
    switch (t.dtype()) {
        case DType::f32:
            return FloatType::f32;
        case DType::bf16:
            return FloatType::bf16;
        case DType::f16:
        case DType::i8:
        case DType::i32:
        case DType::i64:
            break;
    }
    ZS_THROW(NotSupported, "{}: the cuda backend has no kernel for {}", op, t.str());
}

IndexType index_type(const char* op, const Tensor& t) {
    switch (t.dtype()) {
        case DType::i32:
            return IndexType::i32;
        case DType::i64:
            return IndexType::i64;
        case DType::f32:
        case DType::bf16:
        case DType::f16:
        case DType::i8:
            break;
    }
    ZS_THROW(NotSupported, "{}: the cuda backend takes i32 or i64 indices, got {}", op, t.str());
}

RowsArg rows_arg(const char* op, const Tensor& t) {
    auto r = ops::rows_of(t);
    ZS_ASSERT(r.has_value(), "{}: {} is not a row layout (the op API validates this)", op, t.str());
    return {t.data_ptr(), r->stride, float_type(op, t)};
}

// Iteration space of a pointwise op: its rows, or one long row when every argument is contiguous.
struct Space {
    int64_t n = 0, cols = 0;
    bool flat = false;
};

Space space_of(std::initializer_list<const Tensor*> ts) {
    bool flat = true;
    for (const Tensor* t : ts) flat = flat && t->is_contiguous();
    const Tensor& ref = **ts.begin();
    if (flat) return {1, ref.numel(), true};
    ops::Rows r = *ops::rows_of(ref);
    return {r.n, r.cols, false};
}

RowsArg arg_in(const char* op, const Tensor& t, const Space& s) {
    if (s.flat) return {t.data_ptr(), s.cols, float_type(op, t)};
    return rows_arg(op, t);
}

// Device scratch of `floats` f32 values, accounted under MemCategory::buffers; freed
// stream-ordered when the last reference drops.
std::shared_ptr<core::Buffer> scratch(core::Device dev, size_t floats) {
    return core::Buffer::allocate(floats * sizeof(float), dev, core::MemCategory::buffers);
}

// A few 64-bit words kernels report into: the first `zeros` start at 0 (counters), the rest at
// kNoBadIndex (smallest bad position).
class Reports {
public:
    Reports(core::Device dev, cudaStream_t stream, int words, int zeros)
        : words_(words),
          buf_(core::Buffer::allocate(sizeof(uint64_t) * words, dev, core::MemCategory::buffers)) {
        auto* p = static_cast<unsigned char*>(buf_->data());
        if (zeros > 0) ZS_CUDA_CHECK(cudaMemsetAsync(p, 0, sizeof(uint64_t) * zeros, stream));
        if (words > zeros) {
            ZS_CUDA_CHECK(cudaMemsetAsync(p + sizeof(uint64_t) * zeros, 0xff,
                                          sizeof(uint64_t) * (words - zeros), stream));
        }
    }
    unsigned long long* ptr() const { return static_cast<unsigned long long*>(buf_->data()); }
    // Waits for the stream (copy_to_host is synchronous).
    std::vector<uint64_t> read() const {
        std::vector<uint64_t> h(static_cast<size_t>(words_));
        core::backend(buf_->device()).copy_to_host(h.data(), buf_->data(), h.size() * 8);
        return h;
    }

private:
    int words_;
    std::shared_ptr<core::Buffer> buf_;
};

// Element i of a contiguous i32/i64 device tensor (for error messages).
int64_t read_index(const Tensor& t, int64_t i) {
    const auto* p =
        static_cast<const char*>(t.data_ptr()) + static_cast<size_t>(i) * t.element_size();
    if (t.dtype() == DType::i32) {
        int32_t v = 0;
        core::backend(t.device()).copy_to_host(&v, p, sizeof(v));
        return v;
    }
    int64_t v = 0;
    core::backend(t.device()).copy_to_host(&v, p, sizeof(v));
    return v;
}

HeadsArg heads_arg(const char* op, const Tensor& t) {
    return {t.data_ptr(), float_type(op, t), t.stride(0), t.stride(1), t.stride(2)};
}

}  // namespace

cudaStream_t CudaKernels::stream() const {
    ctx_->bind_thread();
    return ctx_->stream();
}

void CudaKernels::sum_rows(const Tensor& out, const Tensor& in, bool accumulate) {
    ops::Rows r = *ops::rows_of(in);
    auto tmp = scratch(out.device(), sum_rows_scratch_floats(r.n, r.cols));
    launch_sum_rows(stream(), out.data<float>(), rows_arg("sum_rows", in), r.n, r.cols, accumulate,
                    static_cast<float*>(tmp->data()));
}

// ---- norms ----

void CudaKernels::layernorm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd,
                                    const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
    const char* op = "layernorm_forward";
    ops::Rows r = *ops::rows_of(x);
    launch_layernorm_forward(stream(), rows_arg(op, out), rows_arg(op, x), w.data_ptr(),
                             b.data_ptr(), float_type(op, w),
                             mean.defined() ? mean.data<float>() : nullptr,
                             rstd.defined() ? rstd.data<float>() : nullptr, r.n, r.cols, eps);
}

void CudaKernels::layernorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& db,
                                     const Tensor& dout, const Tensor& x, const Tensor& w,
                                     const Tensor& mean, const Tensor& rstd) {
    const char* op = "layernorm_backward";
    ops::Rows r = *ops::rows_of(x);
    auto tmp = scratch(x.device(), norm_backward_scratch_floats(r.n, r.cols));
    launch_layernorm_backward(stream(), rows_arg(op, dx), rows_arg(op, dout), rows_arg(op, x),
                              w.data_ptr(), float_type(op, w), mean.data<float>(),
                              rstd.data<float>(), dw.defined() ? dw.data<float>() : nullptr,
                              db.defined() ? db.data<float>() : nullptr, r.n, r.cols,
                              static_cast<float*>(tmp->data()));
}

void CudaKernels::rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x,
                                  const Tensor& w, float eps) {
    const char* op = "rmsnorm_forward";
    ops::Rows r = *ops::rows_of(x);
    launch_rmsnorm_forward(stream(), rows_arg(op, out), rows_arg(op, x), w.data_ptr(),
                           float_type(op, w), rstd.defined() ? rstd.data<float>() : nullptr, r.n,
                           r.cols, eps);
}

void CudaKernels::rmsnorm_backward(const Tensor& dx, const Tensor& dw, const Tensor& dout,
                                   const Tensor& x, const Tensor& w, const Tensor& rstd) {
    const char* op = "rmsnorm_backward";
    ops::Rows r = *ops::rows_of(x);
    auto tmp = scratch(x.device(), norm_backward_scratch_floats(r.n, r.cols));
    launch_rmsnorm_backward(stream(), rows_arg(op, dx), rows_arg(op, dout), rows_arg(op, x),
                            w.data_ptr(), float_type(op, w), rstd.data<float>(),
                            dw.defined() ? dw.data<float>() : nullptr, r.n, r.cols,
                            static_cast<float*>(tmp->data()));
}

// ---- pointwise ----

void CudaKernels::gelu_forward(const Tensor& out, const Tensor& x, ops::GeluKind kind) {
    const char* op = "gelu_forward";
    Space s = space_of({&out, &x});
    const UnaryOp u = kind == ops::GeluKind::kErf ? UnaryOp::gelu_erf : UnaryOp::gelu;
    launch_unary(stream(), u, arg_in(op, out, s), arg_in(op, x, s), s.n, s.cols, 0.0f);
}

void CudaKernels::gelu_backward(const Tensor& dx, const Tensor& dout, const Tensor& x,
                                ops::GeluKind kind) {
    const char* op = "gelu_backward";
    Space s = space_of({&dx, &dout, &x});
    const BinaryOp b =
        kind == ops::GeluKind::kErf ? BinaryOp::gelu_erf_backward : BinaryOp::gelu_backward;
    launch_binary(stream(), b, arg_in(op, dx, s), arg_in(op, dout, s), arg_in(op, x, s), s.n,
                  s.cols);
}

void CudaKernels::silu_forward(const Tensor& out, const Tensor& x) {
    const char* op = "silu_forward";
    Space s = space_of({&out, &x});
    launch_unary(stream(), UnaryOp::silu, arg_in(op, out, s), arg_in(op, x, s), s.n, s.cols, 0.0f);
}

void CudaKernels::silu_backward(const Tensor& dx, const Tensor& dout, const Tensor& x) {
    const char* op = "silu_backward";
    Space s = space_of({&dx, &dout, &x});
    launch_binary(stream(), BinaryOp::silu_backward, arg_in(op, dx, s), arg_in(op, dout, s),
                  arg_in(op, x, s), s.n, s.cols);
}

void CudaKernels::swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) {
    const char* op = "swiglu_forward";
    Space s = space_of({&out, &gate, &up});
    launch_binary(stream(), BinaryOp::swiglu, arg_in(op, out, s), arg_in(op, gate, s),
                  arg_in(op, up, s), s.n, s.cols);
}

void CudaKernels::swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                                  const Tensor& gate, const Tensor& up) {
    const char* op = "swiglu_backward";
    Space s = space_of({&dgate, &dup, &dout, &gate, &up});
    launch_swiglu_backward(stream(), arg_in(op, dgate, s), arg_in(op, dup, s), arg_in(op, dout, s),
                           arg_in(op, gate, s), arg_in(op, up, s), s.n, s.cols);
}

void CudaKernels::add(const Tensor& out, const Tensor& a, const Tensor& b) {
    const char* op = "add";
    Space s = space_of({&out, &a, &b});
    launch_binary(stream(), BinaryOp::add, arg_in(op, out, s), arg_in(op, a, s), arg_in(op, b, s),
                  s.n, s.cols);
}

void CudaKernels::scale(const Tensor& out, const Tensor& a, float alpha) {
    const char* op = "scale";
    Space s = space_of({&out, &a});
    launch_unary(stream(), UnaryOp::scale, arg_in(op, out, s), arg_in(op, a, s), s.n, s.cols,
                 alpha);
}

void CudaKernels::softmax_forward(const Tensor& out, const Tensor& x) {
    const char* op = "softmax_forward";
    ops::Rows r = *ops::rows_of(x);
    launch_softmax_forward(stream(), rows_arg(op, out), rows_arg(op, x), r.n, r.cols);
}

void CudaKernels::softmax_backward(const Tensor& dx, const Tensor& dout, const Tensor& out) {
    const char* op = "softmax_backward";
    ops::Rows r = *ops::rows_of(out);
    launch_softmax_backward(stream(), rows_arg(op, dx), rows_arg(op, dout), rows_arg(op, out), r.n,
                            r.cols);
}

// ---- rope ----

void CudaKernels::rope(const Tensor& x, const Tensor& positions, const ops::RopeTable& table,
                       bool inverse) {
    const char* op = inverse ? "rope_backward" : "rope_forward";
    const int64_t half = table.rotary_dim / 2;
    ZS_CHECK_T(NotSupported, half <= kRopeMaxPairs,
               "{}: the cuda backend supports rotary_dim up to {} (got {})", op, 2 * kRopeMaxPairs,
               table.rotary_dim);
    ZS_ASSERT(static_cast<int64_t>(table.inv_freq.size()) == half);
    RopeArgs a;
    a.x = x.data_ptr();
    a.type = float_type(op, x);
    a.n = x.size(0);
    a.h = x.size(1);
    a.stride_n = x.stride(0);
    a.stride_h = x.stride(1);
    a.positions = positions.data_ptr();
    a.pos_type = index_type(op, positions);
    std::copy(table.inv_freq.begin(), table.inv_freq.end(), a.inv_freq);
    a.half = half;
    a.max_positions = table.max_positions;
    a.interleaved = table.pairs == ops::RopePairs::interleaved;
    a.inverse = inverse;
    cudaStream_t s = stream();
    Reports bad(x.device(), s, 1, 0);
    launch_rope(s, a, bad.ptr());
    // NOTE(zs): positions come from users, so a bad one must raise here, like on the CPU; reading
    // the flag back synchronises the stream once per call.
    uint64_t first = bad.read()[0];
    if (first != kNoBadIndex) {
        auto i = static_cast<int64_t>(first);
        ZS_THROW(Error, "rope: position {} at index {} is outside [0, {})",
                 read_index(positions, i), i, table.max_positions);
    }
}

// ---- attention ----

namespace {

AttnGeom geometry(const char* op, const Tensor& q, const Tensor& k,
                  const ops::AttentionOptions& o) {
    AttnGeom g;
    g.b = q.size(0);
    g.tq = q.size(1);
    g.tk = k.size(1);
    g.nh = q.size(2);
    g.nkv = k.size(2);
    g.hs = q.size(3);
    g.causal = o.causal;
    g.window = o.window;
    g.scale = o.scale != 0.0f ? o.scale : 1.0f / std::sqrt(static_cast<float>(g.hs));
    ZS_CHECK_T(NotSupported, g.hs <= kAttnMaxHeadSize,
               "{}: the cuda backend supports head sizes up to {} (got {})", op, kAttnMaxHeadSize,
               g.hs);
    // One block per 16 queries (or keys) per head: the grid is 1-D and holds 2^31 - 1 blocks.
    const int64_t t = std::max(g.tq, g.tk);
    ZS_CHECK_T(NotSupported, (t + 15) / 16 * g.nh * g.b < (int64_t{1} << 31),
               "{}: {} x {} heads x {} tokens is too large a grid for the cuda kernels", op, g.b,
               g.nh, t);
    return g;
}

}  // namespace

void CudaKernels::attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q,
                                    const Tensor& k, const Tensor& v,
                                    const ops::AttentionOptions& opts) {
    const char* op = "attention_forward";
    ZS_CHECK_T(NotSupported, k.dtype() == q.dtype(),
               "{}: k/v in {} under {} queries (a bf16 KV cache read by f32 queries) is CPU-only",
               op, core::to_string(k.dtype()), core::to_string(q.dtype()));
    AttnGeom g = geometry(op, q, k, opts);
    launch_attention_forward(stream(), g, heads_arg(op, out),
                             lse.defined() ? lse.data<float>() : nullptr, heads_arg(op, q),
                             heads_arg(op, k), heads_arg(op, v));
}

void CudaKernels::attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                     const Tensor& dout, const Tensor& q, const Tensor& k,
                                     const Tensor& v, const Tensor& out, const Tensor& lse,
                                     const ops::AttentionOptions& opts) {
    const char* op = "attention_backward";
    AttnGeom g = geometry(op, q, k, opts);
    auto tmp = scratch(q.device(), attention_backward_scratch_floats(g));
    launch_attention_backward(stream(), g, heads_arg(op, dq), heads_arg(op, dk), heads_arg(op, dv),
                              heads_arg(op, dout), heads_arg(op, q), heads_arg(op, k),
                              heads_arg(op, v), heads_arg(op, out), lse.data<float>(),
                              static_cast<float*>(tmp->data()));
}

// ---- paged attention ----

namespace {

// [N, H, HS] rows as the launchers' HeadsArg (no batch dim).
HeadsArg rows_heads_arg(const char* op, const Tensor& t) {
    return {t.data_ptr(), float_type(op, t), 0, t.stride(0), t.stride(1)};
}

PagedGeom paged_geometry(const char* op, const Tensor& k_cache, int64_t n_rows, int64_t nh) {
    PagedGeom g;
    g.n_rows = n_rows;
    g.nh = nh;
    g.block_size = k_cache.size(2);  // [n_blocks, NKV, block_size, HS]
    g.nkv = k_cache.size(1);
    g.hs = k_cache.size(3);
    ZS_CHECK_T(NotSupported, g.hs <= kAttnMaxHeadSize,
               "{}: the cuda backend supports head sizes up to {} (got {})", op, kAttnMaxHeadSize,
               g.hs);
    ZS_CHECK_T(NotSupported, (n_rows * nh + 3) / 4 < (int64_t{1} << 31),
               "{}: {} rows x {} heads is too large a grid for the cuda kernel", op, n_rows, nh);
    return g;
}

// The batch layout (launch.h's PagedGeom comment) copied to the device. The copy synchronises
// the stream (core::Backend::copy_from_host), so the host vector may go right after.
std::shared_ptr<core::Buffer> upload_layout(core::Device dev, int64_t n_rows,
                                            std::span<const ops::SeqSlice> seqs) {
    const auto info = static_cast<size_t>(n_rows);
    size_t total = info + 3 * seqs.size();
    for (const ops::SeqSlice& sl : seqs) total += sl.blocks.size();
    std::vector<int64_t> h(total, -1);
    size_t table = info + 3 * seqs.size();
    for (size_t s = 0; s < seqs.size(); ++s) {
        const ops::SeqSlice& sl = seqs[s];
        for (int64_t r = sl.start; r < sl.start + sl.n_tokens; ++r)
            h[static_cast<size_t>(r)] = static_cast<int64_t>(s);
        h[info + 3 * s] = sl.start;
        h[info + 3 * s + 1] = sl.pos;
        h[info + 3 * s + 2] = static_cast<int64_t>(table);
        std::copy(sl.blocks.begin(), sl.blocks.end(), h.begin() + static_cast<int64_t>(table));
        table += sl.blocks.size();
    }
    auto buf = core::Buffer::allocate(h.size() * sizeof(int64_t), dev, core::MemCategory::buffers);
    core::backend(dev).copy_from_host(buf->data(), h.data(), h.size() * sizeof(int64_t));
    return buf;
}

}  // namespace

void CudaKernels::paged_kv_write(const Tensor& k_cache, const Tensor& v_cache, const Tensor& k,
                                 const Tensor& v, std::span<const ops::SeqSlice> seqs) {
    const char* op = "paged_kv_write";
    const PagedGeom g = paged_geometry(op, k_cache, k.size(0), k.size(1));
    auto layout = upload_layout(k.device(), k.size(0), seqs);
    launch_paged_kv_write(stream(), g, static_cast<const int64_t*>(layout->data()),
                          k_cache.data_ptr(), v_cache.data_ptr(), float_type(op, k_cache),
                          rows_heads_arg(op, k), rows_heads_arg(op, v));
}

void CudaKernels::paged_attention_forward(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                                          const Tensor& v_cache,
                                          std::span<const ops::SeqSlice> seqs,
                                          const ops::AttentionOptions& opts) {
    const char* op = "paged_attention_forward";
    PagedGeom g = paged_geometry(op, k_cache, q.size(0), q.size(1));
    g.window = opts.window;
    g.scale = opts.scale != 0.0f ? opts.scale : 1.0f / std::sqrt(static_cast<float>(g.hs));
    auto layout = upload_layout(q.device(), q.size(0), seqs);
    launch_paged_attention_forward(stream(), g, static_cast<const int64_t*>(layout->data()),
                                   k_cache.data_ptr(), v_cache.data_ptr(), float_type(op, k_cache),
                                   rows_heads_arg(op, out), rows_heads_arg(op, q));
}

// ---- embedding ----

void CudaKernels::embedding_forward(const Tensor& out, const Tensor& ids, const Tensor& table,
                                    bool accumulate) {
    const char* op = "embedding_forward";
    const int64_t n = ids.numel(), V = table.size(0), C = table.size(1);
    cudaStream_t s = stream();
    Reports bad(out.device(), s, 1, 0);
    launch_embedding_forward(s, rows_arg(op, out), ids.data_ptr(), index_type(op, ids), n,
                             rows_arg(op, table), V, C, accumulate, bad.ptr());
    uint64_t first = bad.read()[0];
    if (first != kNoBadIndex) {
        auto i = static_cast<int64_t>(first);
        ZS_THROW(Error, "{}: token id {} at position {} is outside the vocabulary [0, {})", op,
                 read_index(ids, i), i, V);
    }
}

void CudaKernels::embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids) {
    const char* op = "embedding_backward";
    const int64_t n = ids.numel(), V = dtable.size(0), C = dtable.size(1);
    cudaStream_t s = stream();
    // Check every id before touching dtable (parameter gradients must not be half-updated).
    Reports bad(dtable.device(), s, 1, 0);
    launch_check_ids(s, ids.data_ptr(), index_type(op, ids), n, V, bad.ptr());
    uint64_t first = bad.read()[0];
    if (first != kNoBadIndex) {
        auto i = static_cast<int64_t>(first);
        ZS_THROW(Error, "{}: token id {} at position {} is outside the vocabulary [0, {})", op,
                 read_index(ids, i), i, V);
    }
    launch_embedding_backward(s, dtable.data<float>(), V, C, rows_arg(op, dout), ids.data_ptr(),
                              index_type(op, ids), n);
}

// ---- loss ----

int64_t CudaKernels::cross_entropy(const Tensor& losses, const Tensor& dlogits,
                                   const Tensor& logits, const Tensor& targets,
                                   const ops::CrossEntropyOptions& opts) {
    const char* op = "cross_entropy";
    CrossEntropyArgs a;
    a.losses = losses.data<float>();
    if (dlogits.defined()) a.dlogits = rows_arg(op, dlogits);
    a.logits = rows_arg(op, logits);
    a.targets = targets.data_ptr();
    a.target_type = index_type(op, targets);
    a.n = logits.size(0);
    a.v = logits.size(1);
    a.ignore_index = opts.ignore_index;
    a.grad_scale = opts.grad_scale;
    cudaStream_t s = stream();
    Reports stats(losses.device(), s, 2, 1);
    launch_cross_entropy(s, a, stats.ptr());
    std::vector<uint64_t> h = stats.read();
    if (h[1] != kNoBadIndex) {
        auto i = static_cast<int64_t>(h[1]);
        ZS_THROW(Error,
                 "cross_entropy: target {} at position {} is outside the vocabulary [0, {}) and "
                 "is not ignore_index ({})",
                 read_index(targets, i), i, a.v, opts.ignore_index);
    }
    return static_cast<int64_t>(h[0]);
}

// ---- moe ----

void CudaKernels::topk_router_forward(const Tensor& weights, const Tensor& indices,
                                      const Tensor& probs, const Tensor& logits,
                                      const ops::RouterOptions& opts) {
    const char* op = "topk_router_forward";
    const int64_t n = logits.size(0), e = logits.size(1);
    ZS_CHECK_T(NotSupported, e <= kRouterMaxExperts,
               "{}: the cuda backend supports up to {} experts (got {})", op, kRouterMaxExperts, e);
    launch_topk_router_forward(stream(), weights.data<float>(), indices.data<int32_t>(),
                               probs.data<float>(), rows_arg(op, logits), n, e, opts.k,
                               opts.renormalize);
}

void CudaKernels::topk_router_backward(const Tensor& dlogits, const Tensor& dweights,
                                       const Tensor& dprobs, const Tensor& probs,
                                       const Tensor& indices, const ops::RouterOptions& opts) {
    const char* op = "topk_router_backward";
    const int64_t n = dlogits.size(0), e = dlogits.size(1);
    launch_topk_router_backward(stream(), rows_arg(op, dlogits), dweights.data<float>(),
                                dprobs.defined() ? dprobs.data<float>() : nullptr,
                                probs.data<float>(), indices.data<int32_t>(), n, e, opts.k,
                                opts.renormalize);
}

void CudaKernels::adam_update(const Tensor& master, const Tensor& m, const Tensor& v,
                              const Tensor& compute, const Tensor& grad,
                              const ops::AdamStep& step) {
    AdamArgs a;
    a.beta1 = step.beta1;
    a.beta2 = step.beta2;
    a.eps = step.eps;
    a.decay_mul = step.decoupled ? 1.0f - step.lr * step.weight_decay : 1.0f;
    a.l2 = step.decoupled ? 0.0f : step.weight_decay;
    a.step_size = step.step_size;
    a.inv_sqrt_bc2 = step.inv_sqrt_bc2;
    a.grad_scale = step.grad_scale;
    launch_adam_update(stream(), master.data<float>(), m.data<float>(), v.data<float>(),
                       compute.defined() ? compute.data_ptr() : nullptr,
                       compute.defined() ? float_type("adam_update", compute) : FloatType::f32,
                       grad.data<float>(), master.numel(), a);
}

}  // namespace zs::backends::cuda
