#include <cstring>
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

void check_all_to_all_v(const Tensor& out, const std::vector<int64_t>& out_counts, const Tensor& in,
                        const std::vector<int64_t>& in_counts, int size) {
    check_contiguous("all_to_all_v", "out", out);
    check_contiguous("all_to_all_v", "in", in);
    ZS_CHECK_T(ShapeError, in.dtype() == out.dtype(), "all_to_all_v: 'in' is {} but 'out' is {}",
               core::to_string(in.dtype()), core::to_string(out.dtype()));
    auto check = [&](const char* name, const std::vector<int64_t>& counts, const Tensor& t) {
        ZS_CHECK_T(ShapeError, static_cast<int>(counts.size()) == size,
                   "all_to_all_v: {} has {} entries; the group has {} ranks", name, counts.size(),
                   size);
        int64_t total = 0;
        for (size_t j = 0; j < counts.size(); ++j) {
            ZS_CHECK_T(ShapeError, counts[j] >= 0, "all_to_all_v: {}[{}] = {} is negative", name, j,
                       counts[j]);
            total += counts[j];
        }
        ZS_CHECK_T(ShapeError, total <= t.numel(),
                   "all_to_all_v: {} add up to {} elements; the tensor has {}", name, total,
                   t.numel());
    };
    check("in_counts", in_counts, in);
    check("out_counts", out_counts, out);
}

void check_all_to_all_v_pairs(const std::vector<std::vector<int64_t>>& sent,
                              const std::vector<std::vector<int64_t>>& expected) {
    for (size_t q = 0; q < sent.size(); ++q) {
        for (size_t j = 0; j < sent.size(); ++j) {
            ZS_CHECK_T(ShapeError, sent[q][j] == expected[j][q],
                       "all_to_all_v: rank {} sends {} elements to rank {}, which expects {} "
                       "(out_counts must equal the senders' in_counts)",
                       q, sent[q][j], j, expected[j][q]);
        }
    }
}

Work Communicator::all_to_all_v(const Tensor& out, const std::vector<int64_t>& out_counts,
                                const Tensor& in, const std::vector<int64_t>& in_counts) {
    check_all_to_all_v(out, out_counts, in, in_counts, size());
    const int n = size(), me = rank();
    // Every rank's counts (2n per rank), so every rank checks every pair and all fail alike.
    Tensor mine = Tensor::empty({2 * n}, core::DType::i64);
    for (int j = 0; j < n; ++j) {
        mine.data<int64_t>()[j] = in_counts[static_cast<size_t>(j)];
        mine.data<int64_t>()[n + j] = out_counts[static_cast<size_t>(j)];
    }
    Tensor all = Tensor::empty({2 * n * n}, core::DType::i64);
    allgather(all, mine).wait();
    std::vector<std::vector<int64_t>> sent(static_cast<size_t>(n)), expected(sent.size());
    for (int q = 0; q < n; ++q) {
        const int64_t* row = all.data<int64_t>() + 2 * n * q;
        sent[static_cast<size_t>(q)].assign(row, row + n);
        expected[static_cast<size_t>(q)].assign(row + n, row + 2 * n);
    }
    check_all_to_all_v_pairs(sent, expected);
    // Sends first (non-blocking everywhere), then the receives (the local backend's block).
    const size_t es = core::dtype_size(in.dtype());
    std::vector<Work> works;
    const Tensor in1 = in.view({in.numel()}), out1 = out.view({out.numel()});
    for (int pass = 0; pass < 2; ++pass) {
        int64_t in_off = 0, out_off = 0;
        for (int q = 0; q < n; ++q) {
            const int64_t s = in_counts[static_cast<size_t>(q)];
            const int64_t r = out_counts[static_cast<size_t>(q)];
            if (q == me && pass == 0 && s > 0) {  // (an empty part may have no storage)
                std::memcpy(
                    static_cast<char*>(out.data_ptr()) + static_cast<size_t>(out_off) * es,
                    static_cast<const char*>(in.data_ptr()) + static_cast<size_t>(in_off) * es,
                    static_cast<size_t>(s) * es);
            } else if (q != me && pass == 0 && s > 0) {
                works.push_back(send(in1.slice(0, in_off, in_off + s), q, kAllToAllVTag));
            } else if (q != me && pass == 1 && r > 0) {
                works.push_back(recv(out1.slice(0, out_off, out_off + r), q, kAllToAllVTag));
            }
            in_off += s;
            out_off += r;
        }
    }
    for (Work& w : works) w.wait();
    return Work();
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
