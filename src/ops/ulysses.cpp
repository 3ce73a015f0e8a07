#include "ops/ulysses.h"

#include "ops/kernels.h"
#include "ops/layout.h"

namespace zs::ops {

using core::DType;
using core::Shape;

namespace {

// A chunk buffer [P, B, Tl, Hc, HS]: contiguous, f32 or bf16.
void check_chunks(const char* op, const char* name, const Tensor& t) {
    check::defined(op, name, t);
    check::ndim(op, name, t, 5);
    check::dtype(op, name, t, {DType::f32, DType::bf16});
    check::contiguous(op, name, t);
}

// A piece x [B, Tl, H, HS] of the chunk buffer `c`, at head offset `at`, expanded `repeat` times.
void check_piece(const char* op, const Tensor& c, const Tensor& x, int64_t at, int64_t repeat) {
    check::defined(op, "x", x);
    check::ndim(op, "x", x, 4);
    check::dtype(op, "x", x, {c.dtype()});
    check::last_dim_contiguous(op, "x", x);
    const int64_t P = c.size(0), H = x.size(2);
    ZS_CHECK_T(ShapeError,
               x.size(0) == c.size(1) && x.size(1) == c.size(2) && x.size(3) == c.size(4),
               "{}: x {} does not match the chunks {} ([P, B, Tl, Hc, HS] for x [B, Tl, H, HS])",
               op, x.shape().str(), c.shape().str());
    ZS_CHECK_T(ShapeError, repeat >= 1 && (H * repeat) % P == 0,
               "{}: {} heads repeated {} times do not split over {} ranks", op, H, repeat, P);
    ZS_CHECK_T(ShapeError, at >= 0 && at + H * repeat / P <= c.size(3),
               "{}: heads [{}, {}) of this piece fall outside the chunk's {} heads", op, at,
               at + H * repeat / P, c.size(3));
    check::same_device(op, {{"chunks", &c}, {"x", &x}});
}

// full [B, P*Tl, Hc, HS] against the chunk buffer `c` [P, B, Tl, Hc, HS].
void check_full(const char* op, const Tensor& c, const Tensor& full) {
    check::defined(op, "full", full);
    check::dtype(op, "full", full, {c.dtype()});
    check::shape(op, "full", full, Shape{c.size(1), c.size(0) * c.size(2), c.size(3), c.size(4)});
    check::last_dim_contiguous(op, "full", full);
    check::same_device(op, {{"chunks", &c}, {"full", &full}});
}

}  // namespace

void ulysses_pack_heads(const Tensor& send, const Tensor& x, int64_t at, int64_t repeat) {
    const char* op = "ulysses_pack_heads";
    check_chunks(op, "send", send);
    check_piece(op, send, x, at, repeat);
    if (x.numel() == 0) return;
    kernels_for(send.device()).ulysses_pack_heads(send, x, at, repeat);
}

void ulysses_unpack_heads(const Tensor& x, const Tensor& recv, int64_t at, int64_t repeat) {
    const char* op = "ulysses_unpack_heads";
    check_chunks(op, "recv", recv);
    check_piece(op, recv, x, at, repeat);
    if (x.numel() == 0) return;
    kernels_for(recv.device()).ulysses_unpack_heads(x, recv, at, repeat);
}

void ulysses_pack_seq(const Tensor& send, const Tensor& full) {
    const char* op = "ulysses_pack_seq";
    check_chunks(op, "send", send);
    check_full(op, send, full);
    if (full.numel() == 0) return;
    kernels_for(send.device()).ulysses_pack_seq(send, full);
}

void ulysses_unpack_seq(const Tensor& full, const Tensor& recv) {
    const char* op = "ulysses_unpack_seq";
    check_chunks(op, "recv", recv);
    check_full(op, recv, full);
    if (full.numel() == 0) return;
    kernels_for(recv.device()).ulysses_unpack_seq(full, recv);
}

}  // namespace zs::ops
