// Skinny matmul (M <= kSkinnyMaxRows rows against an [N, K] weight): see gemv.cpp.
#pragma once

#include <cstdint>

#include "core/dtype.h"

namespace zs::backends::cpu {

inline constexpr int64_t kSkinnyMaxRows = 16;

struct SkinnyArgs {
    int64_t m = 0, n = 0, k = 0;
    const void* a = nullptr;  // [M, K], row stride lda
    int64_t lda = 0;
    const void* w = nullptr;  // [N, K], row stride ldw
    int64_t ldw = 0;
    void* out = nullptr;  // [M, N], row stride ldo
    int64_t ldo = 0;
    const void* bias = nullptr;  // [N] or null
    core::DType a_dtype = core::DType::f32, w_dtype = core::DType::f32,
                out_dtype = core::DType::f32, bias_dtype = core::DType::f32;
    float alpha = 1.0f, beta = 0.0f;
};

void skinny_matmul(const SkinnyArgs& args);

}  // namespace zs::backends::cpu
