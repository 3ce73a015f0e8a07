#include "parallel/tensor_parallel.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "base/error.h"
#include "ops/embedding.h"
#include "ops/matmul.h"

namespace zs::parallel {

using core::DType;

std::pair<int64_t, int64_t> shard_range(int64_t n, int rank, int tp) {
    ZS_CHECK_T(ShapeError, tp >= 1 && rank >= 0 && rank < tp, "shard_range: rank {} of {}", rank,
               tp);
    const int64_t per = (n + tp - 1) / tp;
    const int64_t b = std::min(n, per * rank), e = std::min(n, per * (rank + 1));
    return {b, e};
}

Tensor shard(const Tensor& full, int dim, int rank, int tp) {
    const auto [b, e] = shard_range(full.size(dim), rank, tp);
    return full.slice(dim, b, e).contiguous();
}

void column_linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& b) {
    ops::linear_forward(y, x, w, b);
}

void column_linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dy,
                            const Tensor& x, const Tensor& w, comm::Communicator& tp) {
    ops::linear_backward(dx, dw, db, dy, x, w);
    // Each rank's dy_r W_r is its output features' share of dx.
    if (dx.defined() && tp.size() > 1) tp.allreduce(dx, comm::ReduceOp::sum).wait();
}

void row_linear_forward(const Tensor& y, const Tensor& x, const Tensor& w, const Tensor& b,
                        comm::Communicator& tp) {
    // The bias once: rank 0 adds it to its partial sum.
    ops::linear_forward(y, x, w, tp.rank() == 0 ? b : Tensor());
    if (tp.size() > 1) tp.allreduce(y, comm::ReduceOp::sum).wait();
}

void row_linear_backward(const Tensor& dx, const Tensor& dw, const Tensor& db, const Tensor& dy,
                         const Tensor& x, const Tensor& w) {
    ops::linear_backward(dx, dw, db, dy, x, w);
}

namespace {

// Ids as this rank's table rows (0 where another rank holds the id) and which rows are ours.
std::pair<Tensor, std::vector<uint8_t>> local_ids(const Tensor& ids, int64_t v0, int64_t rows) {
    ZS_CHECK_T(
        ShapeError, ids.is_contiguous() && (ids.dtype() == DType::i32 || ids.dtype() == DType::i64),
        "vocabulary-parallel ids must be contiguous i32 or i64, got {}", to_string(ids.dtype()));
    const int64_t n = ids.numel();
    Tensor out = Tensor::empty({n}, DType::i32, core::Device::cpu(), core::MemCategory::buffers);
    std::vector<uint8_t> mine(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        const int64_t id =
            ids.dtype() == DType::i32 ? ids.data<int32_t>()[i] : ids.data<int64_t>()[i];
        const bool m = id >= v0 && id < v0 + rows;
        mine[static_cast<size_t>(i)] = m;
        out.data<int32_t>()[i] = m ? static_cast<int32_t>(id - v0) : 0;
    }
    return {out, std::move(mine)};
}

}  // namespace

void vocab_embedding_forward(const Tensor& out, const Tensor& ids, const Tensor& table, int64_t v0,
                             comm::Communicator& tp) {
    ZS_CHECK_T(ShapeError, out.dtype() == DType::f32 && out.is_contiguous(),
               "vocabulary-parallel embedding writes a contiguous f32 output");
    const int64_t n = ids.numel(), C = table.size(1);
    auto [lid, mine] = local_ids(ids, v0, table.size(0));
    Tensor flat = out.view({n, C});
    ops::embedding_forward(flat, lid, table);
    float* o = flat.data<float>();
    for (int64_t i = 0; i < n; ++i) {
        if (!mine[static_cast<size_t>(i)]) std::fill(o + i * C, o + (i + 1) * C, 0.0f);
    }
    if (tp.size() > 1) tp.allreduce(out, comm::ReduceOp::sum).wait();
}

