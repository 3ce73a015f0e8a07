// SafetensorsModel: the weights of a Hugging Face model directory, single-file or sharded.
//
// open_dir(dir) reads <dir>/model.safetensors when present, otherwise
// <dir>/model.safetensors.index.json ({"weight_map": {"<tensor>": "<shard file>"}}), opening every
// shard it names. The index must agree exactly with the shards: each shard exists (a plain file
// name inside dir, never a path), each listed tensor is in its shard, no tensor is in two shards,
// and no shard holds a tensor the index does not list. Errors are IoErrors naming the file and
// tensor. Immutable after open_dir(); any number of threads may read it.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"
#include "io/safetensors.h"

namespace zs::io {

class SafetensorsModel {
public:
    static SafetensorsModel open_dir(const std::string& dir);

    SafetensorsModel(SafetensorsModel&&) noexcept = default;
    SafetensorsModel& operator=(SafetensorsModel&&) noexcept = default;
    SafetensorsModel(const SafetensorsModel&) = delete;
    SafetensorsModel& operator=(const SafetensorsModel&) = delete;

    const std::string& dir() const { return dir_; }
    // Every tensor name, sorted.
    std::vector<std::string> names() const;
    size_t size() const { return where_.size(); }
    bool contains(std::string_view name) const { return where_.find(name) != where_.end(); }
    // IoError naming the directory when the tensor does not exist.
    const SafetensorsTensorInfo& info(std::string_view name) const;
    core::Tensor tensor(std::string_view name) const;
    // The shard holding `name`.
    const SafetensorsFile& shard_of(std::string_view name) const;
    const std::vector<SafetensorsFile>& shards() const { return shards_; }

private:
    SafetensorsModel() = default;

    std::string dir_;
    std::vector<SafetensorsFile> shards_;
    std::map<std::string, size_t, std::less<>> where_;  // tensor name -> shard
};

}  // namespace zs::io
