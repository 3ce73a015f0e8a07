// Hierarchical collectives (see hierarchical.h for the algorithms, layout and rounding): each op
// is a chain of sub-ops on the intra and inter communicators, run by one worker thread in
// posting order; copies happen only to pad, to permute blocks into hierarchical order, or to
// widen integers for avg. The worker owns intra and inter (no other thread touches them);
// flat is also used by send/recv from the caller's thread, as the backends allow.
#include "comm/hierarchical.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "base/error.h"
#include "core/half.h"

namespace zs::comm {

namespace {

using core::DType;

// How an op travels through the stages: the element type on the wire and each stage's op.
// NOTE: integer avg cannot be averaged per stage (sum_h trunc(s_h / L) != trunc(sum / L)) nor
// summed in its own type (i8 partial sums wrap before the division): it travels as i64 sums
// and is divided by N once, as the local backend does.
struct Plan {
    DType dtype;
    ReduceOp op;
    bool divide_at_end;
};

Plan plan_for(DType t, ReduceOp op) {
    if (op == ReduceOp::avg && !core::is_floating(t)) return {DType::i64, ReduceOp::sum, true};
    return {t, op, false};
}

char* elem_ptr(const Tensor& t, int64_t i) {
    return static_cast<char*>(t.data_ptr()) + static_cast<size_t>(i) * t.element_size();
}

// dst[dst_at, +n) = src[src_at, +n), converting the element type (integer widths only here).
void copy_elems(const Tensor& dst, int64_t dst_at, const Tensor& src, int64_t src_at, int64_t n) {
    if (n == 0) return;
    core::convert(elem_ptr(dst, dst_at), dst.dtype(), elem_ptr(src, src_at), src.dtype(),
                  static_cast<size_t>(n));
}

// Scratch of one op (freed when it completes), counted as communication buffers.
Tensor scratch(int64_t n, DType dtype) {
    return Tensor::empty({n}, dtype, core::Device::cpu(), core::MemCategory::buffers);
}

bool same_memory(const Tensor& a, const Tensor& b) {
    return a.dtype() == b.dtype() && a.numel() == b.numel() && a.data_ptr() == b.data_ptr();
}

// The 1-D buffer a chain works on: `t` itself when it already has `count` elements of `dtype`,
// else a copy converted to `dtype` and zero-padded to `count`.
Tensor staging(const Tensor& t, DType dtype, int64_t count) {
    if (t.dtype() == dtype && t.numel() == count) return t.view({count});
    Tensor s = scratch(count, dtype);
    copy_elems(s, 0, t, 0, t.numel());
    const size_t used = static_cast<size_t>(t.numel()) * s.element_size();
    if (s.nbytes() > used) std::memset(elem_ptr(s, t.numel()), 0, s.nbytes() - used);
    return s;
}

// The chain's result into `t` (its first t.numel() elements), after the final division.
void unstage(const Tensor& t, const Tensor& work, const Plan& plan, int n_ranks) {
    if (plan.divide_at_end) {
        int64_t* v = work.data<int64_t>();
        for (int64_t i = 0; i < t.numel(); ++i) v[i] /= n_ranks;  // truncates, as local does
    }
    if (!same_memory(t, work)) copy_elems(t, 0, work, 0, t.numel());
}

// The sub-ops of one hierarchical op, run one after another on the worker thread. Remembers
// the current step so that a failure names it.
class Stages {
public:
    // Post one sub-op and wait for it: the next stage reads its output.
    void run(const char* stage, const std::function<Work()>& post) {
        stage_ = stage;
        post().wait();
    }
    // A step on this rank alone (packing, a delegated blocking call).
    void step(const char* name) { stage_ = name; }
    const char* current() const { return stage_; }

private:
    const char* stage_ = "start";
};

class HierComm final : public Communicator {
public:
    HierComm(std::unique_ptr<Communicator> flat, std::unique_ptr<Communicator> intra,
             std::unique_ptr<Communicator> inter, HostLayout layout)
        : flat_(std::move(flat)),
          intra_(std::move(intra)),
          inter_(std::move(inter)),
          layout_(std::move(layout)),
          rank_(flat_->rank()),
          size_(flat_->size()),
          n_hosts_(layout_.n_hosts),
          local_size_(layout_.ranks_per_host) {
        timeout_s_ = flat_->timeout();
        ZS_CHECK_T(ConfigError, size_ == static_cast<int>(layout_.host_of_rank.size()),
                   "hierarchical communicator: host_of_rank lists {} ranks; the group '{}' has {}",
                   layout_.host_of_rank.size(), name(), size_);
        build_order();
        check_sub_communicators();
        worker_ = std::thread([this] { work_loop(); });
    }

