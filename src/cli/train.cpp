// `zerospeed train`: a model (HF directory to fine-tune, or an HF config.json to train from
// scratch) + a DeepSpeed config + a token dataset → a training run on this process's ranks
// (one rank, or all ranks of an mpirun / zerospeed-run job), with progress, metrics,
// evaluation, checkpoints (resumable at any world size) and an optional HF export at the end.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/log.h"
#include "cli/commands.h"
#include "core/backend.h"
#include "models/sources.h"
#include "train/trainer.h"

namespace zs::cli {

namespace fs = std::filesystem;

int run_train(const TrainOptions& o, comm::Communicator& world) {
    ZS_CHECK_T(
        ConfigError, !o.model.empty() || !o.model_config.empty(),
        "train: give --model (an HF directory to start from) or --model-config (a config.json "
        "to train from scratch)");
    std::unique_ptr<models::ModelFiles> files;
    models::ModelConfig mc;
    if (!o.model.empty()) {
        files = std::make_unique<models::ModelFiles>(models::open_model(o.model));
        mc = files->config;
    } else {
        mc = models::load_hf_config(o.model_config);
    }
    train::TrainConfig tc = train::load_ds_config(o.ds_config, world.size());
    train::RunOptions run;
    run.data_dir = o.data;
    run.seq_len = o.seq_len;
    run.steps = o.steps;
    run.eval_interval = o.eval_interval;
    run.eval_batches = o.eval_batches;
    run.save_dir = o.save;
    run.save_interval = o.save_interval;
    run.resume = o.resume;
    run.metrics_path = o.metrics;
    run.seed = o.seed;
    run.progress = !o.no_progress;
    if (world.rank() == 0) {
        log_info(
            "training {} ({:.2f} M parameters) on {} rank(s): ZeRO stage {}, {}, micro-batch {} x "
            "{} "
            "accumulation x {} ranks = {} sequences of {} tokens per step",
            models::to_string(mc.arch), static_cast<double>(mc.n_params()) / 1e6, world.size(),
            tc.zero.stage, train::to_string(tc.precision), tc.batch.train_micro_batch_size_per_gpu,
            tc.batch.gradient_accumulation_steps, world.size(), tc.batch.train_batch_size,
            run.seq_len);
    }
    train::Trainer trainer(mc, tc, run, world);
    bool resumed = false;
    if (o.resume && !o.save.empty() && fs::exists(o.save + "/latest")) {
        trainer.load_checkpoint(o.save);
        resumed = true;
    }
    if (!resumed) {
        if (files) {
            trainer.init_from(*files->weights);
        } else {
            trainer.init_random();
        }
    }
    trainer.train();
    double val = trainer.evaluate();
    if (world.rank() == 0) {
        if (!std::isnan(val))
            std::printf("final validation loss %.4f (perplexity %.2f) after %lld steps\n", val,
                        std::exp(val), static_cast<long long>(trainer.steps_done()));
        std::fprintf(stderr, "peak memory on rank 0 by category:\n%s",
                     trainer.memory_report().c_str());
    }
    if (!o.export_hf.empty()) {
        trainer.export_hf(o.export_hf);
        if (world.rank() == 0) log_info("exported Hugging Face model to {}", o.export_hf);
    }
    return 0;
}

int run_convert(const ConvertOptions& o) {
    ZS_CHECK_T(ConfigError, o.to == "hf", "convert: --to '{}' is not supported (hf)", o.to);
    std::string dir = o.checkpoint;
    if (fs::exists(dir + "/latest")) {
        std::string tag;
        std::ifstream(dir + "/latest") >> tag;
        dir += "/" + tag;
    }
    ZS_CHECK_T(IoError, fs::exists(dir + "/manifest.json"),
               "{}: not a zerospeed checkpoint (no manifest.json)", dir);
    // The manifest carries the model's HF config; rebuild a one-rank trainer and load into it.
    std::string cfg_text;
    {
        nlohmann::json m = nlohmann::json::parse(std::ifstream(dir + "/manifest.json"));
        cfg_text = m.at("model_config").dump();
        int states = m.at("optimizer_states").get<int>();
        auto comm = comm::make_self();
        models::ModelConfig mc = models::parse_hf_config(cfg_text, dir + "/manifest.json");
        train::TrainConfig tc = train::parse_ds_config(
            states == 2
                ? R"({"train_batch_size": 1})"
                : R"({"train_batch_size": 1, "optimizer": {"type": "SGD", "params": {"momentum": 0.9}}})",
            "convert", 1);
        train::Trainer t(mc, tc, {}, *comm);
        t.load_checkpoint(dir);
        t.export_hf(o.output);
    }
    log_info("wrote {}/config.json and model.safetensors", o.output);
    return 0;
}

}  // namespace zs::cli
