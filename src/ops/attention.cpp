#include "ops/attention.h"

#include "ops/kernels.h"
#include "ops/layout.h"

namespace zs::ops {

using core::DType;
using core::Shape;

namespace {

struct Dims {
    int64_t b, tq, tk, nh, nkv, hs;
};

// kv_cache: k and v may be bf16 under f32 q (attention_forward: a bf16 KV cache read by f32
// queries); otherwise all three share q's dtype.
Dims check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
               bool kv_cache = false) {
    for (auto [name, t] : {std::pair{"q", &q}, std::pair{"k", &k}, std::pair{"v", &v}}) {
        check::defined(op, name, *t);
        check::ndim(op, name, *t, 4);
        check::dtype(op, name, *t, {DType::f32, DType::bf16});
        check::last_dim_contiguous(op, name, *t);
    }
    if (kv_cache && q.dtype() == DType::f32) {
        check::dtype(op, "v", v, {k.dtype()});
    } else {
        check::dtype(op, "k", k, {q.dtype()});
        check::dtype(op, "v", v, {q.dtype()});
    }
    Dims d{q.size(0), q.size(1), k.size(1), q.size(2), k.size(2), q.size(3)};
    check::shape(op, "k", k, Shape{d.b, d.tk, d.nkv, d.hs});
    check::shape(op, "v", v, Shape{d.b, d.tk, d.nkv, d.hs});
    ZS_CHECK_T(ShapeError, d.nkv > 0 && d.nh % d.nkv == 0,
               "{}: query heads ({}) must be a multiple of kv heads ({})", op, d.nh, d.nkv);
    return d;
}

void check_options(const char* op, const AttentionOptions& o) {
    ZS_CHECK_T(ShapeError, o.window >= 0 && (o.window == 0 || o.causal),
               "{}: a sliding window ({}) needs causal attention and must not be negative", op,
               o.window);
}

void check_lse(const char* op, const Tensor& lse, const Dims& d) {
    check::dtype(op, "lse", lse, {DType::f32});
    check::shape(op, "lse", lse, Shape{d.b, d.nh, d.tq});
    check::contiguous(op, "lse", lse);
}

void check_like(const char* op, const char* arg, const Tensor& t, const Shape& s) {
    check::defined(op, arg, t);
    check::dtype(op, arg, t, {DType::f32, DType::bf16});
    check::shape(op, arg, t, s);
    check::last_dim_contiguous(op, arg, t);
}

}  // namespace

void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                       const Tensor& v, const AttentionOptions& opts) {
    const char* op = "attention_forward";
    Dims d = check_qkv(op, q, k, v, /*kv_cache=*/true);
    check_options(op, opts);
    check_like(op, "out", out, q.shape());
    if (lse.defined()) check_lse(op, lse, d);
    check::same_device(op, {{"out", &out}, {"lse", &lse}, {"q", &q}, {"k", &k}, {"v", &v}});
    if (out.numel() == 0) return;
    kernels_for(q.device()).attention_forward(out, lse, q, k, v, opts);
}

void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                        const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, const AttentionOptions& opts) {
    const char* op = "attention_backward";
    Dims d = check_qkv(op, q, k, v);
    check_options(op, opts);
    check_like(op, "dout", dout, q.shape());
    check_like(op, "out", out, q.shape());
    check_like(op, "dq", dq, q.shape());
    check_like(op, "dk", dk, k.shape());
    check_like(op, "dv", dv, v.shape());
    check::defined(op, "lse", lse);
    check_lse(op, lse, d);
    for (auto [name, t] : {std::pair{"dq", &dq}, std::pair{"dk", &dk}, std::pair{"dv", &dv}}) {
        check::dtype(op, name, *t, {q.dtype()});
    }
    check::dtype(op, "out", out, {dout.dtype()});
    check::same_device(op, {{"dq", &dq},
                            {"dk", &dk},
                            {"dv", &dv},
                            {"dout", &dout},
                            {"q", &q},
                            {"k", &k},
                            {"v", &v},
                            {"out", &out},
                            {"lse", &lse}});
    if (q.numel() == 0 && k.numel() == 0) return;
    kernels_for(q.device()).attention_backward(dq, dk, dv, dout, q, k, v, out, lse, opts);
}

void attention_merge(const Tensor& out, const Tensor& lse, const Tensor& part_out,
                     const Tensor& part_lse) {
    const char* op = "attention_merge";
    check::defined(op, "out", out);
    check::ndim(op, "out", out, 4);
    check::dtype(op, "out", out, {DType::f32});
    check::last_dim_contiguous(op, "out", out);
    check::defined(op, "part_out", part_out);
    check::dtype(op, "part_out", part_out, {DType::f32});
    check::shape(op, "part_out", part_out, out.shape());
    check::last_dim_contiguous(op, "part_out", part_out);
    const Dims d{out.size(0), out.size(1), out.size(1), out.size(2), out.size(2), out.size(3)};
    check::defined(op, "lse", lse);
    check_lse(op, lse, d);
    check::defined(op, "part_lse", part_lse);
    check_lse(op, part_lse, d);
    check::same_device(
        op, {{"out", &out}, {"lse", &lse}, {"part_out", &part_out}, {"part_lse", &part_lse}});
    if (out.numel() == 0) return;
    kernels_for(out.device()).attention_merge(out, lse, part_out, part_lse);
}

}  // namespace zs::ops
