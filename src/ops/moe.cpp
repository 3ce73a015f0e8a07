#include "ops/moe.h"

#include "ops/kernels.h"
#include "ops/layout.h"

namespace zs::ops {

using core::DType;
using core::Shape;

namespace {

void check_router_outputs(const char* op, const Tensor& weights, const Tensor& indices,
                          const Tensor& probs, int64_t n, int64_t e, const RouterOptions& opts) {
    ZS_CHECK_T(ShapeError, opts.k >= 1 && opts.k <= e,
               "{}: k = {} must be in [1, number of experts = {}]", op, opts.k, e);
    check::defined(op, "weights", weights);
    check::dtype(op, "weights", weights, {DType::f32});
    check::shape(op, "weights", weights, Shape{n, opts.k});
    check::contiguous(op, "weights", weights);
    check::defined(op, "indices", indices);
    check::dtype(op, "indices", indices, {DType::i32});
    check::shape(op, "indices", indices, Shape{n, opts.k});
    check::contiguous(op, "indices", indices);
    check::defined(op, "probs", probs);
    check::dtype(op, "probs", probs, {DType::f32});
    check::shape(op, "probs", probs, Shape{n, e});
    check::contiguous(op, "probs", probs);
}

}  // namespace

void topk_router_forward(const Tensor& weights, const Tensor& indices, const Tensor& probs,
                         const Tensor& logits, const RouterOptions& opts) {
    const char* op = "topk_router_forward";
    check::defined(op, "logits", logits);
    check::ndim(op, "logits", logits, 2);
    check::dtype(op, "logits", logits, {DType::f32, DType::bf16});
    check::rows(op, "logits", logits);
    check_router_outputs(op, weights, indices, probs, logits.size(0), logits.size(1), opts);
    check::same_device(
        op, {{"weights", &weights}, {"indices", &indices}, {"probs", &probs}, {"logits", &logits}});
    if (logits.size(0) == 0) return;
    kernels_for(logits.device()).topk_router_forward(weights, indices, probs, logits, opts);
}

void topk_router_backward(const Tensor& dlogits, const Tensor& dweights, const Tensor& dprobs,
                          const Tensor& probs, const Tensor& indices, const RouterOptions& opts) {
    const char* op = "topk_router_backward";
    check::defined(op, "dlogits", dlogits);
    check::ndim(op, "dlogits", dlogits, 2);
    check::dtype(op, "dlogits", dlogits, {DType::f32, DType::bf16});
    check::rows(op, "dlogits", dlogits);
    int64_t n = dlogits.size(0), e = dlogits.size(1);
    check_router_outputs(op, dweights, indices, probs, n, e, opts);
    if (dprobs.defined()) {
        check::dtype(op, "dprobs", dprobs, {DType::f32});
        check::shape(op, "dprobs", dprobs, Shape{n, e});
        check::contiguous(op, "dprobs", dprobs);
    }
    check::same_device(op, {{"dlogits", &dlogits},
                            {"dweights", &dweights},
                            {"dprobs", &dprobs},
                            {"probs", &probs},
                            {"indices", &indices}});
    if (n == 0) return;
    kernels_for(dlogits.device())
        .topk_router_backward(dlogits, dweights, dprobs, probs, indices, opts);
}

}  // namespace zs::ops
