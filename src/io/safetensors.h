// SafetensorsFile: a strictly validated, zero-copy reader of one .safetensors file.
//
// Layout: an 8-byte little-endian header size N, N bytes of UTF-8 JSON
//   {"__metadata__": {str: str}, "<name>": {"dtype": "F32", "shape": [2, 3],
//    "data_offsets": [BEGIN, END]}, ...}
// then the data buffer; offsets are relative to its start (byte 8 + N). open() applies the rules
// of the reference implementation (safetensors/src/tensor.rs; /work/shared/RELIABILITY.md) and
// rejects duplicate keys: every error is an IoError "<file>: <Rule>: tensor '<name>': <detail>",
// where Rule is HeaderTooSmall, HeaderTooLarge, InvalidHeaderLength, InvalidHeader (UTF-8),
// InvalidHeaderDeserialization (JSON syntax or structure), InvalidOffset, ValidationOverflow,
// MisalignedSlice, TensorInvalidInfo or MetadataIncompleteBuffer.
//
// tensor(name) returns a view over the mapping (copy-on-write: writing to it never reaches the
// file) that keeps the mapping alive; a tensor whose bytes are not aligned for its dtype is copied.
// Immutable after open(); any number of threads may read it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/tensor.h"

namespace zs::io {

// Every dtype the format defines (safetensors' Dtype). Only F32, F16, BF16, I8, I32 and I64 can
// be read as tensors; the others parse and validate but tensor() rejects them.
enum class SafetensorsDType : uint8_t {
    boolean,
    f4,
    f6_e2m3,
    f6_e3m2,
    u8,
    i8,
    f8_e5m2,
    f8_e4m3,
    f8_e8m0,
    f8_e4m3fnuz,
    f8_e5m2fnuz,
    i16,
    u16,
    f16,
    bf16,
    i32,
    u32,
    f32,
    c64,
    f64,
    i64,
    u64
};

// The file's spelling: "BOOL", "F32", "F8_E4M3", ...
const char* to_string(SafetensorsDType t);
std::optional<SafetensorsDType> safetensors_dtype_from_string(std::string_view s);
int bit_size(SafetensorsDType t);
std::optional<core::DType> to_core_dtype(SafetensorsDType t);
SafetensorsDType to_safetensors_dtype(core::DType t);

struct SafetensorsTensorInfo {
    std::string name;
    SafetensorsDType dtype = SafetensorsDType::f32;
    std::vector<int64_t> shape;  // row-major; may be empty (rank 0)
    uint64_t begin = 0;          // data_offsets, relative to the data buffer
    uint64_t end = 0;
    uint64_t nbytes() const { return end - begin; }
};

inline constexpr uint64_t kSafetensorsMaxHeaderSize = 100'000'000;

class SafetensorsFile {
public:
    // mmap and validate `path`.
    static SafetensorsFile open(const std::string& path);
    // Validate bytes already in memory; `keep_alive` owns them (tensors share it), `name` stands
    // for the file in messages. Tensors view `bytes`, so callers may write through them.
    static SafetensorsFile from_memory(std::span<uint8_t> bytes, std::shared_ptr<void> keep_alive,
                                       std::string name);

    SafetensorsFile(SafetensorsFile&&) noexcept = default;
    SafetensorsFile& operator=(SafetensorsFile&&) noexcept = default;
    SafetensorsFile(const SafetensorsFile&) = delete;
    SafetensorsFile& operator=(const SafetensorsFile&) = delete;

    const std::string& path() const { return path_; }
    // All tensors, ordered by data offset.
    const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }
    const SafetensorsTensorInfo* find(std::string_view name) const;
    bool contains(std::string_view name) const { return find(name) != nullptr; }
    // The "__metadata__" map (empty when absent).
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    uint64_t header_size() const { return header_size_; }  // N
    uint64_t data_offset() const { return 8 + header_size_; }

    // The tensor as a core::Tensor (see the file comment). IoError when the name is unknown, the
    // dtype is not readable, or the rank exceeds core::kMaxDims.
    core::Tensor tensor(std::string_view name) const;
    // The tensor's raw little-endian bytes in the file.
    std::span<const uint8_t> raw_bytes(std::string_view name) const;

private:
    SafetensorsFile() = default;
    const SafetensorsTensorInfo& require(std::string_view name) const;

    std::string path_;
    std::shared_ptr<core::Buffer> buffer_;  // the whole file
    uint64_t header_size_ = 0;
    std::vector<SafetensorsTensorInfo> tensors_;
    std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
    std::map<std::string, std::string> metadata_;
};

}  // namespace zs::io
