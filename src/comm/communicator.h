// Communicator: collectives and point-to-point messages among the ranks of a group, every one
// non-blocking: it returns a Work whose wait() completes it or rethrows its error (c10d's model).
//
// A collective that does not complete within the timeout fails with a CommError naming the
// collective, its sequence number on this communicator, the group, the bytes, and the ranks that
// never arrived (when the backend can tell). After a failure the communicator is poisoned: later
// calls fail at once, so a job ends instead of hanging.
//
// Backends: self (one rank), local (N threads of one process sharing memory: the test oracle),
// mpi (OpenMPI; one process per rank; collectives over shared memory when the group is on one
// host: shm.h), nccl (CUDA build; CUDA tensors, one GPU per process).
// Every rank must issue the same collectives in the same order. Tensors are contiguous (CPU
// tensors except for nccl); reductions of bf16/f16 accumulate in f32.
#pragma once

#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace zs::comm {

using core::Tensor;

enum class ReduceOp { sum, avg, max, min };
const char* to_string(ReduceOp op);

// Completion of one operation. Copyable handle to shared state; a default Work is complete.
class Work {
public:
    Work() = default;
    // Block until complete (or `timeout_s` passes: then the work fails with a CommError from
    // on_timeout). Rethrows the stored error.
    void wait();
    bool test();  // completed (successfully or not) without blocking; rethrows on failure
    bool defined() const { return state_ != nullptr; }

    // ---- for backends ----
    struct State {
        std::mutex mu;
        std::condition_variable cv;
        bool done = false;
        std::exception_ptr error;
        // Either `poll` drives the op from wait()/test(), or another thread calls complete().
        std::function<bool()> poll;    // optional: advances the op; true when finished
        std::function<void()> finish;  // optional: runs once on success (e.g. unpack)
        // Optional: builds the timeout error when the op is not done by `deadline`; without
        // it (and without poll), wait() waits as long as the op takes.
        std::function<std::exception_ptr()> on_timeout;
        std::chrono::steady_clock::time_point deadline;
    };
    explicit Work(std::shared_ptr<State> s) : state_(std::move(s)) {}
    static Work failed(std::exception_ptr e);
    static void complete(State& s, std::exception_ptr e = nullptr);

private:
    std::shared_ptr<State> state_;
};

// Reserved for the base all_to_all_v's messages: user tags stay below it.
inline constexpr int kAllToAllVTag = 32000;

class Communicator {
public:
    virtual ~Communicator() = default;
    virtual int rank() const = 0;
    virtual int size() const = 0;
    // "world", "dp", "world.split(1)": for messages.
    virtual std::string name() const = 0;

    // t (in place) = op over ranks of t.
    virtual Work allreduce(const Tensor& t, ReduceOp op) = 0;
    // in [size * n] on every rank; out [n] on rank r = op over ranks of in[r*n, (r+1)*n).
    virtual Work reduce_scatter(const Tensor& out, const Tensor& in,
                                ReduceOp op = ReduceOp::sum) = 0;
    // in [n]; out [size * n] = the ins in rank order.
    virtual Work allgather(const Tensor& out, const Tensor& in) = 0;
    virtual Work broadcast(const Tensor& t, int root) = 0;
    // in, out [size * n]: chunk j of in goes to rank j, arriving as chunk r of its out.
    virtual Work all_to_all(const Tensor& out, const Tensor& in) = 0;
    // Variable all-to-all (MoE dispatch): my part for rank j is in_counts[j] elements of `in`
    // (the parts consecutive, in rank order); rank q's part for me lands in `out` at offset
    // out_counts[0] + ... + out_counts[q-1]. out_counts[q] must equal rank q's in_counts[me]
    // (exchange the counts first, e.g. all_to_all of one i64 per rank); a mismatch fails the op
    // on every rank with a ShapeError naming the pair. The base version is the counts checked
    // over all_to_all + allreduce, then the parts over send/recv with tag kAllToAllVTag;
    // backends override it with their own.
    virtual Work all_to_all_v(const Tensor& out, const std::vector<int64_t>& out_counts,
                              const Tensor& in, const std::vector<int64_t>& in_counts);
    virtual Work send(const Tensor& t, int peer, int tag) = 0;
    virtual Work recv(const Tensor& t, int peer, int tag) = 0;
    virtual void barrier() = 0;
    // Sub-communicator of the ranks passing the same color, ordered by key (then rank).
    virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

    void set_timeout(double seconds) { timeout_s_ = seconds; }
    double timeout() const { return timeout_s_; }

protected:
    double timeout_s_ = 300.0;
};

std::unique_ptr<Communicator> make_self();
// N thread-ranks of one process sharing memory (tests, the oracle).
std::vector<std::unique_ptr<Communicator>> make_local_group(int n, double timeout_s = 300.0);
// Run fn(rank, comm) on n threads with one local communicator each; rethrows the first error.
void run_local(int n, const std::function<void(int, Communicator&)>& fn, double timeout_s = 300.0);

// Argument checks shared by the backends: ShapeError naming the op and the argument.
// `device` is where the backend's tensors live (CPU for self/local/mpi, CUDA for nccl).
void check_contiguous(const char* op, const char* arg, const Tensor& t,
                      core::DeviceType device = core::DeviceType::cpu);
// reduce_scatter / allgather: `whole` holds `size` x `part` elements of the same dtype.
void check_whole_part(const char* op, const char* whole_name, const Tensor& whole,
                      const char* part_name, const Tensor& part, int size);
// all_to_all: in and out match and split into `size` chunks.
void check_all_to_all(const Tensor& out, const Tensor& in, int size);
// all_to_all_v: one count per rank, none negative, the parts fit in their tensors, same dtype.
void check_all_to_all_v(const Tensor& out, const std::vector<int64_t>& out_counts, const Tensor& in,
                        const std::vector<int64_t>& in_counts, int size);
// all_to_all_v, after every rank's counts are known: sent[q][j] = rank q's in_counts[j],
// expected[q][j] = rank q's out_counts[j]. Throws the ShapeError every rank raises alike.
void check_all_to_all_v_pairs(const std::vector<std::vector<int64_t>>& sent,
                              const std::vector<std::vector<int64_t>>& expected);
// broadcast: root is a rank of the group.
void check_root(const char* op, int root, int size);

}  // namespace zs::comm