    ~HierComm() override {
        {
            std::lock_guard<std::mutex> lock(mu_);
            stop_ = true;
        }
        cv_.notify_one();
        // Queued ops still run (or fail at once when poisoned); every stage is bounded by its
        // sub-communicator's timeout, so this join ends.
        worker_.join();
    }

    HierComm(const HierComm&) = delete;
    HierComm& operator=(const HierComm&) = delete;

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    std::string name() const override { return flat_->name(); }

    Work allreduce(const Tensor& t, ReduceOp op) override {
        check_contiguous("allreduce", "t", t);
        return start("allreduce", t.nbytes(), [this, t, op](Stages& st) {
            const Plan plan = plan_for(t.dtype(), op);
            const int64_t n = t.numel();
            const int64_t shard_n = (n + local_size_ - 1) / local_size_;  // ceil(n / L)
            st.step("pack");
            const Tensor work = staging(t, plan.dtype, shard_n * local_size_);  // [L * shard_n]
            const Tensor shard = scratch(shard_n, plan.dtype);
            st.run("intra reduce_scatter",
                   [&] { return intra_->reduce_scatter(shard, work, plan.op); });
            st.run("inter allreduce", [&] { return inter_->allreduce(shard, plan.op); });
            st.run("intra allgather", [&] { return intra_->allgather(work, shard); });
            st.step("unpack");
            unstage(t, work, plan, size_);
        });
    }

    Work reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override {
        check_contiguous("reduce_scatter", "out", out);
        check_contiguous("reduce_scatter", "in", in);
        check_whole_part("reduce_scatter", "in", in, "out", out, size_);
        return start("reduce_scatter", in.nbytes(), [this, out, in, op](Stages& st) {
            const Plan plan = plan_for(in.dtype(), op);
            const int64_t m = out.numel();
            st.step("pack");
            // [N * m] in hierarchical order: chunk l of the intra stage holds the blocks of the
            // inter group of local index l, in that group's rank order.
            Tensor packed;
            if (identity_order_ && in.dtype() == plan.dtype) {
                packed = in.view({in.numel()});
            } else {
                packed = scratch(in.numel(), plan.dtype);
                for (int k = 0; k < size_; ++k) {
                    copy_elems(packed, k * m, in, order_[static_cast<size_t>(k)] * m, m);
                }
            }
            const Tensor partial = scratch(n_hosts_ * m, plan.dtype);  // [H * m]
            st.run("intra reduce_scatter",
                   [&] { return intra_->reduce_scatter(partial, packed, plan.op); });
            const Tensor result =
                out.dtype() == plan.dtype ? out.view({m}) : scratch(m, plan.dtype);
            st.run("inter reduce_scatter",
                   [&] { return inter_->reduce_scatter(result, partial, plan.op); });
            st.step("unpack");
            unstage(out, result, plan, size_);
        });
    }

    Work allgather(const Tensor& out, const Tensor& in) override {
        check_contiguous("allgather", "out", out);
        check_contiguous("allgather", "in", in);
        check_whole_part("allgather", "out", out, "in", in, size_);
        return start("allgather", out.nbytes(), [this, out, in](Stages& st) {
            const int64_t m = in.numel();
            const Tensor gathered = scratch(n_hosts_ * m, in.dtype());  // [H * m]
            st.run("inter allgather", [&] { return inter_->allgather(gathered, in.view({m})); });
            // [N * m] in hierarchical order; straight into `out` when that is group order.
            const Tensor all =
                identity_order_ ? out.view({out.numel()}) : scratch(out.numel(), in.dtype());
            st.run("intra allgather", [&] { return intra_->allgather(all, gathered); });
            if (identity_order_) return;
            st.step("unpack");
            for (int k = 0; k < size_; ++k) {
                copy_elems(out, order_[static_cast<size_t>(k)] * m, all, k * m, m);
            }
        });
    }

