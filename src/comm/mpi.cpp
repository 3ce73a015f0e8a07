#include "comm/mpi.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <mpi.h>

#include "base/error.h"
#include "base/log.h"
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
            return MPI_FLOAT;  // reduced through an f32 staging buffer
    }
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

// Outstanding requests polled by the progress thread (and by waiters).
class Progress {
public:
    Progress() : thread_([this] { loop(); }) {}
    ~Progress() {
        stop_ = true;
        thread_.join();
    }
    void add() { ++pending_; }
    void done() { --pending_; }

private:
    void loop() {
        while (!stop_) {
            if (pending_.load() > 0) {
                int flag = 0;
                // Any MPI call drives OpenMPI's progress engine for every outstanding request.
                MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_SELF, &flag, MPI_STATUS_IGNORE);
                std::this_thread::sleep_for(std::chrono::microseconds(100));
            } else {
                std::this_thread::sleep_for(std::chrono::microseconds(500));
            }
        }
    }
    std::atomic<bool> stop_{false};
    std::atomic<int> pending_{0};
    std::thread thread_;
};

// Runs blocking collectives in FIFO order on its own thread (over a duplicate of the group's
// communicator, so they never interleave with the non-blocking ones posted by the caller).
// OpenMPI's blocking MPI_Allreduce uses its tuned algorithms; the non-blocking MPI_Iallreduce
// (libnbc) ran at 0.23-0.45x of it here and allocated a full-size temporary.
class BlockingWorker {
public:
    BlockingWorker() : thread_([this] { loop(); }) {}
    ~BlockingWorker() {
        {
            std::lock_guard<std::mutex> lk(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        // A job stuck in a collective that never completes (a lost rank) cannot be joined; the
        // job ends through the communicator's timeout error in that case.
        if (busy_.load()) {
            thread_.detach();
        } else {
            thread_.join();
        }
    }
    void post(std::function<void()> job) {
        {
            std::lock_guard<std::mutex> lk(mu_);
            jobs_.push_back(std::move(job));
        }
        cv_.notify_all();
    }

private:
    void loop() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock<std::mutex> lk(mu_);
                cv_.wait(lk, [&] { return stop_ || !jobs_.empty(); });
                if (jobs_.empty()) return;
                job = std::move(jobs_.front());
                jobs_.pop_front();
                busy_ = true;
            }
            job();
            busy_ = false;
        }
    }
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> jobs_;
    bool stop_ = false;
    std::atomic<bool> busy_{false};
    std::thread thread_;
};

class MpiComm final : public Communicator {
public:
    MpiComm(MPI_Comm comm, std::string name, std::shared_ptr<Progress> progress, double timeout)
        : comm_(comm), name_(std::move(name)), progress_(std::move(progress)) {
        timeout_s_ = timeout;
        MPI_Comm_rank(comm_, &rank_);
        MPI_Comm_size(comm_, &size_);
        // Arrival counters: one int64 per rank, in a window everyone can read.
        check_mpi(MPI_Win_allocate(sizeof(int64_t), sizeof(int64_t), MPI_INFO_NULL, comm_,
                                   &counter_, &win_),
                  "MPI_Win_allocate");
        *counter_ = 0;
        MPI_Win_lock_all(MPI_MODE_NOCHECK, win_);
    }
    ~MpiComm() override {
        worker_.reset();
        if (worker_comm_ != MPI_COMM_NULL && !failed_) MPI_Comm_free(&worker_comm_);
        MPI_Win_unlock_all(win_);
        MPI_Win_free(&win_);
        if (comm_ != MPI_COMM_WORLD) MPI_Comm_free(&comm_);
    }
    int rank() const override { return rank_; }
    int size() const override { return size_; }
    std::string name() const override { return name_; }

    Work allreduce(const Tensor& t, ReduceOp op) override {
        check_contiguous("allreduce", "t", t);
        Staged s = stage(t);
        if (size_ > 1 && t.nbytes() >= (size_t{1} << 20)) {
            MPI_Datatype type = s.type;
            MPI_Op mop = mpi_op(op);
            return start_blocking(
                "allreduce", t.nbytes(),
                [s, type, mop](MPI_Comm c) {
                    return MPI_Allreduce(MPI_IN_PLACE, s.buf, static_cast<int>(s.count), type, mop,
                                         c);
                },
                finisher(t, s, op));
        }
        return start(
            "allreduce", t.nbytes(),
            [&](MPI_Request* r) {
                return MPI_Iallreduce(MPI_IN_PLACE, s.buf, static_cast<int>(s.count), s.type,
                                      mpi_op(op), comm_, r);
            },
            finisher(t, s, op));
    }

