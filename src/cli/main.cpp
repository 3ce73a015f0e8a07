// zerospeed: the command-line entry point. Parses flags (CLI11), builds what a command needs and
// runs it. zs::Error is caught here: its message goes to stderr and the exit code is 1.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>

#include "backends/register.h"
#include "base/error.h"
#include "base/log.h"
#include "cli/commands.h"
#include "comm/mpi.h"

namespace {

// generate's and serve's ZeRO-Inference flags; `weights_help` says when --offload-weights streams
// the blocks, `cap_help` what --memory-cap bounds.
void add_offload_options(CLI::App* cmd, zs::cli::OffloadOptions& o, const std::string& weights_help,
                         const std::string& cap_help) {
    cmd->add_option("--offload-weights", o.weights, weights_help)
        ->check(CLI::IsMember({"nvme", "cpu"}));
    cmd->add_option("--offload-path", o.path,
                    "Directory for the --offload-weights nvme files (removed at exit)");
    cmd->add_option("--memory-cap", o.memory_cap, cap_help);
    cmd->add_option("--prefetch", o.prefetch, "Blocks read ahead with --offload-weights")
        ->check(CLI::Range(1, 1024));
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"zerospeed: DeepSpeed's training and serving system as one native C++ engine"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "zerospeed 0.1.0");
    bool verbose = false;
    app.add_flag("-v,--verbose", verbose, "Debug logging");

    zs::cli::DoctorOptions doctor;
    CLI::App* doc = app.add_subcommand("doctor", "Check this machine's backends and kernels");
    doc->add_option("--size", doctor.size, "Square GEMM size for the throughput check")
        ->check(CLI::Range(16, 8192));
    doc->add_flag(
        "--brief", doctor.brief,
        "Only the backends, the CPU and the matmul kernels it gets (no checks, no timing)");

    zs::cli::TokenizeOptions tokenize;
    CLI::App* tkn = app.add_subcommand(
        "tokenize", "Encode stdin text to token ids (JSON), or --decode a JSON id array to text");
    tkn->add_option("--tokenizer", tokenize.tokenizer,
                    "tokenizer.json / tokenizer.model / *.tiktoken / *.gguf file, or a model "
                    "directory")
        ->required();
    tkn->add_flag("--add-special", tokenize.add_special, "Add bos/eos as the tokenizer asks");
    tkn->add_flag("--decode", tokenize.decode, "Read a JSON array of ids, print the text");
    tkn->add_flag("--skip-special", tokenize.skip_special, "With --decode: drop special tokens");
    tkn->add_option("--pattern", tokenize.pattern,
                    "Pre-tokenizer regex for a *.tiktoken file other than r50k/p50k/cl100k_base");

