// The trainer's pipeline-parallel pieces: the stage plan (partition by parameters or by measured
// time, the schedule, the tied-embedding group), the re-placement of Zero Bubble's Ws by the
// measured costs, the memory each stage holds against the formula, the timeline, and the
// pipelined evaluation loss. The step itself runs the schedule in trainer.cpp.
#include <cstring>

#include <fmt/format.h>

#include "base/error.h"
#include "base/log.h"
#include "parallel/pipeline.h"
#include "train/pipeline_stage.h"
#include "train/trainer.h"

namespace zs::train {

using core::DType;
using core::Tensor;

void Trainer::setup_pipeline() {
    const int P = cfg_.pipeline.stages, V = cfg_.pipeline.virtual_stages;
    const int64_t L = mcfg_.n_layers;
    ZS_CHECK_T(ConfigError, cfg_.sequence_parallel_size == 1 && cfg_.ring_parallel_size == 1,
               "{}: pipeline parallelism with sequence parallelism is not implemented yet "
               "(pipeline.stages {} with sequence_parallel_size {}, ring_parallel_size {})",
               cfg_.source, P, cfg_.sequence_parallel_size, cfg_.ring_parallel_size);
    ZS_CHECK_T(ConfigError, mcfg_.mlp != models::MlpKind::moe,
               "{}: pipeline parallelism with a mixture-of-experts model is not implemented yet "
               "(the load-balancing loss spans every stage's routers)",
               cfg_.source);
    const parallel::PipePolicy policy =
        parallel::parse_pipe_policy(cfg_.pipeline.schedule, cfg_.source + ": pipeline.schedule");
    const bool zb = policy == parallel::PipePolicy::zb_h1 || policy == parallel::PipePolicy::zb_h2;
    // ZeRO-2 reduce-scatters (and drops) each micro-batch's gradient when its backward ends; the
    // Zero Bubble schedules complete a block's weight gradient only at W, after later
    // micro-batches' B have written into the same buffers.
    ZS_CHECK_T(
        ConfigError, !zb || cfg_.zero.stage <= 1,
        "{}: pipeline.schedule {} defers weight gradients past later micro-batches' "
        "backwards, which ZeRO stage {} reduces per micro-batch: use zero_optimization.stage "
        "0 or 1 (DeepSpeed's pipelines allow ZeRO-1 at most), or schedule 1f1b",
        cfg_.source, cfg_.pipeline.schedule, cfg_.zero.stage);
    ZS_CHECK_T(ConfigError, int64_t{P} * V <= L,
               "{}: {} pipeline stages x {} virtual stages need at least that many blocks; the "
               "model has {}",
               cfg_.source, P, V, L);
    ZS_CHECK_T(ConfigError,
               cfg_.zero.offload_optimizer.device == OffloadDevice::none &&
                   cfg_.zero.offload_param.device == OffloadDevice::none,
               "{}: offload_optimizer / offload_param under pipeline parallelism is not "
               "implemented yet (pipeline.stages {})",
               cfg_.source, P);
    ZS_CHECK_T(ConfigError, !cfg_.zero.stage3_gather_16bit_weights_on_model_save,
               "{}: stage3_gather_16bit_weights_on_model_save under pipeline parallelism is not "
               "implemented (resume the checkpoint at pipeline.stages 1 to export)",
               cfg_.source);
    pipe_schedule_ = parallel::make_pipe_schedule(
        policy, P, static_cast<int>(cfg_.batch.gradient_accumulation_steps), V);
    pipe_check_ = parallel::validate(pipe_schedule_);
    pp_ = &topo_->group(parallel::Group::pp);
    StageTimes times;
    if (cfg_.pipeline.partition == PipelineConfig::Partition::time) {
        // Measured here, then rank 0's figures everywhere: every rank must cut alike.
        times = measure_stage_times(mcfg_, model_->run_config(),
                                    cfg_.batch.train_micro_batch_size_per_gpu, run_.seq_len);
        static_assert(sizeof(StageTimes) == 3 * sizeof(int64_t));
        Tensor t = Tensor::empty({3}, DType::i64, core::Device::cpu(), core::MemCategory::buffers);
        std::memcpy(t.data_ptr(), &times, sizeof times);
        world_.broadcast(t, 0).wait();
        std::memcpy(&times, t.data_ptr(), sizeof times);
        if (world_.rank() == 0) {
            log_info(
                "pipeline.partition time: a block's forward {:.2f} ms, backward {:.2f} ms; "
                "the head's {:.2f} ms (measured on rank 0)",
                1e3 * times.forward, 1e3 * times.backward, 1e3 * times.head);
        }
    }
    const std::vector<int64_t> bounds = partition_blocks(
        stage_costs(whole_model().layout(), mcfg_, run_.seq_len, cfg_.pipeline.partition, &times),
        P * V);
    chunks_.clear();
    for (int c = 0; c < V; ++c) {
        const int v = c * P + pp_->rank();
        const int a = static_cast<int>(bounds[static_cast<size_t>(v)]);
        const int b = static_cast<int>(bounds[static_cast<size_t>(v) + 1]);
        chunks_.push_back({v == 0 ? 0 : a + 1, b + 1});
    }
    if (mcfg_.tied_embeddings) {
        // Collective over pp: the first and the last stage share the embedding.
        const bool ends = pp_->rank() == 0 || pp_->rank() == P - 1;
        tied_ = pp_->split(ends ? 0 : 1, pp_->rank());
        if (!ends) tied_.reset();
    }
    if (world_.rank() == 0) {
        std::string plan;
        for (int v = 0; v < P * V; ++v) {
            plan += fmt::format("{}blocks [{}, {})", v ? ", " : "", bounds[static_cast<size_t>(v)],
                                bounds[static_cast<size_t>(v) + 1]);
        }
        log_info("pipeline: {} stages{}, {} schedule over {} micro-batches: {}", P,
                 V > 1 ? fmt::format(" x {} virtual", V) : std::string(), cfg_.pipeline.schedule,
                 cfg_.batch.gradient_accumulation_steps, plan);
    }
}

void Trainer::replan_pipeline() {
    const parallel::PipeCosts m =
        parallel::mean_costs(parallel::gather_timeline(pipe_stats_, *pp_));
    // The mean over every pipeline (data- and tensor-parallel replicas each measured their own),
    // then rank 0's bits everywhere: every replica must run the same schedule, since their
    // gradient reductions pair up in its order.
    Tensor c = Tensor::empty({3}, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
    float* cp = c.data<float>();
    cp[0] = static_cast<float>(m.f);
    cp[1] = static_cast<float>(m.b);
    cp[2] = static_cast<float>(m.w);
    world_.allreduce(c, comm::ReduceOp::sum).wait();
    world_.broadcast(c, 0).wait();
    if (!(cp[0] > 0 && cp[1] > 0 && cp[2] > 0)) return;  // keep the unit costs
    const parallel::PipeCosts costs{cp[0] / cp[0], cp[1] / cp[0], cp[2] / cp[0], 0};
    parallel::PipeSchedule next =
        parallel::make_pipe_schedule(pipe_schedule_.policy, pipe_schedule_.stages,
                                     pipe_schedule_.micro_batches, pipe_schedule_.chunks, costs);
    pipe_check_ = parallel::validate(next);
    pipe_schedule_ = std::move(next);
    if (world_.rank() == 0) {
        log_info("pipeline: {} Ws placed by the measured costs F:B:W = 1:{:.2f}:{:.2f}",
                 parallel::to_string(pipe_schedule_.policy), costs.b, costs.w);
    }
}

std::vector<Trainer::PipeHeld> Trainer::pipeline_held() {
    if (!pp_) return {};
    const int P = pp_->size(), r = pp_->rank();
    // (No step ran yet: the current schedule's counts, with nothing measured.)
    const parallel::PipeCheck& check =
        pipe_check_ran_.peak_held.empty() ? pipe_check_ : pipe_check_ran_;
    PipeHeld mine;
    mine.measured = stage_->peak_held();
    const int64_t rows = stage_->boundary_shape()[0], hidden = stage_->boundary_shape()[1];
    const bool stashes = !(r == 0 && chunks_.size() == 1);
    mine.formula.inputs = stashes ? check.peak_held[static_cast<size_t>(r)] * rows * hidden * 4 : 0;
    if (pipe_schedule_.split_backward) {
        mine.formula.deferred =
            check.peak_deferred_w[static_cast<size_t>(r)] *
            model_->deferred_weight_grad_bytes(
                chunks_.front(), cfg_.batch.train_micro_batch_size_per_gpu, run_.seq_len);
    }
    constexpr int64_t kCols = 6;
    Tensor t = Tensor::empty({kCols}, DType::i64, core::Device::cpu(), core::MemCategory::buffers);
    const int64_t v[kCols] = {mine.measured.inputs, mine.measured.deferred, mine.measured.both,
                              mine.formula.inputs,  mine.formula.deferred,  mine.formula.both};
    std::memcpy(t.data_ptr(), v, sizeof v);
    Tensor all =
        Tensor::empty({P * kCols}, DType::i64, core::Device::cpu(), core::MemCategory::buffers);
    pp_->allgather(all, t).wait();
    std::vector<PipeHeld> out(static_cast<size_t>(P));
    const int64_t* a = all.data<int64_t>();
    for (int q = 0; q < P; ++q) {
        const int64_t* x = a + q * kCols;
        out[static_cast<size_t>(q)] = {{x[0], x[1], x[2]}, {x[3], x[4], x[5]}};
    }
    return out;
}

parallel::PipeTimeline Trainer::pipeline_timeline() {
    // No step ran (every rank alike: --steps reached already): nothing to gather.
    if (!pp_ || pipe_stats_.spans.empty()) return {};
    return parallel::gather_timeline(pipe_stats_, *pp_);
}

bool Trainer::holds_group(int g) const {
    if (!pp_) return true;
    for (const models::Transformer::GroupRange& r : chunks_) {
        if (g >= r.begin && g < r.end) return true;
    }
    const bool last = pp_->rank() == pp_->size() - 1;
    if (last && g == model_->head_group()) return true;
    return last && mcfg_.tied_embeddings && g == model_->embed_group();
}

models::LossStats Trainer::pipeline_loss(const models::TrainBatch& batch) {
    const int P = pp_->size(), r = pp_->rank(), V = static_cast<int>(chunks_.size());
    models::LossStats out;
    const int64_t N = batch.input_ids.numel();
    Tensor buf = Tensor::empty({N, mcfg_.hidden_size}, DType::f32, core::Device::cpu(),
                               core::MemCategory::buffers);
    for (int v = 0; v < P * V; ++v) {
        if (v % P != r) continue;
        const models::Transformer::GroupRange& g = chunks_[static_cast<size_t>(v / P)];
        model_->begin_micro_batch(batch);
        if (v > 0) {
            pp_->recv(buf, (r - 1 + P) % P, parallel::kPipeActTag).wait();
            model_->residual(g.begin - 1).copy_from(buf);
        }
        model_->forward_blocks(g, *engine_);
        if (v < P * V - 1) {
            buf.copy_from(model_->residual(g.end - 1));
            pp_->send(buf, (r + 1) % P, parallel::kPipeActTag).wait();
        } else {
            out = model_->head_loss(false, 1.0f, 1.0f, *engine_);
        }
    }
    return out;
}

}  // namespace zs::train
