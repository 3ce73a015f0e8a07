#include "cli/hf_export.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/log.h"
#include "io/atomic_file.h"
#include "io/safetensors_writer.h"
#include "io/tokenizer.h"
#include "io/tokenizer_writer.h"
#include "models/sources.h"
#include "models/transformer.h"
#include "models/weights.h"

namespace zs::cli {

namespace fs = std::filesystem;

namespace {

// Copies `name` from directory `from` to `to` when it exists there; true when copied.
bool copy_if_present(const fs::path& from, const std::string& name, const std::string& to) {
    std::error_code ec;
    if (!fs::is_regular_file(from / name, ec)) return false;
    io::write_file_atomic(to + "/" + name, io::read_file((from / name).string()));
    return true;
}

void write_tokenizer(const std::string& src, const std::string& dir) {
    std::error_code ec;
    const fs::path p(src);
    if (fs::is_directory(p, ec)) {
        int copied = 0;
        for (const char* f : {"tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt"})
            copied += copy_if_present(p, f, dir);
        if (copied > 0) {
            for (const char* f :
                 {"tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"})
                copy_if_present(p, f, dir);
            return;
        }
    } else if (p.filename() == "tokenizer.json") {
        copy_if_present(p.parent_path(), "tokenizer.json", dir);
        copy_if_present(p.parent_path(), "tokenizer_config.json", dir);
        return;
    } else if (p.extension() == ".model") {  // SentencePiece: loaders read it as it is
        io::write_file_atomic(dir + "/tokenizer.model", io::read_file(src));
        return;
    }
    io::save_hf_tokenizer(io::load_tokenizer_spec(src), dir);
}

}  // namespace

void write_hf_extras(const std::string& tokenizer_source, const models::ModelConfig& mc,
                     const std::string& dir) {
    fs::create_directories(dir);
    if (tokenizer_source.empty()) {
        log_warn("{}: no tokenizer known for this model; the directory has none (give --tokenizer)",
                 dir);
    } else {
        try {
            write_tokenizer(tokenizer_source, dir);
        } catch (const NotSupported& e) {
            log_warn("{}: tokenizer not exported: {}", dir, e.what());
        }
    }
    std::error_code ec;
    if (fs::is_directory(tokenizer_source, ec) &&
        copy_if_present(tokenizer_source, "generation_config.json", dir)) {
        return;
    }
    nlohmann::json g = {{"_from_model_config", true}};
    if (mc.bos_token_id >= 0) g["bos_token_id"] = mc.bos_token_id;
    if (mc.eos_token_ids.size() == 1) g["eos_token_id"] = mc.eos_token_ids[0];
    if (mc.eos_token_ids.size() > 1) g["eos_token_id"] = mc.eos_token_ids;
    io::write_file_atomic(dir + "/generation_config.json", g.dump(2) + "\n");
}

int convert_gguf_to_hf(const ConvertOptions& o) {
    ZS_CHECK_T(ConfigError, o.dtype == "f32" || o.dtype == "bf16",
               "convert --to hf: --dtype '{}' is not supported (f32, bf16)", o.dtype);
    const core::DType dt = o.dtype == "bf16" ? core::DType::bf16 : core::DType::f32;
    models::ModelFiles files = models::open_model(o.checkpoint);
    models::ModelConfig mc = files.config;
    mc.torch_dtype = dt;
    models::Transformer model(mc, models::RunConfig{});  // layout only: allocates no weights
    fs::create_directories(o.output);
    const int G = model.layout().n_groups();
    nlohmann::json weight_map = nlohmann::json::object();
    int64_t total = 0;
    for (int g = 0; g < G; ++g) {  // one group in memory at a time
        const core::Tensor full = models::load_hf_group(model, g, *files.weights);
        std::vector<io::NamedTensor> tensors;
        for (auto& [name, t] : models::export_hf_group(model, g, full)) {
            core::Tensor w = t.to(dt).contiguous();
            total += static_cast<int64_t>(w.nbytes());
            tensors.push_back({name, w});
        }
        if (tensors.empty()) continue;
        std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", g + 1, G);
        io::save_safetensors(o.output + "/" + file, tensors, {{"format", "pt"}});
        for (const auto& t : tensors) weight_map[t.name] = file;
    }
    nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    io::write_file_atomic(o.output + "/model.safetensors.index.json", index.dump(2) + "\n");
    io::write_file_atomic(o.output + "/config.json", models::to_hf_config_json(mc));
    write_hf_extras(o.checkpoint, mc, o.output);
    log_info("wrote {} ({} tensors, {}, {}) from {}", o.output, weight_map.size(), o.dtype,
             core::format_bytes(total), o.checkpoint);
    return 0;
}

}  // namespace zs::cli