    zs::cli::GenerateOptions gen;
    CLI::App* gn =
        app.add_subcommand("generate", "Generate text from a prompt (HF directory or GGUF)");
    gn->add_option("--model", gen.model, "Model directory (config.json + safetensors) or .gguf")
        ->required();
    gn->add_option("--prompt", gen.prompt, "Prompt text")->required();
    gn->add_option("--max-tokens", gen.max_tokens, "Tokens to generate")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
    gn->add_option("--temperature", gen.temperature,
                   "0 = greedy (default: the model's generation_config)")
        ->check(CLI::Range(0.0f, 100.0f));
    gn->add_option("--top-k", gen.top_k, "Keep the k most likely tokens (0 = all)")
        ->check(CLI::NonNegativeNumber);
    gn->add_option("--top-p", gen.top_p, "Nucleus sampling mass")->check(CLI::Range(0.0f, 1.0f));
    gn->add_option("--min-p", gen.min_p, "Drop tokens below min_p x the top probability")
        ->check(CLI::Range(0.0f, 1.0f));
    gn->add_option("--repetition-penalty", gen.repetition_penalty, "HF repetition penalty (> 0)");
    gn->add_option("--seed", gen.seed, "Sampling seed");
    gn->add_flag("--ignore-eos", gen.ignore_eos,
                 "Keep generating past end-of-sequence tokens (benchmarks)");
    gn->add_option("--tp", gen.tp,
                   "Tensor-parallel ranks (run under zerospeed-run --num_procs N; rank 0 prints)")
        ->check(CLI::Range(1, 4096));
    gn->add_option("--ep", gen.ep,
                   "Expert-parallel ranks for MoE models (each holds experts / N of every layer; "
                   "run under zerospeed-run --num_procs N, or T x N with --tp T; rank 0 prints)")
        ->check(CLI::Range(1, 4096));
    gn->add_option("--expert-locality", gen.expert_locality,
                   "MoE: report how often consecutive steps route to the same experts and the "
                   "all-to-all bytes co-locating each step with the last step's experts would "
                   "save over N expert-parallel ranks (speculative MoE)")
        ->check(CLI::Range(1, 4096));
    gn->add_option("--stop", gen.stops, "Stop when this text appears (repeatable; not printed)");
    gn->add_flag("--chat", gen.chat, "Wrap the prompt in the model's chat template");
    gn->add_option("--logprobs", gen.logprobs,
                   "Print JSON Lines instead of text: each token's id, text and log-probability "
                   "with the N most likely alternatives, then the whole text")
        ->check(CLI::Range(0, 20));
    gn->add_option("--system", gen.system, "System message (with --chat)");
    gn->add_option("--kv-cache-dtype", gen.kv_cache_dtype,
                   "KV cache dtype: auto (the compute dtype), bf16 (half f32's bytes, also under "
                   "f32 compute), f16, f32, int8 or fp8 (E4M3; int8/fp8 keep one f16 scale per 32 "
                   "values: 53% of bf16's bytes)");
    gn->add_option("--dtype", gen.dtype,
                   "Compute dtype: auto (the checkpoint's, where this CPU runs it natively; a "
                   "GGUF's quantized matrices stay quantized), f32 or bf16 (dequantized)");
    add_offload_options(gn, gen.offload,
                        "ZeRO-Inference: stream the transformer blocks' weights from nvme "
                        "(O_DIRECT files under --offload-path) or cpu, reading ahead --prefetch "
                        "blocks",
                        "Bytes the weights, stream buffers and KV cache may take, e.g. 4G "
                        "(refused with the numbers when they do not fit)");
    gn->add_option("--batch", gen.batch,
                   "Decode this many sequences from the prompt in lockstep (one weight pass per "
                   "step serves all; prints the first)")
        ->check(CLI::Range(1, 4096));

    zs::cli::PerplexityOptions ppl_opts;
    CLI::App* pplx = app.add_subcommand(
        "perplexity", "Perplexity over a text file, computed as llama.cpp's llama-perplexity");
    pplx->add_option("--model", ppl_opts.model, "Model directory or .gguf")->required();
    pplx->add_option("--file", ppl_opts.file, "Text file")->required();
    pplx->add_option("--ctx", ppl_opts.ctx, "Tokens per chunk; the second half is scored")
        ->check(CLI::Range(int64_t{4}, int64_t{1} << 20));
    pplx->add_option("--chunks", ppl_opts.chunks, "At most this many chunks (0: all)")
        ->check(CLI::NonNegativeNumber);
    pplx->add_option("--tail-bytes", ppl_opts.tail_bytes,
                     "Only the file's last N bytes, from a line start (a held-back slice)")
        ->check(CLI::NonNegativeNumber);
    pplx->add_option("--dtype", ppl_opts.dtype, "Compute dtype: auto, f32 or bf16 (as generate)");
    pplx->add_option("--kv-cache-dtype", ppl_opts.kv_cache_dtype,
                     "KV cache dtype: auto (the compute dtype), bf16, f16, f32, int8 or fp8");
    pplx->add_flag("--quiet", ppl_opts.quiet, "No running estimate per chunk");

