// Layout kernels of Ulysses sequence parallelism (DeepSpeed-Ulysses): the packs and unpacks around
// the all-to-alls that trade a rank's sequence shard of every head for a head shard of the whole
// sequence. parallel/ulysses.h runs the exchange; these ops only move rows of HS elements.
//
// P ranks; rank s holds tokens [s*Tl, (s+1)*Tl) of each of B sequences (T = P*Tl). A chunk buffer
// send/recv [P, B, Tl, Hc, HS] (contiguous) holds in chunk j what goes to (pack) or came from
// (unpack) rank j: per token Hc heads, the concatenation of several pieces (q, k, v), each
// starting at its head offset `at`.
//
//   x    [B, Tl, H, HS]    one piece on its sequence shard (all H heads); last dim contiguous
//   full [B, T, Hc, HS]    the head shard of the whole sequence (Hc heads); last dim contiguous
//
// A piece of H heads is expanded to He = H * repeat heads (head h repeated `repeat` times in a
// row) and split evenly: rank j gets expanded heads [j*Hl, (j+1)*Hl), Hl = He / P. repeat > 1
// lets P exceed the KV heads (each rank still gets the KV heads its query heads read).
//
//   ulysses_pack_heads(send, x, at, repeat)    send[j, b, t, at + e] = x[b, t, (j*Hl + e) / repeat]
//   ulysses_unpack_heads(x, recv, at, repeat)  its adjoint: x[b, t, h] (=) the sum, in order
//                                              r = 0..repeat-1, of the copies h*repeat + r
//                                              (f32 sums: the gradient of a repeated head)
//   ulysses_pack_seq(send, full)               send[s, b, t] = full[b, s*Tl + t]
//   ulysses_unpack_seq(full, recv)             full[b, s*Tl + t] = recv[s, b, t]
//
// Worked example: P = 2, B = 1, Tl = 2, q with H = 4 heads (repeat 1), k with 1 head (repeat 2).
// Rank 1 holds tokens 2, 3. pack_heads(send, q, 0, 1) and pack_heads(send, k, 2, 2) fill its
// send [2, 1, 2, 3, HS]: chunk 0 = tokens 2, 3 x [q0, q1, k0], chunk 1 = tokens 2, 3 x [q2, q3,
// k0]. After the all-to-all rank 0 holds recv [2, 1, 2, 3, HS] = its own chunk 0 (tokens 0, 1)
// then rank 1's (tokens 2, 3), and unpack_seq(full, recv) gives full [1, 4, 3, HS]: tokens 0..3
// of q0, q1, k0 — attention over the whole sequence for query heads 0, 1. Backward runs the same
// moves the other way; rank 1's dk = dk0 from rank 0 + dk0 from rank 1 (unpack_heads, repeat 2).
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace zs::ops {

using core::Tensor;

// send, recv: [P, B, Tl, Hc, HS] contiguous; x: [B, Tl, H, HS]; one float dtype (f32 or bf16) for
// all. 0 <= at and at + H * repeat / P <= Hc; P must divide H * repeat.
void ulysses_pack_heads(const Tensor& send, const Tensor& x, int64_t at, int64_t repeat);
void ulysses_unpack_heads(const Tensor& x, const Tensor& recv, int64_t at, int64_t repeat);
// full: [B, P*Tl, Hc, HS] with a contiguous last dim.
void ulysses_pack_seq(const Tensor& send, const Tensor& full);
void ulysses_unpack_seq(const Tensor& full, const Tensor& recv);

}  // namespace zs::ops
