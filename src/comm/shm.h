// Shared-memory collectives for the ranks of one host: the MPI backend's fast path when every rank
// of a group shares a host (mpi.cpp chooses it; MPI stays for the rest).
//
// The ranks map one segment (POSIX shm_open + mmap). Each rank owns a control line (three
// counters, each on its own cache line) and two staging buffers of `slot_bytes`. A collective
// runs as a sequence of chunks; chunk g (counted over the communicator's life, the same on every
// rank because every rank runs the same collectives with the same sizes) uses buffer g % 2:
//   1. wait until every rank has finished chunk g - 2 (its `done` >= g - 1): buffer g % 2 is free;
//   2. copy my part of chunk g into my buffer, then `pub` = g + 1 (release);
//   3. for each peer whose part I need: wait for its `pub` >= g + 1 (acquire), then read or reduce
//      straight from its buffer into my output;
//   4. `done` = g + 1.
// Publishing chunk g + 1 only waits for chunk g - 1, so one rank copies in while the others read.
// Synchronisation is loads and stores on shared counters: no system call on the fast path. A waiter
// spins for `spin_us`, then sleeps on a futex in the segment (woken by the rank that moves a
// counter, which makes the wake call only when someone sleeps).
//
// Reductions are in rank order (((x0 op x1) op x2) ...), accumulating 16-bit floats in f32 and
// rounding once, avg dividing the sum by the rank count at the end: the local backend's order, so
// the results are bit-identical to it, and identical on every rank.
//
// Lifetime: rank 0 creates the segment with a fresh random name (O_EXCL), the others open it, and
// once every rank has mapped it rank 0 unlinks the name: from then on nothing is left in /dev/shm
// whatever happens to any process (kill -9 included); the memory goes with the last mapping.
// A crash during those few milliseconds can leave a name behind: names carry the creator's pid,
// and creation first removes names whose creator is no longer alive. An opened segment is used
// only if its header (magic, nonce, rank count, slot size) matches what rank 0 announced, so a
// stale segment is never mistaken for a live one.
//
// Failure: a wait that passes the op's deadline throws a CommError naming the op (`Op::what()`),
// and the ranks that never arrived at it (each rank stores the sequence number of the collective
// it last entered), or the rank it was waiting for when every rank arrived.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace zs::comm {

class ShmTransport {
public:
    // The collective being run, for errors ("allreduce #3 on group 'world' (2 ranks, 4096
    // bytes)": formatted only when one is raised); `seq` is its sequence number on the
    // communicator (the same on every rank), and waits fail once `deadline` passes.
    struct Op {
        const char* name = "";
        int64_t seq = 0;
        std::string group;
        int ranks = 0;
        size_t bytes = 0;
        double timeout_s = 0;
        std::chrono::steady_clock::time_point deadline;
        std::string what() const;
    };

    // Collective bootstrap over the group's other transport. `broadcast_name(name)`: rank 0's
    // argument on every rank. `all_ok(ok)`: true on every rank iff every rank passed true (also
    // a barrier).
    struct Bootstrap {
        std::function<std::string(const std::string&)> broadcast_name;
        std::function<bool(bool)> all_ok;
    };

    struct Options {
        int64_t slot_bytes = int64_t{256} << 10;  // each of a rank's two staging buffers
        // Spin this long before sleeping on the futex; < 0: 50 us, or 0 when the group has more
        // ranks than the host has CPUs (a spinning waiter would hold the CPU the rank it waits
        // for needs).
        double spin_us = -1;
        // Ops whose output is at least this large write it with non-temporal stores.
        int64_t stream_bytes = int64_t{8} << 20;
    };
    // Options from the environment: ZS_SHM_SLOT_KIB, ZS_SHM_SPIN_US, ZS_SHM_STREAM_KIB (defaults
    // above).
    static Options options_from_env();

    // Every rank of the group calls this together. Returns nullptr on every rank (and logs why
    // on rank 0) when any rank cannot create or map the segment; the caller keeps its other
    // transport then.
    static std::unique_ptr<ShmTransport> create(int rank, int size, const Bootstrap& boot,
                                                const Options& opt);
    ~ShmTransport();
    ShmTransport(const ShmTransport&) = delete;
    ShmTransport& operator=(const ShmTransport&) = delete;

    int rank() const { return rank_; }
    int size() const { return size_; }

    // The collectives, run on the calling thread; same shapes as Communicator's. Element types
    // f32, bf16, f16 (f32 accumulation), i32, i64, i8 (i64 accumulation).
    void allreduce(void* data, core::DType t, int64_t count, ReduceOp op, const Op& o);
    // in: size * count elements; out: count elements (rank r gets block r).
    void reduce_scatter(const void* in, void* out, core::DType t, int64_t count, ReduceOp op,
                        const Op& o);
    // in: bytes; out: size * bytes, in rank order.
    void allgather(const void* in, void* out, int64_t bytes, const Op& o);
    void broadcast(void* data, int64_t bytes, int root, const Op& o);
    // in, out: size * bytes; block j of in goes to rank j, arriving as block r of its out.
    void all_to_all(const void* in, void* out, int64_t bytes, const Op& o);
    // Variable parts: in_bytes[j] to rank j, out_bytes[q] from rank q, consecutive in rank
    // order. Every rank's counts go through the segment first, so a mismatched pair is the same
    // ShapeError on every rank.
    void all_to_all_v(const void* in, const std::vector<int64_t>& in_bytes, void* out,
                      const std::vector<int64_t>& out_bytes, const Op& o);
    void barrier(const Op& o);

    // Name of the segment while it exists (tests).
    const std::string& segment_name() const { return name_; }

private:
    struct Control;
    struct Header;
    ShmTransport(int rank, int size, void* base, size_t bytes, std::string name,
                 const Options& opt);

    Header* header() const;
    Control* control(int r) const;
    char* buffer(int r, uint64_t chunk) const;

    void enter(const Op& o);
    void wait_free(uint64_t g, const Op& o);              // step 1
    void publish(uint64_t g);                             // step 2's release
    void wait_published(int q, uint64_t g, const Op& o);  // step 3's acquire
    void finish(uint64_t g);                              // step 4
    void notify();
    // Wait until ready() (re-evaluated after every wake-up); `who` = the rank waited for.
    template <class Ready>
    void wait(Ready&& ready, int who, const Op& o);
    [[noreturn]] void fail(const Op& o, int who);

    int rank_, size_;
    void* base_;
    size_t bytes_;
    std::string name_;
    Options opt_;
    uint64_t chunk_ = 0;  // chunks this rank has run (the same on every rank between ops)
};

// The integer environment variable `name` (the transports' settings: comm/README.md), `fallback`
// when unset or empty; ConfigError naming it, its value and [lo, hi] otherwise.
int64_t env_int(const char* name, int64_t fallback, int64_t lo, int64_t hi);

// Elementwise op over ins[0..n) in rank order into out (which may alias any input): the local
// backend's arithmetic (f32 accumulation for 16-bit floats, i64 for integers, avg = sum / n).
void reduce_rank_order(void* out, const std::vector<const void*>& ins, core::DType t, int64_t count,
                       ReduceOp op);

}  // namespace zs::comm