    zs::cli::ServeOptions sv;
    CLI::App* srv = app.add_subcommand(
        "serve", "Serve a model over an OpenAI-compatible HTTP API (completions, chat, SSE)");
    srv->add_option("--model", sv.model, "Model directory (config.json + safetensors) or .gguf")
        ->required();
    srv->add_option("--host", sv.host, "Address to bind (default 127.0.0.1: this machine only)");
    srv->add_option("--port", sv.port, "Port (0: any free port)")->check(CLI::Range(0, 65535));
    srv->add_option("--dtype", sv.dtype,
                    "Compute dtype: auto (the checkpoint's, where this CPU runs it natively; a "
                    "GGUF's quantized matrices stay quantized), f32 or bf16 (dequantized)");
    srv->add_option("--api-key", sv.api_key, "Require 'Authorization: Bearer KEY' (not /health)");
    srv->add_option("--tp", sv.tp,
                    "Tensor-parallel ranks (run under zerospeed-run --num_procs N; rank 0 serves)")
        ->check(CLI::Range(1, 4096));
    srv->add_option("--ep", sv.ep,
                    "Expert-parallel ranks for MoE models (each holds experts / N of every layer; "
                    "run under zerospeed-run --num_procs N, or T x N with --tp T; rank 0 serves)")
        ->check(CLI::Range(1, 4096));
    srv->add_option("--served-model-name", sv.served_model_name,
                    "Model id clients use (default: the directory or file name)");
    srv->add_option("--max-queued", sv.max_queued,
                    "Requests beyond --max-seqs before answering 429")
        ->check(CLI::Range(int64_t{0}, int64_t{100000}));
    srv->add_option("--request-timeout", sv.request_timeout,
                    "Seconds a request (head and body) has to arrive whole; slower ones get 408")
        ->check(CLI::Range(0.1, 3600.0));
    srv->add_option("--max-connections", sv.max_connections,
                    "Open connections beyond this are closed at once")
        ->check(CLI::Range(int64_t{1}, int64_t{10000000}));
    srv->add_option("--shutdown-timeout", sv.shutdown_timeout,
                    "Seconds in-flight requests get to finish on SIGTERM (0: abort at once)")
        ->check(CLI::NonNegativeNumber);
    srv->add_option("--kv-cache-memory", sv.engine.kv_cache_memory,
                    "KV-cache memory budget, e.g. 512M or 2G");
    srv->add_option("--kv-blocks", sv.engine.kv_blocks, "KV blocks (overrides the budget)")
        ->check(CLI::NonNegativeNumber);
    srv->add_option("--block-size", sv.engine.block_size, "Tokens per KV block")
        ->check(CLI::Range(int64_t{1}, int64_t{1024}));
    srv->add_option("--kv-cache-dtype,--kv-dtype", sv.engine.kv_dtype,
                    "KV cache dtype: auto (the compute dtype), bf16, f16, f32, int8 or fp8 (E4M3; "
                    "int8/fp8 keep one f16 scale per 32 values: 53% of bf16's bytes)");
    srv->add_option("--max-batch-tokens", sv.engine.max_batch_tokens,
                    "Token budget per forward (Dynamic SplitFuse)")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
    srv->add_option("--max-seqs", sv.engine.max_seqs, "Sequences running at once")
        ->check(CLI::Range(int64_t{1}, int64_t{4096}));
    srv->add_option("--policy", sv.engine.policy, "split_fuse (default) or prefill_first");
    srv->add_flag("--no-prefix-caching", sv.engine.no_prefix_caching,
                  "Do not reuse KV blocks of identical prompt prefixes");
    add_offload_options(srv, sv.offload,
                        "ZeRO-Inference: stream the transformer blocks' weights from nvme "
                        "(O_DIRECT files under --offload-path) or cpu once per engine step, for "
                        "every sequence of the step, reading ahead --prefetch blocks",
                        "Bytes the weights (or the stream's resident groups and buffers) and the "
                        "KV pool may take, e.g. 4G (refused with the numbers when they do not "
                        "fit)");

