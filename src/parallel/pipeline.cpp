// The pipeline interpreter (pipeline.h).
#include "parallel/pipeline.h"

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

void run_schedule(const PipeSchedule& s, comm::Communicator& pp, PipeStage& stage) {
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
    for (size_t k = 0; k < list.size(); ++k) {
        const PipeInstr& i = list[k];
        const Key key{i.mb, i.chunk};
        const int v = i.chunk * P + r;
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
        // Completed sends release their buffers as we go.
        std::erase_if(in_flight, [](auto& f) { return f.first.test(); });
    }
}

}  // namespace zs::parallel
