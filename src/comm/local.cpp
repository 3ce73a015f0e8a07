// The local backend: N thread-ranks of one process. Each collective is a rendezvous: every rank
// deposits its buffers in the slot of the op's sequence number; once all have arrived, each rank
// computes its own result from everyone's inputs (in rank order: deterministic), and nobody
// leaves until all have read (so in-place ops are safe). A rank that never arrives makes the
// others fail after the timeout with a CommError naming exactly the missing ranks.
#include <algorithm>
#include <cstring>
#include <deque>
#include <map>
#include <thread>
#include <tuple>

#include <fmt/format.h>

#include "base/error.h"
#include "comm/communicator.h"
#include "core/half.h"

namespace zs::comm {

namespace {

using core::DType;

struct Shared {
    int n = 1;
    std::string name;
    std::mutex mu;
    std::condition_variable cv;
    struct Slot {
        std::string op;
        std::vector<const void*> in;
        std::vector<int64_t> arg;  // per-rank integer argument (root, color, key...)
        std::vector<bool> present;
        int arrived = 0, departed = 0, left = 0;
        std::map<int, std::shared_ptr<Shared>> children;  // split: color -> group
    };
    std::map<uint64_t, Slot> slots;
    bool failed = false;
    std::string failure;
    std::map<std::tuple<int, int, int>, std::deque<std::vector<char>>> mail;  // (src, dst, tag)
};

std::string rank_list(const std::vector<int>& r) {
    std::string s;
    for (int x : r) s += (s.empty() ? "" : ", ") + std::to_string(x);
    return s;
}

// Elementwise reduction of n_in buffers of `count` elements of dtype t into f32/i64 then back.
void reduce_into(void* out, DType t, const std::vector<const void*>& ins, int64_t count,
                 size_t offset_elems, ReduceOp op) {
    const size_t es = core::dtype_size(t);
    const int n = static_cast<int>(ins.size());
    if (t == DType::i32 || t == DType::i64 || t == DType::i8) {
        for (int64_t i = 0; i < count; ++i) {
            int64_t acc = 0;
            for (int r = 0; r < n; ++r) {
                const char* p = static_cast<const char*>(ins[static_cast<size_t>(r)]) +
                                (offset_elems + static_cast<size_t>(i)) * es;
                int64_t v = t == DType::i64   ? *reinterpret_cast<const int64_t*>(p)
                            : t == DType::i32 ? *reinterpret_cast<const int32_t*>(p)
                                              : *reinterpret_cast<const int8_t*>(p);
                acc = r == 0                ? v
                      : op == ReduceOp::max ? std::max(acc, v)
                      : op == ReduceOp::min ? std::min(acc, v)
                                            : acc + v;
            }
            if (op == ReduceOp::avg) acc /= n;
            char* o = static_cast<char*>(out) + static_cast<size_t>(i) * es;
            if (t == DType::i64) *reinterpret_cast<int64_t*>(o) = acc;
            if (t == DType::i32) *reinterpret_cast<int32_t*>(o) = static_cast<int32_t>(acc);
            if (t == DType::i8) *reinterpret_cast<int8_t*>(o) = static_cast<int8_t>(acc);
        }
        return;
    }
    std::vector<float> acc(static_cast<size_t>(count)), tmp(static_cast<size_t>(count));
    for (int r = 0; r < n; ++r) {
        const char* p = static_cast<const char*>(ins[static_cast<size_t>(r)]) + offset_elems * es;
        core::convert(r == 0 ? acc.data() : tmp.data(), DType::f32, p, t,
                      static_cast<size_t>(count));
        if (r == 0) continue;
        for (size_t i = 0; i < acc.size(); ++i) {
            float& a = acc[i];
            float b = tmp[i];
            a = op == ReduceOp::max ? std::max(a, b) : op == ReduceOp::min ? std::min(a, b) : a + b;
        }
    }
    if (op == ReduceOp::avg) {
        for (float& a : acc) a /= static_cast<float>(n);
    }
    core::convert(out, t, acc.data(), DType::f32, static_cast<size_t>(count));
}

class LocalComm final : public Communicator {
public:
    LocalComm(std::shared_ptr<Shared> sh, int rank, double timeout)
        : sh_(std::move(sh)), rank_(rank) {
        timeout_s_ = timeout;
    }
    int rank() const override { return rank_; }
    int size() const override { return sh_->n; }
    std::string name() const override { return sh_->name; }

    Work allreduce(const Tensor& t, ReduceOp op) override {
        check_contiguous("allreduce", "t", t);
        return collective(
            "allreduce", t.data_ptr(), t.nbytes(), 0,
            [&](Shared::Slot& s) {
                std::vector<char> out(t.nbytes());
                reduce_into(out.data(), t.dtype(), s.in, t.numel(), 0, op);
                return out;
            },
            t.data_ptr());
    }

