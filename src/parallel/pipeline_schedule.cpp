// Pipeline schedules: the generators (closed forms for gpipe, 1f1b and interleaved; list
// scheduling for the Zero Bubble policies), the validator and the simulator. pipeline_schedule.h
// states the rules.
#include "parallel/pipeline_schedule.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <map>
#include <queue>
#include <tuple>

#include <fmt/format.h>

#include "base/error.h"

namespace zs::parallel {

const char* to_string(PipeOp op) {
    switch (op) {
        case PipeOp::forward:
            return "forward";
        case PipeOp::backward:
            return "backward";
        case PipeOp::backward_input:
            return "backward_input";
        case PipeOp::backward_weight:
            return "backward_weight";
        case PipeOp::recv_act:
            return "recv_act";
        case PipeOp::send_act:
            return "send_act";
        case PipeOp::recv_grad:
            return "recv_grad";
        case PipeOp::send_grad:
            return "send_grad";
        case PipeOp::optimizer_step:
            return "optimizer_step";
    }
    return "?";
}

const char* to_string(PipePolicy p) {
    switch (p) {
        case PipePolicy::gpipe:
            return "gpipe";
        case PipePolicy::one_f_one_b:
            return "1f1b";
        case PipePolicy::interleaved:
            return "interleaved";
        case PipePolicy::zb_h1:
            return "zb-h1";
        case PipePolicy::zb_h2:
            return "zb-h2";
    }
    return "?";
}

PipePolicy parse_pipe_policy(const std::string& name, const std::string& what) {
    for (PipePolicy p : {PipePolicy::gpipe, PipePolicy::one_f_one_b, PipePolicy::interleaved,
                         PipePolicy::zb_h1, PipePolicy::zb_h2}) {
        if (name == to_string(p)) return p;
    }
    throw ConfigError(
        fmt::format("{}: unknown pipeline schedule '{}' (expected gpipe, 1f1b, "
                    "interleaved, zb-h1 or zb-h2)",
                    what, name));
}

std::string to_string(const PipeInstr& i) {
    const std::string c = i.chunk ? fmt::format(".{}", i.chunk) : "";
    switch (i.op) {
        case PipeOp::forward:
            return fmt::format("F{}{}", i.mb, c);
        case PipeOp::backward:
            return fmt::format("BW{}{}", i.mb, c);
        case PipeOp::backward_input:
            return fmt::format("B{}{}", i.mb, c);
        case PipeOp::backward_weight:
            return fmt::format("W{}{}", i.mb, c);
        case PipeOp::optimizer_step:
            return "step";
        default:
            return fmt::format("{} {}{}", to_string(i.op), i.mb, c);
    }
}

namespace {

bool is_compute(PipeOp op) {
    return op == PipeOp::forward || op == PipeOp::backward || op == PipeOp::backward_input ||
           op == PipeOp::backward_weight;
}

double cost_of(PipeOp op, const PipeCosts& c) {
    switch (op) {
        case PipeOp::forward:
            return c.f;
        case PipeOp::backward:
            return c.b + c.w;
        case PipeOp::backward_input:
            return c.b;
        case PipeOp::backward_weight:
            return c.w;
        default:
            return 0;
    }
}

// Wraps each rank's compute order with the transfers it needs: a receive right before the
// compute that reads it, a send right after the compute that produces it, the step at the end.
void add_transfers(PipeSchedule& s, const std::vector<std::vector<PipeInstr>>& compute) {
    const int P = s.stages, VP = s.virtual_stages();
    s.by_rank.assign(static_cast<size_t>(P), {});
    for (int r = 0; r < P; ++r) {
        auto& out = s.by_rank[static_cast<size_t>(r)];
        for (const PipeInstr& i : compute[static_cast<size_t>(r)]) {
            const int v = i.chunk * P + r;
            if (i.op == PipeOp::forward) {
                if (v > 0) out.push_back({PipeOp::recv_act, i.mb, i.chunk});
                out.push_back(i);
                if (v < VP - 1) out.push_back({PipeOp::send_act, i.mb, i.chunk});
            } else if (i.op == PipeOp::backward || i.op == PipeOp::backward_input) {
                if (v < VP - 1) out.push_back({PipeOp::recv_grad, i.mb, i.chunk});
                out.push_back(i);
                if (v > 0) out.push_back({PipeOp::send_grad, i.mb, i.chunk});
            } else {
                out.push_back(i);
            }
        }
        out.push_back({PipeOp::optimizer_step, -1, 0});
    }
}

// Megatron-LM's interleaved order (V = 1: DeepSpeed's 1F1B): forward k of rank r is micro-batch
// (k / (P V)) P + k % P of chunk (k / P) % V; backward k the same micro-batch of chunk
// V - 1 - (k / P) % V. Rank r warms up with `warmup` forwards, alternates, and cools down.
std::vector<std::vector<PipeInstr>> one_f_one_b_order(int P, int M, int V) {
    std::vector<std::vector<PipeInstr>> order(static_cast<size_t>(P));
    const int n = M * V;
    auto fwd = [&](int k) {
        const int mb = V == 1 ? k : (k / (P * V)) * P + k % P;
        return PipeInstr{PipeOp::forward, mb, V == 1 ? 0 : (k / P) % V};
    };
    auto bwd = [&](int k) {
        const int mb = V == 1 ? k : (k / (P * V)) * P + k % P;
        return PipeInstr{PipeOp::backward, mb, V == 1 ? 0 : V - 1 - (k / P) % V};
    };
    for (int r = 0; r < P; ++r) {
        auto& o = order[static_cast<size_t>(r)];
        const int warmup = std::min(V == 1 ? P - r - 1 : (P - r - 1) * 2 + (V - 1) * P, n);
        for (int k = 0; k < warmup; ++k) o.push_back(fwd(k));
        for (int k = 0; k < n - warmup; ++k) {
            o.push_back(fwd(warmup + k));
            o.push_back(bwd(k));
        }
        for (int k = n - warmup; k < n; ++k) o.push_back(bwd(k));
    }
    return order;
}

// Zero Bubble scheduling (one chunk per rank): each rank runs its forwards and input-gradient
// backwards B in 1F1B's order — with 1F1B's warm-up (ZB-H1) or with twice the activations in
// flight (ZB-H2: 2 (P - r) - 2 warm-up forwards) — and a discrete-event run on the costs places
// the weight gradients W: a W runs whenever the next F or B has not received its input yet (the
// time 1F1B would idle), and is forced once more than pipe_deferred_w_bound are pending. What
// each rank ran, in order, is the schedule.
std::vector<std::vector<PipeInstr>> zero_bubble_order(PipePolicy policy, int P, int M,
                                                      const PipeCosts& c) {
    constexpr double kNever = std::numeric_limits<double>::infinity();
    struct Rank {
        std::vector<PipeInstr> fb;  // F and B in order
        size_t next = 0;
        double free_at = 0;
        std::deque<int> pending_w;
        std::vector<double> act_at, grad_at;  // per micro-batch, kNever until known
    };
    std::vector<Rank> rk(static_cast<size_t>(P));
    for (int r = 0; r < P; ++r) {
        Rank& x = rk[static_cast<size_t>(r)];
        x.act_at.assign(static_cast<size_t>(M), kNever);
        x.grad_at.assign(static_cast<size_t>(M), kNever);
        const int held = pipe_memory_bound(policy, P, M, 1, r);
        const int warmup = std::min(held - 1, M);
        for (int k = 0; k < warmup; ++k) x.fb.push_back({PipeOp::forward, k, 0});
        for (int k = 0; k < M - warmup; ++k) {
            x.fb.push_back({PipeOp::forward, warmup + k, 0});
            x.fb.push_back({PipeOp::backward_input, k, 0});
        }
        for (int k = M - warmup; k < M; ++k) x.fb.push_back({PipeOp::backward_input, k, 0});
    }
    std::vector<std::vector<PipeInstr>> order(static_cast<size_t>(P));
    // Every moment something can change (a rank frees up, a transfer lands), earliest first.
    std::priority_queue<double, std::vector<double>, std::greater<>> events;
    events.push(0.0);
    const int total = P * M * 3;
    int done = 0;
    while (done < total) {
        if (events.empty()) {
            throw Error(fmt::format("pipeline schedule {}: list scheduling stalled at P={} M={}",
                                    to_string(policy), P, M));
        }
        const double now = events.top();
        while (!events.empty() && events.top() <= now) events.pop();
        for (int r = 0; r < P; ++r) {
            Rank& x = rk[static_cast<size_t>(r)];
            if (x.free_at > now) continue;
            const int w_cap = pipe_deferred_w_bound(policy, P, r);
            bool ready = false;
            PipeInstr i{};
            if (x.next < x.fb.size()) {
                i = x.fb[x.next];
                const size_t m = static_cast<size_t>(i.mb);
                ready = i.op == PipeOp::forward ? (r == 0 || x.act_at[m] <= now)
                                                : (r == P - 1 || x.grad_at[m] <= now);
            }
            if (static_cast<int>(x.pending_w.size()) >= w_cap || (!ready && !x.pending_w.empty())) {
                x.free_at = now + c.w;
                order[static_cast<size_t>(r)].push_back(
                    {PipeOp::backward_weight, x.pending_w.front(), 0});
                x.pending_w.pop_front();
            } else if (ready) {
                ++x.next;
                order[static_cast<size_t>(r)].push_back(i);
                const size_t m = static_cast<size_t>(i.mb);
                if (i.op == PipeOp::forward) {
                    x.free_at = now + c.f;
                    if (r < P - 1) {
                        rk[static_cast<size_t>(r + 1)].act_at[m] = x.free_at + c.comm;
                        events.push(x.free_at + c.comm);
                    }
                } else {
                    x.free_at = now + c.b;
                    if (r > 0) {
                        rk[static_cast<size_t>(r - 1)].grad_at[m] = x.free_at + c.comm;
                        events.push(x.free_at + c.comm);
                    }
                    x.pending_w.push_back(i.mb);
                }
            } else {
                continue;
            }
            events.push(x.free_at);
            ++done;
        }
    }
    return order;
}

}  // namespace

int pipe_memory_bound(PipePolicy policy, int stages, int micro_batches, int chunks, int rank) {
    const int P = stages, M = micro_batches, V = chunks, r = rank;
    switch (policy) {
        case PipePolicy::gpipe:
            return M * V;
        case PipePolicy::one_f_one_b:
        case PipePolicy::zb_h1:
            return std::min(P - r, M);
        case PipePolicy::interleaved:
            return std::min((P - r - 1) * 2 + (V - 1) * P + 1, M * V);
        case PipePolicy::zb_h2:
            return std::min(2 * (P - r) - 1, M);
    }
    return M * V;
}

int pipe_deferred_w_bound(PipePolicy policy, int stages, int rank) {
    if (policy != PipePolicy::zb_h1 && policy != PipePolicy::zb_h2) return 0;
    (void)stages;
    return policy == PipePolicy::zb_h2 ? 2 * rank + 1 : rank + 1;
}

PipeSchedule make_pipe_schedule(PipePolicy policy, int stages, int micro_batches, int chunks,
                                const PipeCosts& costs) {
    const std::string what = fmt::format("pipeline schedule {}", to_string(policy));
    if (stages < 1) throw ConfigError(fmt::format("{}: stages must be >= 1, got {}", what, stages));
    if (micro_batches < 1) {
        throw ConfigError(
            fmt::format("{}: micro-batches must be >= 1, got {}", what, micro_batches));
    }
    if (policy == PipePolicy::interleaved) {
        if (chunks < 2) {
            throw ConfigError(fmt::format(
                "{}: chunks (virtual stages per rank) must be >= 2, got {}", what, chunks));
        }
        if (micro_batches % stages != 0) {
            throw ConfigError(fmt::format(
                "{}: micro-batches ({}) must be a multiple of the stages ({}), as Megatron-LM's "
                "interleaved schedule requires",
                what, micro_batches, stages));
        }
    } else if (chunks != 1) {
        throw ConfigError(fmt::format(
            "{}: chunks (virtual stages per rank) is {}; only the interleaved schedule has more "
            "than one",
            what, chunks));
    }
    if (costs.f <= 0 || costs.b <= 0 || costs.w <= 0 || costs.comm < 0) {
        throw ConfigError(fmt::format("{}: costs must be positive (f {} b {} w {} comm {})", what,
                                      costs.f, costs.b, costs.w, costs.comm));
    }
    PipeSchedule s;
    s.policy = policy;
    s.stages = stages;
    s.micro_batches = micro_batches;
    s.chunks = chunks;
    const int P = stages, M = micro_batches;
    std::vector<std::vector<PipeInstr>> order;
    switch (policy) {
        case PipePolicy::gpipe:
            order.assign(static_cast<size_t>(P), {});
            for (auto& o : order) {
                for (int m = 0; m < M; ++m) o.push_back({PipeOp::forward, m, 0});
                for (int m = 0; m < M; ++m) o.push_back({PipeOp::backward, m, 0});
            }
            break;
        case PipePolicy::one_f_one_b:
        case PipePolicy::interleaved:
            order = one_f_one_b_order(P, M, chunks);
            break;
        case PipePolicy::zb_h1:
        case PipePolicy::zb_h2:
            s.split_backward = true;
            order = zero_bubble_order(policy, P, M, costs);
            break;
    }
    add_transfers(s, order);
    return s;
}

PipeCheck validate(const PipeSchedule& s) {
    const int P = s.stages, M = s.micro_batches, V = s.chunks, VP = s.virtual_stages();
    const std::string what =
        fmt::format("pipeline schedule {} (P={} M={} V={})", to_string(s.policy), P, M, V);
    if (static_cast<int>(s.by_rank.size()) != P) {
        throw Error(
            fmt::format("{}: {} instruction lists for {} stages", what, s.by_rank.size(), P));
    }
    // Messages in send order per (kind, destination rank), as (mb, destination chunk), and in
    // receive order per (kind, receiving rank), to compare.
    std::map<std::pair<int, int>, std::vector<std::pair<int, int>>> sent, received;
    PipeCheck out;
    out.peak_held.assign(static_cast<size_t>(P), 0);
    out.peak_deferred_w.assign(static_cast<size_t>(P), 0);
    for (int r = 0; r < P; ++r) {
        const auto& list = s.by_rank[static_cast<size_t>(r)];
        enum : uint8_t { kAct = 1, kF = 2, kGrad = 4, kB = 8, kW = 16, kSentA = 32, kSentG = 64 };
        std::vector<uint8_t> st(static_cast<size_t>(M * V), 0);
        int held = 0, deferred = 0;
        for (size_t k = 0; k < list.size(); ++k) {
            const PipeInstr& i = list[k];
            auto fail = [&](const std::string& rule) {
                throw Error(fmt::format("{}: rank {} instruction {} ({}): {}", what, r, k,
                                        to_string(i), rule));
            };
            if (i.op == PipeOp::optimizer_step) {
                if (k + 1 != list.size()) fail("the optimizer step must be the last instruction");
                continue;
            }
            if (i.mb < 0 || i.mb >= M || i.chunk < 0 || i.chunk >= V) {
                fail(fmt::format("micro-batch must be in [0, {}) and chunk in [0, {})", M, V));
            }
            const int v = i.chunk * P + r;
            uint8_t& f = st[static_cast<size_t>(i.mb * V + i.chunk)];
            const bool split = s.split_backward;
            switch (i.op) {
                case PipeOp::recv_act:
                    if (v == 0) fail("virtual stage 0 reads the batch, it receives no activation");
                    if (f & kAct) fail("activation received twice");
                    f |= kAct;
                    received[{0, r}].push_back({i.mb, i.chunk});
                    break;
                case PipeOp::forward:
                    if (f & kF) fail("forwarded twice");
                    if (v > 0 && !(f & kAct)) fail("forward before its input activation arrived");
                    f |= kF;
                    out.peak_held[static_cast<size_t>(r)] =
                        std::max(out.peak_held[static_cast<size_t>(r)], ++held);
                    break;
                case PipeOp::send_act:
                    if (v == VP - 1) fail("the last virtual stage sends no activation");
                    if (!(f & kF)) fail("activation sent before its forward");
                    if (f & kSentA) fail("activation sent twice");
                    f |= kSentA;
                    sent[{0, (v + 1) % P}].push_back({i.mb, (v + 1) / P});
                    break;
                case PipeOp::recv_grad:
                    if (v == VP - 1) fail("the last virtual stage receives no gradient");
                    if (f & kGrad) fail("gradient received twice");
                    f |= kGrad;
                    received[{1, r}].push_back({i.mb, i.chunk});
                    break;
                case PipeOp::backward:
                case PipeOp::backward_input:
                    if (split != (i.op == PipeOp::backward_input)) {
                        fail(split ? "this schedule splits the backward: B and W, not fused"
                                   : "this schedule fuses the backward: no B/W split");
                    }
                    if (!(f & kF)) fail("backward before its forward");
                    if (f & kB) fail("backward twice");
                    if (v < VP - 1 && !(f & kGrad)) {
                        fail("backward before its output's gradient arrived");
                    }
                    f |= kB;
                    --held;
                    if (i.op == PipeOp::backward_input) {
                        out.peak_deferred_w[static_cast<size_t>(r)] =
                            std::max(out.peak_deferred_w[static_cast<size_t>(r)], ++deferred);
                    }
                    break;
                case PipeOp::backward_weight:
                    if (!split) fail("this schedule fuses the backward: no W");
                    if (!(f & kB)) fail("weight gradient (W) before the input gradient (B)");
                    if (f & kW) fail("weight gradient twice");
                    f |= kW;
                    --deferred;
                    break;
                case PipeOp::send_grad:
                    if (v == 0) fail("virtual stage 0 sends no gradient");
                    if (!(f & kB)) fail("gradient sent before its backward");
                    if (f & kSentG) fail("gradient sent twice");
                    f |= kSentG;
                    sent[{1, (v - 1 + P) % P}].push_back({i.mb, (v - 1) / P});
                    break;
                case PipeOp::optimizer_step:
                    break;
            }
        }
        if (list.empty() || list.back().op != PipeOp::optimizer_step) {
            throw Error(fmt::format("{}: rank {} does not end with the optimizer step", what, r));
        }
        for (int m = 0; m < M; ++m) {
            for (int c = 0; c < V; ++c) {
                const uint8_t f = st[static_cast<size_t>(m * V + c)];
                const int v = c * P + r;
                const uint8_t need = static_cast<uint8_t>(kF | kB | (s.split_backward ? kW : 0) |
                                                          (v > 0 ? kAct | kSentG : 0) |
                                                          (v < VP - 1 ? kGrad | kSentA : 0));
                if ((f & need) != need) {
                    throw Error(fmt::format(
                        "{}: rank {} micro-batch {} chunk {}: missing{}{}{}{}{}{}{}", what, r, m, c,
                        (need & ~f & kF) ? " forward" : "", (need & ~f & kB) ? " backward" : "",
                        (need & ~f & kW) ? " W" : "", (need & ~f & kAct) ? " recv_act" : "",
                        (need & ~f & kSentA) ? " send_act" : "",
                        (need & ~f & kGrad) ? " recv_grad" : "",
                        (need & ~f & kSentG) ? " send_grad" : ""));
                }
            }
        }
        const int bound = pipe_memory_bound(s.policy, P, M, V, r);
        if (out.peak_held[static_cast<size_t>(r)] > bound) {
            throw Error(
                fmt::format("{}: rank {} holds {} activations at once, above the policy's "
                            "bound of {}",
                            what, r, out.peak_held[static_cast<size_t>(r)], bound));
        }
        const int w_bound = pipe_deferred_w_bound(s.policy, P, r);
        if (out.peak_deferred_w[static_cast<size_t>(r)] > w_bound) {
            throw Error(
                fmt::format("{}: rank {} defers {} weight gradients (W) at once, above the "
                            "policy's bound of {}",
                            what, r, out.peak_deferred_w[static_cast<size_t>(r)], w_bound));
        }
    }
    for (const auto& [key, list] : sent) {
        if (received[key] != list) {
            throw Error(
                fmt::format("{}: the {}s sent to rank {} are not received in the order "
                            "they are sent",
                            what, key.first == 0 ? "activation" : "gradient", key.second));
        }
    }
    simulate(s, PipeCosts{});
    return out;
}

double PipeTimeline::span(int r) const {
    return last[static_cast<size_t>(r)] - first[static_cast<size_t>(r)];
}

double PipeTimeline::period() const {
    double p = 0;
    for (size_t r = 0; r < busy.size(); ++r) p = std::max(p, span(static_cast<int>(r)));
    return p;
}

double PipeTimeline::bubble(int r) const {
    const double s = span(r);
    return s > 0 ? 1.0 - busy[static_cast<size_t>(r)] / s : 0.0;
}

double PipeTimeline::bubble() const {
    double b = 0;
    for (double x : busy) b += x;
    const double p = period();
    return p > 0 ? 1.0 - b / (p * static_cast<double>(busy.size())) : 0.0;
}

PipeTimeline simulate(const PipeSchedule& s, const PipeCosts& costs) {
    const int P = s.stages;
    PipeTimeline tl;
    tl.busy.assign(static_cast<size_t>(P), 0.0);
    tl.first.assign(static_cast<size_t>(P), -1.0);
    tl.last.assign(static_cast<size_t>(P), 0.0);
    std::vector<double> clock(static_cast<size_t>(P), 0.0);
    std::vector<size_t> pc(static_cast<size_t>(P), 0);
    // Arrival times by (kind, receiving rank, micro-batch, receiving chunk), FIFO per key.
    std::map<std::tuple<int, int, int, int>, std::deque<double>> arrivals;
    for (bool progress = true; progress;) {
        progress = false;
        for (int r = 0; r < P; ++r) {
            const auto& list = s.by_rank[static_cast<size_t>(r)];
            size_t& k = pc[static_cast<size_t>(r)];
            double& t = clock[static_cast<size_t>(r)];
            for (; k < list.size(); ++k) {
                const PipeInstr& i = list[k];
                const int v = i.chunk * P + r;
                if (i.op == PipeOp::recv_act || i.op == PipeOp::recv_grad) {
                    auto it = arrivals.find({i.op == PipeOp::recv_act ? 0 : 1, r, i.mb, i.chunk});
                    if (it == arrivals.end() || it->second.empty()) break;
                    t = std::max(t, it->second.front());
                    it->second.pop_front();
                } else if (i.op == PipeOp::send_act) {
                    arrivals[{0, (v + 1) % P, i.mb, (v + 1) / P}].push_back(t + costs.comm);
                } else if (i.op == PipeOp::send_grad) {
                    arrivals[{1, (v - 1 + P) % P, i.mb, (v - 1) / P}].push_back(t + costs.comm);
                } else if (is_compute(i.op)) {
                    const double d = cost_of(i.op, costs);
                    tl.spans.push_back({r, i, t, t + d});
                    if (tl.first[static_cast<size_t>(r)] < 0) tl.first[static_cast<size_t>(r)] = t;
                    tl.last[static_cast<size_t>(r)] = t + d;
                    t += d;
                    tl.busy[static_cast<size_t>(r)] += d;
                    tl.makespan = std::max(tl.makespan, t);
                }
                progress = true;
            }
        }
    }
    std::string stuck;
    for (int r = 0; r < P; ++r) {
        const auto& list = s.by_rank[static_cast<size_t>(r)];
        const size_t k = pc[static_cast<size_t>(r)];
        if (k < list.size()) stuck += fmt::format(" rank {} waits at {};", r, to_string(list[k]));
    }
    if (!stuck.empty()) {
        throw Error(fmt::format("pipeline schedule {} (P={} M={}): deadlock:{}",
                                to_string(s.policy), P, s.micro_batches, stuck));
    }
    std::stable_sort(tl.spans.begin(), tl.spans.end(),
                     [](const PipeSpan& a, const PipeSpan& b) { return a.rank < b.rank; });
    return tl;
}

double pipe_theory_bubble(int stages, int micro_batches, int chunks) {
    return static_cast<double>(stages - 1) /
           static_cast<double>(chunks * micro_batches + stages - 1);
}

}  // namespace zs::parallel
