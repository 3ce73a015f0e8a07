#include "comm/mpi.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <mpi.h>

#include "base/error.h"
#include "base/log.h"
#include "comm/hierarchical.h"
#include "comm/mpi_ring.h"
#include "comm/shm.h"
#include "core/half.h"

namespace zs::comm {

namespace {

using core::DType;

void check_mpi(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    ZS_THROW(CommError, "{} failed: {}", what, std::string(msg, static_cast<size_t>(len)));
}

MPI_Datatype mpi_type(DType t) {
    switch (t) {
        case DType::f32:
            return MPI_FLOAT;
        case DType::i32:
            return MPI_INT32_T;
        case DType::i64:
            return MPI_INT64_T;
        case DType::i8:
            return MPI_INT8_T;
        case DType::bf16:
        case DType::f16:
            break;  // reduced through f32 staging
    }
    ZS_ASSERT(false, "no MPI type for {}", core::to_string(t));
    return MPI_BYTE;
}

MPI_Op mpi_op(ReduceOp op) {
    switch (op) {
        case ReduceOp::sum:
        case ReduceOp::avg:
            return MPI_SUM;
        case ReduceOp::max:
            return MPI_MAX;
        case ReduceOp::min:
            return MPI_MIN;
    }
    return MPI_SUM;
}

// An MPI element count: MPI takes `int`.
int mpi_count(const char* op, int64_t n) {
    ZS_CHECK_T(CommError, n <= std::numeric_limits<int>::max(),
               "{}: {} elements exceed MPI's int count limit", op, n);
    return static_cast<int>(n);
}

bool is_half(DType t) { return t == DType::bf16 || t == DType::f16; }

// t /= n elementwise (ReduceOp::avg after an MPI_SUM); p holds `count` elements of type t.
void divide(void* p, DType t, int64_t count, int n) {
    switch (t) {
        case DType::f32: {
            float* f = static_cast<float*>(p);
            const float inv = 1.0f / static_cast<float>(n);
            for (int64_t i = 0; i < count; ++i) f[i] *= inv;
            return;
        }
        case DType::i64: {
            int64_t* v = static_cast<int64_t*>(p);
            for (int64_t i = 0; i < count; ++i) v[i] /= n;
            return;
        }
        case DType::i32: {
            int32_t* v = static_cast<int32_t*>(p);
            for (int64_t i = 0; i < count; ++i) v[i] /= n;
            return;
        }
        case DType::i8:
        case DType::bf16:
        case DType::f16:
            return;  // i8: no average (as before); 16-bit floats are divided in f32 staging
    }
}

// Allreduce of at most this many bytes calls MPI_Allreduce; larger ones take the ring (mpi_ring.h:
// OpenMPI's temporary of half the message, malloc'd on the worker thread, is page-faulted anew
// every call once it no longer fits the thread's arena; up to here it stays and MPI's algorithm
// measured as fast as the direct call).
constexpr size_t kMpiAllreduceMaxBytes = size_t{16} << 20;

// bf16/f16 reductions go through f32 staging in slices of this many elements (MPI has no
// 16-bit float type): bounded memory instead of a full-size f32 copy of the tensor.
constexpr int64_t kStageElems = int64_t{4} << 20;  // 16 MiB of f32

// ZS_SHM=0 turns the shared-memory transport off (comparisons, debugging); default on.
bool shm_wanted() { return env_int("ZS_SHM", 1, 0, 1) == 1; }

// Testing hierarchical collectives on one machine: ZS_SIMULATE_HOSTS=k places world rank w on
// "host" w * k / world_size (shared memory only inside a simulated host, MPI across them).
int simulated_hosts() { return static_cast<int>(env_int("ZS_SIMULATE_HOSTS", 0, 1, 1 << 20)); }

// The host of every rank of `comm` (collective): ids 0, 1, ... in order of first appearance.
// Ranks share a host when MPI puts them in one shared-memory domain (MPI_COMM_TYPE_SHARED).
std::vector<int> hosts_of(MPI_Comm comm) {
    int world_rank = 0, world_size = 1, size = 1, rank = 0, key = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    MPI_Comm_size(comm, &size);
    MPI_Comm_rank(comm, &rank);
    if (const int k = simulated_hosts(); k > 0) {
        key = static_cast<int>(int64_t{world_rank} * k / world_size);
    } else {
        // The host's key: the world rank of its first rank in this group.
        MPI_Comm node = MPI_COMM_NULL;
        check_mpi(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node),
                  "MPI_Comm_split_type");
        key = world_rank;
        check_mpi(MPI_Bcast(&key, 1, MPI_INT, 0, node), "MPI_Bcast");
        MPI_Comm_free(&node);
    }
    std::vector<int> keys(static_cast<size_t>(size));
    check_mpi(MPI_Allgather(&key, 1, MPI_INT, keys.data(), 1, MPI_INT, comm), "MPI_Allgather");
    std::vector<int> seen, hosts(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
        auto it = std::find(seen.begin(), seen.end(), keys[i]);
        hosts[i] = static_cast<int>(it - seen.begin());
        if (it == seen.end()) seen.push_back(keys[i]);
    }
    return hosts;
}

// Shared-memory collectives up to this size run on the caller's thread when the communicator's
// worker is idle (ZS_SHM_INLINE_KIB, default 1 MiB): a small op then costs no thread handoff,
// while a large one still runs on the worker, overlapping the caller's compute.
size_t shm_inline_bytes() {
    return static_cast<size_t>(env_int("ZS_SHM_INLINE_KIB", 1024, 0, int64_t{1} << 30)) << 10;
}

// Point-to-point requests (send/recv stay non-blocking MPI requests polled by Work::wait): this
// thread drives OpenMPI's progress engine while any is outstanding, so a send posted before
// compute advances without a waiter. Idle, it sleeps on a condition variable.
class Progress {
public:
    Progress() : thread_([this] { loop(); }) {}
    ~Progress() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        thread_.join();
    }
    void add() {
        {
            std::lock_guard<std::mutex> lock(mu_);
            ++pending_;
        }
        cv_.notify_all();
    }
    void done() {
        std::lock_guard<std::mutex> lock(mu_);
        --pending_;
    }

private:
    void loop() {
        std::unique_lock<std::mutex> lock(mu_);
        while (!stop_) {
            if (pending_ == 0) {
                cv_.wait(lock, [&] { return stop_ || pending_ > 0; });
                continue;
            }
            lock.unlock();
            int flag = 0;
            // Any MPI call drives OpenMPI's progress engine for every outstanding request.
            MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_SELF, &flag, MPI_STATUS_IGNORE);
            std::this_thread::sleep_for(std::chrono::microseconds(100));
            lock.lock();
        }
    }
    std::mutex mu_;
    std::condition_variable cv_;
    bool stop_ = false;  // GUARDED_BY(mu_)
    int pending_ = 0;    // GUARDED_BY(mu_)
    std::thread thread_;
};

