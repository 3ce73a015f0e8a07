// Ulysses layout moves on the CPU (ops/ulysses.h): rows of HS elements copied between a piece on
// its sequence shard, the head shard of the whole sequence and the all-to-all's chunk buffers,
// one OpenMP task per (chunk, b, t) row; the unpack of a repeated head sums its copies in f32, in
// copy order, so the result does not depend on the thread count.
#include <cstring>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/parallel.h"

namespace zs::backends::cpu {

namespace {

// Bytes of one head row and a typed-free element pointer helper.
struct Strided {
    char* base;
    int64_t s0, s1, s2;  // byte strides of dims 0..2 (the last dim is contiguous)
    char* at(int64_t i0, int64_t i1, int64_t i2) const {
        return base + i0 * s0 + i1 * s1 + i2 * s2;
    }
};

Strided strided(const Tensor& t) {
    const auto es = static_cast<int64_t>(t.element_size());
    return {static_cast<char*>(t.data_ptr()), t.stride(0) * es, t.stride(1) * es, t.stride(2) * es};
}

template <class Fn>
void for_chunk_rows(int64_t n_rows, int64_t row_elems, Fn&& fn) {
    const bool par = n_rows > 1 && n_rows * row_elems >= kParallelMinElems;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t r = 0; r < n_rows; ++r) fn(r);
}

}  // namespace

void CpuKernels::ulysses_pack_heads(const Tensor& send, const Tensor& x, int64_t at,
                                    int64_t repeat) {
    const int64_t P = send.size(0), B = send.size(1), Tl = send.size(2), Hc = send.size(3);
    const int64_t HS = send.size(4), Hl = x.size(2) * repeat / P;
    const auto row = static_cast<size_t>(HS) * send.element_size();
    const Strided src = strided(x);
    auto* dst = static_cast<char*>(send.data_ptr());
    for_chunk_rows(P * B * Tl, Hl * HS, [&](int64_t r) {
        const int64_t j = r / (B * Tl), b = (r / Tl) % B, t = r % Tl;
        char* d = dst + (r * Hc + at) * static_cast<int64_t>(row);
        for (int64_t e = 0; e < Hl; ++e) {
            std::memcpy(d + e * static_cast<int64_t>(row), src.at(b, t, (j * Hl + e) / repeat),
                        row);
        }
    });
}

void CpuKernels::ulysses_unpack_heads(const Tensor& x, const Tensor& recv, int64_t at,
                                      int64_t repeat) {
    const int64_t P = recv.size(0), B = recv.size(1), Tl = recv.size(2), Hc = recv.size(3);
    const int64_t HS = recv.size(4), H = x.size(2), Hl = H * repeat / P;
    const auto es = static_cast<int64_t>(recv.element_size());
    const int64_t row = HS * es;
    const Strided dst = strided(x);
    const auto* src = static_cast<const char*>(recv.data_ptr());
    // The chunk row holding expanded head g of token (b, t).
    auto chunk_row = [&](int64_t g, int64_t b, int64_t t) {
        const int64_t j = g / Hl, e = g % Hl;
        return src + ((((j * B) + b) * Tl + t) * Hc + at + e) * row;
    };
    if (repeat == 1) {
        for_chunk_rows(B * Tl, H * HS, [&](int64_t r) {
            const int64_t b = r / Tl, t = r % Tl;
            for (int64_t h = 0; h < H; ++h) {
                std::memcpy(dst.at(b, t, h), chunk_row(h, b, t), static_cast<size_t>(row));
            }
        });
        return;
    }
    dispatch_float(x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        for_chunk_rows(B * Tl, H * HS * repeat, [&](int64_t r) {
            const int64_t b = r / Tl, t = r % Tl;
            for (int64_t h = 0; h < H; ++h) {
                T* d = reinterpret_cast<T*>(dst.at(b, t, h));
                for (int64_t c = 0; c < HS; c += kLanes) {
                    const int n = static_cast<int>(std::min<int64_t>(kLanes, HS - c));
                    VecF acc =
                        vload(reinterpret_cast<const T*>(chunk_row(h * repeat, b, t)) + c, n);
                    for (int64_t k = 1; k < repeat; ++k) {
                        acc = acc +
                              vload(reinterpret_cast<const T*>(chunk_row(h * repeat + k, b, t)) + c,
                                    n);
                    }
                    vstore(d + c, acc, n);
                }
            }
        });
    });
}

void CpuKernels::ulysses_pack_seq(const Tensor& send, const Tensor& full) {
    const int64_t P = send.size(0), B = send.size(1), Tl = send.size(2), Hc = send.size(3);
    const auto row = static_cast<size_t>(send.size(4)) * send.element_size();
    const Strided src = strided(full);
    auto* dst = static_cast<char*>(send.data_ptr());
    for_chunk_rows(P * B * Tl, Hc * send.size(4), [&](int64_t r) {
        const int64_t s = r / (B * Tl), b = (r / Tl) % B, t = r % Tl;
        char* d = dst + r * Hc * static_cast<int64_t>(row);
        for (int64_t h = 0; h < Hc; ++h) {
            std::memcpy(d + h * static_cast<int64_t>(row), src.at(b, s * Tl + t, h), row);
        }
    });
}

void CpuKernels::ulysses_unpack_seq(const Tensor& full, const Tensor& recv) {
    const int64_t P = recv.size(0), B = recv.size(1), Tl = recv.size(2), Hc = recv.size(3);
    const auto row = static_cast<size_t>(recv.size(4)) * recv.element_size();
    const Strided dst = strided(full);
    const auto* src = static_cast<const char*>(recv.data_ptr());
    for_chunk_rows(P * B * Tl, Hc * recv.size(4), [&](int64_t r) {
        const int64_t s = r / (B * Tl), b = (r / Tl) % B, t = r % Tl;
        const char* from = src + r * Hc * static_cast<int64_t>(row);
        for (int64_t h = 0; h < Hc; ++h) {
            std::memcpy(dst.at(b, s * Tl + t, h), from + h * static_cast<int64_t>(row), row);
        }
    });
}

}  // namespace zs::backends::cpu