    zs::cli::BenchServeOptions bs;
    CLI::App* bench = app.add_subcommand("bench", "Benchmarks against running services");
    CLI::App* bsv = bench->add_subcommand(
        "serve",
        "Load-test an OpenAI-compatible server: throughput, TTFT/TPOT/ITL, effective "
        "throughput under FastGen's SLA");
    bench->require_subcommand(1);
    bsv->add_option("--url", bs.url, "Server base URL");
    bsv->add_option("--model", bs.model, "Model id (default: the first of /v1/models)");
    bsv->add_option("--api-key", bs.api_key, "Bearer key");
    bsv->add_option("--clients", bs.clients, "Closed loop: concurrent clients, e.g. 1,4,16");
    bsv->add_option("--rates", bs.rates, "Open loop: arrival rates in requests/s, e.g. 0.5,1,2");
    bsv->add_option("--burstiness", bs.burstiness, "Gamma shape of arrivals (1 = Poisson)")
        ->check(CLI::PositiveNumber);
    bsv->add_option("--requests", bs.requests, "Requests per load point")
        ->check(CLI::Range(int64_t{1}, int64_t{100000}));
    bsv->add_option("--prompt-tokens", bs.prompt_tokens, "Mean prompt length (sd 0.3x)")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
    bsv->add_option("--output-tokens", bs.output_tokens, "Mean output length (sd 0.3x)")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
    bsv->add_option("--max-prompt-tokens", bs.max_prompt_tokens, "Clamp prompt lengths");
    bsv->add_option("--max-output-tokens", bs.max_output_tokens, "Clamp output lengths");
    bsv->add_option("--text", bs.text, "Take prompts from this text (needs --tokenizer)");
    bsv->add_option("--tokenizer", bs.tokenizer, "Tokenizer (or model dir / .gguf) for --text");
    bsv->add_option("--sla-prompt-rate", bs.sla_prompt_rate,
                    "SLA: first token within prompt_tokens / this many seconds")
        ->check(CLI::PositiveNumber);
    bsv->add_option("--sla-gen-rate", bs.sla_gen_rate,
                    "SLA: generation-rate EMA must stay >= this many tokens/s")
        ->check(CLI::PositiveNumber);
    bsv->add_option("--seed", bs.seed, "Workload seed");
    bsv->add_option("--label", bs.label, "Name of this system in --out and the plot");
    bsv->add_option("--out", bs.out, "Append results as JSON lines to this file");
    bsv->add_option("--plot", bs.plot, "Write an SVG of every label in --out");
    bsv->add_flag("--plot-only", bs.plot_only, "Only draw --out into --plot");