// Whether a communicator has failed (poisoned). Shared by the communicator and its worker
// thread, which may outlive it when detached; `any` is the runtime-wide flag that tells
// ~MpiRuntime not to finalize.
class Health {
public:
    explicit Health(std::shared_ptr<std::atomic<bool>> any) : any_(std::move(any)) {}
    void fail(const std::string& why) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!failed_) failure_ = why;
        failed_ = true;
        *any_ = true;
    }
    std::optional<std::string> failure() {
        std::lock_guard<std::mutex> lock(mu_);
        if (!failed_) return std::nullopt;
        return failure_;
    }

private:
    std::mutex mu_;
    bool failed_ = false;  // GUARDED_BY(mu_)
    std::string failure_;  // GUARDED_BY(mu_)
    std::shared_ptr<std::atomic<bool>> any_;
};

// One thread per communicator running its collectives in the order they were posted, each as
// the blocking MPI call (MPI_Allreduce, ...), and completing the op's Work. Posting order is the
// same on every rank (the Communicator contract), so the MPI call order is too.
//
// NOTE: blocking calls rather than MPI_I* (libnbc): OpenMPI's blocking collectives use the tuned
// algorithms, reduce in place and progress themselves; libnbc's allreduce measured 0.2-0.5x
// their bandwidth with a full-size temporary. Only one collective per communicator is in
// flight at a time, which libnbc's polling also never overlapped in practice.
class Worker {
public:
    using Job = std::function<void()>;  // throws on failure

    explicit Worker(std::shared_ptr<Health> health) : q_(std::make_shared<Queue>()) {
        q_->health = std::move(health);
        thread_ = std::thread([q = q_] { run(*q); });
    }
    ~Worker() { stop(false); }
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    // Queue `job`; the worker completes `state` with its outcome. `what` names the op in errors.
    void post(std::shared_ptr<Work::State> state, std::string what, Job job) {
        {
            std::lock_guard<std::mutex> lock(q_->mu);
            q_->jobs.push_back({std::move(state), std::move(what), std::move(job)});
        }
        q_->cv.notify_one();
    }

    // Run `job` on the calling thread when nothing is queued or running (so posting order is kept):
    // small shared-memory collectives skip the handoff to the worker and back (two wake-ups).
    // Returns false, without running it, when the worker is busy.
    bool run_inline(const std::function<void()>& job) {
        {
            std::lock_guard<std::mutex> lock(q_->mu);
            if (!q_->jobs.empty() || q_->running || q_->stop) return false;
            q_->running = true;
        }
        struct Done {
            Queue& q;
            ~Done() {
                bool queued;
                {
                    std::lock_guard<std::mutex> lock(q.mu);
                    q.running = false;
                    queued = !q.jobs.empty() || q.stop;
                }
                // Only when the worker has something to do: waking it for nothing costs a
                // context switch per op, most of a small op's time.
                if (queued) q.cv.notify_one();
            }
        } done{*q_};
        job();
        return true;
    }

