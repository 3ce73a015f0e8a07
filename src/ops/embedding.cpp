#include "ops/embedding.h"

#include "ops/kernels.h"
#include "ops/layout.h"

namespace zs::ops {

using core::DType;
using core::Shape;

namespace {

Shape out_shape(const Tensor& ids, const Tensor& table) {
    Shape s = ids.shape();
    s.push_back(table.size(1));
    return s;
}

}  // namespace

void embedding_forward(const Tensor& out, const Tensor& ids, const Tensor& table, bool accumulate) {
    const char* op = "embedding_forward";
    check::defined(op, "out", out);
    check::defined(op, "ids", ids);
    check::defined(op, "table", table);
    check::dtype(op, "ids", ids, {DType::i32, DType::i64});
    check::contiguous(op, "ids", ids);
    check::ndim(op, "table", table, 2);
    check::dtype(op, "table", table, {DType::f32, DType::bf16});
    check::rows(op, "table", table);
    check::dtype(op, "out", out, {DType::f32, DType::bf16});
    check::shape(op, "out", out, out_shape(ids, table));
    check::rows(op, "out", out);
    check::same_device(op, {{"out", &out}, {"ids", &ids}, {"table", &table}});
    if (ids.numel() == 0) return;
    kernels_for(out.device()).embedding_forward(out, ids, table, accumulate);
}

void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids) {
    const char* op = "embedding_backward";
    check::defined(op, "dtable", dtable);
    check::defined(op, "dout", dout);
    check::defined(op, "ids", ids);
    check::dtype(op, "ids", ids, {DType::i32, DType::i64});
    check::contiguous(op, "ids", ids);
    check::ndim(op, "dtable", dtable, 2);
    check::dtype(op, "dtable", dtable, {DType::f32});
    check::contiguous(op, "dtable", dtable);
    check::dtype(op, "dout", dout, {DType::f32, DType::bf16});
    check::shape(op, "dout", dout, out_shape(ids, dtable));
    check::rows(op, "dout", dout);
    check::same_device(op, {{"dtable", &dtable}, {"dout", &dout}, {"ids", &ids}});
    if (ids.numel() == 0) return;
    kernels_for(dtable.device()).embedding_backward(dtable, dout, ids);
}

}  // namespace zs::ops