void vocab_embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids,
                              int64_t v0) {
    const int64_t n = ids.numel(), C = dtable.size(1);
    auto [lid, mine] = local_ids(ids, v0, dtable.size(0));
    Tensor d = dout.contiguous().view({n, C}).to(DType::f32).clone();
    float* p = d.data<float>();
    for (int64_t i = 0; i < n; ++i) {
        if (!mine[static_cast<size_t>(i)]) std::fill(p + i * C, p + (i + 1) * C, 0.0f);
    }
    ops::embedding_backward(dtable, d, lid);
}

int64_t vocab_cross_entropy(const Tensor& losses, const Tensor& dlogits, const Tensor& logits,
                            const Tensor& targets, int64_t v0, int64_t vocab_size,
                            comm::Communicator& tp, int64_t ignore_index, float grad_scale) {
    ZS_CHECK_T(ShapeError,
               logits.dim() == 2 && logits.dtype() == DType::f32 && logits.stride(1) == 1,
               "vocabulary-parallel cross-entropy takes f32 logits [N, V_r] with unit column "
               "stride");
    const int64_t N = logits.size(0), Vr = logits.size(1);
    ZS_CHECK_T(ShapeError, v0 >= 0 && v0 + Vr <= vocab_size,
               "logit columns [{}, {}) outside the "
               "vocabulary of {}",
               v0, v0 + Vr, vocab_size);
    ZS_CHECK_T(ShapeError,
               losses.numel() == N && losses.dtype() == DType::f32 && losses.is_contiguous(),
               "losses must be contiguous f32 [{}]", N);
    const Tensor tg = targets.contiguous();
    auto target = [&](int64_t i) -> int64_t {
        return tg.dtype() == DType::i32 ? tg.data<int32_t>()[i] : tg.data<int64_t>()[i];
    };
    const float* L = logits.data<float>();
    const int64_t ls = logits.stride(0);
    // Row maxima over the whole vocabulary.
    Tensor mx = Tensor::empty({N}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
    for (int64_t i = 0; i < N; ++i) {
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < Vr; ++j) m = std::max(m, L[i * ls + j]);
        mx.data<float>()[i] = m;
    }
    if (tp.size() > 1) tp.allreduce(mx, comm::ReduceOp::max).wait();
    // Sums of exp(l - max) and the target's logit (from the rank holding it), in one reduction.
    Tensor st = Tensor::zeros({2, N}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
    float* sum = st.data<float>();
    float* tl = sum + N;
    int64_t n_valid = 0;
    for (int64_t i = 0; i < N; ++i) {
        const float m = mx.data<float>()[i];
        double s = 0;
        for (int64_t j = 0; j < Vr; ++j) s += std::exp(static_cast<double>(L[i * ls + j]) - m);
        sum[i] = static_cast<float>(s);
        const int64_t t = target(i);
        if (t == ignore_index) continue;
        ZS_CHECK_T(Error, t >= 0 && t < vocab_size, "target {} at row {} is outside [0, {})", t, i,
                   vocab_size);
        ++n_valid;
        if (t >= v0 && t < v0 + Vr) tl[i] = L[i * ls + (t - v0)];
    }
    if (tp.size() > 1) tp.allreduce(st, comm::ReduceOp::sum).wait();
    float* lo = losses.data<float>();
    for (int64_t i = 0; i < N; ++i) {
        const bool ignored = target(i) == ignore_index;
        const double lse = mx.data<float>()[i] + std::log(static_cast<double>(sum[i]));
        lo[i] = ignored ? 0.0f : static_cast<float>(lse - tl[i]);
        if (!dlogits.defined()) continue;
        float* d = dlogits.data<float>() + i * dlogits.stride(0);
        if (ignored) {
            std::fill(d, d + Vr, 0.0f);
            continue;
        }
        const int64_t t = target(i);
        for (int64_t j = 0; j < Vr; ++j) {
            const double p = std::exp(static_cast<double>(L[i * ls + j]) - lse);
            d[j] = static_cast<float>((p - (v0 + j == t ? 1.0 : 0.0)) * grad_scale);
        }
    }
    return n_valid;
}

}  // namespace zs::parallel