    // Run what is queued, then end the thread. `abandon`: the thread may be stuck in a call that
    // never returns (a timed-out collective): detach it instead of joining, so process exit is
    // not blocked. It owns what it touches (the queue, the job's tensors and MPI handles).
    void stop(bool abandon) {
        if (!thread_.joinable()) return;
        {
            std::lock_guard<std::mutex> lock(q_->mu);
            q_->stop = true;
        }
        q_->cv.notify_one();
        if (abandon) {
            thread_.detach();
        } else {
            thread_.join();
        }
    }

private:
    struct Item {
        std::shared_ptr<Work::State> state;
        std::string what;
        Job job;
    };
    struct Queue {
        std::mutex mu;
        std::condition_variable cv;
        std::deque<Item> jobs;  // GUARDED_BY(mu)
        bool stop = false;      // GUARDED_BY(mu)
        bool running = false;   // GUARDED_BY(mu): a job is running (here or inline)
        std::shared_ptr<Health> health;
    };

    static void run(Queue& q) {
        for (;;) {
            Item it;
            {
                std::unique_lock<std::mutex> lock(q.mu);
                q.cv.wait(lock, [&] { return (q.stop || !q.jobs.empty()) && !q.running; });
                if (q.jobs.empty()) return;
                it = std::move(q.jobs.front());
                q.jobs.pop_front();
                q.running = true;
            }
            std::exception_ptr error;
            if (auto failure = q.health->failure()) {
                // An earlier op failed: the ranks no longer agree on the call sequence.
                error = std::make_exception_ptr(CommError(
                    fmt::format("{}: the communicator already failed: {}", it.what, *failure)));
            } else {
                try {
                    it.job();
                } catch (const std::exception& e) {
                    std::string msg = fmt::format("{}: {}", it.what, e.what());
                    q.health->fail(msg);
                    error = std::make_exception_ptr(CommError(msg));
                } catch (...) {  // none escapes the thread
                    q.health->fail(fmt::format("{}: unknown error", it.what));
                    error = std::current_exception();
                }
            }
            it.job = nullptr;  // release the op's tensors before waking the waiter
            {
                std::lock_guard<std::mutex> lock(q.mu);
                q.running = false;
            }
            Work::complete(*it.state, error);
        }
    }

    std::shared_ptr<Queue> q_;
    std::thread thread_;
};