    Work reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override {
        check_contiguous("reduce_scatter", "out", out);
        check_contiguous("reduce_scatter", "in", in);
        check_whole_part("reduce_scatter", "in", in, "out", out, size());
        return collective(
            "reduce_scatter", in.data_ptr(), in.nbytes(), 0,
            [&](Shared::Slot& s) {
                std::vector<char> o(out.nbytes());
                reduce_into(o.data(), out.dtype(), s.in, out.numel(),
                            static_cast<size_t>(rank_ * out.numel()), op);
                return o;
            },
            out.data_ptr());
    }

    Work allgather(const Tensor& out, const Tensor& in) override {
        check_contiguous("allgather", "out", out);
        check_contiguous("allgather", "in", in);
        check_whole_part("allgather", "out", out, "in", in, size());
        return collective(
            "allgather", in.data_ptr(), in.nbytes(), 0,
            [&](Shared::Slot& s) {
                std::vector<char> o(out.nbytes());
                for (int r = 0; r < size() && in.nbytes() > 0; ++r) {
                    std::memcpy(o.data() + static_cast<size_t>(r) * in.nbytes(),
                                s.in[static_cast<size_t>(r)], in.nbytes());
                }
                return o;
            },
            out.data_ptr());
    }

    Work broadcast(const Tensor& t, int root) override {
        check_contiguous("broadcast", "t", t);
        check_root("broadcast", root, size());
        return collective(
            "broadcast", t.data_ptr(), t.nbytes(), root,
            [&](Shared::Slot& s) {
                const char* src = static_cast<const char*>(s.in[static_cast<size_t>(root)]);
                return std::vector<char>(src, src + t.nbytes());
            },
            t.data_ptr());
    }

    Work all_to_all(const Tensor& out, const Tensor& in) override {
        check_contiguous("all_to_all", "out", out);
        check_contiguous("all_to_all", "in", in);
        check_all_to_all(out, in, size());
        const size_t chunk = in.nbytes() / static_cast<size_t>(size());
        return collective(
            "all_to_all", in.data_ptr(), in.nbytes(), 0,
            [&](Shared::Slot& s) {
                std::vector<char> o(out.nbytes());
                for (int j = 0; j < size() && chunk > 0; ++j) {
                    std::memcpy(o.data() + static_cast<size_t>(j) * chunk,
                                static_cast<const char*>(s.in[static_cast<size_t>(j)]) +
                                    static_cast<size_t>(rank_) * chunk,
                                chunk);
                }
                return o;
            },
            out.data_ptr());
    }

    Work send(const Tensor& t, int peer, int tag) override {
        check_contiguous("send", "t", t);
        std::lock_guard<std::mutex> lock(sh_->mu);
        const char* p = static_cast<const char*>(t.data_ptr());
        sh_->mail[{rank_, peer, tag}].emplace_back(p, p + t.nbytes());
        sh_->cv.notify_all();
        return Work();
    }

    Work recv(const Tensor& t, int peer, int tag) override {
        check_contiguous("recv", "t", t);
        std::unique_lock<std::mutex> lock(sh_->mu);
        auto key = std::make_tuple(peer, rank_, tag);
        bool ok = sh_->cv.wait_for(lock, std::chrono::duration<double>(timeout_s_),
                                   [&] { return sh_->failed || !sh_->mail[key].empty(); });
        if (!ok || sh_->failed) {
            return Work::failed(std::make_exception_ptr(CommError(fmt::format(
                "recv of {} bytes from rank {} (tag {}) on group '{}': nothing arrived within {} s",
                t.nbytes(), peer, tag, name(), timeout_s_))));
        }
        std::vector<char> msg = std::move(sh_->mail[key].front());
        sh_->mail[key].pop_front();
        if (msg.size() != t.nbytes()) {
            return Work::failed(std::make_exception_ptr(CommError(
                fmt::format("recv: message from rank {} has {} bytes; the receive buffer {} bytes",
                            peer, msg.size(), t.nbytes()))));
        }
        if (!msg.empty()) std::memcpy(t.data_ptr(), msg.data(), msg.size());
        return Work();
    }

    void barrier() override {
        collective(
            "barrier", nullptr, 0, 0, [](Shared::Slot&) { return std::vector<char>(); }, nullptr)
            .wait();
    }

