// `zerospeed serve`: load a model (HF directory or GGUF), start the engine thread and the
// OpenAI-compatible HTTP server, run until SIGTERM/SIGINT, then drain. --offload-weights streams
// the blocks' weights from NVMe or the cpu tier once per engine step (ZeRO-Inference,
// zero/inference.h, through infer::EngineConfig::weight_hooks).
#include <filesystem>
#include <memory>

#include <omp.h>
#include <sys/resource.h>

#include "base/error.h"
#include "base/log.h"
#include "cli/commands.h"
#include "cli/model_loader.h"
#include "core/backend.h"
#include "infer/engine.h"
#include "infer/tp_forward.h"
#include "serve/server.h"

namespace zs::cli {

int64_t parse_byte_size(const std::string& s, const char* flag) {
    size_t used = 0;
    double v = 0;
    try {
        v = std::stod(s, &used);
    } catch (const std::exception&) {
        throw ConfigError(fmt::format("{}: expected a size such as 512M or 2G, got '{}'", flag, s));
    }
    std::string unit = s.substr(used);
    double mult = 1;
    if (unit == "" || unit == "B") {
        mult = 1;
    } else if (unit == "K" || unit == "KiB" || unit == "k") {
        mult = 1024.0;
    } else if (unit == "M" || unit == "MiB") {
        mult = 1024.0 * 1024;
    } else if (unit == "G" || unit == "GiB") {
        mult = 1024.0 * 1024 * 1024;
    } else {
        throw ConfigError(
            fmt::format("{}: unknown unit '{}' in '{}' (use K, M or G)", flag, unit, s));
    }
    ZS_CHECK_T(ConfigError, v > 0, "{}: must be positive, got '{}'", flag, s);
    return static_cast<int64_t>(v * mult);
}

infer::EngineConfig engine_config(const ServeEngineOptions& o,
                                  const std::string& kv_dtype_default) {
    infer::EngineConfig ec;
    ec.kv_cache_bytes = parse_byte_size(o.kv_cache_memory, "--kv-cache-memory");
    ec.kv_blocks = o.kv_blocks;
    ec.block_size = o.block_size;
    const infer::KvCacheDType kd = infer::parse_kv_cache_dtype(
        o.kv_dtype.empty() ? "auto" : o.kv_dtype, parse_dtype_flag(kv_dtype_default, "--dtype"),
        "--kv-cache-dtype");
    ec.kv_dtype = kd.quant == ops::KvQuant::none ? kd.dtype : DType::bf16;
    ec.kv_quant = kd.quant;
    ec.tune_threads = true;  // the engine's thread count follows its measured decode speed
    ec.scheduler.max_batch_tokens = o.max_batch_tokens;
    ec.scheduler.max_seqs = o.max_seqs;
    ec.scheduler.prefix_caching = !o.no_prefix_caching;
    if (o.policy == "split_fuse" || o.policy == "splitfuse") {
        ec.scheduler.policy = infer::SchedulePolicy::split_fuse;
    } else if (o.policy == "prefill_first") {
        ec.scheduler.policy = infer::SchedulePolicy::prefill_first;
    } else {
        throw ConfigError(
            fmt::format("--policy: expected split_fuse or prefill_first, got '{}'", o.policy));
    }
    return ec;
}

namespace {

// --memory-cap: what the server holds of the model (the weights, or the stream's resident groups
// and buffers) and its KV pool must fit; refused with the numbers otherwise.
void check_memory_cap(int64_t cap, const models::Transformer& model, const infer::EngineConfig& ec,
                      const zero::WeightStream* stream) {
    const infer::KvCacheSpec kv = infer::kv_cache_spec(model, ec);
    const int64_t kv_bytes = kv.n_blocks * kv.block_bytes();
    // The weights as loaded (dense, quantized or streamed): the params category's bytes.
    const int64_t weights = core::memory_stats().current_of(core::MemCategory::params);
    ZS_CHECK_T(ConfigError, weights + kv_bytes <= cap,
               "--memory-cap {}: the {} ({}) and the KV pool of {} blocks ({}; --kv-cache-memory "
               "/ --kv-blocks) need {}{}",
               core::format_bytes(cap),
               stream ? "stream's resident weights and buffers" : "weights",
               core::format_bytes(weights), kv.n_blocks, core::format_bytes(kv_bytes),
               core::format_bytes(weights + kv_bytes),
               stream ? "" : " (--offload-weights nvme streams the blocks from disk)");
    log_info("serve: --memory-cap {}: weights {} + KV pool {} = {}", core::format_bytes(cap),
             core::format_bytes(weights), core::format_bytes(kv_bytes),
             core::format_bytes(weights + kv_bytes));
}

// ZeRO-Inference at exit: the weight bytes per engine step, the steps, the bytes read and the
// peak memory (the tracked peaks of serving and of loading, and the process's resident peak,
// which counts the mapped model file's pages read while loading).
void report_stream(const zero::WeightStream& ws, int64_t steps, int64_t load_peak) {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    const core::MemStats ms = core::memory_stats();
    log_info(
        "offload-weights: {} ({} B) of block weights per engine step, {} steps, {} ({} B) read; "
        "memory: stream {} (resident {} + buffers {}), tracked peak serving {} (loading {}), "
        "resident set peak {}",
        core::format_bytes(ws.memory().streamed), ws.memory().streamed, steps,
        core::format_bytes(ws.bytes_read()), ws.bytes_read(),
        core::format_bytes(ws.memory().total()), core::format_bytes(ws.memory().resident),
        core::format_bytes(ws.memory().buffers), core::format_bytes(ms.peak_total),
        core::format_bytes(load_peak), core::format_bytes(int64_t{ru.ru_maxrss} * 1024));
}

}  // namespace

int run_serve(const ServeOptions& o, comm::Communicator& world) {
    // Tensor parallelism: rank 0 runs the server, the scheduler and sampling; the other ranks run
    // each of its forwards on their shards (infer/tp_forward.h) until it stops. A rank that dies
    // ends the job (mpirun stops every rank), so the server never waits on a lost rank.
    // Expert parallelism (MoE models) likewise: every rank runs rank 0's ragged batches, each
    // with its E / ep experts, the routed rows exchanged per MoE layer.
    // Both (DeepSpeed-TED): tp groups of consecutive ranks, the ep group the same tp rank's
    // peers; every rank follows rank 0's forwards.
    // ZeRO-Inference: the blocks stream from the tier for every engine step (one weight pass
    // for all the step's sequences); the engine passes the stream to each forward.
    const int64_t cap =
        o.offload.memory_cap.empty() ? 0 : parse_memory_size(o.offload.memory_cap, "--memory-cap");
    std::optional<zero::StreamConfig> stream_cfg =
        offload_stream_config(o.offload, cap, o.tp, o.ep, world, "serve");
    const InferenceGroups groups = inference_groups(o.tp, o.ep, world, "serve");
    comm::Communicator* tp = groups.tp;
    comm::Communicator* ep = groups.ep;
    comm::Communicator* followers = tp && ep ? &world : tp ? tp : ep;
    if (stream_cfg) {
        if (cap > 0 && o.engine.kv_blocks == 0) {
            // The KV pool takes at most its budget: the read-ahead shrinks to fit the rest.
            const int64_t kv = parse_byte_size(o.engine.kv_cache_memory, "--kv-cache-memory");
            ZS_CHECK_T(ConfigError, kv < cap,
                       "--memory-cap {}: the KV pool's --kv-cache-memory {} leaves nothing for "
                       "the weights",
                       core::format_bytes(cap), core::format_bytes(kv));
            stream_cfg->memory_cap = cap - kv;
        }
    }
    serve::block_shutdown_signals();
    LoadedModel lm =
        load_model(o.model, o.dtype, false, tp, ep, stream_cfg ? &*stream_cfg : nullptr);
    if (followers && followers->rank() != 0) {
        const int64_t n = infer::follow_forwards(
            *lm.model, engine_config(o.engine, to_string(lm.model->run_config().compute_dtype)),
            *followers);
        log_info("serve: {}-parallel rank {} stopped after {} forwards",
                 tp && ep ? "tensor- and expert"
                 : tp     ? "tensor"
                          : "expert",
                 followers->rank(), n);
        return 0;
    }
    const models::ModelConfig& c = lm.model->config();
    const io::Tokenizer& tok = *lm.tokenizer;

    serve::ModelInfo mi;
    mi.tokenizer = &tok;
    mi.chat = infer::detect_chat_template(tok, lm.chat_template);
    if (mi.chat.format == infer::ChatFormat::plain) {
        log_warn("{}: no chat template recognised; chat uses plain 'role: content' lines", o.model);
    }
    mi.stop_ids = tok.stop_ids();
    for (int64_t e : c.eos_token_ids) mi.stop_ids.push_back(static_cast<int32_t>(e));
    for (int32_t e : lm.extra_stop_ids) mi.stop_ids.push_back(e);
    mi.context = c.max_positions;
    mi.vocab_size = c.vocab_size;

    serve::ServiceConfig sc;
    sc.engine = engine_config(o.engine, to_string(lm.model->run_config().compute_dtype));
    sc.engine.tp = tp;
    sc.engine.ep = ep;
    if (tp && ep) sc.engine.tp_ep = &world;
    sc.engine.weight_hooks = lm.stream.get();
    if (cap > 0) check_memory_cap(cap, *lm.model, sc.engine, lm.stream.get());
    serve::Metrics metrics;
    // Loading ran OpenMP regions on this thread, so it owns a team; the engine runs on its own
    // thread with a second team. With more OpenMP threads than CPUs libgomp stops spinning
    // between regions and puts every worker to sleep on a futex after each one (its throttled
    // spin), and decode — hundreds of short regions per token — pays a wake-up per region
    // (2-thread serve decoded at a third of generate's speed). This thread runs no more
    // regions: release its team before the engine starts.
    omp_pause_resource_all(omp_pause_soft);
    serve::Service service(*lm.model, tok, sc, metrics);
    // The peak memory of serving (weights, KV pool, each step's activations) apart from loading's
    // (a quantized GGUF's groups are dequantized one at a time on the way to the tier).
    const int64_t load_peak = core::memory_stats().peak_total;
    core::backend(core::Device::cpu()).memory().reset_peak();

    serve::ServerConfig cfg;
    cfg.host = o.host;
    cfg.port = o.port;
    cfg.api_key = o.api_key;
    cfg.model_name = o.served_model_name;
    if (cfg.model_name.empty()) {
        std::filesystem::path p(o.model);
        cfg.model_name = std::filesystem::is_directory(p)
                             ? std::filesystem::weakly_canonical(p).filename().string()
                             : p.stem().string();
    }
    cfg.max_running = o.engine.max_seqs;
    cfg.max_queued = o.max_queued;
    cfg.request_timeout_s = o.request_timeout;
    cfg.max_connections = o.max_connections;
    // Each connection is a descriptor: raise the soft limit to the hard one (as nginx's
    // worker_rlimit_nofile does), and hold fewer connections than the limit allows.
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        if (rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
            getrlimit(RLIMIT_NOFILE, &rl);
        }
        const auto fit = static_cast<int64_t>(rl.rlim_cur > 256 ? rl.rlim_cur - 128 : 128);
        if (cfg.max_connections > fit) {
            log_warn(
                "serve: --max-connections {} exceeds the descriptor limit ({}); holding at "
                "most {}",
                cfg.max_connections, static_cast<uint64_t>(rl.rlim_cur), fit);
            cfg.max_connections = fit;
        }
    }
    if (cfg.api_key.empty() && cfg.host != "127.0.0.1" && cfg.host != "localhost" &&
        cfg.host != "::1") {
        log_warn(
            "serve: listening on {} WITHOUT an API key: anyone who can reach this address "
            "can use the model (pass --api-key)",
            cfg.host);
    }
    serve::Server server(service, mi, cfg, metrics);
    int port = server.bind();
    serve::EngineGauges g = service.gauges();
    log_info(
        "serve: '{}' on http://{}:{} ({} KV blocks of {} tokens, {} policy, max {} tokens "
        "per step)",
        cfg.model_name, cfg.host, port, g.kv_blocks_total, sc.engine.block_size,
        infer::to_string(sc.engine.scheduler.policy), sc.engine.scheduler.max_batch_tokens);
    serve::serve_until_signal(server, o.shutdown_timeout);
    if (lm.stream) report_stream(*lm.stream, service.gauges().steps, load_peak);
    log_info("serve: stopped");
    return 0;
}

}  // namespace zs::cli