class MpiComm final : public Communicator {
public:
    // track_arrival: a window of per-rank arrival counters, for naming the ranks that never
    // arrived at a timed-out collective. Only on the world communicator: OpenMPI's osc/rdma names
    // a window's shared-memory segment after the communicator's context id, which the disjoint
    // communicators of one MPI_Comm_split share, so two groups on one host (the tp groups of
    // dp 2 x tp 2) would map and unlink each other's segment, and their collectives hang.
    MpiComm(MPI_Comm comm, std::string name, std::shared_ptr<Progress> progress,
            std::shared_ptr<std::atomic<bool>> any_failed, double timeout,
            bool track_arrival = true)
        : comm_(comm),
          name_(std::move(name)),
          progress_(std::move(progress)),
          any_failed_(any_failed),
          health_(std::make_shared<Health>(std::move(any_failed))),
          worker_(health_) {
        timeout_s_ = timeout;
        MPI_Comm_rank(comm_, &rank_);
        MPI_Comm_size(comm_, &size_);
        // Arrival counters: one int64 per rank, in a window everyone can read.
        if (track_arrival) {
            check_mpi(MPI_Win_allocate(sizeof(int64_t), sizeof(int64_t), MPI_INFO_NULL, comm_,
                                       &counter_, &win_),
                      "MPI_Win_allocate");
            *counter_ = 0;
            MPI_Win_lock_all(MPI_MODE_NOCHECK, win_);
        }
        check_mpi(MPI_Comm_dup(comm_, &ring_comm_), "MPI_Comm_dup");
        ring_ = std::make_shared<Ring>(ring_comm_, rank_, size_);
        if (size_ > 1) {
            hosts_ = hosts_of(comm_);
            shm_ = make_shm();
        } else {
            hosts_ = {0};
        }
    }
    ~MpiComm() override {
        if (health_->failure()) {
            // NOTE: a failed group cannot be torn down collectively (MPI_Win_free and
            // MPI_Comm_free would wait for the missing ranks) and the worker may be stuck in the
            // timed-out call: abandon both; ~MpiRuntime then ends the job instead of finalizing.
            worker_.stop(/*abandon=*/true);
            return;
        }
        worker_.stop(/*abandon=*/false);
        if (win_ != MPI_WIN_NULL) {
            MPI_Win_unlock_all(win_);
            MPI_Win_free(&win_);
        }
        MPI_Comm_free(&ring_comm_);
        if (comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
    }
    int rank() const override { return rank_; }
    int size() const override { return size_; }
    std::string name() const override { return name_; }

    Work allreduce(const Tensor& t, ReduceOp op) override {
        check_contiguous("allreduce", "t", t);
        const int count = mpi_count("allreduce", t.numel());
        const MPI_Comm comm = comm_;
        const int n = size_, rank = rank_;
        if (shm_) {
            return start(
                "allreduce", t.nbytes(),
                [t, op, shm = shm_](const ShmTransport::Op& o) {
                    shm->allreduce(t.data_ptr(), t.dtype(), t.numel(), op, o);
                },
                /*may_inline=*/true);
        }
        return start(
            "allreduce", t.nbytes(),
            [t, op, count, comm, n, rank, ring = ring_](const ShmTransport::Op&) {
                if (is_half(t.dtype())) {
                    std::vector<float> stage(
                        static_cast<size_t>(std::min<int64_t>(count, kStageElems)));
                    char* base = static_cast<char*>(t.data_ptr());
                    const size_t esz = core::dtype_size(t.dtype());
                    for (int64_t off = 0; off < count; off += kStageElems) {
                        const int64_t k = std::min<int64_t>(kStageElems, count - off);
                        void* p = base + static_cast<size_t>(off) * esz;
                        core::convert(stage.data(), DType::f32, p, t.dtype(),
                                      static_cast<size_t>(k));
                        check_mpi(MPI_Allreduce(MPI_IN_PLACE, stage.data(), static_cast<int>(k),
                                                MPI_FLOAT, mpi_op(op), comm),
                                  "MPI_Allreduce");
                        if (op == ReduceOp::avg) divide(stage.data(), DType::f32, k, n);
                        core::convert(p, t.dtype(), stage.data(), DType::f32,
                                      static_cast<size_t>(k));
                    }
                    return;
                }
                if (t.nbytes() <= kMpiAllreduceMaxBytes) {
                    check_mpi(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), count, mpi_type(t.dtype()),
                                            mpi_op(op), comm),
                              "MPI_Allreduce");
                    if (op == ReduceOp::avg) divide(t.data_ptr(), t.dtype(), count, n);
                    return;
                }
                // Ring reduce-scatter in place, then every rank's reduced block passed around the
                // ring.
                const std::vector<RingBlock> blocks = ring_blocks(count, n);
                ring->reduce_scatter_in_place(t.data_ptr(), blocks, t.dtype(), op);
                const RingBlock mine = blocks[static_cast<size_t>(rank)];
                const size_t esz = core::dtype_size(t.dtype());
                char* base = static_cast<char*>(t.data_ptr());
                if (op == ReduceOp::avg) {
                    divide(base + static_cast<size_t>(mine.offset) * esz, t.dtype(), mine.count, n);
                }
                ring->allgather_in_place(base, blocks, t.dtype());
            });
    }

    Work reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override {
        check_contiguous("reduce_scatter", "out", out);
        check_contiguous("reduce_scatter", "in", in);
        check_whole_part("reduce_scatter", "in", in, "out", out, size_);
        const int count = mpi_count("reduce_scatter", out.numel());
        const MPI_Comm comm = comm_;
        const int n = size_;
        if (shm_) {
            return start(
                "reduce_scatter", in.nbytes(),
                [out, in, op, shm = shm_](const ShmTransport::Op& o) {
                    shm->reduce_scatter(in.data_ptr(), out.data_ptr(), out.dtype(), out.numel(), op,
                                        o);
                },
                /*may_inline=*/true);
        }
        return start(
            "reduce_scatter", in.nbytes(),
            [out, in, op, count, comm, n, ring = ring_](const ShmTransport::Op&) {
                if (is_half(in.dtype())) {
                    // Slice [off, off + k) of every rank's block, gathered into f32 [n, k].
                    const int64_t step = std::max<int64_t>(1, kStageElems / (n + 1));
                    const int64_t m = std::min<int64_t>(count, step);
                    std::vector<float> stage(static_cast<size_t>(m * (n + 1)));
                    float* stage_out = stage.data() + m * n;
                    const char* src = static_cast<const char*>(in.data_ptr());
                    char* dst = static_cast<char*>(out.data_ptr());
                    const size_t esz = core::dtype_size(in.dtype());
                    for (int64_t off = 0; off < count; off += step) {
                        const int64_t k = std::min<int64_t>(step, count - off);
                        for (int q = 0; q < n; ++q) {
                            core::convert(stage.data() + q * k, DType::f32,
                                          src + static_cast<size_t>(q * int64_t{count} + off) * esz,
                                          in.dtype(), static_cast<size_t>(k));
                        }
                        check_mpi(
                            MPI_Reduce_scatter_block(stage.data(), stage_out, static_cast<int>(k),
                                                     MPI_FLOAT, mpi_op(op), comm),
                            "MPI_Reduce_scatter_block");
                        if (op == ReduceOp::avg) divide(stage_out, DType::f32, k, n);
                        core::convert(dst + static_cast<size_t>(off) * esz, out.dtype(), stage_out,
                                      DType::f32, static_cast<size_t>(k));
                    }
                    return;
                }
                std::vector<RingBlock> blocks(static_cast<size_t>(n));
                for (int b = 0; b < n; ++b)
                    blocks[static_cast<size_t>(b)] = {int64_t{b} * count, count};
                ring->reduce_scatter(in.data_ptr(), out.data_ptr(), blocks, out.dtype(), op);
                if (op == ReduceOp::avg) divide(out.data_ptr(), out.dtype(), count, n);
            });
    }

    Work allgather(const Tensor& out, const Tensor& in) override {
        check_contiguous("allgather", "out", out);
        check_contiguous("allgather", "in", in);
        check_whole_part("allgather", "out", out, "in", in, size_);
        const int bytes = mpi_count("allgather", static_cast<int64_t>(in.nbytes()));
        const MPI_Comm comm = comm_;
        if (shm_) {
            return start(
                "allgather", out.nbytes(),
                [out, in, shm = shm_](const ShmTransport::Op& o) {
                    shm->allgather(in.data_ptr(), out.data_ptr(), static_cast<int64_t>(in.nbytes()),
                                   o);
                },
                /*may_inline=*/true);
        }
        return start("allgather", out.nbytes(), [out, in, bytes, comm](const ShmTransport::Op&) {
            check_mpi(MPI_Allgather(in.data_ptr(), bytes, MPI_BYTE, out.data_ptr(), bytes, MPI_BYTE,
                                    comm),
                      "MPI_Allgather");
        });
    }

    Work broadcast(const Tensor& t, int root) override {
        check_contiguous("broadcast", "t", t);
        check_root("broadcast", root, size_);
        const int bytes = mpi_count("broadcast", static_cast<int64_t>(t.nbytes()));
        const MPI_Comm comm = comm_;
        if (shm_) {
            return start(
                "broadcast", t.nbytes(),
                [t, root, shm = shm_](const ShmTransport::Op& o) {
                    shm->broadcast(t.data_ptr(), static_cast<int64_t>(t.nbytes()), root, o);
                },
                /*may_inline=*/true);
        }
        return start("broadcast", t.nbytes(), [t, root, bytes, comm](const ShmTransport::Op&) {
            check_mpi(MPI_Bcast(t.data_ptr(), bytes, MPI_BYTE, root, comm), "MPI_Bcast");
        });
    }

    Work all_to_all(const Tensor& out, const Tensor& in) override {
        check_contiguous("all_to_all", "out", out);
        check_contiguous("all_to_all", "in", in);
        check_all_to_all(out, in, size_);
        const int chunk = mpi_count(
            "all_to_all", static_cast<int64_t>(in.nbytes()) / static_cast<int64_t>(size_));
        const MPI_Comm comm = comm_;
        if (shm_) {
            return start(
                "all_to_all", in.nbytes(),
                [out, in, shm = shm_, n = size_](const ShmTransport::Op& o) {
                    shm->all_to_all(in.data_ptr(), out.data_ptr(),
                                    static_cast<int64_t>(in.nbytes()) / n, o);
                },
                /*may_inline=*/true);
        }
        return start("all_to_all", in.nbytes(), [out, in, chunk, comm](const ShmTransport::Op&) {
            check_mpi(
                MPI_Alltoall(in.data_ptr(), chunk, MPI_BYTE, out.data_ptr(), chunk, MPI_BYTE, comm),
                "MPI_Alltoall");
        });
    }

    Work all_to_all_v(const Tensor& out, const std::vector<int64_t>& out_counts, const Tensor& in,
                      const std::vector<int64_t>& in_counts) override {
        check_all_to_all_v(out, out_counts, in, in_counts, size_);
        const auto es = static_cast<int64_t>(core::dtype_size(in.dtype()));
        std::vector<int64_t> in_bytes(in_counts), out_bytes(out_counts);
        for (int64_t& b : in_bytes) b *= es;
        for (int64_t& b : out_bytes) b *= es;
        int64_t total = 0;
        for (int64_t b : in_bytes) total += b;
        if (shm_) {
            return start(
                "all_to_all_v", static_cast<size_t>(total),
                [out, in, in_bytes, out_bytes, shm = shm_](const ShmTransport::Op& o) {
                    shm->all_to_all_v(in.data_ptr(), in_bytes, out.data_ptr(), out_bytes, o);
                },
                /*may_inline=*/true);
        }
        const MPI_Comm comm = comm_;
        const int n = size_;
        return start("all_to_all_v", static_cast<size_t>(total),
                     [out, in, in_bytes, out_bytes, comm, n](const ShmTransport::Op&) {
                         // Every rank's counts first, so every rank checks every pair.
                         std::vector<int64_t> mine(in_bytes), all(static_cast<size_t>(2 * n * n));
                         mine.insert(mine.end(), out_bytes.begin(), out_bytes.end());
                         check_mpi(MPI_Allgather(mine.data(), 2 * n, MPI_INT64_T, all.data(), 2 * n,
                                                 MPI_INT64_T, comm),
                                   "MPI_Allgather");
                         std::vector<std::vector<int64_t>> sent(static_cast<size_t>(n)),
                             expected(sent.size());
                         for (int q = 0; q < n; ++q) {
                             const int64_t* row = all.data() + 2 * n * q;
                             sent[static_cast<size_t>(q)].assign(row, row + n);
                             expected[static_cast<size_t>(q)].assign(row + n, row + 2 * n);
                         }
                         check_all_to_all_v_pairs(sent, expected);
                         std::vector<int> sc(static_cast<size_t>(n)), sd(sc.size()), rc(sc.size()),
                             rd(sc.size());
                         int64_t so = 0, ro = 0;
                         for (size_t j = 0; j < sc.size(); ++j) {
                             sc[j] = mpi_count("all_to_all_v", in_bytes[j]);
                             rc[j] = mpi_count("all_to_all_v", out_bytes[j]);
                             sd[j] = mpi_count("all_to_all_v", so);
                             rd[j] = mpi_count("all_to_all_v", ro);
                             so += in_bytes[j];
                             ro += out_bytes[j];
                         }
                         check_mpi(
                             MPI_Alltoallv(in.data_ptr(), sc.data(), sd.data(), MPI_BYTE,
                                           out.data_ptr(), rc.data(), rd.data(), MPI_BYTE, comm),
                             "MPI_Alltoallv");
                     });
    }

    Work send(const Tensor& t, int peer, int tag) override {
        check_contiguous("send", "t", t);
        const int bytes = mpi_count("send", static_cast<int64_t>(t.nbytes()));
        return start_p2p("send", t.nbytes(), peer, [&](MPI_Request* r) {
            return MPI_Isend(t.data_ptr(), bytes, MPI_BYTE, peer, tag, comm_, r);
        });
    }

    Work recv(const Tensor& t, int peer, int tag) override {
        check_contiguous("recv", "t", t);
        const int bytes = mpi_count("recv", static_cast<int64_t>(t.nbytes()));
        return start_p2p("recv", t.nbytes(), peer, [&](MPI_Request* r) {
            return MPI_Irecv(t.data_ptr(), bytes, MPI_BYTE, peer, tag, comm_, r);
        });
    }

    void barrier() override {
        const MPI_Comm comm = comm_;
        if (shm_) {
            start(
                "barrier", 0, [shm = shm_](const ShmTransport::Op& o) { shm->barrier(o); },
                /*may_inline=*/true)
                .wait();
            return;
        }
        start("barrier", 0, [comm](const ShmTransport::Op&) {
            check_mpi(MPI_Barrier(comm), "MPI_Barrier");
        }).wait();
    }

    std::unique_ptr<Communicator> split(int color, int key) override {
        return with_hierarchy(split_mpi(color, key, fmt::format("{}.split({})", name_, color)));
    }

    // Where each rank of the group lives (host ids, hosts_of).
    const std::vector<int>& hosts() const { return hosts_; }

    // split() without the hierarchical wrapping: always an MPI communicator.
    std::unique_ptr<MpiComm> split_mpi(int color, int key, std::string name) {
        // Through the worker: MPI_Comm_split is a collective on comm_, ordered with the others.
        auto sub = std::make_shared<MPI_Comm>(MPI_COMM_NULL);
        const MPI_Comm comm = comm_;
        start("split", 0, [sub, comm, color, key](const ShmTransport::Op&) {
            check_mpi(MPI_Comm_split(comm, color, key, sub.get()), "MPI_Comm_split");
        }).wait();
        return std::make_unique<MpiComm>(*sub, std::move(name), progress_, any_failed_, timeout_s_,
                                         /*track_arrival=*/false);
    }

    // `c` itself when its ranks share one host, each has its own, or hosts hold different
    // numbers of them (logged) or ZS_HIERARCHICAL=0; otherwise hierarchical collectives
    // (hierarchical.h) over three splits of it: the whole group, my host's ranks (shared
    // memory), and my local index's ranks across hosts (MPI).
    // `keep`: where `c` goes when it is not returned (the world's, whose arrival window must
    // live); otherwise it is freed (the three splits are communicators of their own).
    static std::unique_ptr<Communicator> with_hierarchy(
        std::unique_ptr<MpiComm> c, std::unique_ptr<Communicator>* keep = nullptr) {
        const std::vector<int>& hosts = c->hosts();
        const int nhosts = *std::max_element(hosts.begin(), hosts.end()) + 1;
        if (nhosts == 1 || nhosts == c->size()) return c;
        if (env_int("ZS_HIERARCHICAL", 1, 0, 1) == 0) return c;
        HostLayout layout;
        try {
            layout = HostLayout::from(hosts);
        } catch (const Error& e) {
            if (c->rank() == 0) log_warn("group '{}': flat collectives: {}", c->name(), e.what());
            return c;
        }
        const int me = c->rank();
        auto flat = c->split_mpi(0, me, c->name());
        auto intra =
            c->split_mpi(hosts[static_cast<size_t>(me)], me,
                         fmt::format("{}.host({})", c->name(), hosts[static_cast<size_t>(me)]));
        const int local = layout.local_of_rank[static_cast<size_t>(me)];
        auto inter = c->split_mpi(local, me, fmt::format("{}.across_hosts({})", c->name(), local));
        const std::vector<int> host_of_rank = hosts;
        if (keep != nullptr) *keep = std::move(c);
        return make_hierarchical(std::move(flat), std::move(intra), std::move(inter), host_of_rank);
    }