    std::unique_ptr<Communicator> split(int color, int key) override {
        std::shared_ptr<Shared> child;
        int my_rank = 0;
        collective(
            "split", nullptr, 0, (static_cast<int64_t>(color) << 32) | static_cast<uint32_t>(key),
            [&](Shared::Slot& s) {
                std::vector<std::pair<int64_t, int>> members;  // (key, rank) of my color
                for (int r = 0; r < size(); ++r) {
                    int64_t a = s.arg[static_cast<size_t>(r)];
                    if (static_cast<int>(a >> 32) == color)
                        members.emplace_back(static_cast<int32_t>(a & 0xffffffff), r);
                }
                std::sort(members.begin(), members.end());
                for (size_t i = 0; i < members.size(); ++i) {
                    if (members[i].second == rank_) my_rank = static_cast<int>(i);
                }
                std::lock_guard<std::mutex> lock(sh_->mu);
                auto& c = s.children[color];
                if (!c) {
                    c = std::make_shared<Shared>();
                    c->n = static_cast<int>(members.size());
                    c->name = fmt::format("{}.split({})", name(), color);
                }
                child = c;
                return std::vector<char>();
            },
            nullptr)
            .wait();
        return std::make_unique<LocalComm>(child, my_rank, timeout_s_);
    }

private:
    // Rendezvous for op #seq; compute(slot) returns this rank's result bytes, copied to `out`.
    Work collective(const char* op, const void* in, size_t bytes, int64_t arg,
                    const std::function<std::vector<char>(Shared::Slot&)>& compute, void* out) {
        const uint64_t seq = ++seq_;
        Shared& sh = *sh_;
        auto deadline =
            std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s_);
        std::unique_lock<std::mutex> lock(sh.mu);
        if (sh.failed) {
            return Work::failed(std::make_exception_ptr(
                CommError(fmt::format("{} #{} on group '{}': the communicator already failed: {}",
                                      op, seq, name(), sh.failure))));
        }
        Shared::Slot& s = sh.slots[seq];
        if (s.in.empty()) {
            s.op = op;
            s.in.assign(static_cast<size_t>(sh.n), nullptr);
            s.arg.assign(static_cast<size_t>(sh.n), 0);
            s.present.assign(static_cast<size_t>(sh.n), false);
        }
        if (s.op != op) {
            sh.failed = true;
            sh.failure = fmt::format("rank {} called {} as op #{} but another rank called {}",
                                     rank_, op, seq, s.op);
            sh.cv.notify_all();
            return Work::failed(std::make_exception_ptr(CommError(sh.failure)));
        }
        s.in[static_cast<size_t>(rank_)] = in;
        s.arg[static_cast<size_t>(rank_)] = arg;
        s.present[static_cast<size_t>(rank_)] = true;
        ++s.arrived;
        sh.cv.notify_all();
        if (!sh.cv.wait_until(lock, deadline, [&] { return s.arrived == sh.n || sh.failed; }) ||
            sh.failed) {
            std::vector<int> missing;
            for (int r = 0; r < sh.n; ++r) {
                if (!s.present[static_cast<size_t>(r)]) missing.push_back(r);
            }
            std::string msg = fmt::format(
                "{} #{} on group '{}' ({} ranks, {} bytes): rank(s) {} never arrived within {} s",
                op, seq, name(), sh.n, bytes,
                missing.empty() ? std::string("?") : rank_list(missing), timeout_s_);
            if (!sh.failed) {
                sh.failed = true;
                sh.failure = msg;
            }
            sh.cv.notify_all();
            return Work::failed(std::make_exception_ptr(CommError(msg)));
        }
        lock.unlock();
        std::vector<char> result = compute(s);
        lock.lock();
        ++s.departed;
        sh.cv.notify_all();
        sh.cv.wait(lock, [&] { return s.departed == sh.n; });
        if (++s.left == sh.n) sh.slots.erase(seq);
        lock.unlock();
        if (out != nullptr && !result.empty()) std::memcpy(out, result.data(), result.size());
        return Work();
    }

    std::shared_ptr<Shared> sh_;
    int rank_;
    uint64_t seq_ = 0;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_local_group(int n, double timeout_s) {
    ZS_CHECK(n >= 1, "a local group needs at least one rank (got {})", n);
    auto sh = std::make_shared<Shared>();
    sh->n = n;
    sh->name = n == 1 ? "self" : "local";
    std::vector<std::unique_ptr<Communicator>> v;
    for (int r = 0; r < n; ++r) v.push_back(std::make_unique<LocalComm>(sh, r, timeout_s));
    return v;
}

std::unique_ptr<Communicator> make_self() { return std::move(make_local_group(1).front()); }

void run_local(int n, const std::function<void(int, Communicator&)>& fn, double timeout_s) {
    auto comms = make_local_group(n, timeout_s);
    std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
    std::vector<std::thread> threads;
    for (int r = 0; r < n; ++r) {
        threads.emplace_back([&, r] {
            try {
                fn(r, *comms[static_cast<size_t>(r)]);
            } catch (...) {
                errors[static_cast<size_t>(r)] = std::current_exception();
            }
        });
    }
    for (auto& t : threads) t.join();
    for (auto& e : errors) {
        if (e) std::rethrow_exception(e);
    }
}

}  // namespace zs::comm
