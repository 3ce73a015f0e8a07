// Asynchronous tensor files over io_uring (ZeRO-Infinity's swap files; DeepSpeed's `aio`
// section).
//
//   io::AioConfig cfg;                    // block_size, queue_depth, thread_count, ...
//   io::AsyncIo aio(cfg);
//   io::AlignedBuffer buf(n, /*pin=*/true, core::MemCategory::optimizer);
//   io::AioWork w = aio.write("/nvme/x.swp", buf, n);   // returns at once
//   ...                                                 // compute while the write runs
//   w.wait();                                           // IoError naming path + errno
//   aio.read("/nvme/x.swp", buf, n).wait();             // checksum verified
//
// File layout: the n data bytes, zero-padded to a multiple of kAioAlign, then one kAioAlign
// footer {magic, n, XXH3-64 of the data, XXH3-64 of the footer fields}. A write goes to
// "<path>.tmp" and is renamed over <path> only when every block and the footer are written, so
// <path> is either the previous complete file or the new one; a failed write (ENOSPC, EIO)
// removes the temporary file and fails the AioWork with the path and errno. A read checks the
// size, the footer and the data checksum: a short, truncated or corrupted file is an IoError
// naming the path, never data.
//
// Each request is cut into blocks of block_size bytes; each of thread_count workers owns an
// io_uring of queue_depth entries and runs the requests given to it (round robin) with at most
// queue_depth blocks in flight. single_submit: one io_uring_submit per block (else one per
// batch). overlap_events: a completed block's slot is refilled at once (else the worker waits
// for the whole batch of queue_depth before submitting the next). Files are opened O_DIRECT;
// where the file system refuses it (tmpfs: EINVAL) the worker falls back to buffered I/O and
// logs why once per AsyncIo. Buffers must come from AlignedBuffer (kAioAlign-aligned, capacity
// a multiple of kAioAlign), pinned (mlock) when asked and allowed (else logged once, unpinned).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/memory.h"

namespace zs::io {

inline constexpr size_t kAioAlign = 4096;

struct AioConfig {  // ds_config "aio" (DeepSpeed 0.19 defaults)
    int64_t block_size = 1'048'576;
    int64_t queue_depth = 8;
    int64_t thread_count = 1;  // "thread_count" (older) or "intra_op_parallelism" (newer)
    bool single_submit = false;
    bool overlap_events = true;
    bool direct = true;  // O_DIRECT where the file system allows it
};

// Bytes aligned to kAioAlign with a capacity rounded up to a multiple of it, counted under a
// MemCategory on the CPU device; mlock'd when pin is true and RLIMIT_MEMLOCK allows.
class AlignedBuffer {
public:
    AlignedBuffer() = default;
    AlignedBuffer(size_t bytes, bool pin, core::MemCategory cat = core::MemCategory::buffers);
    ~AlignedBuffer();
    AlignedBuffer(AlignedBuffer&& o) noexcept;
    AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;

    std::byte* data() const { return data_; }
    size_t capacity() const { return capacity_; }
    bool pinned() const { return pinned_; }

private:
    void reset();
    std::byte* data_ = nullptr;
    size_t capacity_ = 0;
    bool pinned_ = false;
    core::MemCategory cat_ = core::MemCategory::buffers;
};

// The completion of one read or write. wait() rethrows its error (IoError naming the path and
// errno, or the checksum rule broken); test() polls without blocking. Default: already done.
class AioWork {
public:
    struct State;
    AioWork() = default;
    explicit AioWork(std::shared_ptr<State> s) : s_(std::move(s)) {}
    bool test() const;
    void wait() const;
    bool valid() const { return s_ != nullptr; }

private:
    std::shared_ptr<State> s_;
};

class AsyncIo {
public:
    // Checks cfg (ConfigError naming aio.<key>), starts the workers and their rings (IoError
    // when io_uring is unavailable, with the errno).
    explicit AsyncIo(AioConfig cfg);
    ~AsyncIo();  // waits for the requests in flight
    AsyncIo(const AsyncIo&) = delete;
    AsyncIo& operator=(const AsyncIo&) = delete;

    // Write bytes [0, n) of buf as the tensor file `path`; buf must stay alive and unchanged
    // until the work completes (the padding after n is zeroed by the write).
    AioWork write(const std::string& path, AlignedBuffer& buf, size_t n);
    // Read the tensor file `path`, which must hold exactly n bytes, into buf.
    AioWork read(const std::string& path, AlignedBuffer& buf, size_t n);

    const AioConfig& config() const { return cfg_; }
    // Bytes moved since construction (data + padding + footers).
    int64_t bytes_written() const { return written_.load(); }
    int64_t bytes_read() const { return read_.load(); }

    struct Request;
    struct Worker;

private:
    AioWork submit(std::unique_ptr<Request> r);
    AioConfig cfg_;
    std::vector<std::unique_ptr<Worker>> workers_;
    std::atomic<size_t> next_{0};
    std::atomic<int64_t> written_{0}, read_{0};
    std::atomic<bool> direct_refused_logged_{false};
    friend struct Worker;
};

// Padded size of n data bytes on disk (without the footer).
inline size_t aio_padded(size_t n) { return (n + kAioAlign - 1) / kAioAlign * kAioAlign; }

}  // namespace zs::io