private:
    using Job = std::function<void(const ShmTransport::Op&)>;

    // Post a collective: record arrival, queue `job` on the worker, return its Work. `may_inline`
    // (shared-memory ops): up to kShmInlineBytes, run on the caller's thread when the worker is
    // idle; such an op fails by itself at its deadline (the shared-memory waits check it).
    Work start(const char* op, size_t bytes, Job job, bool may_inline = false) {
        const int64_t seq = ++seq_;
        if (auto failure = health_->failure()) {
            return Work::failed(std::make_exception_ptr(
                CommError(fmt::format("{} #{} on group '{}': the communicator already failed: {}",
                                      op, seq, name_, *failure))));
        }
        const auto deadline = std::chrono::steady_clock::now() +
                              std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                  std::chrono::duration<double>(timeout_s_));
        ShmTransport::Op info{op, seq, name_, size_, bytes, timeout_s_, deadline};
        if (may_inline && bytes <= inline_bytes_) {
            // Arrival is recorded in the segment; a wait past the deadline throws by itself.
            std::exception_ptr error;
            const bool ran = worker_.run_inline([&] {
                try {
                    job(info);
                } catch (const CommError& e) {
                    health_->fail(e.what());
                    error = std::current_exception();
                } catch (const std::exception& e) {
                    std::string msg = fmt::format("{}: {}", info.what(), e.what());
                    health_->fail(msg);
                    error = std::make_exception_ptr(CommError(msg));
                }
            });
            if (ran) return error ? Work::failed(error) : Work();
        }
        // Record arrival (readable by every rank through the window).
        if (win_ != MPI_WIN_NULL) {
            *counter_ = seq;
            MPI_Win_sync(win_);
        }
        auto st = std::make_shared<Work::State>();
        st->deadline = deadline;
        std::string what = info.what();
        st->on_timeout = [this, what, seq]() {
            std::string missing = missing_ranks(seq);
            std::string msg =
                fmt::format("{}: did not complete within {} s; {}", what, timeout_s_, missing);
            health_->fail(msg);
            return std::make_exception_ptr(CommError(msg));
        };
        worker_.post(st, std::move(what),
                     [job = std::move(job), info = std::move(info)] { job(info); });
        return Work(st);
    }

    // The shared-memory transport when every rank of the group is on this host and no rank set
    // ZS_SHM=0 (nullptr otherwise: MPI carries the collectives). Collective over comm_.
    std::shared_ptr<ShmTransport> make_shm() {
        int want = shm_wanted() ? 1 : 0, all = 0;
        check_mpi(MPI_Allreduce(&want, &all, 1, MPI_INT, MPI_MIN, comm_), "MPI_Allreduce");
        if (all == 0) return nullptr;
        if (*std::max_element(hosts_.begin(), hosts_.end()) != 0) return nullptr;  // spans hosts
        ShmTransport::Bootstrap boot;
        boot.broadcast_name = [this](const std::string& s) {
            char buf[256] = {};
            std::memcpy(buf, s.data(), std::min(s.size(), sizeof(buf) - 1));
            check_mpi(MPI_Bcast(buf, sizeof(buf), MPI_CHAR, 0, comm_), "MPI_Bcast");
            return std::string(buf);
        };
        boot.all_ok = [this](bool ok) {
            int v = ok ? 1 : 0, every = 0;
            check_mpi(MPI_Allreduce(&v, &every, 1, MPI_INT, MPI_MIN, comm_), "MPI_Allreduce");
            return every == 1;
        };
        auto shm = ShmTransport::create(rank_, size_, boot, ShmTransport::options_from_env());
        if (shm) inline_bytes_ = shm_inline_bytes();
        return shm;
    }

    Work start_p2p(const char* op, size_t bytes, int peer,
                   const std::function<int(MPI_Request*)>& launch) {
        ZS_CHECK_T(ShapeError, peer >= 0 && peer < size_, "{}: peer {} outside [0, {})", op, peer,
                   size_);
        auto req = std::make_shared<MPI_Request>(MPI_REQUEST_NULL);
        check_mpi(launch(req.get()), op);
        progress_->add();
        auto st = std::make_shared<Work::State>();
        auto prog = progress_;
        st->poll = [req, prog]() {
            int flag = 0;
            check_mpi(MPI_Test(req.get(), &flag, MPI_STATUS_IGNORE), "MPI_Test");
            if (flag) prog->done();
            return flag != 0;
        };
        st->deadline = std::chrono::steady_clock::now() +
                       std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                           std::chrono::duration<double>(timeout_s_));
        std::string what =
            fmt::format("{} of {} bytes with rank {} on group '{}'", op, bytes, peer, name_);
        st->on_timeout = [what, this]() {
            return std::make_exception_ptr(
                CommError(fmt::format("{}: did not complete within {} s", what, timeout_s_)));
        };
        return Work(st);
    }

    // Read every rank's arrival counter (passive target: works when a peer is stopped).
    std::string missing_ranks(int64_t seq) {
        if (win_ == MPI_WIN_NULL)
            return "which ranks never arrived is tracked on the world group only";
        std::vector<int64_t> seen(static_cast<size_t>(size_), -1);
        std::vector<MPI_Request> reqs(static_cast<size_t>(size_), MPI_REQUEST_NULL);
        for (int r = 0; r < size_; ++r) {
            MPI_Rget(&seen[static_cast<size_t>(r)], 1, MPI_INT64_T, r, 0, 1, MPI_INT64_T, win_,
                     &reqs[static_cast<size_t>(r)]);
        }
        auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        int all = 0;
        while (!all && std::chrono::steady_clock::now() < until) {
            MPI_Testall(size_, reqs.data(), &all, MPI_STATUSES_IGNORE);
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        if (!all) return "the ranks that never arrived could not be read (peers unreachable)";
        std::string missing;
        for (int r = 0; r < size_; ++r) {
            if (seen[static_cast<size_t>(r)] < seq) {
                missing += fmt::format("{}{} (last entered #{})", missing.empty() ? "" : ", ", r,
                                       seen[static_cast<size_t>(r)]);
            }
        }
        return missing.empty() ? "every rank entered it (a transport stall)"
                               : "rank(s) never arrived: " + missing;
    }

    MPI_Comm comm_;
    std::string name_;
    std::shared_ptr<Progress> progress_;
    std::shared_ptr<std::atomic<bool>> any_failed_;  // set when any communicator fails
    std::shared_ptr<Health> health_;
    int rank_ = 0, size_ = 1;
    int64_t seq_ = 0;  // collectives posted (the caller's thread only)
    int64_t* counter_ = nullptr;
    MPI_Win win_ = MPI_WIN_NULL;
    MPI_Comm ring_comm_ = MPI_COMM_NULL;  // a duplicate of comm_ for the ring's messages
    std::shared_ptr<Ring> ring_;          // used by the worker thread only
    std::vector<int> hosts_;              // the host of each rank (hosts_of)
    std::shared_ptr<ShmTransport> shm_;   // one host: the collectives' transport (shm.h)
    size_t inline_bytes_ = 0;             // shared-memory ops up to this size may run inline
    Worker worker_;                       // last: its thread stops before the members above go
};

}  // namespace

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
    int provided = 0;
    check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
    ZS_CHECK_T(CommError, provided >= MPI_THREAD_MULTIPLE,
               "this MPI library does not provide MPI_THREAD_MULTIPLE (got level {})", provided);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    any_failed_ = std::make_shared<std::atomic<bool>>(false);
    auto world = std::make_unique<MpiComm>(MPI_COMM_WORLD, "world", std::make_shared<Progress>(),
                                           any_failed_, 300.0);
    // When the world spans hosts with several ranks each, world_ is hierarchical and the
    // MPI_COMM_WORLD communicator (its arrival window) lives beside it in world_flat_.
    world_ = MpiComm::with_hierarchy(std::move(world), &world_flat_);
}

MpiRuntime::~MpiRuntime() {
    world_.reset();
    world_flat_.reset();
    if (*any_failed_) {
        // MPI_Finalize would wait for the ranks a failed collective is missing (and a worker
        // thread may still be inside that collective): end the job instead of hanging.
        log_error("a communicator failed earlier; ending the job instead of finalizing MPI");
        abort_job(1);
    }
    MPI_Finalize();
}

Communicator& MpiRuntime::world() { return *world_; }

bool MpiRuntime::launched_by_mpirun() {
    return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr ||
           std::getenv("PMIX_RANK") != nullptr;
}

void MpiRuntime::abort_job(int code) {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
}

}  // namespace zs::comm