    zs::cli::TrainOptions tr;
    CLI::App* trn = app.add_subcommand(
        "train", "Train with a DeepSpeed config (one rank, or every rank of an mpirun job)");
    trn->add_option("--model", tr.model, "HF model directory to start from");
    trn->add_option("--model-config", tr.model_config, "HF config.json to train from scratch");
    trn->add_option("--deepspeed_config,--ds-config", tr.ds_config,
                    "DeepSpeed config (ds_config.json)")
        ->required();
    trn->add_option("--data", tr.data, "Token dataset directory (zerospeed data prepare)")
        ->required();
    trn->add_option("--seq-len", tr.seq_len, "Tokens per sequence")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
    trn->add_option("--steps", tr.steps, "Optimizer steps to reach")->check(CLI::NonNegativeNumber);
    trn->add_option("--eval-interval", tr.eval_interval, "Evaluate every N steps (0: at the end)");
    trn->add_option("--eval-batches", tr.eval_batches, "Micro-batches per evaluation")
        ->check(CLI::PositiveNumber);
    trn->add_option("--save", tr.save, "Checkpoint directory");
    trn->add_option("--save-interval", tr.save_interval, "Save every N steps (0: at the end)");
    trn->add_flag("--resume", tr.resume, "Continue from the checkpoint in --save");
    trn->add_flag("--no-final-save", tr.no_final_save,
                  "Save only every --save-interval steps, not also after the last one");
    trn->add_option("--metrics", tr.metrics, "Write per-step metrics (.csv or .jsonl)");
    trn->add_option("--seed", tr.seed, "Seed (ds_config 'seed' wins)");
    trn->add_option("--export-hf", tr.export_hf, "Write an HF directory at the end");
    trn->add_option("--tp", tr.tp,
                    "Tensor-parallel ranks (Megatron-style; ds_config tensor_parallel.autotp_size)")
        ->check(CLI::Range(1, 4096));
    trn->add_option("--sp", tr.sp,
                    "Sequence-parallel ranks (DeepSpeed-Ulysses: each trains on seq-len / sp "
                    "tokens of every sequence; ds_config sequence_parallel_size)")
        ->check(CLI::Range(1, 4096));
    trn->add_option("--pp", tr.pp,
                    "Pipeline stages (contiguous blocks per stage, gradient_accumulation_steps "
                    "micro-batches per step; ds_config pipeline.stages, pipeline.schedule "
                    "1f1b|gpipe|interleaved)")
        ->check(CLI::Range(1, 4096));
    trn->add_option("--pipeline-timeline", tr.pipeline_timeline,
                    "With --pp: write the last step's measured timeline (SVG)");
    trn->add_option("--ring", tr.ring,
                    "Ring-attention ranks (K/V blocks rotate around them, zig-zag causal layout; "
                    "with --sp: USP, sp x ring ranks per sequence, each training on seq-len / "
                    "(sp x ring) tokens; seq-len divisible by 2 x sp x ring; ds_config "
                    "ring_parallel_size)")
        ->check(CLI::Range(1, 4096));
    trn->add_option("--ep", tr.ep,
                    "Expert-parallel ranks for MoE models (DeepSpeed-MoE: each holds experts / ep "
                    "of every layer, out of the data-parallel ranks; ds_config "
                    "expert_parallel_size)")
        ->check(CLI::Range(1, 4096));
    // The Hugging Face Trainer's settings, for ds_config values written "auto".
    trn->add_option("--micro-batch", tr.micro_batch,
                    "ds_config \"auto\": train_micro_batch_size_per_gpu (default 8)")
        ->check(CLI::PositiveNumber);
    trn->add_option("--grad-accum", tr.grad_accum,
                    "ds_config \"auto\": gradient_accumulation_steps (default 1)")
        ->check(CLI::PositiveNumber);
    trn->add_option("--lr", tr.lr, "ds_config \"auto\": learning rate (default 5e-5)")
        ->check(CLI::PositiveNumber);
    trn->add_option("--weight-decay", tr.weight_decay,
                    "ds_config \"auto\": weight decay (default 0)")
        ->check(CLI::NonNegativeNumber);
    trn->add_option("--warmup", tr.warmup, "ds_config \"auto\": warmup steps (default 0)")
        ->check(CLI::NonNegativeNumber);
    trn->add_option("--max-grad-norm", tr.max_grad_norm,
                    "ds_config \"auto\": gradient_clipping (default 1.0)")
        ->check(CLI::NonNegativeNumber);
    trn->add_flag("--no-progress", tr.no_progress, "Log lines instead of a live progress line");

    zs::cli::ConvertOptions conv;
    CLI::App* cnv = app.add_subcommand("convert",
                                       "Export a checkpoint or a GGUF as a Hugging Face model "
                                       "directory, or re-type a GGUF (--to gguf --dtype "
                                       "f32|f16|bf16)");
    cnv->add_option("--checkpoint,--model", conv.checkpoint,
                    "Checkpoint directory (or a --save directory), or a .gguf file")
        ->required();
    cnv->add_option("--to", conv.to, "Target format (hf, gguf)");
    cnv->add_option("--dtype", conv.dtype,
                    "--to gguf: type of the matrices (f32, f16, bf16); --to hf from a .gguf: type "
                    "of the weights (f32, bf16)");
    cnv->add_option("--quantize", conv.quantize,
                    "--to gguf: quantize the matrices to q8_0, q4_0, q4_1, q5_0, q5_1 (blocks "
                    "bit-identical to llama.cpp's reference quantizer), q4_k, q5_k, q6_k, or "
                    "llama-quantize's q4_k_m / q5_k_m mixes (docs/CONFIG.md); other tensors f32");
    cnv->add_option("--tokenizer", conv.tokenizer,
                    "--to hf: the tokenizer to include (default: the model or tokenizer the "
                    "checkpoint was trained from)");
    cnv->add_option("--output", conv.output, "Output directory (a .gguf file for --to gguf)")
        ->required();

