#include "io/safetensors_model.h"

#include <filesystem>

#include "base/error.h"
#include "io/json.h"
#include "io/safetensors_writer.h"

namespace zs::io {

namespace {

bool is_regular_file(const std::string& path) {
    std::error_code ec;
    return std::filesystem::is_regular_file(path, ec);
}

// A shard name from an index must name a file directly inside the model directory.
bool is_plain_file_name(const std::string& s) {
    return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
           s.find('\\') == std::string::npos && s.find('\0') == std::string::npos;
}

}  // namespace

SafetensorsModel SafetensorsModel::open_dir(const std::string& dir) {
    SafetensorsModel m;
    m.dir_ = dir;
    const std::string single = dir + "/" + kSafetensorsSingleFile;
    const std::string index_path = dir + "/" + kSafetensorsIndexFile;

    if (is_regular_file(single)) {
        m.shards_.push_back(SafetensorsFile::open(single));
        for (const SafetensorsTensorInfo& t : m.shards_[0].tensors()) m.where_.emplace(t.name, 0);
        return m;
    }
    ZS_CHECK_T(IoError, is_regular_file(index_path),
               "{}: no model weights: expected {} or {} in this directory", dir,
               kSafetensorsSingleFile, kSafetensorsIndexFile);

    nlohmann::json index = load_json(index_path);
    JsonReader root(index, index_path, JsonErrorKind::io);
    JsonReader weight_map = root.get_object("weight_map");

    // Open each distinct shard once, in name order.
    std::map<std::string, size_t> shard_ids;
    std::map<std::string, std::string> listed;  // tensor -> shard file
    for (const std::string& name : weight_map.keys()) {
        std::string file = weight_map.get_string(name);
        if (!is_plain_file_name(file)) {
            weight_map.fail(name, fmt::format("shard '{}' is not a plain file name", file));
        }
        listed.emplace(name, file);
        shard_ids.emplace(file, 0);
    }
    for (auto& [file, id] : shard_ids) {
        std::string path = dir + "/" + file;
        if (!is_regular_file(path)) {
            ZS_THROW(IoError, "{}: shard '{}' does not exist in {}", index_path, file, dir);
        }
        id = m.shards_.size();
        m.shards_.push_back(SafetensorsFile::open(path));
    }
    for (const auto& [name, file] : listed) {
        size_t id = shard_ids.at(file);
        ZS_CHECK_T(IoError, m.shards_[id].contains(name),
                   "{}: tensor '{}' is listed in shard '{}', which does not contain it", index_path,
                   name, file);
    }
    for (size_t id = 0; id < m.shards_.size(); ++id) {
        for (const SafetensorsTensorInfo& t : m.shards_[id].tensors()) {
            auto [it, inserted] = m.where_.emplace(t.name, id);
            ZS_CHECK_T(IoError, inserted, "{}: tensor '{}' is in two shards: {} and {}", index_path,
                       t.name, m.shards_[it->second].path(), m.shards_[id].path());
            auto l = listed.find(t.name);
            ZS_CHECK_T(IoError, l != listed.end(),
                       "{}: tensor '{}' in shard {} is not listed in the weight_map", index_path,
                       t.name, m.shards_[id].path());
        }
    }
    return m;
}

std::vector<std::string> SafetensorsModel::names() const {
    std::vector<std::string> out;
    out.reserve(where_.size());
    for (const auto& [name, id] : where_) out.push_back(name);
    return out;
}

const SafetensorsFile& SafetensorsModel::shard_of(std::string_view name) const {
    auto it = where_.find(name);
    ZS_CHECK_T(IoError, it != where_.end(), "{}: the model has no tensor named '{}'", dir_, name);
    return shards_[it->second];
}

const SafetensorsTensorInfo& SafetensorsModel::info(std::string_view name) const {
    return *shard_of(name).find(name);
}

core::Tensor SafetensorsModel::tensor(std::string_view name) const {
    return shard_of(name).tensor(name);
}

}  // namespace zs::io