    Work broadcast(const Tensor& t, int root) override {
        check_contiguous("broadcast", "t", t);
        check_root("broadcast", root, size_);
        return start("broadcast", t.nbytes(), [this, t, root](Stages& st) {
            const Tensor flat_t = t.view({t.numel()});
            const int root_local = layout_.local_of_rank[static_cast<size_t>(root)];
            if (root_local == my_local()) {
                st.run("inter broadcast", [&] {
                    return inter_->broadcast(flat_t, inter_rank_[static_cast<size_t>(root)]);
                });
            }
            st.run("intra broadcast", [&] { return intra_->broadcast(flat_t, root_local); });
        });
    }

    // NOTE: all_to_all has no hierarchical form here (every pair exchanges distinct data):
    // delegated to flat, still through the worker so it stays in posting order.
    Work all_to_all(const Tensor& out, const Tensor& in) override {
        check_contiguous("all_to_all", "out", out);
        check_contiguous("all_to_all", "in", in);
        check_all_to_all(out, in, size_);
        return start("all_to_all", in.nbytes(), [this, out, in](Stages& st) {
            st.run("flat all_to_all", [&] { return flat_->all_to_all(out, in); });
        });
    }

    Work all_to_all_v(const Tensor& out, const std::vector<int64_t>& out_counts, const Tensor& in,
                      const std::vector<int64_t>& in_counts) override {
        check_all_to_all_v(out, out_counts, in, in_counts, size_);
        int64_t total = 0;
        for (int64_t c : in_counts) total += c;
        return start("all_to_all_v", static_cast<size_t>(total) * core::dtype_size(in.dtype()),
                     [this, out, in, out_counts, in_counts](Stages& st) {
                         st.run("flat all_to_all_v", [&] {
                             return flat_->all_to_all_v(out, out_counts, in, in_counts);
                         });
                     });
    }

    // Point-to-point goes to flat directly from the caller's thread (matched by peer and tag,
    // not by order; routing it through the worker would serialize a recv before its send).
    Work send(const Tensor& t, int peer, int tag) override {
        if (auto f = failure()) return already_failed("send", *f);
        return flat_->send(t, peer, tag);
    }

    Work recv(const Tensor& t, int peer, int tag) override {
        if (auto f = failure()) return already_failed("recv", *f);
        return flat_->recv(t, peer, tag);
    }

    void barrier() override {
        start("barrier", 0, [this](Stages& st) {
            st.step("flat barrier");
            flat_->barrier();
        }).wait();
    }

    // A split of the flat communicator (the caller may compose a hierarchical one over it with
    // the sub-group's host_of_rank).
    std::unique_ptr<Communicator> split(int color, int key) override {
        auto sub = std::make_shared<std::unique_ptr<Communicator>>();
        start("split", 0, [this, sub, color, key](Stages& st) {
            st.step("flat split");
            *sub = flat_->split(color, key);
        }).wait();
        return std::move(*sub);
    }

private:
    using Job = std::function<void(Stages&)>;  // throws on failure
    struct Item {
        std::shared_ptr<Work::State> state;
        std::string what;  // "hierarchical allreduce #3 on group 'world' (...)"
        double timeout_s;  // set on intra and inter before the job runs
        Job job;
    };

    int my_local() const { return layout_.local_of_rank[static_cast<size_t>(rank_)]; }