    Work reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override {
        check_contiguous("reduce_scatter", "out", out);
        check_contiguous("reduce_scatter", "in", in);
        ZS_CHECK_T(ShapeError, in.numel() == out.numel() * size_ && in.dtype() == out.dtype(),
                   "reduce_scatter: 'in' {} must hold {} x 'out' {}", in.str(), size_, out.str());
        Staged si = stage(in), so = stage(out);
        return start(
            "reduce_scatter", in.nbytes(),
            [&](MPI_Request* r) {
                return MPI_Ireduce_scatter_block(si.buf, so.buf, static_cast<int>(so.count),
                                                 so.type, mpi_op(op), comm_, r);
            },
            finisher(out, so, op, si.keep));
    }

    Work allgather(const Tensor& out, const Tensor& in) override {
        check_contiguous("allgather", "out", out);
        check_contiguous("allgather", "in", in);
        ZS_CHECK_T(ShapeError, out.numel() == in.numel() * size_ && in.dtype() == out.dtype(),
                   "allgather: 'out' {} must hold {} x 'in' {}", out.str(), size_, in.str());
        return start(
            "allgather", out.nbytes(),
            [&](MPI_Request* r) {
                return MPI_Iallgather(in.data_ptr(), static_cast<int>(in.nbytes()), MPI_BYTE,
                                      out.data_ptr(), static_cast<int>(in.nbytes()), MPI_BYTE,
                                      comm_, r);
            },
            nullptr);
    }

    Work broadcast(const Tensor& t, int root) override {
        check_contiguous("broadcast", "t", t);
        return start(
            "broadcast", t.nbytes(),
            [&](MPI_Request* r) {
                return MPI_Ibcast(t.data_ptr(), static_cast<int>(t.nbytes()), MPI_BYTE, root, comm_,
                                  r);
            },
            nullptr);
    }

    Work all_to_all(const Tensor& out, const Tensor& in) override {
        check_contiguous("all_to_all", "out", out);
        check_contiguous("all_to_all", "in", in);
        ZS_CHECK_T(ShapeError, out.numel() == in.numel() && in.numel() % size_ == 0,
                   "all_to_all: 'in' {} and 'out' {} must match and split into {} chunks", in.str(),
                   out.str(), size_);
        int chunk = static_cast<int>(in.nbytes() / static_cast<size_t>(size_));
        return start(
            "all_to_all", in.nbytes(),
            [&](MPI_Request* r) {
                return MPI_Ialltoall(in.data_ptr(), chunk, MPI_BYTE, out.data_ptr(), chunk,
                                     MPI_BYTE, comm_, r);
            },
            nullptr);
    }

    Work send(const Tensor& t, int peer, int tag) override {
        check_contiguous("send", "t", t);
        return start_p2p("send", t.nbytes(), peer, [&](MPI_Request* r) {
            return MPI_Isend(t.data_ptr(), static_cast<int>(t.nbytes()), MPI_BYTE, peer, tag, comm_,
                             r);
        });
    }

    Work recv(const Tensor& t, int peer, int tag) override {
        check_contiguous("recv", "t", t);
        return start_p2p("recv", t.nbytes(), peer, [&](MPI_Request* r) {
            return MPI_Irecv(t.data_ptr(), static_cast<int>(t.nbytes()), MPI_BYTE, peer, tag, comm_,
                             r);
        });
    }

    void barrier() override {
        start(
            "barrier", 0, [&](MPI_Request* r) { return MPI_Ibarrier(comm_, r); }, nullptr)
            .wait();
    }

    std::unique_ptr<Communicator> split(int color, int key) override {
        MPI_Comm sub;
        check_mpi(MPI_Comm_split(comm_, color, key, &sub), "MPI_Comm_split");
        return std::make_unique<MpiComm>(sub, fmt::format("{}.split({})", name_, color), progress_,
                                         timeout_s_);
    }

private:
    // bf16/f16 reductions go through an f32 copy (MPI has no bf16 type).
    struct Staged {
        void* buf;
        int64_t count;
        MPI_Datatype type;
        std::shared_ptr<Tensor> keep;  // the f32 staging tensor, if any
    };
    static Staged stage(const Tensor& t) {
        if (t.dtype() != DType::bf16 && t.dtype() != DType::f16) {
            return {t.data_ptr(), t.numel(), mpi_type(t.dtype()), nullptr};
        }
        auto f = std::make_shared<Tensor>(t.to(DType::f32));
        return {f->data_ptr(), f->numel(), MPI_FLOAT, f};
    }
    std::function<void()> finisher(const Tensor& t, const Staged& s, ReduceOp op,
                                   std::shared_ptr<Tensor> keep_in = nullptr) {
        const int n = size_;
        return [t, s, op, n, keep_in]() {
            if (op == ReduceOp::avg) {
                Tensor f = s.keep ? *s.keep : t;
                if (f.dtype() == DType::f32) {
                    float* p = f.data<float>();
                    for (int64_t i = 0; i < f.numel(); ++i) p[i] /= static_cast<float>(n);
                } else if (f.dtype() == DType::i64) {
                    int64_t* p = f.data<int64_t>();
                    for (int64_t i = 0; i < f.numel(); ++i) p[i] /= n;
                } else if (f.dtype() == DType::i32) {
                    int32_t* p = f.data<int32_t>();
                    for (int64_t i = 0; i < f.numel(); ++i) p[i] /= n;
                }
            }
            if (s.keep) t.copy_from(*s.keep);
        };
    }

