// What the training tests share: a scratch directory with a random token dataset and a tiny
// model; runs of a config on one rank and over thread-ranks; comparisons of a parallel run's steps
// against the single rank's, and of an exported HF model's tensors against a reference export.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "comm/communicator.h"
#include "io/safetensors.h"
#include "io/token_dataset.h"
#include "models/config.h"
#include "tests/test_util.h"
#include "train/trainer.h"

namespace zs::train {

// A temporary directory (removed on destruction) holding `train_tokens` then `val_tokens` random
// tokens below 61 (shards of 1500; end of text 0) under root/data, and the model `hf_config`.
struct TrainScratch {
    std::string root;
    models::ModelConfig mc;
    TrainScratch(const std::string& name, const std::string& hf_config, uint64_t seed,
                 int64_t train_tokens, int64_t val_tokens) {
        root = (std::filesystem::temp_directory_path() /
                ("zs_" + name + "_" + std::to_string(getpid())))
                   .string();
        std::filesystem::remove_all(root);
        zs::test::Rng rng(seed);
        std::vector<int32_t> toks(static_cast<size_t>(train_tokens + val_tokens));
        for (auto& x : toks) x = static_cast<int32_t>(rng.integer(0, 60));
        io::TokenShardWriter w(root + "/data", 61, 0, "test", 1500);
        w.append("train", toks.data(), train_tokens);
        w.append("val", toks.data() + train_tokens, val_tokens);
        w.finish();
        mc = models::parse_hf_config(hf_config, name);
    }
    TrainScratch(const TrainScratch&) = delete;
    TrainScratch& operator=(const TrainScratch&) = delete;
    ~TrainScratch() { std::filesystem::remove_all(root); }
    // `steps` steps over root/data, no progress line.
    RunOptions run_options(int64_t steps, int64_t seq_len, int64_t eval_batches) const {
        RunOptions r;
        r.data_dir = root + "/data";
        r.seq_len = seq_len;
        r.steps = steps;
        r.eval_batches = eval_batches;
        r.progress = false;
        return r;
    }
};

// The trainer tests' tiny models, vocabulary 61, up to 64 positions: a Llama with GQA (2 blocks,
// width 32, 4 query / 2 KV heads, RoPE) and a GPT-2 (2 blocks, width 32, 4 heads, learned
// positions, tied embeddings).
inline constexpr const char* kTinyLlama = R"({"model_type": "llama", "vocab_size": 61,
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 40, "max_position_embeddings": 64})";
inline constexpr const char* kTinyGpt2 = R"({"model_type": "gpt2", "vocab_size": 61, "n_embd": 32,
    "n_layer": 2, "n_head": 4, "n_positions": 64})";

// The tiny Llama over 5000 training and 1000 validation tokens; runs at sequence 16 with 2
// evaluation batches and checkpoints under root/ckpt.
struct Scratch : TrainScratch {
    explicit Scratch(const std::string& name)
        : TrainScratch("trainer_" + name, kTinyLlama, 3, 5000, 1000) {}
    RunOptions run(int64_t steps) const {
        RunOptions r = run_options(steps, 16, 2);
        r.save_dir = root + "/ckpt";
        return r;
    }
    // run(steps) without checkpoints.
    RunOptions run_unsaved(int64_t steps) const {
        RunOptions r = run(steps);
        r.save_dir.clear();
        return r;
    }
};

// `cfg` trained from the random initialisation on one rank (comm::make_self): its steps.
// `after(trainer)`, when given, runs once the training ends.
inline std::vector<StepStats> train_single(const models::ModelConfig& mc, const TrainConfig& cfg,
                                           const RunOptions& run,
                                           const std::function<void(Trainer&)>& after = {}) {
    auto comm = comm::make_self();
    Trainer t(mc, cfg, run, *comm);
    t.init_random();
    std::vector<StepStats> steps = t.train();
    if (after) after(t);
    return steps;
}

// `cfg` trained from the random initialisation over `world` thread-ranks (comm::run_local):
// every rank's steps, by rank. `after(rank, trainer)`, when given, runs on each rank once its
// training ends.
inline std::vector<std::vector<StepStats>> run_ranks(
    int world, const models::ModelConfig& mc, const TrainConfig& cfg, const RunOptions& run,
    const std::function<void(int, Trainer&)>& after = {}) {
    std::vector<std::vector<StepStats>> steps(static_cast<size_t>(world));
    comm::run_local(world, [&](int rank, comm::Communicator& c) {
        Trainer t(mc, cfg, run, c);
        t.init_random();
        steps[static_cast<size_t>(rank)] = t.train();
        if (after) after(rank, t);
    });
    return steps;
}

