// `zerospeed estimate`: per-rank memory and communication of a training configuration before a
// run (zero/estimate.h), for every ZeRO stage, and the largest model whose states fit a per-rank
// memory budget at each stage.
#include "zero/estimate.h"

#include <cstdio>

#include <sys/sysinfo.h>

#include "base/error.h"
#include "cli/commands.h"
#include "core/memory.h"
#include "models/sources.h"
#include "train/ds_config.h"

namespace zs::cli {

int run_estimate(const EstimateOptions& o) {
    ZS_CHECK_T(ConfigError, !o.model.empty() || !o.model_config.empty(),
               "estimate: give --model (HF directory / GGUF) or --model-config (config.json)");
    models::ModelConfig mc = !o.model.empty() ? models::open_model(o.model).config
                                              : models::load_hf_config(o.model_config);
    train::TrainConfig tc = train::load_ds_config(o.ds_config, o.ranks);
    models::RunConfig rc;
    rc.compute_dtype =
        tc.precision == train::Precision::bf16 ? core::DType::bf16 : core::DType::f32;
    rc.activation_checkpointing = tc.activation_checkpointing.given;
    models::Transformer model(mc, rc);
    const int n_states =
        tc.optimizer.kind == optim::Kind::adamw || tc.optimizer.kind == optim::Kind::adam ||
                tc.optimizer.kind == optim::Kind::lamb
            ? 2
        : tc.optimizer.kind == optim::Kind::sgd && tc.optimizer.momentum == 0.0f ? 0
                                                                                 : 1;
    int64_t budget = o.memory_per_rank;
    if (budget <= 0) {
        struct sysinfo si {};
        sysinfo(&si);
        budget = static_cast<int64_t>(si.totalram) * si.mem_unit / std::max(1, o.ranks_per_node);
    }
    std::printf(
        "model: %s, %.2f M parameters; %d rank(s); micro-batch %lld x %lld tokens, %lld "
        "accumulation; %s%s\n",
        models::to_string(mc.arch), static_cast<double>(mc.n_params()) / 1e6, o.ranks,
        static_cast<long long>(tc.batch.train_micro_batch_size_per_gpu),
        static_cast<long long>(o.seq_len),
        static_cast<long long>(tc.batch.gradient_accumulation_steps),
        train::to_string(tc.precision),
        tc.activation_checkpointing.given ? ", activation checkpointing" : "");
    std::printf("\n%-6s %12s %12s %12s %12s %12s %12s %14s\n", "stage", "params", "grads",
                "optimizer", "activations", "transient", "peak/rank", "comm/step");
    for (int stage = 0; stage <= 3; ++stage) {
        zero::EstimateInput in{o.ranks,
                               stage,
                               n_states,
                               tc.batch.train_micro_batch_size_per_gpu,
                               o.seq_len,
                               tc.batch.gradient_accumulation_steps,
                               tc.zero.stage3_prefetch_bucket_size,
                               tc.zero.stage3_max_live_parameters,
                               tc.zero.stage3_param_persistence_threshold};
        zero::MemoryEstimate e = zero::estimate(model, in);
        std::printf("%-6s %12s %12s %12s %12s %12s %12s %14s\n",
                    (std::to_string(stage) + (stage == tc.zero.stage ? "*" : "")).c_str(),
                    core::format_bytes(e.params).c_str(), core::format_bytes(e.grads).c_str(),
                    core::format_bytes(e.optimizer).c_str(),
                    core::format_bytes(e.activations).c_str(),
                    core::format_bytes(e.transient).c_str(), core::format_bytes(e.peak).c_str(),
                    core::format_bytes(e.comm_bytes).c_str());
    }
    const int ct = rc.compute_dtype == core::DType::bf16 ? 2 : 4;
    std::printf(
        "\n(* = the stage in %s). Largest model whose states (params, grads, optimizer) fit %s per "
        "rank "
        "on %d rank(s), before activations:\n",
        o.ds_config.c_str(), core::format_bytes(budget).c_str(), o.ranks);
    for (int stage = 0; stage <= 3; ++stage) {
        double bpp = zero::model_state_bytes_per_param(stage, o.ranks, ct, n_states);
        std::printf("  stage %d: %.2f B parameters (%.2f bytes per parameter per rank)\n", stage,
                    static_cast<double>(budget) / bpp / 1e9, bpp);
    }
    return 0;
}

}  // namespace zs::cli
