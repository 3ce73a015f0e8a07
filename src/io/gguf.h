// GgufFile: a strictly validated reader of GGUF files (llama.cpp's format, versions 2 and 3).
//
// Layout: "GGUF" | u32 version | u64 n_tensors | u64 n_kv | n_kv x (string key, u32 type, value)
// | n_tensors x (string name, u32 n_dims, i64 ne[n_dims], u32 ggml type, u64 offset) | padding to
// `general.alignment` (default 32) | tensor data. Strings are u64 length + bytes; arrays are
// u32 element type + u64 count + elements. ne[] is innermost-first, so shape = reverse(ne):
// a llama weight with ne = [in, out] is a row-major [out, in] tensor.
//
// open() follows the checklist in /work/shared/RELIABILITY.md: every read is bounded by the bytes
// remaining, strings are at most 1 GiB, array sizes are checked against the bytes left before
// anything is allocated, arrays of arrays and empty or duplicate keys are rejected,
// general.alignment is a UINT32 power of two, tensor names are < 64 bytes and unique, n_dims <= 4,
// element counts cannot overflow, the type is known, rows are whole blocks, offsets equal the
// running padded sum, and all tensor data lies inside the file. Errors are IoErrors naming the
// file, the key or tensor, and the broken rule. Immutable after open(); thread-safe to read.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "core/tensor.h"
#include "io/ggml_type.h"

namespace zs::io {

enum class GgufType : uint32_t {
    u8 = 0,
    i8 = 1,
    u16 = 2,
    i16 = 3,
    u32 = 4,
    i32 = 5,
    f32 = 6,
    boolean = 7,
    string = 8,
    array = 9,
    u64 = 10,
    i64 = 11,
    f64 = 12
};
const char* to_string(GgufType t);  // the spec's names: "UINT8", ..., "ARRAY", "FLOAT64"

// An array's elements (never an array of arrays). Alternative k holds GgufType k for k < 9 and
// GgufType k + 1 after (there is no array alternative).
using GgufArray = std::variant<std::vector<uint8_t>, std::vector<int8_t>, std::vector<uint16_t>,
                               std::vector<int16_t>, std::vector<uint32_t>, std::vector<int32_t>,
                               std::vector<float>, std::vector<bool>, std::vector<std::string>,
                               std::vector<uint64_t>, std::vector<int64_t>, std::vector<double>>;
// A metadata value; alternative k holds GgufType k.
using GgufValue = std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool,
                               std::string, GgufArray, uint64_t, int64_t, double>;

GgufType type_of(const GgufValue& v);
GgufType element_type(const GgufArray& a);
size_t array_size(const GgufArray& a);
// "UINT32", "STRING", "ARRAY[FLOAT32]"
std::string describe_type(const GgufValue& v);

struct GgufKv {
    std::string key;
    GgufValue value;
};

struct GgufTensorInfo {
    std::string name;
    GgmlType type = GgmlType::f32;
    std::vector<int64_t> ne;  // innermost first, as stored
    uint64_t offset = 0;      // relative to the data section
    uint64_t nbytes = 0;
    int64_t numel() const;
    core::Shape shape() const;  // reverse(ne), row-major
};

inline constexpr uint64_t kGgufMaxString = uint64_t{1} << 30;
inline constexpr uint32_t kGgufDefaultAlignment = 32;
inline constexpr size_t kGgufMaxName = 64;  // names must be shorter
inline constexpr uint32_t kGgufMaxDims = 4;

class GgufFile {
public:
    static GgufFile open(const std::string& path);
    // Validate bytes in memory; `keep_alive` owns them; `name` stands for the file in messages.
    static GgufFile from_memory(std::span<uint8_t> bytes, std::shared_ptr<void> keep_alive,
                                std::string name);

    GgufFile(GgufFile&&) noexcept = default;
    GgufFile& operator=(GgufFile&&) noexcept = default;
    GgufFile(const GgufFile&) = delete;
    GgufFile& operator=(const GgufFile&) = delete;

    const std::string& path() const { return path_; }
    uint32_t version() const { return version_; }
    uint32_t alignment() const { return alignment_; }
    uint64_t data_offset() const { return data_offset_; }