// Every step's loss within 1e-5 relative of `want`'s (the worst difference reported once) and
// its gradient norm within `norm_tol` relative. `at` names the run (and rank) in messages.
inline void expect_steps_match(const std::vector<StepStats>& got,
                               const std::vector<StepStats>& want, double norm_tol,
                               const std::string& at) {
    ASSERT_EQ(got.size(), want.size()) << at;
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) {
        worst = std::max(worst, std::fabs(got[i].loss - want[i].loss) / want[i].loss);
        EXPECT_NEAR(got[i].grad_norm, want[i].grad_norm, norm_tol * want[i].grad_norm)
            << at << " step " << i + 1;
    }
    EXPECT_LE(worst, 1e-5) << at;
}

// `cfg` over `world` thread-ranks resumes the checkpoint under `ckpt_dir` saved after step `from`
// and trains to run.steps: on every rank it starts at step `from` and the losses of the steps
// after it are within 1e-5 relative of `want`'s (the uninterrupted run's). `export_dir` not
// empty: the resumed model is then exported there (HF).
inline void expect_resume_matches(int world, const models::ModelConfig& mc, const TrainConfig& cfg,
                                  const RunOptions& run, const std::string& ckpt_dir, int64_t from,
                                  const std::vector<StepStats>& want, const std::string& export_dir,
                                  const std::string& at) {
    comm::run_local(world, [&](int rank, comm::Communicator& c) {
        Trainer t(mc, cfg, run, c);
        t.load_checkpoint(ckpt_dir);
        EXPECT_EQ(t.steps_done(), from) << at;
        const std::vector<StepStats> rest = t.train();
        ASSERT_EQ(static_cast<int64_t>(rest.size()), run.steps - from) << at;
        for (size_t i = 0; i < rest.size(); ++i) {
            const StepStats& w = want.at(static_cast<size_t>(from) + i);
            EXPECT_NEAR(rest[i].loss, w.loss, 1e-5 * w.loss)
                << at << " rank " << rank << " step " << from + 1 + static_cast<int64_t>(i);
        }
        if (!export_dir.empty()) t.export_hf(export_dir);
    });
}

// Building a Trainer of `cfg` on each of `world` thread-ranks throws a ConfigError whose message
// holds every one of `needles`.
inline void expect_refused(int world, const models::ModelConfig& mc, const TrainConfig& cfg,
                           const RunOptions& run, const std::vector<std::string>& needles) {
    comm::run_local(world, [&](int, comm::Communicator& c) {
        try {
            Trainer t(mc, cfg, run, c);
            ADD_FAILURE() << "accepted; expected: " << needles.front();
        } catch (const ConfigError& e) {
            const std::string m = e.what();
            for (const std::string& n : needles) EXPECT_NE(m.find(n), std::string::npos) << m;
        }
    });
}

// expect_steps_match on every rank's steps (`got` by rank, as run_ranks returns them).
inline void expect_ranks_match(const std::vector<std::vector<StepStats>>& got,
                               const std::vector<StepStats>& want, double norm_tol,
                               const std::string& at) {
    for (size_t r = 0; r < got.size(); ++r) {
        expect_steps_match(got[r], want, norm_tol, at + " rank " + std::to_string(r));
    }
}

// Every step's loss within `rel` relative of `want`'s (bf16 runs, whose gradient norms drift).
inline void expect_losses_near(const std::vector<StepStats>& got,
                               const std::vector<StepStats>& want, double rel,
                               const std::string& at) {
    ASSERT_EQ(got.size(), want.size()) << at;
    for (size_t i = 0; i < got.size(); ++i) {
        EXPECT_NEAR(got[i].loss, want[i].loss, rel * want[i].loss) << at << " step " << i + 1;
    }
}

// Two model.safetensors files hold the same tensors, each within `tol` relative (L2) of the
// reference's.
inline void expect_safetensors_close(const std::string& want_file, const std::string& got_file,
                                     double tol, const std::string& at) {
    io::SafetensorsFile w = io::SafetensorsFile::open(want_file);
    io::SafetensorsFile g = io::SafetensorsFile::open(got_file);
    ASSERT_EQ(g.tensors().size(), w.tensors().size()) << at;
    for (const io::SafetensorsTensorInfo& info : w.tensors()) {
        core::Tensor a = w.tensor(info.name).contiguous(), b = g.tensor(info.name).contiguous();
        ASSERT_EQ(a.shape(), b.shape()) << at << " " << info.name;
        double d = 0, n = 0;
        for (int64_t k = 0; k < a.numel(); ++k) {
            const double x = a.data<float>()[k], y = b.data<float>()[k];
            d += (x - y) * (x - y);
            n += x * x;
        }
        EXPECT_LE(std::sqrt(d / std::max(n, 1e-30)), tol) << at << " " << info.name;
    }
}

}  // namespace zs::train
