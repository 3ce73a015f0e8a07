// Element types, their sizes and names, and the 16-bit float storage types.
//
// bf16 and f16 are storage-only: arithmetic happens in f32 (see core/half.h for conversions).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace zs::core {

enum class DType : uint8_t { f32, bf16, f16, i8, i32, i64 };
inline constexpr int kNumDTypes = 6;

struct bf16 {
    uint16_t bits;
};
struct f16 {
    uint16_t bits;
};

constexpr size_t dtype_size(DType t) {
    switch (t) {
        case DType::f32:
            return 4;
        case DType::bf16:
            return 2;
        case DType::f16:
            return 2;
        case DType::i8:
            return 1;
        case DType::i32:
            return 4;
        case DType::i64:
            return 8;
    }
    return 0;
}

constexpr bool is_floating(DType t) {
    return t == DType::f32 || t == DType::bf16 || t == DType::f16;
}

// "f32", "bf16", ...
const char* to_string(DType t);
// Accepts our names and the safetensors/HF spellings ("F32", "BF16", "float32", "bfloat16", ...).
// Throws zs::Error naming `what` (e.g. a file and field) for anything else.
DType dtype_from_string(std::string_view s, std::string_view what = "dtype");

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
    return DType::f32;
}
template <>
constexpr DType dtype_of<bf16>() {
    return DType::bf16;
}
template <>
constexpr DType dtype_of<f16>() {
    return DType::f16;
}
template <>
constexpr DType dtype_of<int8_t>() {
    return DType::i8;
}
template <>
constexpr DType dtype_of<int32_t>() {
    return DType::i32;
}
template <>
constexpr DType dtype_of<int64_t>() {
    return DType::i64;
}

}  // namespace zs::core
