#include <thread>

#include "base/error.h"
#include "comm/communicator.h"

namespace zs::comm {

const char* to_string(ReduceOp op) {
    switch (op) {
        case ReduceOp::sum:
            return "sum";
        case ReduceOp::avg:
            return "avg";
        case ReduceOp::max:
            return "max";
        case ReduceOp::min:
            return "min";
    }
    return "?";
}

void check_contiguous(const char* op, const char* arg, const Tensor& t, core::DeviceType device) {
    ZS_CHECK_T(ShapeError, t.defined() && t.is_contiguous() && t.device().type == device,
               "{}: argument '{}' ({}) must be a contiguous {} tensor", op, arg, t.str(),
               device == core::DeviceType::cpu ? "CPU" : "CUDA");
}

void check_whole_part(const char* op, const char* whole_name, const Tensor& whole,
                      const char* part_name, const Tensor& part, int size) {
    ZS_CHECK_T(ShapeError, whole.numel() == part.numel() * size && whole.dtype() == part.dtype(),
               "{}: '{}' {} must hold {} x '{}' {}", op, whole_name, whole.str(), size, part_name,
               part.str());
}

void check_all_to_all(const Tensor& out, const Tensor& in, int size) {
    ZS_CHECK_T(ShapeError,
               out.numel() == in.numel() && in.numel() % size == 0 && in.dtype() == out.dtype(),
               "all_to_all: 'in' {} and 'out' {} must match and split into {} chunks", in.str(),
               out.str(), size);
}

void check_root(const char* op, int root, int size) {
    ZS_CHECK_T(ShapeError, root >= 0 && root < size, "{}: root {} outside [0, {})", op, root, size);
}

Work Work::failed(std::exception_ptr e) {
    auto s = std::make_shared<State>();
    s->done = true;
    s->error = std::move(e);
    return Work(s);
}

void Work::complete(State& s, std::exception_ptr e) {
    {
        std::lock_guard<std::mutex> lock(s.mu);
        if (s.done) return;
        s.done = true;
        s.error = std::move(e);
    }
    s.cv.notify_all();
}

bool Work::test() {
    if (!state_) return true;
    State& s = *state_;
    bool done;
    {
        std::lock_guard<std::mutex> lock(s.mu);
        done = s.done;
    }
    if (!done && s.poll) {
        try {
            if (s.poll()) {
                if (s.finish) s.finish();
                complete(s);
            }
        } catch (...) {
            complete(s, std::current_exception());
        }
    }
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.done && s.error) std::rethrow_exception(s.error);
    return s.done;
}

void Work::wait() {
    if (!state_) return;
    State& s = *state_;
    if (s.poll) {
        // Polled backends (MPI): spin on test() with a short sleep until done or the deadline.
        auto pause = std::chrono::microseconds(5);
        while (!test()) {
            if (std::chrono::steady_clock::now() > s.deadline) {
                complete(s, s.on_timeout ? s.on_timeout() : nullptr);
                test();
                return;
            }
            std::this_thread::sleep_for(pause);
            if (pause < std::chrono::microseconds(200)) pause *= 2;
        }
        return;
    }
    // Completed by another thread (the MPI worker, a local rendezvous): block until then, or
    // until the deadline when the op has one.
    std::unique_lock<std::mutex> lock(s.mu);
    if (s.on_timeout) {
        if (!s.cv.wait_until(lock, s.deadline, [&] { return s.done; })) {
            lock.unlock();  // on_timeout may take seconds (it reads the peers' arrival counters)
            complete(s, s.on_timeout());
            lock.lock();
        }
    } else {
        s.cv.wait(lock, [&] { return s.done; });
    }
    if (s.error) std::rethrow_exception(s.error);
}

}  // namespace zs::comm
