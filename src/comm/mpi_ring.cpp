#include "comm/mpi_ring.h"

#include <algorithm>
#include <cstring>

#include "base/error.h"

namespace zs::comm {

namespace {

using core::DType;

template <class T>
void reduce_typed(T* dst, const T* src, int64_t k, ReduceOp op) {
    switch (op) {
        case ReduceOp::sum:
        case ReduceOp::avg:
            for (int64_t i = 0; i < k; ++i) dst[i] += src[i];
            return;
        case ReduceOp::max:
            for (int64_t i = 0; i < k; ++i) dst[i] = std::max(dst[i], src[i]);
            return;
        case ReduceOp::min:
            for (int64_t i = 0; i < k; ++i) dst[i] = std::min(dst[i], src[i]);
            return;
    }
}

// dst[i] = op(dst[i], src[i]) for k elements of type t.
void reduce_into(void* dst, const void* src, int64_t k, DType t, ReduceOp op) {
    switch (t) {
        case DType::f32:
            return reduce_typed(static_cast<float*>(dst), static_cast<const float*>(src), k, op);
        case DType::i64:
            return reduce_typed(static_cast<int64_t*>(dst), static_cast<const int64_t*>(src), k,
                                op);
        case DType::i32:
            return reduce_typed(static_cast<int32_t*>(dst), static_cast<const int32_t*>(src), k,
                                op);
        case DType::i8:
            return reduce_typed(static_cast<int8_t*>(dst), static_cast<const int8_t*>(src), k, op);
        case DType::bf16:
        case DType::f16:
            break;
    }
    ZS_ASSERT(false, "ring reduction of {}", core::to_string(t));
}

}  // namespace

bool Ring::supports(DType t) {
    switch (t) {
        case DType::f32:
        case DType::i64:
        case DType::i32:
        case DType::i8:
            return true;
        case DType::bf16:
        case DType::f16:
            return false;
    }
    return false;
}

std::vector<RingBlock> ring_blocks(int64_t count, int n) {
    std::vector<RingBlock> blocks(static_cast<size_t>(n));
    int64_t off = 0;
    for (int b = 0; b < n; ++b) {
        const int64_t c = count / n + (b < count % n ? 1 : 0);
        blocks[static_cast<size_t>(b)] = {off, c};
        off += c;
    }
    return blocks;
}

void Ring::reduce_scatter(const void* in, void* out, const std::vector<RingBlock>& blocks, DType t,
                          ReduceOp op) {
    // run() only reads `data` when not in place.
    run(const_cast<char*>(static_cast<const char*>(in)), static_cast<char*>(out), blocks, t, op,
        false);
}

void Ring::reduce_scatter_in_place(void* data, const std::vector<RingBlock>& blocks, DType t,
                                   ReduceOp op) {
    run(static_cast<char*>(data), nullptr, blocks, t, op, true);
}

// n - 1 steps: at step s rank r sends its partial of block (r - s - 1) to rank r + 1 and receives
// block (r - s - 2) from rank r - 1, reducing it into its own contribution; after the last step
// block r is complete on rank r. Within a step the blocks move in segments through two receive
// buffers, so reducing segment i overlaps the transfer of segment i + 1. Partials live in the
// block itself (in place) or in `out` (a segment's old partial is sent before its new one is
// written there).
void Ring::run(char* data, char* out, const std::vector<RingBlock>& blocks, DType t, ReduceOp op,
               bool in_place) {
    ZS_ASSERT(supports(t) && static_cast<int>(blocks.size()) == size_);
    const int64_t esz = static_cast<int64_t>(core::dtype_size(t));
    const RingBlock mine = blocks[static_cast<size_t>(rank_)];
    if (size_ == 1) {
        if (!in_place) {
            std::memcpy(out, data + mine.offset * esz, static_cast<size_t>(mine.count * esz));
        }
        return;
    }
    const int left = (rank_ - 1 + size_) % size_, right = (rank_ + 1) % size_;
    // The same segment size and count on every rank (blocks may differ by one element): the
    // i-th message between two neighbours is always segment i, possibly empty.
    int64_t longest = 0;
    for (const RingBlock& b : blocks) longest = std::max(longest, b.count);
    const int64_t seg_bytes = std::clamp(longest * esz / 4, kRingSegmentMin, kRingSegmentMax);
    const int64_t seg = std::min(longest, std::max<int64_t>(1, seg_bytes / esz));
    const int64_t n_seg = std::max<int64_t>(1, (longest + seg - 1) / seg);
    for (std::vector<char>& b : recv_) {
        if (b.size() < static_cast<size_t>(seg * esz)) b.resize(static_cast<size_t>(seg * esz));
    }
    for (int s = 0; s < size_ - 1; ++s) {
        const RingBlock bs = blocks[static_cast<size_t>((rank_ - s - 1 + 2 * size_) % size_)];
        const RingBlock br = blocks[static_cast<size_t>((rank_ - s - 2 + 2 * size_) % size_)];
        const char* send = in_place || s == 0 ? data + bs.offset * esz : out;
        char* acc = in_place ? data + br.offset * esz : out;
        const char* own = data + br.offset * esz;
        MPI_Request reqs[2][2];  // [buffer][send, recv]
        auto post = [&](int64_t i) {
            const int64_t o = i * seg;
            const int64_t ks = std::clamp<int64_t>(bs.count - o, 0, seg);
            const int64_t kr = std::clamp<int64_t>(br.count - o, 0, seg);
            MPI_Request* r = reqs[i % 2];
            int rc = MPI_Irecv(recv_[static_cast<size_t>(i % 2)].data(), static_cast<int>(kr * esz),
                               MPI_BYTE, left, 0, comm_, &r[1]);
            if (rc == MPI_SUCCESS) {
                rc = MPI_Isend(send + o * esz, static_cast<int>(ks * esz), MPI_BYTE, right, 0,
                               comm_, &r[0]);
            }
            ZS_CHECK_T(CommError, rc == MPI_SUCCESS,
                       "ring step {}: MPI_Isend/MPI_Irecv failed ({})", s, rc);
        };
        post(0);
        for (int64_t i = 0; i < n_seg; ++i) {
            int rc = MPI_Waitall(2, reqs[i % 2], MPI_STATUSES_IGNORE);
            ZS_CHECK_T(CommError, rc == MPI_SUCCESS, "ring step {}: MPI_Waitall failed ({})", s,
                       rc);
            if (i + 1 < n_seg) post(i + 1);
            const int64_t o = i * seg;
            const int64_t kr = std::clamp<int64_t>(br.count - o, 0, seg);
            if (!in_place) std::memcpy(acc + o * esz, own + o * esz, static_cast<size_t>(kr * esz));
            reduce_into(acc + o * esz, recv_[static_cast<size_t>(i % 2)].data(), kr, t, op);
        }
    }
}

void Ring::allgather_in_place(void* data, const std::vector<RingBlock>& blocks, DType t) {
    ZS_ASSERT(static_cast<int>(blocks.size()) == size_);
    if (size_ == 1) return;
    const int64_t esz = static_cast<int64_t>(core::dtype_size(t));
    char* base = static_cast<char*>(data);
    const int left = (rank_ - 1 + size_) % size_, right = (rank_ + 1) % size_;
    // Messages of at most 1 GiB (MPI counts are int); the same count on every rank.
    constexpr int64_t kChunk = int64_t{1} << 30;
    int64_t longest = 0;
    for (const RingBlock& b : blocks) longest = std::max(longest, b.count * esz);
    const int64_t n_chunk = std::max<int64_t>(1, (longest + kChunk - 1) / kChunk);
    for (int s = 0; s < size_ - 1; ++s) {
        const RingBlock bs = blocks[static_cast<size_t>((rank_ - s + size_) % size_)];
        const RingBlock br = blocks[static_cast<size_t>((rank_ - s - 1 + size_) % size_)];
        for (int64_t i = 0; i < n_chunk; ++i) {
            const int64_t o = i * kChunk;
            const int64_t ks = std::clamp<int64_t>(bs.count * esz - o, 0, kChunk);
            const int64_t kr = std::clamp<int64_t>(br.count * esz - o, 0, kChunk);
            MPI_Request reqs[2];
            int rc = MPI_Irecv(base + br.offset * esz + o, static_cast<int>(kr), MPI_BYTE, left, 1,
                               comm_, &reqs[1]);
            if (rc == MPI_SUCCESS) {
                rc = MPI_Isend(base + bs.offset * esz + o, static_cast<int>(ks), MPI_BYTE, right, 1,
                               comm_, &reqs[0]);
            }
            if (rc == MPI_SUCCESS) rc = MPI_Waitall(2, reqs, MPI_STATUSES_IGNORE);
            ZS_CHECK_T(CommError, rc == MPI_SUCCESS, "ring allgather step {} failed ({})", s, rc);
        }
    }
}

}  // namespace zs::comm