    zs::cli::DataPrepareOptions dp;
    CLI::App* data = app.add_subcommand("data", "Dataset tools");
    CLI::App* prep = data->add_subcommand("prepare", "Tokenize text files into token shards");
    data->require_subcommand(1);
    prep->add_option("--tokenizer", dp.tokenizer, "Tokenizer file (or a .gguf), or model directory")
        ->required();
    prep->add_option("--input", dp.inputs, "Text files")->required();
    prep->add_option("--output", dp.output, "Output directory")->required();
    prep->add_option("--val-fraction", dp.val_fraction,
                     "Share of each file held out for validation");
    prep->add_option("--threads", dp.threads, "Tokenizer threads (default: all)");

    zs::cli::EstimateOptions est;
    CLI::App* esti =
        app.add_subcommand("estimate", "Predict per-rank memory and communication before training");
    esti->add_option("--model", est.model, "HF model directory or GGUF");
    esti->add_option("--model-config", est.model_config, "HF config.json");
    esti->add_option("--deepspeed_config,--ds-config,--config", est.ds_config, "DeepSpeed config")
        ->required();
    esti->add_option("--ranks", est.ranks, "All ranks (data-parallel x tensor-parallel)")
        ->check(CLI::PositiveNumber);
    esti->add_option("--tp", est.tp,
                     "Tensor-parallel ranks (ds_config tensor_parallel.autotp_size; must agree)")
        ->check(CLI::Range(1, 4096));
    esti->add_flag("--sweep", est.sweep, "Also tabulate 1, 2, 4, ..., 1024 ranks at this tp");
    esti->add_option("--ranks-per-node", est.ranks_per_node, "Ranks sharing a machine's memory")
        ->check(CLI::PositiveNumber);
    esti->add_option("--seq-len", est.seq_len, "Tokens per sequence")->check(CLI::PositiveNumber);
    esti->add_option("--memory-per-rank", est.memory_per_rank,
                     "Bytes per rank for the largest-model answer");
    esti->add_option("--memory-cap", est.memory_cap,
                     "Offload advice: which tiers (none / optimizer cpu / optimizer nvme / params "
                     "nvme) fit this per-rank memory (e.g. 8G), with predicted step times");
    esti->add_option("--disk-bw", est.disk_bw,
                     "Disk bandwidth for --memory-cap, bytes/s (e.g. 1.5G; default: measured with "
                     "O_DIRECT under --offload-path)");
    esti->add_option("--offload-path", est.offload_path,
                     "Directory on the offload disk for the bandwidth probe (256 MiB, removed)");
    esti->add_option("--tflops", est.tflops,
                     "Compute rate for --memory-cap, TFLOP/s (default: a matmul measured here)")
        ->check(CLI::PositiveNumber);

    zs::cli::PlanPipelineOptions ppl;
    CLI::App* plan = app.add_subcommand("plan", "Plan parallel training on paper");
    plan->require_subcommand(1);
    CLI::App* plpipe = plan->add_subcommand(
        "pipeline", "Generate, validate and simulate a pipeline schedule (timeline SVG)");
    plpipe->add_option("--stages", ppl.stages, "Pipeline stages (ranks)")
        ->check(CLI::Range(1, 4096));
    plpipe->add_option("--micro-batches", ppl.micro_batches, "Micro-batches per step")
        ->check(CLI::Range(1, 1 << 20));
    plpipe->add_option("--policy", ppl.policy, "gpipe, 1f1b, interleaved, zb-h1 or zb-h2");
    plpipe->add_option("--chunks", ppl.chunks, "Model chunks per rank (interleaved)")
        ->check(CLI::Range(1, 64));
    plpipe->add_option("--f", ppl.f, "Forward time of one stage and micro-batch");
    plpipe->add_option("--b", ppl.b, "Input-gradient backward time (B)");
    plpipe->add_option("--w", ppl.w, "Weight-gradient backward time (W)");
    plpipe->add_option("--comm", ppl.comm, "Transfer time of one activation");
    plpipe->add_option("--svg", ppl.svg, "Write the timeline as SVG");
    plpipe->add_flag("--sweep", ppl.sweep, "Also the bubble at 8, 16, 32, 64 stages");
    plpipe->add_flag("--show", ppl.show, "Print each rank's compute order");

