// A pipeline stage of the Transformer (issue 17): this rank's chunks of consecutive groups run
// through parallel::run_schedule. Chunk c is virtual stage v = c * P + r of the P x V pieces; the
// first piece starts with the embedding, the last ends with the head and the loss.
//
// Activations: one micro-batch's are live in the model at a time. Each forward keeps only the
// chunk's input (the received activation, [B*T, C] f32; nothing on virtual stage 0, which
// re-reads its batch), and the backward of a micro-batch whose activations are no longer live
// first re-runs the chunk's forward from it — DeepSpeed's activation checkpointing at stage
// granularity. The Zero Bubble schedules split the backward: B (backward_input) runs it with the
// blocks' weight-gradient GEMMs deferred into a WeightGradQueue per (micro-batch, chunk), which
// keeps copies of their operands (models/layers/layers.h), and W (backward_weight) runs them and
// hands the blocks' gradients to ZeRO. So W needs no live activations and no recompute.
//
// Tied embeddings: the last piece uses the embedding group as its output matrix, so the rank
// holding it holds group 0 too; after the head's backward it runs group 0's backward hooks (no
// compute: the head wrote its share of the gradient) so ZeRO reduces that share over the stage's
// data-parallel group, and the trainer sums the two stages' shares (DeepSpeed's tied-module
// all-reduce).
#pragma once

#include <map>
#include <utility>
#include <vector>

#include "models/transformer.h"
#include "parallel/pipeline.h"
#include "train/ds_config.h"

namespace zs::train {

// What a pipeline piece costs, for the partition: per block a weight, and the extras of the first
// and the last piece; a non-last piece's blocks cost `inner` times their weight, the last piece's
// `last` times (plus `head`).
struct StageCosts {
    std::vector<double> block;
    double first = 0, head = 0;  // added to the first / last piece
    double inner = 1, last = 1;  // multipliers of a non-last / the last piece's block weights
};
// pipeline.partition's cost model: "parameters" (DeepSpeed's: each group's parameter count, the
// embedding with the first piece, the head group with the last), "uniform" (one per block),
// "flops" (the training FLOPs per token of this implementation: a block's forward 2 x its
// parameters + 2 T C for causal attention, a backward twice that; every piece but the last
// re-runs its forward before each backward (4 forwards' worth), the last does not (3), and the
// last also runs the LM head, 3 x 2 V C, tied or not; the embedding lookup costs nothing).
// "time": `times` (required then) are one block's forward and backward and the head's forward
// + backward measured on this machine (measure_stage_times); a non-last piece re-runs its
// forwards, so its blocks cost (2 f + b) / (f + b) times theirs.
struct StageTimes {
    double forward = 0, backward = 0, head = 0;  // seconds per micro-batch
};
StageCosts stage_costs(const models::ParamLayout& layout, const models::ModelConfig& cfg,
                       int64_t seq_len, PipelineConfig::Partition method,
                       const StageTimes* times = nullptr);
// pipeline.partition "time": a one-block copy of the model (random weights) trains a random
// micro-batch of `micro` x `seq_len` tokens once to warm up, then five times; the fastest of
// each phase. Per-rank: the caller agrees on one rank's figures.
StageTimes measure_stage_times(const models::ModelConfig& cfg, const models::RunConfig& run,
                               int64_t micro, int64_t seq_len);
// The contiguous split of the blocks into n pieces minimising the most expensive piece: block
// ranges [bounds[v], bounds[v + 1]), every piece non-empty (n <= blocks).
std::vector<int64_t> partition_blocks(const StageCosts& c, int n);

class TransformerStage final : public parallel::PipeStage {
public:
    // chunks[c]: the groups of chunk c ([begin, end); the head runs after the last piece's).
    TransformerStage(models::Transformer& model, models::GroupHooks& hooks,
                     std::vector<models::Transformer::GroupRange> chunks, int stages, int rank,
                     int64_t rows);

    // Before each step: the micro-batches (kept by the caller until run_schedule returns) and
    // the loss scaling forward_backward would get.
    void begin_step(const std::vector<models::TrainBatch>& batches, float ce_scale,
                    float loss_scale);
    // After the step: the loss of the micro-batches this rank's last piece computed.
    const models::LossStats& loss() const { return loss_; }

    core::Shape boundary_shape() const override { return core::Shape{rows_, hidden_}; }
    void forward(int mb, int chunk, const core::Tensor& in, const core::Tensor& out) override;
    void backward(int mb, int chunk, const core::Tensor& grad_out,
                  const core::Tensor& grad_in) override;
    void backward_input(int mb, int chunk, const core::Tensor& grad_out,
                        const core::Tensor& grad_in) override;
    void backward_weight(int mb, int chunk) override;
    void optimizer_step() override {}  // the trainer steps after run_schedule returns

    // What the schedule makes this stage hold beyond the live micro-batch's activations, at its
    // most in the last step: the received activations kept for the re-run forward (F done, B not;
    // none on virtual stage 0), the deferred weight gradients' operands (B done, W not), and the
    // two together at one instant.
    struct Held {
        int64_t inputs = 0, deferred = 0, both = 0;
    };
    Held peak_held() const { return peak_; }

private:
    void run_forward(int mb, int chunk);
    // The fused backward (q null) or B (q receives the deferred weight gradients).
    void run_backward(int mb, int chunk, const core::Tensor& grad_out, const core::Tensor& grad_in,
                      models::WeightGradQueue* q);
    bool first_piece(int chunk) const { return chunk == 0 && rank_ == 0; }
    bool last_piece(int chunk) const;

    models::Transformer& model_;
    models::GroupHooks& hooks_;
    std::vector<models::Transformer::GroupRange> chunks_;
    int stages_, rank_;
    int64_t rows_, hidden_;
    const std::vector<models::TrainBatch>* batches_ = nullptr;
    float ce_scale_ = 1, loss_scale_ = 1;
    models::LossStats loss_;
    std::map<std::pair<int, int>, core::Tensor> inputs_;  // (mb, chunk) -> received activation
    std::pair<int, int> live_{-1, -1};                    // whose activations the model holds
    std::map<std::pair<int, int>, models::WeightGradQueue> deferred_;  // B done, W not
    Held now_, peak_;
    void held_changed();
};

}  // namespace zs::train