    // ---- metadata ----
    const std::vector<GgufKv>& metadata() const { return kv_; }  // in file order
    const GgufValue* find(std::string_view key) const;
    bool has(std::string_view key) const { return find(key) != nullptr; }
    // The value of `key` as T: one of GgufValue's alternatives (uint32_t, std::string, ...) or
    // one of GgufArray's (std::vector<float>, std::vector<std::string>, ...). IoError naming the
    // key when it is missing or holds another type.
    template <class T>
    const T& get(std::string_view key) const;
    template <class T>
    T get_or(std::string_view key, T fallback) const {
        return has(key) ? get<T>(key) : fallback;
    }
    const std::string& get_string(std::string_view key) const { return get<std::string>(key); }
    uint32_t get_u32(std::string_view key) const { return get<uint32_t>(key); }
    float get_f32(std::string_view key) const { return get<float>(key); }
    bool get_bool(std::string_view key) const { return get<bool>(key); }
    // Any integer type whose value fits in int64 (GGUF writers differ on u32/i32/u64).
    int64_t get_int(std::string_view key) const;
    // FLOAT32 or FLOAT64.
    double get_float(std::string_view key) const;

    // ---- tensors ----
    const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }  // in file order
    const GgufTensorInfo* find_tensor(std::string_view name) const;
    // The tensor as `out` (f32, bf16 or f16; or the matching integer dtype for I8/I32/I64 data),
    // shape reverse(ne). Quantized types are dequantized; data already in `out`'s dtype and
    // aligned is a zero-copy (copy-on-write) view of the file. NotSupported for types that cannot
    // be dequantized; IoError for unknown names and impossible conversions.
    core::Tensor tensor(std::string_view name, core::DType out = core::DType::f32) const;
    std::span<const uint8_t> raw_bytes(std::string_view name) const;

private:
    GgufFile() = default;
    const GgufValue& require(std::string_view key) const;
    const GgufTensorInfo& require_tensor(std::string_view name) const;
    [[noreturn]] void type_mismatch(std::string_view key, const std::string& expected) const;

    template <class T, class V>
    struct index_in;
    template <class T, class... Ts>
    struct index_in<T, std::variant<Ts...>> {
        static constexpr bool found = (std::is_same_v<T, Ts> || ...);
        static constexpr size_t value = [] {
            constexpr bool same[] = {std::is_same_v<T, Ts>...};
            size_t i = 0;
            while (i < sizeof...(Ts) && !same[i]) ++i;
            return i;
        }();
    };

    std::string path_;
    std::shared_ptr<core::Buffer> buffer_;  // the whole file
    uint32_t version_ = 0;
    uint32_t alignment_ = kGgufDefaultAlignment;
    uint64_t data_offset_ = 0;
    std::vector<GgufKv> kv_;
    std::map<std::string, size_t, std::less<>> kv_index_;
    std::vector<GgufTensorInfo> tensors_;
    std::map<std::string, size_t, std::less<>> tensor_index_;
};

template <class T>
const T& GgufFile::get(std::string_view key) const {
    const GgufValue& v = require(key);
    if constexpr (index_in<T, GgufValue>::found) {
        if (const T* p = std::get_if<T>(&v)) return *p;
        type_mismatch(key, to_string(static_cast<GgufType>(index_in<T, GgufValue>::value)));
    } else {
        static_assert(index_in<T, GgufArray>::found, "not a GGUF value or array type");
        constexpr size_t k = index_in<T, GgufArray>::value;
        if (const GgufArray* a = std::get_if<GgufArray>(&v)) {
            if (const T* p = std::get_if<T>(a)) return *p;
        }
        type_mismatch(
            key, std::string("ARRAY[") + to_string(static_cast<GgufType>(k < 9 ? k : k + 1)) + "]");
    }
}

// Undo the row permutation llama.cpp's convert_hf_to_gguf.py applies to attn_q / attn_k weights
// (and biases), so rotary embeddings see Hugging Face's rotate-half layout again.
//   convert: W.reshape(n_heads, 2, HS/2, ...).swapaxes(1, 2).reshape(W.shape)
//   i.e. gguf_row[h*HS + 2*i + j] = hf_row[h*HS + j*HS/2 + i]   (i < HS/2, j in {0, 1})
//   this returns hf with hf_row[h*HS + j*HS/2 + i] = gguf_row[h*HS + 2*i + j].
// w: [NH*HS, ...] (rows are dimension 0; any trailing dims, any dtype). Pass the number of KV
// heads for attn_k when it differs from the query heads. Returns a new contiguous tensor. Raises
// ShapeError when dimension 0 is not n_heads * an even head size.
core::Tensor unpermute_llama_qk(const core::Tensor& w, int64_t n_heads);

}  // namespace zs::io
