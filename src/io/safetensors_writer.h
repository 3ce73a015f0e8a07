// Writing .safetensors files: one file, or a Hugging Face style sharded set with an index.
//
// save_safetensors writes the header (JSON, "__metadata__" first, then tensors in the caller's
// order, padded with spaces so the data starts 8-byte aligned) and the data, laid out by
// decreasing element size so that every tensor is aligned for its dtype. Non-contiguous and
// device tensors are copied to contiguous host memory first. Files are written atomically
// (AtomicFile: "<path>.tmp", fsync, rename, directory fsync).
//
// The sharded writer fills shards greedily in the caller's order up to max_shard_bytes (a tensor
// larger than the limit gets a shard of its own) and names them like transformers does:
//   <dir>/model-00001-of-00003.safetensors ... + <dir>/model.safetensors.index.json
//   index: {"metadata": {"total_size": <data bytes>}, "weight_map": {"<tensor>": "<shard>"}}
// A single shard is written as <dir>/model.safetensors without an index. The index is written
// last, so a reader never finds an index naming shards that are not complete; write into a fresh
// directory when an older checkpoint in the same place must stay readable.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace zs::io {

struct NamedTensor {
    std::string name;
    core::Tensor tensor;
};

using SafetensorsMetadata = std::map<std::string, std::string>;

// Raises IoError on duplicate or reserved ("__metadata__") names, names or metadata that are not
// UTF-8, undefined tensors, or any write failure (naming the file).
void save_safetensors(const std::string& path, std::span<const NamedTensor> tensors,
                      const SafetensorsMetadata& metadata = {});

// Streaming: the same file from specs (name, dtype, shape) known up front, each tensor's data
// asked of `produce(i)` once, in the file's data order (decreasing element size, stable), written
// and dropped before the next is asked for: memory is one tensor at a time (checkpoints of
// offloaded runs). A produced tensor of another dtype or element count is an IoError.
struct TensorSpec {
    std::string name;
    core::DType dtype = core::DType::f32;
    core::Shape shape;
};
void save_safetensors_streamed(const std::string& path, std::span<const TensorSpec> specs,
                               const std::function<core::Tensor(size_t)>& produce,
                               const SafetensorsMetadata& metadata = {});

// Creates `dir` if needed. Returns the files written: the shards in order, then the index (when
// there is more than one shard). `metadata` goes into every shard's "__metadata__".
std::vector<std::string> save_safetensors_sharded(const std::string& dir,
                                                  std::span<const NamedTensor> tensors,
                                                  uint64_t max_shard_bytes,
                                                  const SafetensorsMetadata& metadata = {});

// The sharded set written one shard at a time, for writers that hold one shard's tensors at a
// time (a model exported group by group): write(i, ...) writes shard i of n as
// <dir>/model-<i+1>-of-<n>.safetensors, finish() the index, last. `dir` must exist. Errors as
// save_safetensors.
class SafetensorsShardWriter {
public:
    SafetensorsShardWriter(std::string dir, size_t n_shards) : dir_(std::move(dir)), n_(n_shards) {}
    // Writes shard `i` (< n_shards) and returns its path; no tensors: no file, "".
    std::string write(size_t i, std::span<const NamedTensor> tensors,
                      const SafetensorsMetadata& metadata = {});
    // Writes the index of the shards written so far; returns its path.
    std::string finish() const;
    uint64_t total_bytes() const { return total_; }          // the shards' data bytes
    size_t n_tensors() const { return weight_map_.size(); }  // distinct names written

private:
    std::string dir_;
    size_t n_;
    uint64_t total_ = 0;
    std::map<std::string, std::string> weight_map_;  // tensor -> shard file
};

inline constexpr const char* kSafetensorsSingleFile = "model.safetensors";
inline constexpr const char* kSafetensorsIndexFile = "model.safetensors.index.json";

}  // namespace zs::io
