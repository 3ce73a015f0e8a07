// `zerospeed train`: a model (HF directory to fine-tune, or an HF config.json to train from
// scratch) + a DeepSpeed config + a token dataset → a training run on this process's ranks
// (one rank, or all ranks of an mpirun / zerospeed-run job), with progress, metrics,
// evaluation, checkpoints (resumable at any world size) and an optional HF export at the end.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>
#include <sys/resource.h>

#include "base/error.h"
#include "base/log.h"
#include "cli/commands.h"
#include "cli/hf_export.h"
#include "cli/svg.h"
#include "core/backend.h"
#include "core/memory.h"
#include "core/quant.h"
#include "io/atomic_file.h"
#include "io/checksum.h"
#include "io/gguf.h"
#include "io/gguf_writer.h"
#include "io/json.h"
#include "io/quant_scheme.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "io/token_dataset.h"
#include "models/sources.h"
#include "models/weights.h"
#include "train/hf_export.h"
#include "train/trainer.h"

namespace zs::cli {

namespace fs = std::filesystem;
using core::Tensor;

namespace {

// The last step's measured pipeline: each stage's idle share against the schedule's theory, and
// the timeline as SVG when asked. Collective over the world (every stage contributes).
void report_pipeline(train::Trainer& trainer, const std::string& svg_path,
                     comm::Communicator& world) {
    const parallel::PipeTimeline tl = trainer.pipeline_timeline();
    const std::vector<train::Trainer::PipeHeld> held = trainer.pipeline_held();
    const parallel::PipeSchedule& s = trainer.pipeline_schedule();
    if (world.rank() != 0 || tl.spans.empty()) return;
    std::string mem;
    for (size_t r = 0; r < held.size(); ++r) {
        const train::Trainer::PipeHeld& h = held[r];
        mem += fmt::format("{}stage {}: inputs {} (formula {})", r ? "; " : "", r,
                           core::format_bytes(h.measured.inputs),
                           core::format_bytes(h.formula.inputs));
        if (s.split_backward) {
            mem += fmt::format(", deferred W {} (formula {}), both at once {}",
                               core::format_bytes(h.measured.deferred),
                               core::format_bytes(h.formula.deferred),
                               core::format_bytes(h.measured.both));
        }
    }
    log_info("pipeline, held beyond the live micro-batch at most: {}", mem);
    // The same schedule run on paper with the measured mean F, B and W: the idle time the
    // schedule itself leaves, apart from transfers, uneven stages and the machine's noise.
    const parallel::PipeCosts costs = parallel::mean_costs(tl);
    const parallel::PipeTimeline sim = parallel::simulate(s, costs);
    std::string per, per_sim;
    for (int r = 0; r < s.stages; ++r) {
        const auto u = static_cast<size_t>(r);
        per += fmt::format("{}{:.1f}%", r ? " " : "", 100.0 * (1.0 - tl.busy[u] / tl.makespan));
        per_sim +=
            fmt::format("{}{:.1f}%", r ? " " : "", 100.0 * (1.0 - sim.busy[u] / sim.makespan));
    }
    log_info(
        "pipeline, last step measured: {} stages x {} micro-batches ({}), makespan {:.1f} ms, "
        "idle per stage {}; simulated with the measured mean F {:.1f} ms, B {:.1f} ms, W {:.1f} "
        "ms: {}{}",
        s.stages, s.micro_batches, parallel::to_string(s.policy), 1e3 * tl.makespan, per,
        1e3 * costs.f, 1e3 * costs.b, 1e3 * costs.w, per_sim,
        s.split_backward ? std::string()
                         : fmt::format(" (theory (p-1)/(Vm+p-1) = {:.1f}% for equal stages)",
                                       100.0 * parallel::pipe_theory_bubble(
                                                   s.stages, s.micro_batches, s.chunks)));
    if (svg_path.empty()) return;
    parallel::PipeTimeline ms = tl;
    for (parallel::PipeSpan& sp : ms.spans) {
        sp.start *= 1e3;
        sp.end *= 1e3;
    }
    ms.makespan *= 1e3;
    io::write_file_atomic(
        svg_path,
        pipeline_timeline_svg(s.stages, ms,
                              fmt::format("measured: {}, {} stages x {} micro-batches "
                                          "(last step)",
                                          parallel::to_string(s.policy), s.stages, s.micro_batches),
                              "ms"));
    log_info("pipeline timeline: {}", svg_path);
}

}  // namespace

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
    if (mc.dropout > 0 && world.rank() == 0) {
        log_warn(
            "the model config asks for dropout (largest probability {}); zerospeed trains without "
            "dropout",
            mc.dropout);
    }
    train::AutoValues autos;
    if (o.micro_batch > 0) autos.micro_batch = o.micro_batch;
    if (o.grad_accum > 0) autos.grad_accum = o.grad_accum;
    if (o.warmup >= 0) autos.warmup = o.warmup;
    if (o.lr > 0) autos.lr = o.lr;
    if (o.weight_decay >= 0) autos.weight_decay = o.weight_decay;
    if (o.max_grad_norm >= 0) autos.max_grad_norm = o.max_grad_norm;
    autos.steps = o.steps;
    if (o.tp > 0) autos.tp = o.tp;
    if (o.sp > 0) autos.sp = o.sp;
    if (o.pp > 0) autos.pp = o.pp;
    if (o.ring > 0) autos.ring = o.ring;
    if (o.ep > 0) autos.ep = o.ep;
    autos.hidden_size = mc.hidden_size;
    train::TrainConfig tc = train::load_ds_config(o.ds_config, world.size(), &autos);
    train::RunOptions run;
    run.data_dir = o.data;
    run.seq_len = o.seq_len;
    run.steps = o.steps;
    run.eval_interval = o.eval_interval;
    run.eval_batches = o.eval_batches;
    run.save_dir = o.save;
    run.save_interval = o.save_interval;
    run.resume = o.resume;
    run.save_final = !o.no_final_save;
    run.metrics_path = o.metrics;
    run.seed = o.seed;
    run.progress = !o.no_progress;
    // The tokenizer an export should carry: the model's own, else the one the data was prepared
    // with (recorded in the dataset's index.json).
    run.tokenizer_source = o.model;
    if (run.tokenizer_source.empty() && !o.data.empty()) {
        std::error_code ec;
        if (fs::is_regular_file(o.data + "/index.json", ec))
            run.tokenizer_source = io::read_dataset_index(o.data).tokenizer;
    }
    if (!run.tokenizer_source.empty())
        run.tokenizer_source = fs::absolute(run.tokenizer_source).lexically_normal().string();
    if (world.rank() == 0) {
        log_info(
            "training {} ({:.2f} M parameters) on {} rank(s){}: ZeRO stage {}, {}, micro-batch {} "
            "x {} accumulation x {} data-parallel ranks = {} sequences of {} tokens per step",
            models::to_string(mc.arch), static_cast<double>(mc.n_params()) / 1e6, world.size(),
            tc.tensor_parallel_size > 1 || tc.sequence_parallel_size > 1 ||
                    tc.ring_parallel_size > 1 || tc.pipeline.stages > 1 ||
                    tc.expert_parallel_size > 1
                ? fmt::format(
                      " ({} data-parallel{}{}{}{}){}", tc.world_size,
                      tc.pipeline.stages > 1 ? fmt::format(" x {} pipeline", tc.pipeline.stages)
                                             : std::string(),
                      tc.sequence_parallel_size > 1
                          ? fmt::format(" x {} sequence-parallel", tc.sequence_parallel_size)
                          : std::string(),
                      tc.ring_parallel_size > 1 ? fmt::format(" x {} ring", tc.ring_parallel_size)
                                                : std::string(),
                      tc.tensor_parallel_size > 1
                          ? fmt::format(" x {} tensor-parallel", tc.tensor_parallel_size)
                          : std::string(),
                      tc.expert_parallel_size > 1 ? fmt::format(", experts over {} expert-parallel",
                                                                tc.expert_parallel_size)
                                                  : std::string())
                : std::string(),
            tc.zero.stage, train::to_string(tc.precision), tc.batch.train_micro_batch_size_per_gpu,
            tc.batch.gradient_accumulation_steps, tc.world_size, tc.batch.train_batch_size,
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
    if (tc.pipeline.stages > 1) report_pipeline(trainer, o.pipeline_timeline, world);
    double val = trainer.evaluate();
    // Resident set size as the OS sees it (the tracked categories plus code, libraries and
    // communication buffers), largest over the ranks: the figure to compare with other programs.
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    core::Tensor rss = core::Tensor::empty({1}, core::DType::f32);
    rss.data<float>()[0] = static_cast<float>(ru.ru_maxrss) * 1024.0f;
    world.allreduce(rss, comm::ReduceOp::max).wait();
    if (world.rank() == 0) {
        std::fprintf(stderr, "peak resident set size (largest over %d rank(s)): %.2f GiB\n",
                     world.size(), static_cast<double>(rss.data<float>()[0]) / (1 << 30));
        if (!std::isnan(val))
            std::printf("final validation loss %.4f (perplexity %.2f) after %lld steps\n", val,
                        std::exp(val), static_cast<long long>(trainer.steps_done()));
        std::fprintf(stderr, "peak memory on rank 0 by category:\n%s",
                     trainer.memory_report().c_str());
    }
    if (!o.export_hf.empty()) {
        trainer.export_hf(o.export_hf);  // with the tokenizer and generation config
        if (world.rank() == 0) log_info("exported Hugging Face model to {}", o.export_hf);
    }
    return 0;
}

namespace {

// GGUF -> GGUF with every quantized or float matrix stored as `dtype` (f32, f16 or bf16), or,
// with --quantize, quantized to that block type from its f32 values:
// llama.cpp's layout (its Q/K row order) and metadata are kept, 1-D tensors (norms) stay f32 as
// llama.cpp writes them, integer tensors are copied. This makes the same weights runnable at the
// same precision by zerospeed and llama.cpp (bench/peers). The output is assembled in memory
// (about the model's size at `dtype`) and written atomically.
int convert_gguf(const ConvertOptions& o) {
    const io::GgufFile in = io::GgufFile::open(o.checkpoint);
    core::DType dt;
    uint32_t ftype;  // llama.cpp's general.file_type: ALL_F32, MOSTLY_F16, MOSTLY_BF16
    if (o.dtype == "f32") {
        dt = core::DType::f32;
        ftype = 0;
    } else if (o.dtype == "f16") {
        dt = core::DType::f16;
        ftype = 1;
    } else if (o.dtype == "bf16") {
        dt = core::DType::bf16;
        ftype = 32;
    } else {
        ZS_THROW(ConfigError,
                 "convert: --dtype '{}' is not supported for --to gguf (f32, f16, bf16)", o.dtype);
    }
    // --quantize: matrices (rows a multiple of 32) become blocks, each in the type the scheme
    // gives it (io/quant_scheme.h: llama-quantize's rules for the k-quants); the simple types bit
    // for bit as llama.cpp's reference quantizer writes them; general.file_type MOSTLY_<TYPE>.
    std::optional<io::QuantScheme> qs;
    int n_layers = 0;
    bool has_output = false;
    if (!o.quantize.empty()) {
        qs = io::parse_quant_scheme(o.quantize);
        ZS_CHECK_T(ConfigError, qs.has_value(),
                   "convert: --quantize '{}' is not supported (q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, "
                   "q4_k_m, q5_k, q5_k_m, q6_k)",
                   o.quantize);
        ftype = qs->file_type;
        for (const io::GgufTensorInfo& t : in.tensors()) {
            n_layers += t.name.find("attn_v.weight") != std::string::npos;
            has_output = has_output || t.name == "output.weight";
        }
    }
    io::GgufWriter w(in.alignment(), in.version());
    for (const io::GgufKv& kv : in.metadata()) {
        if (kv.key == "general.alignment") continue;  // the writer's constructor sets it
        if (kv.key == "general.file_type") {
            w.set(kv.key, ftype);
            continue;
        }
        w.set(kv.key, kv.value);
    }
    if (!in.has("general.file_type")) w.set("general.file_type", ftype);
    for (const io::GgufTensorInfo& t : in.tensors()) {
        const bool matrix = t.ne.size() >= 2;
        const bool floating = t.type != io::GgmlType::i8 && t.type != io::GgmlType::i16 &&
                              t.type != io::GgmlType::i32 && t.type != io::GgmlType::i64;
        if (!floating) {
            std::span<const uint8_t> raw = in.raw_bytes(t.name);
            w.add_tensor(t.name, t.type, t.ne, std::vector<uint8_t>(raw.begin(), raw.end()));
            continue;
        }
        if (qs && matrix && t.ne[0] % 32 == 0) {
            const core::QType qt = io::quant_type_for(*qs, t.name, t.ne[0], n_layers, has_output);
            const Tensor f = in.tensor(t.name, core::DType::f32).contiguous();
            std::vector<uint8_t> blocks(static_cast<size_t>(core::qrow_bytes(qt, f.numel())));
            core::quantize(qt, f.data<float>(), blocks.data(), f.numel());
            w.add_tensor(t.name, io::to_ggml_type(qt), t.ne, std::move(blocks));
            continue;
        }
        w.add_tensor(t.name, in.tensor(t.name, matrix && !qs ? dt : core::DType::f32).contiguous());
    }
    w.save(o.output);
    log_info("wrote {} ({} tensors, matrices as {})", o.output, in.tensors().size(),
             qs ? o.quantize : o.dtype);
    return 0;
}

}  // namespace

int run_convert(const ConvertOptions& o) {
    if (o.to == "gguf") {
        ZS_CHECK_T(ConfigError, o.checkpoint.ends_with(".gguf"),
                   "convert --to gguf: --model must be a .gguf file, got '{}'", o.checkpoint);
        return convert_gguf(o);
    }
    ZS_CHECK_T(ConfigError, o.to == "hf", "convert: --to '{}' is not supported (hf, gguf)", o.to);
    if (o.checkpoint.ends_with(".gguf")) return convert_gguf_to_hf(o);
    std::string dir = o.checkpoint;
    if (fs::exists(dir + "/latest")) {
        std::string tag;
        std::ifstream(dir + "/latest") >> tag;
        dir += "/" + tag;
    }
    ZS_CHECK_T(IoError, fs::exists(dir + "/manifest.json"),
               "{}: not a zerospeed checkpoint (no manifest.json)", dir);
    nlohmann::json m = io::load_json(dir + "/manifest.json");
    models::ModelConfig mc =
        models::parse_hf_config(m.at("model_config").dump(), dir + "/manifest.json");
    models::Transformer model(mc, models::RunConfig{});  // layout only: allocates no weights
    ZS_CHECK_T(IoError, static_cast<int>(m.at("groups").size()) == model.layout().n_groups(),
               "{}: {} parameter groups in the manifest; the model it describes has {}", dir,
               m.at("groups").size(), model.layout().n_groups());
    // Streaming: one parameter group at a time (bounded memory), one HF shard file per group.
    std::vector<io::SafetensorsFile> shards;
    std::vector<nlohmann::json> ranges;
    for (const auto& sh : m.at("shards")) {
        std::string f = dir + "/" + sh.at("file").get<std::string>();
        std::string got = io::sha256_file(f), want = sh.at("sha256").get<std::string>();
        ZS_CHECK_T(IoError, got == want,
                   "{}: corrupt shard: sha256 {} but manifest.json expects {}", f, got, want);
        shards.push_back(io::SafetensorsFile::open(f));
        ranges.push_back(io::parse_json(shards.back().metadata().at("ranges"), f + " (ranges)"));
    }
    fs::create_directories(o.output);
    const int G = model.layout().n_groups();
    io::SafetensorsShardWriter writer(o.output, static_cast<size_t>(G));
    for (int g = 0; g < G; ++g) {
        const int64_t n = model.layout().group(g).numel;
        Tensor full =
            Tensor::zeros({n}, core::DType::f32, core::Device::cpu(), core::MemCategory::buffers);
        int64_t covered = 0;
        for (size_t q = 0; q < shards.size(); ++q) {
            int64_t b = ranges[q][static_cast<size_t>(g)][0],
                    e = ranges[q][static_cast<size_t>(g)][1];
            if (e <= b) continue;
            full.slice(0, b, e).copy_from(shards[q].tensor(fmt::format("master.{}", g)));
            covered += e - b;
        }
        ZS_CHECK_T(IoError, covered == n, "{}: the shards cover {} of the {} elements of group {}",
                   dir, covered, n, model.layout().group(g).name);
        std::vector<io::NamedTensor> tensors;
        for (auto& [name, t] : models::export_hf_group(model, g, full))
            tensors.push_back({name, t});
        writer.write(static_cast<size_t>(g), tensors, {{"format", "pt"}});
    }
    writer.finish();
    mc.torch_dtype = core::DType::f32;  // the master weights, as stored
    io::write_file_atomic(o.output + "/config.json", models::to_hf_config_json(mc));
    train::write_hf_extras(
        o.tokenizer.empty() ? m.value("tokenizer_source", std::string()) : o.tokenizer, mc,
        o.output);
    log_info("wrote {} ({} tensors in {} shards, {}) from {}", o.output, writer.n_tensors(), G,
             core::format_bytes(static_cast<int64_t>(writer.total_bytes())), dir);
    return 0;
}

}  // namespace zs::cli
