// Trainer: one rank's training loop: data → micro-batches → forward/backward through the model
// with the ZeRO engine's hooks → clipping, fp16 overflow checks, optimizer step at the scheduled
// lr → metrics, progress, evaluation and checkpoints. DeepSpeed's semantics: each micro-batch's
// loss is its token mean, averaged over gradient-accumulation steps and data-parallel ranks;
// the scheduler advances only on applied (not skipped) steps.
//
// Data: sequence windows of seq_len + 1 tokens from a token dataset (io/token_dataset.h). Step s
// consumes train_batch_size sequences of a seeded permutation: micro-batch k of rank r takes
// sequences [(k * W + r) * micro, ... + micro) of the step's slice, so any world size sees the
// same global batch (the ZeRO equivalence tests rely on it). Under sequence parallelism (sp ranks,
// DeepSpeed-Ulysses) W and r are the data-parallel ones and sp rank s reads only tokens
// [s * seq_len / sp, (s + 1) * seq_len / sp] of each window (its inputs and their targets).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "io/token_dataset.h"
#include "models/transformer.h"
#include "models/weights.h"
#include "parallel/pipeline.h"
#include "parallel/topology.h"
#include "train/ds_config.h"
#include "train/loss_scaler.h"
#include "train/lr_schedule.h"
#include "train/monitor.h"
#include "train/pipeline_stage.h"
#include "zero/engine.h"

namespace zs::train {

// Run parameters that are not part of ds_config.json (CLI flags).
struct RunOptions {
    std::string data_dir;  // token dataset (zerospeed data prepare)
    int64_t seq_len = 256;
    int64_t steps = 100;        // optimizer steps to reach (absolute, including resumed ones)
    int64_t eval_interval = 0;  // 0: evaluate only at the end
    int64_t eval_batches = 8;   // micro-batches of the validation split per evaluation
    std::string save_dir;       // checkpoints (empty: none)
    int64_t save_interval = 0;  // 0: save only at the end
    int keep_checkpoints = 2;
    bool resume = false;       // continue from save_dir/latest
    bool save_final = true;    // also save after the last step (off: only every save_interval)
    std::string metrics_path;  // .csv or .jsonl (empty: none)
    uint64_t seed = 1234;
    bool progress = true;
    bool decay_all = true;  // weight decay on biases and norms too (DeepSpeed's default)
    // Where the model's activations and the ZeRO engine's buffers live (one device for both; no
    // CLI flag yet). Off the CPU the optimizer must be AdamW or Adam (zero::Engine::step).
    core::Device device = core::Device::cpu();
    // Where the model's tokenizer comes from (a model directory, .gguf or tokenizer file):
    // recorded in each checkpoint's manifest so `convert --to hf` can include it.
    std::string tokenizer_source;
};

struct StepStats {
    int64_t step = 0;      // optimizer steps applied so far (after this one)
    double loss = 0;       // mean token loss over the global batch
    double grad_norm = 0;  // before clipping
    double lr = 0;
    bool skipped = false;  // fp16 overflow
    double loss_scale = 1;
    double seconds = 0;
    double tokens_per_s = 0;
    double mfu = 0;  // model FLOPs utilisation vs the measured peak
    // Where the step's time went (seconds; wall_clock_breakdown prints them): the model's phases
    // summed over micro-batches, the gradient reduction left after backward (finish_grads), the
    // norm + clipping + optimizer step, and the rest (data, loss allreduce).
    double forward_s = 0, head_s = 0, backward_s = 0, grad_sync_s = 0, optimizer_s = 0;
    // MoE: each expert's share of the step's routed assignments (all layers, every data-parallel
    // rank's tokens; sums to 1) — users watch it for routing collapse; and the bytes this rank
    // sent through the expert-parallel all-to-alls (0 without ep).
    std::vector<double> expert_load;
    int64_t a2a_bytes = 0;
    // Offload (offload_optimizer / offload_param): this rank's bytes read from and written to
    // the offload tiers during the step, its micro-batches included (optimizer records, gradient
    // records at stages 2-3, parameter shards at stage 3; NVMe: data, padding and footers as
    // transferred).
    int64_t offload_read_bytes = 0, offload_write_bytes = 0;
    // Offload: the engine's waits and work per side (forward/backward, optimizer step), and the
    // step's share of the bytes (zero/engine.h OffloadTimes).
    zero::OffloadTimes offload_times;
};

class Trainer {
public:
    Trainer(models::ModelConfig model, TrainConfig cfg, RunOptions run, comm::Communicator& world);
    ~Trainer();
    Trainer(const Trainer&) = delete;
    Trainer& operator=(const Trainer&) = delete;

    // Weights from the parameters' Init (seeded) or from an HF model (every rank reads it).
    void init_random();
    void init_from(const models::WeightSource& src);

    // One optimizer step over train_batch_size sequences.
    StepStats step();
    // One optimizer step over given micro-batches (this rank's grad_accum of them; under sequence
    // parallelism each [micro, seq_len / sp]: this rank's slice of every sequence).
    StepStats step(const std::vector<models::TrainBatch>& micro_batches);
    // Train until run.steps, with evaluation, metrics, progress and checkpoints.
    std::vector<StepStats> train();
    // Mean validation loss over run.eval_batches micro-batches (every rank evaluates its share).
    double evaluate();

    void save_checkpoint();                        // save_dir/step-N, then save_dir/latest
    void load_checkpoint(const std::string& dir);  // a step-N directory (any world size)
    // HF directory (config.json + model.safetensors): rank 0 writes; collective.
    void export_hf(const std::string& dir, core::DType dtype = core::DType::f32);

