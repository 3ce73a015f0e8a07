// The Transformer as a pipeline stage (pipeline_stage.h).
#include "train/pipeline_stage.h"

#include <algorithm>
#include <vector>

#include "base/error.h"
#include "base/timer.h"
#include "models/params.h"

namespace zs::train {

StageCosts stage_costs(const models::ParamLayout& layout, const models::ModelConfig& cfg,
                       int64_t seq_len, PipelineConfig::Partition method, const StageTimes* times) {
    const int64_t L = cfg.n_layers;
    StageCosts c;
    c.block.assign(static_cast<size_t>(L), 1.0);
    switch (method) {
        case PipelineConfig::Partition::uniform:
            break;
        case PipelineConfig::Partition::parameters:
            for (int64_t l = 0; l < L; ++l) {
                c.block[static_cast<size_t>(l)] =
                    static_cast<double>(layout.group(static_cast<int>(l) + 1).numel);
            }
            c.first = static_cast<double>(layout.group(0).numel);
            c.head = static_cast<double>(layout.group(static_cast<int>(L) + 1).numel);
            break;
        case PipelineConfig::Partition::flops: {
            const double T = static_cast<double>(seq_len), C = static_cast<double>(cfg.hidden_size);
            for (int64_t l = 0; l < L; ++l) {
                c.block[static_cast<size_t>(l)] =
                    2.0 * static_cast<double>(layout.group(static_cast<int>(l) + 1).numel) +
                    2.0 * T * C;
            }
            c.head = 3.0 * 2.0 * static_cast<double>(cfg.vocab_size) * C;
            c.inner = 4.0;
            c.last = 3.0;
            break;
        }
        case PipelineConfig::Partition::time: {
            ZS_CHECK(times != nullptr, "stage_costs: the \"time\" partition needs measured times");
            const double fb = times->forward + times->backward;
            ZS_CHECK(fb > 0, "stage_costs: measured block time {} s", fb);
            c.block.assign(static_cast<size_t>(L), fb);
            c.head = times->head;
            c.inner = (2.0 * times->forward + times->backward) / fb;
            c.last = 1.0;
            break;
        }
    }
    return c;
}

StageTimes measure_stage_times(const models::ModelConfig& cfg, const models::RunConfig& run,
                               int64_t micro, int64_t seq_len) {
    models::ModelConfig one = cfg;
    one.n_layers = 1;
    models::RunConfig rc;
    rc.compute_dtype = run.compute_dtype;
    rc.logits_chunk = run.logits_chunk;
    rc.device = run.device;
    models::Transformer m(one, rc);
    models::DenseParams params(m.layout(), rc.compute_dtype, true, rc.device);
    params.init(1);
    params.bind(m.binding());
    models::TrainBatch b{core::Tensor::empty({micro, seq_len}, core::DType::i32),
                         core::Tensor::empty({micro, seq_len}, core::DType::i32)};
    for (int64_t i = 0; i < micro * seq_len; ++i) {
        b.input_ids.data<int32_t>()[i] = static_cast<int32_t>((i * 7919) % cfg.vocab_size);
        b.targets.data<int32_t>()[i] = static_cast<int32_t>((i * 104729 + 1) % cfg.vocab_size);
    }
    // The block's phases alone (not the embedding's): the pieces a pipeline stage runs.
    models::GroupHooks none;
    const models::Transformer::GroupRange embed{0, 1}, block{1, 2};
    // One warm-up (allocations, caches), then the fastest of five: interference from other
    // processes only ever adds time.
    StageTimes t{1e300, 1e300, 1e300};
    for (int k = 0; k < 6; ++k) {
        m.begin_micro_batch(b);
        m.forward_blocks(embed, none);
        Timer ph;
        m.forward_blocks(block, none);
        const double f = ph.seconds();
        ph.reset();
        m.head_loss(true, 1.0f, 1.0f, none);
        const double h = ph.seconds();
        ph.reset();
        m.backward_blocks(block, 1.0f, none);
        const double bw = ph.seconds();
        if (k == 0) continue;
        t.forward = std::min(t.forward, f);
        t.backward = std::min(t.backward, bw);
        t.head = std::min(t.head, h);
    }
    return t;
}

std::vector<int64_t> partition_blocks(const StageCosts& c, int n) {
    const size_t N = c.block.size(), K = static_cast<size_t>(n);
    ZS_CHECK(n >= 1 && K <= N, "partition_blocks: {} pieces of {} blocks", n, N);
    std::vector<double> pre(N + 1, 0.0);
    for (size_t l = 0; l < N; ++l) pre[l + 1] = pre[l] + c.block[l];
    auto cost = [&](size_t k, size_t j, size_t i) {  // piece k (1-based) = blocks [j, i)
        const bool last = k == K;
        return (last ? c.last : c.inner) * (pre[i] - pre[j]) + (k == 1 ? c.first : 0.0) +
               (last ? c.head : 0.0);
    };
    // best[k][i]: the cheapest most expensive piece over the first i blocks in k pieces.
    constexpr double kInf = 1e300;
    std::vector<std::vector<double>> best(K + 1, std::vector<double>(N + 1, kInf));
    std::vector<std::vector<size_t>> cut(K + 1, std::vector<size_t>(N + 1, 0));
    best[0][0] = 0;
    for (size_t k = 1; k <= K; ++k) {
        for (size_t i = k; i <= N; ++i) {
            for (size_t j = k - 1; j < i; ++j) {
                const double v = std::max(best[k - 1][j], cost(k, j, i));
                if (v < best[k][i]) {
                    best[k][i] = v;
                    cut[k][i] = j;
                }
            }
        }
    }
    std::vector<int64_t> b(K + 1, 0);
    b[K] = static_cast<int64_t>(N);
    for (size_t k = K; k > 0; --k)
        b[k - 1] = static_cast<int64_t>(cut[k][static_cast<size_t>(b[k])]);
    return b;
}

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
    deferred_.clear();  // empty unless the last step failed midway
    now_ = peak_ = {};
}