    // inter_rank_[g]: g's rank in the inter communicator of its local index (group-rank order
    // among the ranks with that local index). order_[l * H + i]: the group rank with local
    // index l and inter rank i (the hierarchical order).
    void build_order() {
        std::vector<std::vector<int>> peers(static_cast<size_t>(local_size_));
        for (int g = 0; g < size_; ++g) {
            auto& p = peers[static_cast<size_t>(layout_.local_of_rank[static_cast<size_t>(g)])];
            p.push_back(g);  // ascending g: inter order
        }
        inter_rank_.assign(static_cast<size_t>(size_), 0);
        for (const auto& p : peers) {
            for (size_t i = 0; i < p.size(); ++i) {
                inter_rank_[static_cast<size_t>(p[i])] = static_cast<int>(i);
                order_.push_back(p[i]);
            }
        }
        identity_order_ = true;
        for (int k = 0; k < size_; ++k) {
            identity_order_ = identity_order_ && order_[static_cast<size_t>(k)] == k;
        }
    }

    void check_sub_communicators() const {
        const int want_inter = inter_rank_[static_cast<size_t>(rank_)];
        ZS_CHECK_T(ConfigError, intra_->size() == local_size_ && intra_->rank() == my_local(),
                   "hierarchical communicator: on group rank {}, intra '{}' is rank {} of {}; "
                   "expected rank {} of {} (my host's ranks in group-rank order)",
                   rank_, intra_->name(), intra_->rank(), intra_->size(), my_local(), local_size_);
        ZS_CHECK_T(ConfigError, inter_->size() == n_hosts_ && inter_->rank() == want_inter,
                   "hierarchical communicator: on group rank {}, inter '{}' is rank {} of {}; "
                   "expected rank {} of {} (local index {} of every host, in group-rank order)",
                   rank_, inter_->name(), inter_->rank(), inter_->size(), want_inter, n_hosts_,
                   my_local());
    }

    std::optional<std::string> failure() {
        std::lock_guard<std::mutex> lock(mu_);
        return failure_;
    }

    Work already_failed(const std::string& what, const std::string& why) const {
        return Work::failed(std::make_exception_ptr(CommError(
            fmt::format("hierarchical {} on group '{}': the communicator already failed: {}", what,
                        name(), why))));
    }

    // Queue one op on the worker; its Work completes when the whole chain has.
    Work start(const char* op, size_t bytes, Job job) {
        const int64_t seq = ++seq_;
        std::string what =
            fmt::format("hierarchical {} #{} on group '{}' ({} hosts x {} ranks, {} bytes)", op,
                        seq, name(), n_hosts_, local_size_, bytes);
        auto state = std::make_shared<Work::State>();
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (failure_) {
                return Work::failed(std::make_exception_ptr(CommError(
                    fmt::format("{}: the communicator already failed: {}", what, *failure_))));
            }
            jobs_.push_back({state, std::move(what), timeout_s_, std::move(job)});
        }
        cv_.notify_one();
        return Work(state);
    }

    void work_loop() {
        for (;;) {
            Item it;
            {
                std::unique_lock<std::mutex> lock(mu_);
                cv_.wait(lock, [&] { return stop_ || !jobs_.empty(); });
                if (jobs_.empty()) return;
                it = std::move(jobs_.front());
                jobs_.pop_front();
            }
            Work::complete(*it.state, run_item(it));
        }
    }

    // Runs one queued op; returns its error (null on success). Nothing escapes the thread.
    std::exception_ptr run_item(Item& it) {
        if (auto f = failure()) {
            // An earlier op failed: the ranks no longer agree on what the sub-communicators run.
            return std::make_exception_ptr(
                CommError(fmt::format("{}: the communicator already failed: {}", it.what, *f)));
        }
        intra_->set_timeout(it.timeout_s);
        inter_->set_timeout(it.timeout_s);
        Stages st;
        std::string msg;
        try {
            it.job(st);
            it.job = nullptr;  // release the op's tensors before waking the waiter
            return nullptr;
        } catch (const std::exception& e) {
            msg = fmt::format("{}, stage '{}': {}", it.what, st.current(), e.what());
        } catch (...) {
            msg = fmt::format("{}, stage '{}': unknown error", it.what, st.current());
        }
        it.job = nullptr;
        {
            std::lock_guard<std::mutex> lock(mu_);
            if (!failure_) failure_ = msg;
        }
        return std::make_exception_ptr(CommError(msg));
    }

