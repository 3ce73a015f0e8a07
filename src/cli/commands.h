// The zerospeed subcommands: one options struct and one run function per command. Each returns
// the process exit code; errors in user input are thrown as zs::Error and reported by main.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace zs::cli {

// ZeRO-Inference (zero/inference.h) for generate and serve: weights "nvme" or "cpu" streams the
// blocks' weights from that tier ("": all in memory); path: the directory of the nvme weight
// files; memory_cap: the bytes the command may hold (see each command); prefetch: blocks read
// ahead. One rank only.
struct OffloadOptions {
    std::string weights;
    std::string path;
    std::string memory_cap;
    int prefetch = 2;
};

struct DoctorOptions {
    int size = 1024;
    bool brief = false;  // backends, CPU and matmul routes only: no checks, no timing
};
// Print backends, the CPU and the matmul kernels it gets, and check/time the core kernels on
// random data.
int run_doctor(const DoctorOptions& opts);

struct TokenizeOptions {
    std::string tokenizer;      // file or directory (io::Tokenizer::load)
    std::string pattern;        // pre-tokenizer regex for an unknown *.tiktoken file
    bool add_special = false;   // bos/eos as the tokenizer asks
    bool decode = false;        // ids (JSON array) -> text instead of text -> ids
    bool skip_special = false;  // with --decode: drop special tokens
};
// Text on stdin -> JSON array of ids on stdout (or the reverse with --decode).
int run_tokenize(const TokenizeOptions& opts);

struct GenerateOptions {
    std::string model;  // HF directory or .gguf file
    std::string prompt;
    int64_t max_tokens = 128;
    float temperature = -1.0f;  // < 0: the model's generation_config.json (greedy without one)
    int top_k = -1;
    float top_p = -1.0f;
    float min_p = -1.0f;
    float repetition_penalty = -1.0f;
    uint64_t seed = 0;
    std::vector<std::string> stops;
    bool chat = false;           // format the prompt with the model's chat template
    std::string system;          // system message with --chat
    std::string dtype = "auto";  // compute dtype: auto, f32 or bf16 (model_loader.h)
    int logprobs = -1;  // >= 0: stdout is JSON Lines, one per token (id, text, logprob, top N)
    int tp = 1;         // tensor-parallel ranks (the world must be this many: zerospeed-run)
    int ep = 1;         // expert-parallel ranks (MoE; the world must be this many; not with tp)
    int expert_locality = 0;  // > 0: report routing locality for that many ep ranks (MoE)
    bool ignore_eos = false;  // generate --max-tokens even past EOS (benchmarks; llama.cpp flag)
    // ZeRO-Inference; offload.memory_cap: the bytes the weights, buffers and KV cache may take
    // (refused with the numbers otherwise; the read-ahead shrinks to fit).
    OffloadOptions offload;
    // Sequences decoded in lockstep from the prompt (one weight pass serves all; rank 0 prints
    // the first; the throughput counts all). > 1 needs greedy-or-seeded sampling, no --logprobs.
    int batch = 1;
    std::string kv_cache_dtype = "auto";  // auto (compute dtype), f32, bf16, int8, fp8
};
// Generate text from a prompt, streaming to stdout; throughput on stderr. With logprobs >= 0,
// stdout is JSON Lines instead: {"id", "token", "logprob", "top": [{"id", "token", "logprob"}]}
// per generated token, then {"text", "finish_reason", "prompt_tokens", "completion_tokens"}.
int run_generate(const GenerateOptions& opts, comm::Communicator& world);

struct PerplexityOptions {
    std::string model;       // HF directory or .gguf
    std::string file;        // text
    int64_t ctx = 512;       // tokens per chunk (llama-perplexity's -c)
    int64_t chunks = 0;      // at most this many chunks (0: all)
    int64_t tail_bytes = 0;  // > 0: only the file's last N bytes (from a line start)
    std::string dtype = "auto";
    std::string kv_cache_dtype = "auto";
    bool quiet = false;
};
// Perplexity over a text file as llama-perplexity computes it (chunks of ctx tokens from an
// empty cache, BOS first, the second half of each scored).
int run_perplexity(const PerplexityOptions& opts);

struct InfoOptions {
    std::string model;
    bool tensors = false;  // --tensors: list a GGUF's tensors with their types and shapes
};
// Architecture, parameter count, memory per dtype.
int run_info(const InfoOptions& opts);

struct TrainOptions {
    std::string model;         // HF directory to start from (or empty)
    std::string model_config;  // config.json to train from scratch
    std::string ds_config;     // DeepSpeed config
    std::string data;          // token dataset directory
    int64_t seq_len = 256;
    int64_t steps = 100;
    int64_t eval_interval = 0;
    int64_t eval_batches = 8;
    std::string save;
    int64_t save_interval = 0;
    bool resume = false;
    bool no_final_save = false;
    std::string metrics;
    uint64_t seed = 1234;
    std::string export_hf;
    bool no_progress = false;
    // Values for the ds_config's "auto" placeholders (train::AutoValues): -1 = not given (then
    // the Hugging Face Trainer's defaults).
    int64_t micro_batch = -1, grad_accum = -1, warmup = -1;
    int tp = 0;                     // --tp (0: tensor_parallel.autotp_size or 1)
    int sp = 0;                     // --sp (0: sequence_parallel_size or 1)
    int pp = 0;                     // --pp (0: pipeline.stages or 1)
    std::string pipeline_timeline;  // --pipeline-timeline: the last step's measured SVG
    int ring = 0;                   // --ring (0: ring_parallel_size or 1)
    int ep = 0;                     // --ep (0: expert_parallel_size or 1)
    double lr = -1, weight_decay = -1, max_grad_norm = -1;
};
// Train on the ranks of `world` (one process, or an MPI job).
int run_train(const TrainOptions& opts, comm::Communicator& world);

