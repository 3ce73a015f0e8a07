#include "ops/loss.h"

#include "ops/kernels.h"
#include "ops/layout.h"

namespace zs::ops {

using core::DType;
using core::Shape;

int64_t cross_entropy(const Tensor& losses, const Tensor& dlogits, const Tensor& logits,
                      const Tensor& targets, const CrossEntropyOptions& opts) {
    const char* op = "cross_entropy";
    check::defined(op, "losses", losses);
    check::defined(op, "logits", logits);
    check::defined(op, "targets", targets);
    check::ndim(op, "logits", logits, 2);
    check::dtype(op, "logits", logits, {DType::f32, DType::bf16});
    check::rows(op, "logits", logits);
    int64_t n = logits.size(0);
    check::dtype(op, "targets", targets, {DType::i32, DType::i64});
    check::contiguous(op, "targets", targets);
    check::shape(op, "targets", targets, Shape{n});
    check::dtype(op, "losses", losses, {DType::f32});
    check::contiguous(op, "losses", losses);
    check::shape(op, "losses", losses, Shape{n});
    if (dlogits.defined()) {
        check::dtype(op, "dlogits", dlogits, {DType::f32, DType::bf16});
        check::same_shape(op, "dlogits", dlogits, "logits", logits);
        check::rows(op, "dlogits", dlogits);
    }
    check::same_device(
        op,
        {{"losses", &losses}, {"dlogits", &dlogits}, {"logits", &logits}, {"targets", &targets}});
    if (n == 0) return 0;
    ZS_CHECK_T(ShapeError, logits.size(1) > 0, "cross_entropy: 'logits' {} has an empty vocabulary",
               logits.shape().str());
    return kernels_for(logits.device()).cross_entropy(losses, dlogits, logits, targets, opts);
}

}  // namespace zs::ops
