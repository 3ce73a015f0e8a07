// Ulysses sequence parallelism's exchange (DeepSpeed-Ulysses, Jacobs et al. 2023). The P ranks of
// an sp group each hold Tl = T / P consecutive tokens of every sequence; around attention they
// trade that sequence shard of all heads for a head shard of the whole sequence with one
// all-to-all, attend locally (causal over all T tokens, P times fewer heads), and trade back:
//
//   seq_to_heads  pieces x_i [B, Tl, H_i, HS] (q, k, v) -> full [B, T, Hc, HS]
//                 per sequence b: ops::ulysses_pack_heads per piece into one chunk buffer,
//                 all_to_all straight into full[b] (its token blocks are the ranks' chunks)
//   heads_to_seq  full [B, T, Hc, HS] -> pieces x_i [B, Tl, H_i, HS] (=)
//                 per sequence b: all_to_all straight from full[b], ops::ulysses_unpack_heads
//                 per piece
//
// The only buffer is one sequence's chunks [P, 1, Tl, Hc, HS], allocated by the call and freed
// when it returns: nothing is kept between calls, and at one sequence per micro-batch (long
// context) it is the size of full for the duration of the exchange only.
//
// Hc = sum_i H_i * repeat_i / P: rank j's share of each piece, in piece order (ops/ulysses.h has
// the layout and a worked example).
//
// GQA rule (the KV heads): repeat = kv_repeat(NKV, P) = P / gcd(NKV, P). When P divides NKV it is
// 1 and the KV heads split over the ranks like the query heads (rank j: KV heads
// [j*NKV/P, (j+1)*NKV/P)); otherwise every KV head is repeated that many times before the
// exchange — P / NKV when NKV divides P, exactly one KV head per rank, as DeepSpeed's ulysses_sp
// replicates them — so rank j still receives the KV heads its query heads [j*NH/P, (j+1)*NH/P)
// read, and heads_to_seq sums each KV head's gradient over its copies. P must divide NH (then it
// also divides NKV * repeat and the query-to-KV grouping is preserved on every rank).
//
// Volume: an all-to-all of a buffer of M bytes per rank sends M (P - 1) / P to the other ranks.
// Per layer and micro-batch one rank hands in, forward, B Tl HS (NH + 2 NKV repeat) bytes for
// q, k, v and B Tl HS NH for the output; backward, as models::UlyssesAttention keeps no
// head-sharded copy between the passes, q, k, v, the output and dout again (one all-to-all) and
// dq, dk, dv back (ulysses_volume). At fixed tokens per rank (T grows with P) that is constant in
// P: DeepSpeed's "per-link volume constant in sp".
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "comm/communicator.h"
#include "core/tensor.h"

namespace zs::parallel {

using core::Tensor;

// The GQA rule above: how many times each of NKV heads is repeated for an sp group of P.
int64_t kv_repeat(int64_t n_kv_heads, int sp);
// Refuse head counts Ulysses cannot split: ConfigError naming sp, the heads and `what` (the
// model, or "this tensor-parallel rank's").
void check_ulysses_heads(int64_t n_heads, int64_t n_kv_heads, int sp, const std::string& what);

// Bytes one rank hands to the all-to-alls of one attention layer for one micro-batch of B
// sequences of Tl tokens each (the buffers' sizes; (P - 1) / P of them leave the rank).
struct UlyssesVolume {
    int64_t forward = 0;   // q, k, v to heads + the output back to the sequence shard
    int64_t backward = 0;  // q, k, v, output and dout to heads + dq, dk, dv back
};
UlyssesVolume ulysses_volume(int64_t B, int64_t Tl, int64_t n_heads, int64_t n_kv_heads,
                             int64_t head_dim, int sp, size_t elem_bytes);

// One piece of the exchange: a tensor on this rank's sequence shard and its repeat.
struct HeadPiece {
    Tensor x;  // [B, Tl, H, HS], last dim contiguous (read by seq_to_heads, written by
               // heads_to_seq)
    int64_t repeat = 1;
};

// The exchange over one sp communicator. Every call is collective over the group (all ranks,
// same shapes, same order); B all-to-alls of one sequence each. Not thread-safe.
class UlyssesExchange {
public:
    explicit UlyssesExchange(comm::Communicator& sp) : sp_(sp) {}
    UlyssesExchange(const UlyssesExchange&) = delete;
    UlyssesExchange& operator=(const UlyssesExchange&) = delete;

    comm::Communicator& comm() const { return sp_; }
    // full [B, P*Tl, Hc, HS] (=, contiguous): this rank's heads of every piece for the whole
    // sequence.
    void seq_to_heads(const Tensor& full, std::initializer_list<HeadPiece> pieces);
    // Each piece (=) from full [B, P*Tl, Hc, HS] of every rank: its tokens, all its heads.
    void heads_to_seq(std::initializer_list<HeadPiece> pieces, const Tensor& full);

private:
    // Checks the shapes; one sequence's chunk buffer [P, 1, Tl, Hc, HS] for full.
    Tensor prepare(const Tensor& full, std::initializer_list<HeadPiece> pieces,
                   const char* op) const;

    comm::Communicator& sp_;
};

}  // namespace zs::parallel
