// Tensor-parallel serving (zerospeed serve --tp N): rank 0 of the tensor-parallel group runs the
// Engine (scheduler, sampling, the HTTP server); every other rank runs follow_forwards(). Before
// each forward, rank 0 broadcasts its inputs: token ids, positions, each sequence's rows, first
// position and block table, and the logit rows. Every rank then runs the same forward on its
// shard of the weights over its own paged KV cache: the same blocks (the block ids rank 0's pool
// handed out), holding this rank's KV heads. The forward's own collectives keep the ranks in
// step, and every rank ends with the same logits.
//
// Expert-parallel serving (serve --ep N) uses the same messages over the ep group: every rank
// runs the whole batch over its own cache of all KV heads, with its E / ep experts.
//
// Messages on the tp group: a header of 5 i64 {kind, N, S, R, B} (kind 1: forward, 0: stop),
// sent to each rank, then, for a forward, one broadcast i64 payload: ids [N], positions [N], per
// sequence {start, n_tokens, pos, n_blocks} [4 S], the block tables [B] and the logit rows [R]. The
// first message after construction is the handshake {2, n_blocks, block_size, 0, 0}: a rank whose
// KV pool differs (another --kv-cache-memory) stops with an error instead of writing outside its
// cache.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "infer/engine.h"

namespace zs::infer {

// Rank 0: the handshake, each forward's inputs, and the final stop.
void tp_send_handshake(comm::Communicator& tp, const KvCacheSpec& spec);
void tp_send_forward(comm::Communicator& tp, const Tensor& ids, const Tensor& pos,
                     const std::vector<SeqSlice>& slices, const std::vector<int64_t>& logit_rows);
void tp_send_stop(comm::Communicator& tp);

// Ranks 1..tp-1: run rank 0's forwards on this rank's shard until it sends stop. Returns the
// number of forwards run.
int64_t follow_forwards(models::Transformer& model, const EngineConfig& cfg,
                        comm::Communicator& tp);

}  // namespace zs::infer
