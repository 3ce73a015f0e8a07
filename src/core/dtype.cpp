#include "core/dtype.h"

#include <algorithm>
#include <cctype>

#include "base/error.h"

namespace zs::core {

const char* to_string(DType t) {
    switch (t) {
        case DType::f32:
            return "f32";
        case DType::bf16:
            return "bf16";
        case DType::f16:
            return "f16";
        case DType::i8:
            return "i8";
        case DType::i32:
            return "i32";
        case DType::i64:
            return "i64";
    }
    return "?";
}

DType dtype_from_string(std::string_view s, std::string_view what) {
    std::string l(s);
    std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return std::tolower(c); });
    if (l == "f32" || l == "float32" || l == "float" || l == "fp32") return DType::f32;
    if (l == "bf16" || l == "bfloat16") return DType::bf16;
    if (l == "f16" || l == "float16" || l == "half" || l == "fp16") return DType::f16;
    if (l == "i8" || l == "int8") return DType::i8;
    if (l == "i32" || l == "int32") return DType::i32;
    if (l == "i64" || l == "int64") return DType::i64;
    ZS_THROW(Error, "{}: unknown dtype '{}' (expected one of f32, bf16, f16, i8, i32, i64)", what,
             s);
}

}  // namespace zs::core
