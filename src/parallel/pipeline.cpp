// The pipeline interpreter (pipeline.h).
#include "parallel/pipeline.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "base/error.h"

namespace zs::parallel {

void PipeStage::backward_input(int mb, int chunk, const core::Tensor&, const core::Tensor&) {
    throw Error(
        fmt::format("pipeline stage: this stage cannot split its backward (B of "
                    "micro-batch {} chunk {}); use a schedule without B/W split",
                    mb, chunk));
}

void PipeStage::backward_weight(int mb, int chunk) {
    throw Error(
        fmt::format("pipeline stage: this stage cannot split its backward (W of "
                    "micro-batch {} chunk {})",
                    mb, chunk));
}

namespace {

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

}  // namespace

double PipeRunStats::compute_s() const {
    double t = 0;
    for (const PipeSpan& sp : spans) t += sp.end - sp.start;
    return t;
}

void run_schedule(const PipeSchedule& s, comm::Communicator& pp, PipeStage& stage,
                  PipeRunStats* stats) {
    const int P = s.stages, r = pp.rank(), VP = s.virtual_stages();
    if (pp.size() != P) {
        throw Error(
            fmt::format("pipeline: the schedule has {} stages but the pp group '{}' {} "
                        "ranks",
                        P, pp.name(), pp.size()));
    }
    const core::Shape shape = stage.boundary_shape();
    const core::DType dtype = stage.boundary_dtype();
    using Key = std::pair<int, int>;  // (mb, chunk)
    std::map<Key, core::Tensor> acts_in, grads_in, acts_out, grads_out;
    std::vector<std::pair<comm::Work, core::Tensor>> in_flight;  // sends and their buffers
    auto take = [](std::map<Key, core::Tensor>& m, Key k) {
        core::Tensor t;
        auto it = m.find(k);
        if (it != m.end()) {
            t = std::move(it->second);
            m.erase(it);
        }
        return t;
    };
    auto fresh = [&] { return core::Tensor::empty(shape, dtype); };
    const auto& list = s.by_rank[static_cast<size_t>(r)];
    if (stats) {
        stats->spans.clear();
        stats->start = now_s();
    }
    for (size_t k = 0; k < list.size(); ++k) {
        const PipeInstr& i = list[k];
        const Key key{i.mb, i.chunk};
        const int v = i.chunk * P + r;
        const bool timed =
            stats && (i.op == PipeOp::forward || i.op == PipeOp::backward ||
                      i.op == PipeOp::backward_input || i.op == PipeOp::backward_weight);
        const double t0 = timed ? now_s() : 0.0;
        try {
            switch (i.op) {
                case PipeOp::recv_act: {
                    core::Tensor t = fresh();
                    pp.recv(t, (r - 1 + P) % P, kPipeActTag).wait();
                    acts_in[key] = std::move(t);
                    break;
                }
                case PipeOp::recv_grad: {
                    core::Tensor t = fresh();
                    pp.recv(t, (r + 1) % P, kPipeGradTag).wait();
                    grads_in[key] = std::move(t);
                    break;
                }
                case PipeOp::forward: {
                    core::Tensor out = v < VP - 1 ? fresh() : core::Tensor();
                    stage.forward(i.mb, i.chunk, take(acts_in, key), out);
                    if (out.defined()) acts_out[key] = std::move(out);
                    break;
                }
                case PipeOp::backward:
                case PipeOp::backward_input: {
                    core::Tensor gin = v > 0 ? fresh() : core::Tensor();
                    const core::Tensor gout = take(grads_in, key);
                    if (i.op == PipeOp::backward) {
                        stage.backward(i.mb, i.chunk, gout, gin);
                    } else {
                        stage.backward_input(i.mb, i.chunk, gout, gin);
                    }
                    if (gin.defined()) grads_out[key] = std::move(gin);
                    break;
                }
                case PipeOp::backward_weight:
                    stage.backward_weight(i.mb, i.chunk);
                    break;
                case PipeOp::send_act: {
                    core::Tensor t = take(acts_out, key);
                    in_flight.emplace_back(pp.send(t, (r + 1) % P, kPipeActTag), t);
                    break;
                }
                case PipeOp::send_grad: {
                    core::Tensor t = take(grads_out, key);
                    in_flight.emplace_back(pp.send(t, (r - 1 + P) % P, kPipeGradTag), t);
                    break;
                }
                case PipeOp::optimizer_step:
                    for (auto& f : in_flight) f.first.wait();
                    in_flight.clear();
                    stage.optimizer_step();
                    break;
            }
        } catch (const Error& e) {
            throw Error(fmt::format("pipeline rank {} ({} schedule, instruction {}: {}): {}", r,
                                    to_string(s.policy), k, to_string(i), e.what()));
        }
        if (timed) stats->spans.push_back({r, i, t0, now_s()});
        // Completed sends release their buffers as we go.
        std::erase_if(in_flight, [](auto& f) { return f.first.test(); });
    }
    if (stats) stats->end = now_s();
}

PipeTimeline gather_timeline(const PipeRunStats& mine, comm::Communicator& pp) {
    const int P = pp.size();
    // Every rank's spans as f64 rows (start, end, op, mb, chunk), padded to the longest list.
    core::Tensor n = core::Tensor::empty({1}, core::DType::i64);
    n.data<int64_t>()[0] = static_cast<int64_t>(mine.spans.size());
    core::Tensor ns = core::Tensor::empty({P}, core::DType::i64);
    pp.allgather(ns, n).wait();
    int64_t most = 0;
    for (int q = 0; q < P; ++q) most = std::max(most, ns.data<int64_t>()[q]);
    constexpr int64_t kCols = 5;
    core::Tensor rows = core::Tensor::zeros({most * kCols}, core::DType::i64);
    auto* out = rows.data<int64_t>();
    for (size_t k = 0; k < mine.spans.size(); ++k) {
        const PipeSpan& sp = mine.spans[k];
        std::memcpy(&out[k * kCols + 0], &sp.start, sizeof(double));
        std::memcpy(&out[k * kCols + 1], &sp.end, sizeof(double));
        out[k * kCols + 2] = static_cast<int64_t>(sp.instr.op);
        out[k * kCols + 3] = sp.instr.mb;
        out[k * kCols + 4] = sp.instr.chunk;
    }
    core::Tensor all = core::Tensor::empty({P * most * kCols}, core::DType::i64);
    pp.allgather(all, rows).wait();
    PipeTimeline tl;
    tl.busy.assign(static_cast<size_t>(P), 0.0);
    tl.first.assign(static_cast<size_t>(P), 0.0);
    tl.last.assign(static_cast<size_t>(P), 0.0);
    double t0 = 1e300;
    for (int q = 0; q < P; ++q) {
        const int64_t* a = all.data<int64_t>() + q * most * kCols;
        for (int64_t k = 0; k < ns.data<int64_t>()[q]; ++k) {
            PipeSpan sp;
            sp.rank = q;
            std::memcpy(&sp.start, &a[k * kCols + 0], sizeof(double));
            std::memcpy(&sp.end, &a[k * kCols + 1], sizeof(double));
            sp.instr = {static_cast<PipeOp>(a[k * kCols + 2]), static_cast<int>(a[k * kCols + 3]),
                        static_cast<int>(a[k * kCols + 4])};
            t0 = std::min(t0, sp.start);
            tl.spans.push_back(sp);
        }
    }
    for (PipeSpan& sp : tl.spans) {
        sp.start -= t0;
        sp.end -= t0;
        const size_t q = static_cast<size_t>(sp.rank);
        if (tl.busy[q] == 0.0) tl.first[q] = sp.start;
        tl.busy[q] += sp.end - sp.start;
        tl.last[q] = std::max(tl.last[q], sp.end);
        tl.makespan = std::max(tl.makespan, sp.end);
    }
    return tl;
}

PipeCosts mean_costs(const PipeTimeline& tl) {
    double sum[3] = {0, 0, 0};
    int64_t n[3] = {0, 0, 0};
    for (const PipeSpan& sp : tl.spans) {
        int k = -1;
        switch (sp.instr.op) {
            case PipeOp::forward:
                k = 0;
                break;
            case PipeOp::backward:
            case PipeOp::backward_input:
                k = 1;
                break;
            case PipeOp::backward_weight:
                k = 2;
                break;
            default:
                break;
        }
        if (k < 0) continue;
        sum[k] += sp.end - sp.start;
        ++n[k];
    }
    PipeCosts c;
    c.f = n[0] ? sum[0] / static_cast<double>(n[0]) : 0;
    c.b = n[1] ? sum[1] / static_cast<double>(n[1]) : 0;
    c.w = n[2] ? sum[2] / static_cast<double>(n[2]) : 0;
    c.comm = 0;
    return c;
}

}  // namespace zs::parallel
