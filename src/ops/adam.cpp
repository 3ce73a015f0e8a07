#include "ops/adam.h"

#include "ops/kernels.h"
#include "ops/layout.h"

namespace zs::ops {

using core::DType;

void adam_update(const Tensor& master, const Tensor& m, const Tensor& v, const Tensor& compute,
                 const Tensor& grad, const AdamStep& step) {
    const char* op = "adam_update";
    for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"master", &master},
                                  {"m", &m},
                                  {"v", &v},
                                  {"grad", &grad}}) {
        check::defined(op, name, *t);
        check::dtype(op, name, *t, {DType::f32});
        check::ndim(op, name, *t, 1);
        check::same_shape(op, name, *t, "master", master);
        check::contiguous(op, name, *t);
    }
    if (compute.defined()) {
        check::dtype(op, "compute", compute, {DType::f32, DType::bf16});
        check::same_shape(op, "compute", compute, "master", master);
        check::contiguous(op, "compute", compute);
        check::same_device(
            op,
            {{"master", &master}, {"m", &m}, {"v", &v}, {"grad", &grad}, {"compute", &compute}});
    } else {
        check::same_device(op, {{"master", &master}, {"m", &m}, {"v", &v}, {"grad", &grad}});
    }
    kernels_for(master.device()).adam_update(master, m, v, compute, grad, step);
}

}  // namespace zs::ops
