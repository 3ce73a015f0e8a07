#include "cli/model_loader.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string_view>

#include <nlohmann/json.hpp>

#include "backends/cpu/cpu_kernels.h"
#include "base/error.h"
#include "base/log.h"
#include "base/timer.h"
#include "io/gguf_tokenizer.h"
#include "io/json.h"

namespace zs::cli {

namespace fs = std::filesystem;

DType parse_dtype_flag(const std::string& s, const char* flag) {
    if (s == "f32" || s == "float32") return DType::f32;
    if (s == "bf16" || s == "bfloat16") return DType::bf16;
    ZS_THROW(ConfigError, "{}: '{}' is not a compute dtype (f32 or bf16)", flag, s);
}

namespace {

// HF generation_config.json: do_sample/temperature/top_k/top_p/repetition_penalty, eos ids.
void read_generation_config(const std::string& dir, LoadedModel& lm) {
    lm.generation_defaults.temperature = 0.0f;  // HF's generate() is greedy unless do_sample
    std::string path = dir + "/generation_config.json";
    if (!fs::exists(path)) return;
    nlohmann::json j = io::load_json(path);
    if (!j.is_object()) return;
    bool sample = j.value("do_sample", false);
    if (sample) {
        lm.generation_defaults.temperature = j.value("temperature", 1.0f);
        lm.generation_defaults.top_k = j.value("top_k", 50);
        lm.generation_defaults.top_p = j.value("top_p", 1.0f);
    }
    lm.generation_defaults.repetition_penalty = j.value("repetition_penalty", 1.0f);
    if (j.contains("eos_token_id")) {
        const auto& e = j["eos_token_id"];
        if (e.is_number_integer()) lm.extra_stop_ids.push_back(e.get<int32_t>());
        if (e.is_array()) {
            for (const auto& x : e) {
                if (x.is_number_integer()) lm.extra_stop_ids.push_back(x.get<int32_t>());
            }
        }
    }
}

}  // namespace

InferenceGroups inference_groups(int tp, int ep, comm::Communicator& world, const char* command) {
    ZS_CHECK_T(ConfigError, tp >= 1, "{} --tp: must be >= 1 (got {})", command, tp);
    ZS_CHECK_T(ConfigError, ep >= 1, "{} --ep: must be >= 1 (got {})", command, ep);
    const std::string flags = tp > 1 && ep > 1 ? fmt::format("--tp {} --ep {}", tp, ep)
                              : ep > 1         ? fmt::format("--ep {}", ep)
                                               : fmt::format("--tp {}", tp);
    const char* what = tp > 1 && ep > 1 ? "tensor- and expert-parallel"
                       : ep > 1         ? "expert-parallel"
                                        : "tensor-parallel";
    ZS_CHECK_T(ConfigError, world.size() == tp * ep,
               "{} {}: running on {} rank(s); {} inference needs exactly {} "
               "(zerospeed-run --num_procs {} zerospeed {} ... {})",
               command, flags, world.size(), what, tp * ep, tp * ep, command, flags);
    InferenceGroups g;
    if (tp > 1 && ep > 1) {
        g.owned_tp = world.split(world.rank() / tp, world.rank());
        g.owned_ep = world.split(world.rank() % tp, world.rank());
        g.tp = g.owned_tp.get();
        g.ep = g.owned_ep.get();
    } else if (tp > 1) {
        g.tp = &world;
    } else if (ep > 1) {
        g.ep = &world;
    }
    return g;
}

std::optional<zero::StreamConfig> offload_stream_config(const OffloadOptions& o, int64_t memory_cap,
                                                        int tp, int ep,
                                                        const comm::Communicator& world,
                                                        const char* command) {
    const bool offload = !o.weights.empty();
    ZS_CHECK_T(ConfigError, !offload || (tp == 1 && ep == 1 && world.size() == 1),
               "{} --offload-weights: one rank only, not with --tp / --ep (tensor- and "
               "expert-parallel ranks stream no weights: not implemented)",
               command);
    ZS_CHECK_T(ConfigError, offload || o.path.empty(),
               "--offload-path: only with --offload-weights nvme");
    if (!offload) return std::nullopt;
    zero::StreamConfig sc;
    sc.tier = o.weights == "cpu" ? zero::Tier::cpu : zero::Tier::nvme;
    sc.path = o.path;
    sc.prefetch = o.prefetch;
    sc.memory_cap = memory_cap;
    return sc;
}

int64_t parse_memory_size(const std::string& s, const char* flag) {
    size_t used = 0;
    double v = -1;
    try {
        v = std::stod(s, &used);
    } catch (const std::exception&) {
        used = 0;
    }
    std::string unit = s.substr(std::min(used, s.size()));
    if (unit.ends_with("iB") || unit.ends_with("ib")) unit.resize(unit.size() - 2);
    if (unit.size() == 2 && (unit[1] == 'B' || unit[1] == 'b')) unit.resize(1);
    double mul = -1;
    if (unit.empty() || unit == "B" || unit == "b") mul = 1;
    if (unit == "K" || unit == "k") mul = 1024.0;
    if (unit == "M" || unit == "m") mul = 1024.0 * 1024;
    if (unit == "G" || unit == "g") mul = 1024.0 * 1024 * 1024;
    if (unit == "T" || unit == "t") mul = 1024.0 * 1024 * 1024 * 1024;
    ZS_CHECK_T(ConfigError, used > 0 && v > 0 && mul > 0,
               "{}: '{}' is not a size (expected bytes or a number with K, M, G or T, e.g. 4G)",
               flag, s);
    return static_cast<int64_t>(v * mul);
}

LoadedModel load_model(const std::string& path, const std::string& dtype, bool weights_only,
                       comm::Communicator* tp, comm::Communicator* ep,
                       const zero::StreamConfig* stream) {
    Timer t;
    LoadedModel lm;
    lm.files = models::open_model(path);
    DType ct;
    if (dtype == "auto") {
        const DType saved = lm.files.config.torch_dtype;
        const bool reduced = saved == DType::bf16 || saved == DType::f16;
        const bool native = backends::cpu::matmul_routes().native_bf16;
        ct = reduced && native ? DType::bf16 : DType::f32;
        // ZS_QUANT_COMPUTE=f32: f32 activations over the quantized matrices (llama.cpp's), e.g.
        // to reproduce its perplexities on a bf16-native CPU (docs/GENERATION.md).
        if (const char* e = std::getenv("ZS_QUANT_COMPUTE"); e != nullptr && *e != '\0') {
            ZS_CHECK_T(ConfigError, std::string_view(e) == "f32" || std::string_view(e) == "auto",
                       "ZS_QUANT_COMPUTE: '{}' is not a compute dtype (auto or f32)", e);
            if (std::string_view(e) == "f32") ct = DType::f32;
        }
        log_info("compute dtype {}: the checkpoint is {}{}", to_string(ct),
                 reduced ? "reduced-precision" : "f32",
                 reduced ? (native ? " and this CPU computes bf16 natively"
                                   : ", but this CPU has no native bf16 (--dtype bf16 forces it)")
                         : " (--dtype bf16 for faster, less exact decoding)");
    } else {
        ct = parse_dtype_flag(dtype, "--dtype");
    }
    models::RunConfig rc{ct};
    rc.tp = tp;
    rc.ep = ep;
    lm.model = std::make_unique<models::Transformer>(lm.files.config, rc);
    // --dtype auto keeps a quantized GGUF's matrices quantized (the linear layers read the blocks);
    // an explicit f32 / bf16 dequantizes them, as before.
    std::vector<core::QTensor> quantized;
    if (dtype == "auto" && !stream) {
        quantized = models::load_quantized_weights(*lm.model, *lm.files.weights);
    }
    const auto n_quantized = std::count_if(quantized.begin(), quantized.end(),
                                           [](const core::QTensor& q) { return q.defined(); });
    if (stream) {
        lm.stream = std::make_unique<zero::WeightStream>(*lm.model, *lm.files.weights, *stream);
    } else if (n_quantized > 0) {
        std::vector<models::ParamId> dense_too;  // the tied embedding's table is read by rows
        const models::ParamId head = lm.model->lm_head_param();
        if (lm.model->layout().param(head).group == lm.model->embed_group()) {
            dense_too.push_back(head);
        }
        size_t bytes = 0;
        for (const core::QTensor& q : quantized) bytes += q.defined() ? q.nbytes() : 0;
        log_info(
            "{} weight matrices kept block-quantized ({:.1f} MB; --dtype f32 or bf16 "
            "dequantizes them)",
            n_quantized, static_cast<double>(bytes) / 1e6);
        lm.params = std::make_unique<models::DenseParams>(lm.model->layout(), ct,
                                                          std::move(quantized), dense_too);
    } else {
        lm.params = std::make_unique<models::DenseParams>(lm.model->layout(), ct, false);
    }
    if (lm.params) {
        std::vector<std::string> unused =
            models::load_hf_weights(*lm.model, *lm.params, *lm.files.weights);
        for (const std::string& n : unused) log_debug("{}: tensor '{}' is not used", path, n);
        lm.params->bind(lm.model->binding());
    }
    if (!weights_only) {
        if (lm.files.gguf) {
            lm.tokenizer = std::make_unique<io::Tokenizer>(io::tokenizer_from_gguf(*lm.files.gguf));
            lm.generation_defaults.temperature = 0.0f;
        } else {
            lm.tokenizer = std::make_unique<io::Tokenizer>(io::Tokenizer::load(path));
            read_generation_config(path, lm);
            std::string tc = path + "/tokenizer_config.json";
            if (fs::exists(tc)) {
                nlohmann::json j = io::load_json(tc);
                if (j.is_object() && j.contains("chat_template") &&
                    j["chat_template"].is_string()) {
                    lm.chat_template = j["chat_template"].get<std::string>();
                }
            }
        }
    }
    const models::ModelConfig& c = lm.model->config();
    log_info("loaded {} ({}, {:.1f} M parameters, {}{}) in {:.1f} s", path, to_string(c.arch),
             static_cast<double>(c.n_params()) / 1e6, to_string(ct),
             (tp && tp->size() > 1
                  ? fmt::format(", tensor-parallel shard {} of {}", tp->rank(), tp->size())
                  : std::string()) +
                 (ep && ep->size() > 1 ? fmt::format(", experts {} of {} expert-parallel shards",
                                                     ep->rank(), ep->size())
                                       : std::string()),
             t.seconds());
    return lm;
}

}  // namespace zs::cli