    std::unique_ptr<Communicator> flat_, intra_, inter_;
    const HostLayout layout_;
    const int rank_, size_;
    const int n_hosts_, local_size_;  // H, L
    std::vector<int> inter_rank_;     // [N]
    std::vector<int> order_;          // [N] hierarchical order -> group rank
    bool identity_order_ = true;      // order_[k] == k
    int64_t seq_ = 0;                 // ops posted (the caller's thread only)

    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<Item> jobs_;               // GUARDED_BY(mu_)
    bool stop_ = false;                   // GUARDED_BY(mu_)
    std::optional<std::string> failure_;  // GUARDED_BY(mu_): set once, poisons the communicator
    std::thread worker_;                  // last: started after everything above exists
};

std::string rank_list(const std::vector<int>& ranks) {
    std::string s;
    for (int r : ranks) s += (s.empty() ? "" : ", ") + std::to_string(r);
    return s;
}

}  // namespace

HostLayout HostLayout::from(std::vector<int> host_of_rank) {
    ZS_CHECK_T(ConfigError, !host_of_rank.empty(),
               "hierarchical communicator: host_of_rank is empty");
    std::map<int, std::vector<int>> ranks_of_host;  // host id -> its group ranks, ascending
    for (size_t g = 0; g < host_of_rank.size(); ++g) {
        ZS_CHECK_T(ConfigError, host_of_rank[g] >= 0,
                   "hierarchical communicator: host_of_rank[{}] is {}; host ids are >= 0", g,
                   host_of_rank[g]);
        ranks_of_host[host_of_rank[g]].push_back(static_cast<int>(g));
    }
    const size_t per_host = ranks_of_host.begin()->second.size();
    bool even = true;
    std::string sizes;
    for (const auto& [host, ranks] : ranks_of_host) {
        even = even && ranks.size() == per_host;
        sizes += fmt::format("{}host {}: {} rank(s) ({})", sizes.empty() ? "" : "; ", host,
                             ranks.size(), rank_list(ranks));
    }
    ZS_CHECK_T(NotSupported, even,
               "hierarchical collectives need the same number of ranks on every host; got {} "
               "(use the flat communicator)",
               sizes);
    HostLayout l;
    l.n_hosts = static_cast<int>(ranks_of_host.size());
    l.ranks_per_host = static_cast<int>(per_host);
    l.local_of_rank.assign(host_of_rank.size(), 0);
    for (const auto& [host, ranks] : ranks_of_host) {
        for (size_t i = 0; i < ranks.size(); ++i) {
            l.local_of_rank[static_cast<size_t>(ranks[i])] = static_cast<int>(i);
        }
    }
    l.host_of_rank = std::move(host_of_rank);
    return l;
}

std::unique_ptr<Communicator> make_hierarchical(std::unique_ptr<Communicator> flat,
                                                std::unique_ptr<Communicator> intra,
                                                std::unique_ptr<Communicator> inter,
                                                std::vector<int> host_of_rank) {
    ZS_CHECK_T(ConfigError, flat && intra && inter,
               "make_hierarchical: flat, intra and inter must all be given");
    HostLayout layout = HostLayout::from(std::move(host_of_rank));
    return std::make_unique<HierComm>(std::move(flat), std::move(intra), std::move(inter),
                                      std::move(layout));
}

std::unique_ptr<Communicator> split_hierarchical(Communicator& parent,
                                                 std::vector<int> host_of_rank) {
    const HostLayout layout = HostLayout::from(host_of_rank);
    ZS_CHECK_T(ConfigError, static_cast<int>(layout.host_of_rank.size()) == parent.size(),
               "split_hierarchical: host_of_rank lists {} ranks; the group '{}' has {}",
               layout.host_of_rank.size(), parent.name(), parent.size());
    const int g = parent.rank();
    auto flat = parent.split(0, g);
    auto intra = parent.split(layout.host_of_rank[static_cast<size_t>(g)], g);
    auto inter = parent.split(layout.local_of_rank[static_cast<size_t>(g)], g);
    return make_hierarchical(std::move(flat), std::move(intra), std::move(inter),
                             std::move(host_of_rank));
}

}  // namespace zs::comm
