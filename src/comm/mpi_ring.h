// Ring reduce-scatter over MPI point-to-point, for the MPI backend's worker thread.
//
// Why not MPI_Allreduce / MPI_Reduce_scatter_block: OpenMPI's tuned algorithms malloc a temporary
// of half the message per call. Called from a worker thread, glibc serves it from that thread's
// arena, which returns it to the kernel after every call (a non-main arena mmaps anything over
// 64 MiB), so each call page-faults the whole temporary again: 0.5-0.7x the bandwidth of the same
// call made from the main thread. The ring reduces through two receive buffers of one segment
// (at most kRingSegmentMax each) that it keeps between calls: a bounded scratch, not a temporary
// that scales with the message.
//
// Invariant: every rank calls with the same counts, dtype and op, in the same order (the worker's
// FIFO); the traffic runs on its own duplicated communicator, so user send/recv tags never match.
#pragma once

#include <cstdint>
#include <vector>

#include <mpi.h>

#include "comm/communicator.h"

namespace zs::comm {

// Segment size: a quarter of the largest block, within [kRingSegmentMin, kRingSegmentMax]. Large
// segments matter on an oversubscribed node: every message is a rendezvous that needs both
// peers scheduled (1 MiB segments measured 0.5-0.7x MPI_Allreduce here, 16-32 MiB 0.9-1x).
inline constexpr int64_t kRingSegmentMin = int64_t{1} << 20;
inline constexpr int64_t kRingSegmentMax = int64_t{16} << 20;

// Block b of a buffer split among n ranks: elements [offset, offset + count).
struct RingBlock {
    int64_t offset;
    int64_t count;
};

class Ring {
public:
    // `comm`: a communicator reserved for the ring (not freed here).
    Ring(MPI_Comm comm, int rank, int size) : comm_(comm), rank_(rank), size_(size) {}

    // Whether the ring reduces this element type (16-bit floats take the f32 staging path).
    static bool supports(core::DType t);

    // Reduce block `rank` over the ranks. `in` holds every block (blocks[b], in elements) and is
    // only read; the result lands in `out` ([blocks[rank].count]). avg sums; the caller divides.
    void reduce_scatter(const void* in, void* out, const std::vector<RingBlock>& blocks,
                        core::DType t, ReduceOp op);
    // The same with the result left in `data` at blocks[rank]; the other blocks are overwritten
    // with partial results (allreduce gathers over them next).
    void reduce_scatter_in_place(void* data, const std::vector<RingBlock>& blocks, core::DType t,
                                 ReduceOp op);

    // Every rank's block blocks[rank] of `data` sent around the ring into place: n - 1 steps of
    // whole blocks, no scratch (allreduce's second half).
    void allgather_in_place(void* data, const std::vector<RingBlock>& blocks, core::DType t);

private:
    // in_place: `data` is reduced into, `out` unused; else `data` is read only.
    void run(char* data, char* out, const std::vector<RingBlock>& blocks, core::DType t,
             ReduceOp op, bool in_place);

    MPI_Comm comm_;
    int rank_, size_;
    std::vector<char> recv_[2];  // one segment each (the largest so far), kept across calls
};

// n balanced blocks of `count` elements (the first count % n get one more).
std::vector<RingBlock> ring_blocks(int64_t count, int n);

}  // namespace zs::comm
