#include "io/safetensors_writer.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io/utf8.h"

namespace zs::io {

namespace {

void put_le64(uint8_t* p, uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// The names a file may hold (unique, valid UTF-8, not the header's reserved key) and metadata
// that is valid UTF-8; `name(i)` gives the i-th of `n` tensor names.
template <typename NameOf>
void check_names(const std::string& path, size_t n, NameOf name,
                 const SafetensorsMetadata& metadata) {
    std::set<std::string_view> names;
    for (size_t i = 0; i < n; ++i) {
        const std::string& nm = name(i);
        ZS_CHECK_T(IoError, nm != "__metadata__",
                   "{}: '__metadata__' is reserved and cannot name a tensor", path);
        ZS_CHECK_T(IoError, is_valid_utf8(nm), "{}: a tensor name is not valid UTF-8", path);
        ZS_CHECK_T(IoError, names.insert(nm).second, "{}: duplicate tensor name '{}'", path, nm);
    }
    for (const auto& [k, v] : metadata) {
        ZS_CHECK_T(IoError, is_valid_utf8(k) && is_valid_utf8(v),
                   "{}: metadata key or value is not valid UTF-8", path);
    }
}

void check_inputs(const std::string& path, std::span<const NamedTensor> tensors,
                  const SafetensorsMetadata& metadata) {
    for (const NamedTensor& nt : tensors) {
        ZS_CHECK_T(IoError, nt.tensor.defined(), "{}: tensor '{}' is undefined", path, nt.name);
    }
    check_names(
        path, tensors.size(), [&](size_t i) -> const std::string& { return tensors[i].name; },
        metadata);
}

}  // namespace

void save_safetensors_streamed(const std::string& path, std::span<const TensorSpec> specs,
                               const std::function<core::Tensor(size_t)>& produce,
                               const SafetensorsMetadata& metadata) {
    check_names(
        path, specs.size(), [&](size_t i) -> const std::string& { return specs[i].name; },
        metadata);
    auto nbytes = [&](size_t i) {
        return static_cast<uint64_t>(specs[i].shape.numel()) * core::dtype_size(specs[i].dtype);
    };
    // Data layout: decreasing element size (stable), so every tensor stays aligned.
    std::vector<size_t> order(specs.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return core::dtype_size(specs[a].dtype) > core::dtype_size(specs[b].dtype);
    });
    std::vector<uint64_t> begin(specs.size());
    uint64_t offset = 0;
    for (size_t i : order) {
        begin[i] = offset;
        offset += nbytes(i);
    }
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty()) {
        nlohmann::ordered_json m = nlohmann::ordered_json::object();
        for (const auto& [k, v] : metadata) m[k] = v;
        header["__metadata__"] = std::move(m);
    }
    for (size_t i = 0; i < specs.size(); ++i) {
        nlohmann::ordered_json shape = nlohmann::ordered_json::array();
        for (int64_t d : specs[i].shape) shape.push_back(d);
        header[specs[i].name] = {
            {"dtype", to_string(to_safetensors_dtype(specs[i].dtype))},
            {"shape", std::move(shape)},
            {"data_offsets", {begin[i], begin[i] + nbytes(i)}},
        };
    }
    std::string json = header.dump();
    json.append((8 - json.size() % 8) % 8, ' ');  // 8 + N stays a multiple of 8
    AtomicFile f(path);
    uint8_t n[8];
    put_le64(n, json.size());
    f.write(n, 8);
    f.write(json);
    for (size_t i : order) {
        core::Tensor t = produce(i);
        ZS_CHECK_T(
            IoError,
            t.defined() && t.dtype() == specs[i].dtype && t.numel() == specs[i].shape.numel(),
            "{}: tensor '{}' was declared {} [{} elements] but produced {}", path, specs[i].name,
            core::to_string(specs[i].dtype), specs[i].shape.numel(),
            t.defined() ? t.str() : std::string("undefined"));
        if (!t.device().is_cpu()) t = t.to(core::Device::cpu());
        if (!t.is_contiguous()) t = t.contiguous();
        if (t.nbytes() > 0) f.write(t.data_ptr(), t.nbytes());
    }
    f.commit();
}

void save_safetensors(const std::string& path, std::span<const NamedTensor> tensors,
                      const SafetensorsMetadata& metadata) {
    check_inputs(path, tensors, metadata);
    std::vector<TensorSpec> specs;
    for (const NamedTensor& nt : tensors)
        specs.push_back({nt.name, nt.tensor.dtype(), nt.tensor.shape()});
    save_safetensors_streamed(
        path, specs, [&](size_t i) { return tensors[i].tensor; }, metadata);
}

std::vector<std::string> save_safetensors_sharded(const std::string& dir,
                                                  std::span<const NamedTensor> tensors,
                                                  uint64_t max_shard_bytes,
                                                  const SafetensorsMetadata& metadata) {
    ZS_CHECK_T(IoError, max_shard_bytes > 0, "{}: max shard size must be positive", dir);
    check_inputs(dir, tensors, metadata);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    ZS_CHECK_T(IoError, !ec, "{}: cannot create directory: {}", dir, ec.message());

    // Greedy split in the caller's order.
    std::vector<std::vector<NamedTensor>> shards;
    uint64_t shard_bytes = 0;
    for (const NamedTensor& nt : tensors) {
        uint64_t b = nt.tensor.nbytes();
        if (shards.empty() || (shard_bytes > 0 && shard_bytes + b > max_shard_bytes)) {
            shards.emplace_back();
            shard_bytes = 0;
        }
        shards.back().push_back(nt);
        shard_bytes += b;
    }
    if (shards.empty()) shards.emplace_back();

    std::vector<std::string> written;
    if (shards.size() == 1) {
        std::string path = dir + "/" + kSafetensorsSingleFile;
        save_safetensors(path, shards[0], metadata);
        written.push_back(path);
        return written;
    }
    SafetensorsShardWriter writer(dir, shards.size());
    for (size_t s = 0; s < shards.size(); ++s)
        written.push_back(writer.write(s, shards[s], metadata));
    written.push_back(writer.finish());
    return written;
}

std::string SafetensorsShardWriter::write(size_t i, std::span<const NamedTensor> tensors,
                                          const SafetensorsMetadata& metadata) {
    ZS_ASSERT(i < n_);
    if (tensors.empty()) return "";
    const std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n_);
    const std::string path = dir_ + "/" + file;
    save_safetensors(path, tensors, metadata);
    for (const NamedTensor& nt : tensors) {
        weight_map_[nt.name] = file;
        total_ += nt.tensor.nbytes();
    }
    return path;
}

std::string SafetensorsShardWriter::finish() const {
    nlohmann::json weight_map = nlohmann::json::object();
    for (const auto& [name, file] : weight_map_) weight_map[name] = file;
    const nlohmann::json index = {{"metadata", {{"total_size", total_}}},
                                  {"weight_map", std::move(weight_map)}};
    const std::string path = dir_ + "/" + kSafetensorsIndexFile;
    write_file_atomic(path, index.dump(2) + "\n");
    return path;
}

}  // namespace zs::io