struct ConvertOptions {
    std::string checkpoint;  // a checkpoint directory (or a save dir with `latest`)
    std::string to = "hf";
    std::string output;
    std::string dtype = "f32";  // --to gguf: the matrices' type; --to hf from a GGUF: f32/bf16
    std::string tokenizer;      // --to hf: tokenizer to include (default: the one training used)
    std::string quantize;       // --to gguf: q8_0, q4_0, q4_1, q5_0, q5_1 (matrices); empty: none
};
int run_convert(const ConvertOptions& opts);

struct DataPrepareOptions {
    std::string tokenizer;
    std::vector<std::string> inputs;
    std::string output;
    double val_fraction = 0.01;
    int threads = 0;
};
// Tokenize text files into token shards with a train/validation split.
int run_data_prepare(const DataPrepareOptions& opts);

struct EstimateOptions {
    std::string model, model_config, ds_config;
    int ranks = 1;  // all ranks: data-parallel x tensor-parallel
    int ranks_per_node = 1;
    int tp = 0;          // tensor-parallel ranks; 0: tensor_parallel.autotp_size (1 without)
    bool sweep = false;  // also a table over 1, 2, 4, ..., 1024 ranks at this tp
    int64_t seq_len = 1024;
    int64_t memory_per_rank = 0;  // bytes; 0 = this machine's RAM / ranks_per_node
    // Offload tier advice (zero/tiers.h) for this per-rank cap ("" = none): the disk bandwidth
    // (bytes/s; "" = measured with O_DIRECT under offload_path) and the compute rate (TFLOP/s;
    // 0 = a bf16/f32 matmul measured here).
    std::string memory_cap, disk_bw, offload_path;
    double tflops = 0;
};
// Predicted per-rank memory and communication for every ZeRO stage.
int run_estimate(const EstimateOptions& opts);

struct TokenizerTrainOptions {
    std::vector<std::string> inputs;
    int32_t vocab_size = 4096;
    std::string output;  // directory; tokenizer.json is written there
};
int run_tokenizer_train(const TokenizerTrainOptions& opts);

struct PlanPipelineOptions {
    int stages = 4, micro_batches = 8, chunks = 1;
    std::string policy = "1f1b";
    double f = 1, b = 1, w = 1, comm = 0;  // costs of F, B (input gradient), W, a transfer
    std::string svg;                       // timeline file
    bool sweep = false;                    // also the bubble at 8..64 stages
    bool show = false;                     // each rank's compute order
};
// Generate, validate and simulate a pipeline schedule (parallel/pipeline_schedule.h).
int run_plan_pipeline(const PlanPipelineOptions& opts);

struct PlotOptions {
    std::string metrics;  // .csv or .jsonl from zerospeed train
    std::string output;   // .svg
};
int run_plot(const PlotOptions& opts);

// Engine flags shared by serve (and tests).
struct ServeEngineOptions {
    std::string kv_cache_memory = "1G";  // KV budget (bytes, or with K/M/G)
    int64_t kv_blocks = 0;               // explicit block count (overrides the budget)
    int64_t block_size = 16;
    std::string kv_dtype;  // --kv-cache-dtype: auto / f32 / bf16 / int8 / fp8; default: auto
    int64_t max_batch_tokens = 768;
    int64_t max_seqs = 64;
    std::string policy = "split_fuse";  // or prefill_first
    bool no_prefix_caching = false;
};

struct ServeOptions {
    std::string model;  // HF directory or .gguf
    std::string host = "127.0.0.1";
    int port = 8000;
    std::string dtype = "auto";  // compute dtype: auto, f32 or bf16 (model_loader.h)
    std::string api_key;
    std::string served_model_name;  // default: the directory or file name
    int tp = 1;  // tensor-parallel ranks: rank 0 serves, the others run its forwards
    int ep = 1;  // expert-parallel ranks (MoE): rank 0 serves, the others run its forwards
    int64_t max_queued = 256;
    double request_timeout = 10;      // seconds for a whole request to arrive
    int64_t max_connections = 16384;  // open connections held at once
    double shutdown_timeout = 30;
    ServeEngineOptions engine;
    // ZeRO-Inference: every engine step streams the blocks' weights once for all its sequences;
    // offload.memory_cap bounds the stream's resident groups and buffers plus the KV pool
    // (--kv-cache-memory / --kv-blocks).
    OffloadOptions offload;
};
// Serve the model over an OpenAI-compatible HTTP API until SIGTERM/SIGINT.
int run_serve(const ServeOptions& opts, comm::Communicator& world);

struct BenchServeOptions {
    std::string url = "http://127.0.0.1:8000";
    std::string model;  // default: the first of /v1/models
    std::string api_key;
    std::string clients;      // "1,4,16": closed loop
    std::string rates;        // "0.5,1,2": open loop, requests/s
    double burstiness = 1.0;  // gamma shape (1 = Poisson)
    int64_t requests = 32;    // per load point
    int64_t prompt_tokens = 256, output_tokens = 64;
    int64_t max_prompt_tokens = 1536, max_output_tokens = 512;
    std::string text, tokenizer;   // prompts sliced from this text (else random ids)
    double sla_prompt_rate = 512;  // first token within prompt_tokens / rate seconds
    double sla_gen_rate = 4;       // generation EMA >= this many tokens/s
    uint64_t seed = 1;
    std::string label = "zerospeed";
    std::string out;   // append JSON lines
    std::string plot;  // SVG of every label in --out
    bool plot_only = false;
};
int run_bench_serve(const BenchServeOptions& opts);

}  // namespace zs::cli