    // The collective's deadline and timeout diagnosis (missing ranks from the arrival counters;
    // the communicator is poisoned), shared by every way of starting one.
    Work armed(const std::shared_ptr<Work::State>& st, const char* op, int64_t seq, size_t bytes) {
        st->deadline = std::chrono::steady_clock::now() +
                       std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                           std::chrono::duration<double>(timeout_s_));
        std::string what =
            fmt::format("{} #{} on group '{}' ({} ranks, {} bytes)", op, seq, name_, size_, bytes);
        st->on_timeout = [this, what, seq]() {
            std::string missing = missing_ranks(seq);
            std::string msg =
                fmt::format("{}: did not complete within {} s; {}", what, timeout_s_, missing);
            failed_ = true;
            failure_ = msg;
            return std::make_exception_ptr(CommError(msg));
        };
        return Work(st);
    }

    // A collective run as a blocking MPI call on the worker thread; the Work completes when it
    // returns. Arrival counters, timeout and poisoning as for start().
    Work start_blocking(const char* op, size_t bytes, std::function<int(MPI_Comm)> call,
                        std::function<void()> finish) {
        const int64_t seq = ++seq_;
        if (failed_) {
            return Work::failed(std::make_exception_ptr(
                CommError(fmt::format("{} #{} on group '{}': the communicator already failed: {}",
                                      op, seq, name_, failure_))));
        }
        if (!worker_) {
            check_mpi(MPI_Comm_dup(comm_, &worker_comm_), "MPI_Comm_dup");
            worker_ = std::make_unique<BlockingWorker>();
        }
        *counter_ = seq;
        MPI_Win_sync(win_);
        // 0: running, 1: done, otherwise the MPI error code + 2.
        auto done = std::make_shared<std::atomic<int>>(0);
        MPI_Comm wc = worker_comm_;
        worker_->post([call = std::move(call), done, wc] {
            int rc = call(wc);
            done->store(rc == MPI_SUCCESS ? 1 : rc + 2);
        });
        // The worker's blocking call drives MPI's progress itself: the progress thread stays
        // idle (its probes would contend for MPI's lock and, with a core per rank, the CPU).
        auto st = std::make_shared<Work::State>();
        st->poll = [done, op]() {
            const int d = done->load();
            if (d == 0) return false;
            if (d != 1) check_mpi(d - 2, op);
            return true;
        };
        st->finish = std::move(finish);
        return armed(st, op, seq, bytes);
    }

    Work start(const char* op, size_t bytes, const std::function<int(MPI_Request*)>& launch,
               std::function<void()> finish) {
        const int64_t seq = ++seq_;
        if (failed_) {
            return Work::failed(std::make_exception_ptr(
                CommError(fmt::format("{} #{} on group '{}': the communicator already failed: {}",
                                      op, seq, name_, failure_))));
        }
        // Record arrival (readable by every rank through the window).
        *counter_ = seq;
        MPI_Win_sync(win_);
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
        st->finish = std::move(finish);
        return armed(st, op, seq, bytes);
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
    int rank_ = 0, size_ = 1;
    int64_t seq_ = 0;
    int64_t* counter_ = nullptr;
    MPI_Win win_ = MPI_WIN_NULL;
    bool failed_ = false;
    std::string failure_;
    MPI_Comm worker_comm_ = MPI_COMM_NULL;  // for the blocking worker's collectives
    std::unique_ptr<BlockingWorker> worker_;
};

}  // namespace

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
    int provided = 0;
    check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
    ZS_CHECK_T(CommError, provided >= MPI_THREAD_MULTIPLE,
               "this MPI library does not provide MPI_THREAD_MULTIPLE (got level {})", provided);
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    world_ =
        std::make_unique<MpiComm>(MPI_COMM_WORLD, "world", std::make_shared<Progress>(), 300.0);
}

MpiRuntime::~MpiRuntime() {
    world_.reset();
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
