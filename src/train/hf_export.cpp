#include "train/hf_export.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/log.h"
#include "io/atomic_file.h"
#include "io/tokenizer.h"
#include "io/tokenizer_writer.h"

namespace zs::train {

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

}  // namespace zs::train
