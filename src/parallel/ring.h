// Ring attention (Liu et al. 2023, "Ring Attention with Blockwise Transformers") over the R ranks
// of a ring group, with the zig-zag causal layout (Megatron-LM's context parallelism, zhuzilin's
// ring-flash-attention): the sequence of T tokens is cut into 2R chunks of c = T / (2R) tokens and
// rank r holds chunks r and 2R-1-r, Tl = 2c tokens in that order. Under the causal mask every rank
// then has the same work: its early chunk sees few keys, its late chunk many.
//
// Forward: each rank keeps its queries and passes its K/V block (both chunks) around the ring,
// R - 1 hops; the transfer of the next block is posted before the current one is attended, so
// communication overlaps compute. Per step and query chunk the keys seen are a prefix of the
// block (ring_visible: none, its first chunk, or both; causal on the query's own chunk); each
// partial result (ops::attention_forward, with its lse) is merged into an f32 accumulator by
// log-sum-exp (ops::attention_merge).
//
// Backward: the K/V blocks go round again, with an f32 dK/dV accumulator travelling beside each;
// given the final out and lse a block's share of dq, dk, dv is ops::attention_backward over that
// block alone, so nothing is merged, only summed. After R hops each accumulator is back at its
// owner (R - 1 K/V hops, R dK/dV hops). Both overlap compute: the next K/V block is posted before
// the current one is attended, as forward, and a block's dK/dV runs one step behind it (its
// incoming sum is received while the first query chunk is attended, and the sum with this
// rank's share is sent on during the next step's blocks).
//
// Worked example, R = 2, T = 8, c = 2: rank 0 holds tokens 0, 1, 6, 7 (chunks 0, 3), rank 1
// tokens 2, 3, 4, 5 (chunks 1, 2). Step 0, own block: rank 0's chunk 0 sees its chunk 0
// (causal), its chunk 3 both of its chunks (causal: tokens 0, 1 fully, 6, 7 causally). Step 1:
// rank 0 holds rank 1's block; chunk 0 sees nothing, chunk 3 all of chunks 1, 2 (full). Rank 1
// at step 1 holds rank 0's block: its chunks 1 and 2 both see chunk 0 only (full).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "core/tensor.h"
#include "ops/attention.h"

namespace zs::parallel {

using core::Tensor;

// The chunks (of 2R) that ring rank `rank` holds: `rank`, then 2R-1-rank.
struct ZigzagChunks {
    int64_t first = 0, second = 0;
};
ZigzagChunks zigzag_chunks(int rank, int R);

// The global positions (of T = 2R c) of the Tl = 2c tokens ring rank `rank` holds, in order.
std::vector<int64_t> zigzag_positions(int rank, int R, int64_t T);

// Which keys of ring rank `src`'s block query chunk `which` (0: first, 1: second) of ring rank
// `rank` sees under the causal mask: the first n_chunks (0, 1 or 2) chunks of the block, the last
// of them causally (aligned bottom-right, as ops::attention) when it is the query's own chunk.
struct RingVisible {
    int n_chunks = 0;
    bool causal = false;
};
RingVisible ring_visible(int rank, int src, int which, int R);

// Bytes one rank sends around the ring for one attention layer and micro-batch of B sequences of
// Tl = 2c local tokens (k, v in elem_bytes; the dK/dV accumulators in f32). Forward: R - 1 K/V
// blocks; backward: R - 1 K/V blocks and R dK/dV blocks. At fixed tokens per rank it grows with R
// (the K/V of the whole sequence passes every rank), unlike Ulysses' constant per-link volume;
// it reads only KV heads, so with GQA it is NH / NKV times smaller per block.
struct RingVolume {
    int64_t forward = 0;
    int64_t backward = 0;
};
RingVolume ring_volume(int64_t B, int64_t Tl, int64_t n_kv_heads, int64_t head_dim, int R,
                       size_t elem_bytes);

// Ring attention over one ring communicator, keeping its block buffers between calls. Every call
// is collective over the ring (all ranks, same shapes, same order). Not thread-safe.
//
//   q, out, dq, dout [B, Tl, NH, HS]; k, v, dk, dv [B, Tl, NKV, HS]: this rank's two chunks
//   (last dim contiguous; q, k, v may be views of one fused projection); out/dout in f32 or bf16.
//   lse [B, NH, Tl] f32 contiguous, used as [2, B, NH, c]: per chunk, contiguous (the layout
//   ops::attention_backward reads), written by forward and read by backward.
// opts: causal; a sliding window shorter than the R * Tl tokens is refused (NotSupported); the
// scale is honoured.
class RingAttention {
public:
    explicit RingAttention(comm::Communicator& ring) : ring_(ring) {}
    RingAttention(const RingAttention&) = delete;
    RingAttention& operator=(const RingAttention&) = delete;

    comm::Communicator& comm() const { return ring_; }
    void forward(const ops::AttentionOptions& opts, const Tensor& out, const Tensor& lse,
                 const Tensor& q, const Tensor& k, const Tensor& v);
    // dq, dk, dv (=) from dout and forward's out and lse.
    void backward(const ops::AttentionOptions& opts, const Tensor& dq, const Tensor& dk,
                  const Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                  const Tensor& v, const Tensor& out, const Tensor& lse);

private:
    struct Dims {
        int64_t B, Tl, c, NH, NKV, HS;
    };
    Dims check(const char* op, const ops::AttentionOptions& opts, const Tensor& q, const Tensor& k,
               const Tensor& lse) const;
    // kv_[0] = [k; v] as [2, B, Tl, NKV, HS] in q's dtype (kv_[1] the receive buffer).
    void load_kv(const Tensor& k, const Tensor& v);

    comm::Communicator& ring_;
    Tensor kv_[2];               // [2, B, Tl, NKV, HS]: the block attended, the block arriving
    Tensor acc_;                 // [B, Tl, NH, HS] f32: forward's output, backward's dq
    Tensor part_, part_lse_;     // [B, c, NH, HS] f32, [B, NH, c]: one partial result
    Tensor dkv_[2];              // [2, B, Tl, NKV, HS] f32: dK/dV accumulators (held, arriving)
    Tensor dq_part_, dkv_part_;  // [B, c, NH, HS], [2, B, Tl, NKV, HS] in q's dtype
};

}  // namespace zs::parallel
