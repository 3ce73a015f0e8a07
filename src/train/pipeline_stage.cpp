// The Transformer as a pipeline stage (pipeline_stage.h).
#include "train/pipeline_stage.h"

#include "base/error.h"

namespace zs::train {

TransformerStage::TransformerStage(models::Transformer& model, models::GroupHooks& hooks,
                                   std::vector<models::Transformer::GroupRange> chunks, int stages,
                                   int rank, int64_t rows)
    : model_(model),
      hooks_(hooks),
      chunks_(std::move(chunks)),
      stages_(stages),
      rank_(rank),
      rows_(rows),
      hidden_(model.config().hidden_size) {}

bool TransformerStage::last_piece(int chunk) const {
    return chunk == static_cast<int>(chunks_.size()) - 1 && rank_ == stages_ - 1;
}

void TransformerStage::begin_step(const std::vector<models::TrainBatch>& batches, float ce_scale,
                                  float loss_scale) {
    batches_ = &batches;
    ce_scale_ = ce_scale;
    loss_scale_ = loss_scale;
    loss_ = {};
    inputs_.clear();
    live_ = {-1, -1};
    recomputed_ = 0;
}

void TransformerStage::run_forward(int mb, int chunk) {
    const models::Transformer::GroupRange r = chunks_[static_cast<size_t>(chunk)];
    model_.begin_micro_batch((*batches_)[static_cast<size_t>(mb)]);
    if (!first_piece(chunk)) {
        // Block r.begin - 1 reads residual(r.begin - 1).
        model_.residual(r.begin - 1).copy_from(inputs_.at({mb, chunk}));
    }
    model_.forward_blocks(r, hooks_);
    live_ = {mb, chunk};
}

void TransformerStage::forward(int mb, int chunk, const core::Tensor& in, const core::Tensor& out) {
    ZS_CHECK(batches_ != nullptr, "pipeline stage: begin_step first");
    if (!first_piece(chunk)) inputs_[{mb, chunk}] = in;
    run_forward(mb, chunk);
    if (out.defined()) {
        out.copy_from(model_.residual(chunks_[static_cast<size_t>(chunk)].end - 1));
    }
}

void TransformerStage::backward(int mb, int chunk, const core::Tensor& grad_out,
                                const core::Tensor& grad_in) {
    const models::Transformer::GroupRange r = chunks_[static_cast<size_t>(chunk)];
    if (live_ != std::make_pair(mb, chunk)) {
        run_forward(mb, chunk);
        ++recomputed_;
    }
    if (last_piece(chunk)) {
        const models::LossStats st = model_.head_loss(true, ce_scale_, loss_scale_, hooks_);
        loss_.loss_sum += st.loss_sum;
        loss_.n_tokens += st.n_tokens;
    } else {
        model_.residual_grad().copy_from(grad_out);
    }
    model_.backward_blocks(r, loss_scale_, hooks_);
    if (last_piece(chunk) && model_.config().tied_embeddings && r.begin > 0) {
        // The head wrote its share of the tied embedding's gradient: hand it to ZeRO.
        hooks_.before_backward(model_.embed_group());
        hooks_.after_backward(model_.embed_group());
    }
    if (grad_in.defined()) grad_in.copy_from(model_.residual_grad());
    inputs_.erase({mb, chunk});
    live_ = {-1, -1};  // backward consumed the activations
}

}  // namespace zs::train