    int64_t steps_done() const { return steps_done_; }
    const models::Transformer& model() const { return *model_; }
    zero::Engine& engine() { return *engine_; }
    const TrainConfig& config() const { return cfg_; }
    // Pipeline parallelism: the last step's measured timeline over every stage (collective over
    // the pp group; empty without a pipeline), and the schedule it ran.
    parallel::PipeTimeline pipeline_timeline();
    const parallel::PipeSchedule& pipeline_schedule() const { return pipe_schedule_; }
    // What the schedule made each stage hold in the last step beyond its live micro-batch's
    // activations (TransformerStage::Held), measured from the tensors kept, beside the formula:
    // the schedule's peak counts (validate: activations with F done and B not — none kept on
    // virtual stage 0 —, Ws pending) times a micro-batch's boundary activation (rows x hidden
    // f32) and deferred weight-gradient bytes (Transformer::deferred_weight_grad_bytes). Per pp
    // rank, collective over the pp group; empty without a pipeline.
    struct PipeHeld {
        TransformerStage::Held measured, formula;
    };
    std::vector<PipeHeld> pipeline_held();
    // Peak memory of this rank by category (core::memory_stats).
    std::string memory_report() const;

private:
    struct Impl;
    void load_batch(int64_t first_seq, int64_t count, const io::TokenDataset& ds,
                    const io::SequenceSampler* sampler, int64_t sampler_base,
                    models::TrainBatch& out);

    models::ModelConfig mcfg_;
    TrainConfig cfg_;
    RunOptions run_;
    comm::Communicator& world_;
    // The process grid and this rank's groups: dp_ (ZeRO's: the dense data-parallel group, dp x
    // sp ranks holding the same weights, over which gradients and losses are summed), data_dp_
    // (the data-parallel ranks reading different sequences), tp_ and sp_ (null without tensor /
    // sequence parallelism).
    std::unique_ptr<parallel::Topology> topo_;
    comm::Communicator* dp_ = nullptr;
    comm::Communicator* data_dp_ = nullptr;
    comm::Communicator* tp_ = nullptr;
    comm::Communicator* sp_ = nullptr;
    // Pipeline parallelism (null / empty without): the pp group, this rank's chunks of groups, the
    // schedule every step runs, the stage, and the two-rank group of the first and last stages
    // that sums the tied embedding's gradient.
    comm::Communicator* pp_ = nullptr;
    std::vector<models::Transformer::GroupRange> chunks_;
    parallel::PipeSchedule pipe_schedule_;
    parallel::PipeCheck pipe_check_, pipe_check_ran_;  // its validation; the last step's schedule's
    parallel::PipeRunStats pipe_stats_;                // the last step's
    std::unique_ptr<TransformerStage> stage_;
    std::unique_ptr<comm::Communicator> tied_;
    int pipe_steps_ = 0;  // steps this trainer ran through the pipeline
    bool holds_group(int g) const;
    void setup_pipeline();
    // The Zero Bubble schedules place their Ws by F/B/W costs: unit costs at first, then, after
    // the second step (the first warms up), the mean costs measured over every stage, the same on
    // every rank (collective over the world).
    void replan_pipeline();
    // Forward-only loss of one micro-batch through the pipeline (evaluation); collective over pp.
    models::LossStats pipeline_loss(const models::TrainBatch& batch);
    // Expert parallelism (null without): the ep group (experts sharded over it) and the expert
    // data-parallel group (the ranks holding the same experts), ZeRO's for the expert groups.
    comm::Communicator* ep_ = nullptr;
    comm::Communicator* edp_ = nullptr;
    // ep > 1: this rank's values of every group, each parameter cut (by name, tp_slice) from the
    // whole model's group holding it; `full_group(fg)` gives the whole model's group fg.
    void load_by_name(const std::function<core::Tensor(int)>& full_group);
    std::unique_ptr<models::Transformer> full_model_;  // tp or ep > 1: the whole model's layout
    // Per parameter: ranges of its elements weighted 1 / (tensor-parallel ranks holding them).
    std::vector<std::vector<zero::Engine::NormWeight>> norm_weight_;
    // A group's values for this rank from the whole model's group values (tp_slice per param).
    core::Tensor local_group(int g, const core::Tensor& full) const;
    // The whole model's group g, master weights (state < 0) or optimizer state `state`, from every
    // rank: gathered over dp, then assembled over tp. Collective over the world.
    core::Tensor gather_whole_group(int g, int state);
    // tp or ep > 1: the whole-model group holding this rank's group g (whole_group) and the
    // index there of each element of it (i64 [local numel]; -1: padding), by parameter name.
    core::Tensor whole_index(int g, int& whole_group) const;
    // ep > 1: gather_whole_group, assembled over the world from every rank's parts.
    core::Tensor gather_whole_group_ep(int fg, int state);
    // The model a checkpoint or an HF export describes: the whole one (tp > 1) or this rank's.
    const models::Transformer& whole_model() const { return full_model_ ? *full_model_ : *model_; }
    std::unique_ptr<models::Transformer> model_;
    std::unique_ptr<zero::Engine> engine_;
    std::unique_ptr<io::TokenDataset> train_ds_, val_ds_;
    std::unique_ptr<io::SequenceSampler> sampler_;
    LrSchedule schedule_;
    LossScaler scaler_;
    int64_t steps_done_ = 0, skipped_ = 0, tokens_seen_ = 0;
    double peak_flops_ = 0;
    std::unique_ptr<CsvMonitor> csv_;  // ds_config csv_monitor (rank 0)
};

}  // namespace zs::train