    zs::cli::TokenizerTrainOptions tt;
    CLI::App* tokz = app.add_subcommand("tokenizer", "Tokenizer tools");
    tokz->require_subcommand(1);
    CLI::App* ttrain =
        tokz->add_subcommand("train", "Train a byte-level BPE tokenizer (tokenizer.json)");
    ttrain->add_option("--input", tt.inputs, "Text files")->required();
    ttrain->add_option("--vocab-size", tt.vocab_size, "Vocabulary size")
        ->check(CLI::Range(257, 1000000));
    ttrain->add_option("--output", tt.output, "Output directory")->required();

    zs::cli::PlotOptions pl;
    CLI::App* plt = app.add_subcommand("plot", "Plot training metrics (CSV/JSONL) to SVG");
    plt->add_option("metrics", pl.metrics, "Metrics file")->required();
    plt->add_option("-o,--output", pl.output, "SVG file")->required();

    zs::cli::InfoOptions info;
    CLI::App* inf =
        app.add_subcommand("info", "Architecture, parameter count and memory of a model");
    inf->add_option("--model", info.model, "Model directory or .gguf")->required();
    inf->add_flag("--tensors", info.tensors,
                  "List each GGUF tensor with its storage type (F32, Q4_1, ...) and shape");

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    if (verbose) zs::set_log_level(zs::LogLevel::debug);
    // Under mpirun (or zerospeed-run) every process is one rank of the MPI world.
    std::unique_ptr<zs::comm::MpiRuntime> mpi;
    try {
        if (zs::comm::MpiRuntime::launched_by_mpirun()) {
            mpi = std::make_unique<zs::comm::MpiRuntime>(&argc, &argv);
            zs::set_log_rank(mpi->world().rank(), mpi->world().size());
        }
    } catch (const zs::Error& e) {
        std::fprintf(stderr, "zerospeed: error: %s\n", e.what());
        return 1;
    }
    try {
        zs::backends::register_all();
        if (doc->parsed()) return zs::cli::run_doctor(doctor);
        if (tkn->parsed()) return zs::cli::run_tokenize(tokenize);
        // Commands that can run on many ranks get the MPI world (or this process alone).
        std::unique_ptr<zs::comm::Communicator> self;
        zs::comm::Communicator& world = mpi ? mpi->world() : *(self = zs::comm::make_self());
        if (gn->parsed()) return zs::cli::run_generate(gen, world);
        if (pplx->parsed()) return zs::cli::run_perplexity(ppl_opts);
        if (srv->parsed()) return zs::cli::run_serve(sv, world);
        if (bsv->parsed()) return zs::cli::run_bench_serve(bs);
        if (inf->parsed()) return zs::cli::run_info(info);
        if (trn->parsed()) return zs::cli::run_train(tr, world);
        if (cnv->parsed()) return zs::cli::run_convert(conv);
        if (prep->parsed()) return zs::cli::run_data_prepare(dp);
        if (plt->parsed()) return zs::cli::run_plot(pl);
        if (ttrain->parsed()) return zs::cli::run_tokenizer_train(tt);
        if (esti->parsed()) return zs::cli::run_estimate(est);
        if (plpipe->parsed()) return zs::cli::run_plan_pipeline(ppl);
        return 0;
    } catch (const zs::Error& e) {
        std::fprintf(stderr, "zerospeed: error: %s\n", e.what());
        // One failing rank stops the whole job rather than leaving the others waiting.
        if (mpi && mpi->world().size() > 1) zs::comm::MpiRuntime::abort_job(1);
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "zerospeed: internal error: %s\n", e.what());
        return 2;
    }
}