void TransformerStage::held_changed() {
    now_.both = now_.inputs + now_.deferred;
    peak_.inputs = std::max(peak_.inputs, now_.inputs);
    peak_.deferred = std::max(peak_.deferred, now_.deferred);
    peak_.both = std::max(peak_.both, now_.both);
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
    if (!first_piece(chunk)) {
        inputs_[{mb, chunk}] = in;
        now_.inputs += static_cast<int64_t>(in.nbytes());
        held_changed();
    }
    run_forward(mb, chunk);
    if (out.defined()) {
        out.copy_from(model_.residual(chunks_[static_cast<size_t>(chunk)].end - 1));
    }
}

void TransformerStage::backward(int mb, int chunk, const core::Tensor& grad_out,
                                const core::Tensor& grad_in) {
    run_backward(mb, chunk, grad_out, grad_in, nullptr);
}

void TransformerStage::backward_input(int mb, int chunk, const core::Tensor& grad_out,
                                      const core::Tensor& grad_in) {
    models::WeightGradQueue& q = deferred_[{mb, chunk}];
    run_backward(mb, chunk, grad_out, grad_in, &q);
    now_.deferred += q.bytes();
    held_changed();
}

void TransformerStage::backward_weight(int mb, int chunk) {
    auto it = deferred_.find({mb, chunk});
    ZS_CHECK(it != deferred_.end(), "pipeline stage: W{}.{} before its B", mb, chunk);
    now_.deferred -= it->second.bytes();
    held_changed();
    model_.weight_backward(chunks_[static_cast<size_t>(chunk)], it->second, hooks_);
    deferred_.erase(it);
}

void TransformerStage::run_backward(int mb, int chunk, const core::Tensor& grad_out,
                                    const core::Tensor& grad_in, models::WeightGradQueue* q) {
    const models::Transformer::GroupRange r = chunks_[static_cast<size_t>(chunk)];
    if (live_ != std::make_pair(mb, chunk)) run_forward(mb, chunk);
    if (last_piece(chunk)) {
        // The head's gradients are complete here (its weight gradient is never deferred).
        const models::LossStats st = model_.head_loss(true, ce_scale_, loss_scale_, hooks_);
        loss_.loss_sum += st.loss_sum;
        loss_.n_tokens += st.n_tokens;
    } else {
        model_.residual_grad().copy_from(grad_out);
    }
    model_.defer_weight_grads(q);
    model_.backward_blocks(r, loss_scale_, hooks_);
    model_.defer_weight_grads(nullptr);
    if (last_piece(chunk) && model_.config().tied_embeddings && r.begin > 0) {
        // The head wrote its share of the tied embedding's gradient: hand it to ZeRO.
        hooks_.before_backward(model_.embed_group());
        hooks_.after_backward(model_.embed_group());
    }
    if (grad_in.defined()) grad_in.copy_from(model_.residual_grad());
    auto in = inputs_.find({mb, chunk});
    if (in != inputs_.end()) {
        now_.inputs -= static_cast<int64_t>(in->second.nbytes());
        inputs_.erase(in);
    }
    live_ = {-1, -1};  // backward consumed the activations
}

}  // namespace zs::train
