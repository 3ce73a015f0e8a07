// A pipeline stage of the Transformer (issue 17): this rank's chunks of consecutive groups run
// through parallel::run_schedule. Chunk c is virtual stage v = c * P + r of the P x V pieces; the
// first piece starts with the embedding, the last ends with the head and the loss.
//
// Activations: one micro-batch's are live in the model at a time. Each forward keeps only the
// chunk's input (the received activation, [B*T, C] f32; nothing on virtual stage 0, which
// re-reads its batch), and the backward of a micro-batch whose activations are no longer live
// first re-runs the chunk's forward from it — DeepSpeed's activation checkpointing at stage
// granularity. The backward is fused (input and weight gradients together): the Zero Bubble
// schedules, which split it, are planning-only for the Transformer (`zerospeed plan pipeline`).
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

namespace zs::train {

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
    void optimizer_step() override {}  // the trainer steps after run_schedule returns

    int recomputed() const { return recomputed_; }  // forwards re-run this step

private:
    void run_forward(int mb, int chunk);
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
    int recomputed_ = 0;
};

}  // namespace zs::train
