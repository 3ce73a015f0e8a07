// Paged attention in CUDA (ops/paged_attention.h): a straightforward kernel, f32 math.
//
// One warp per (row, query head); a block holds kWarps of them and nothing is shared between
// warps, so there is no block-wide synchronisation. The warp keeps its query (pre-scaled) in
// shared memory and walks its keys from its window start to its own position in chunks of 32:
// lane j scores key j0 + j (a dot product over the K row found through the block table), the
// warp updates the running max m and normaliser l, and P V is accumulated by broadcasting each
// p_j with a shuffle while lane x owns output dims x + 32 i. A query's arithmetic depends only
// on its own position and the cached values (the contract's batch-composition invariance).
// The KV write is a grid-stride loop over (row, kv head, dim).
// NOTE(cuda): written for correctness by construction and compiled in the CUDA build; not yet
// run on a GPU. A tuned version would tile K/V blocks through shared memory for the query heads
// of a kv group (as the CPU kernel does) and split long contexts (flash-decoding).
#include <type_traits>

#include "backends/cuda/device_common.cuh"

namespace zs::backends::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;

__device__ __forceinline__ float load_any(const void* p, FloatType t, int64_t i) {
    return t == FloatType::bf16 ? to_f32(static_cast<const bf16_t*>(p)[i])
                                : static_cast<const float*>(p)[i];
}

__device__ __forceinline__ void store_any(void* p, FloatType t, int64_t i, float v) {
    if (t == FloatType::bf16) {
        static_cast<bf16_t*>(p)[i] = from_f32<bf16_t>(v);
    } else {
        static_cast<float*>(p)[i] = v;
    }
}

// Where kv head h of position p of the sequence with block table `table` starts, in elements:
// blocks are head-major [nkv, block_size, hs].
__device__ __forceinline__ int64_t row_of(const int64_t* table, int64_t p, const PagedGeom& g,
                                          int64_t h) {
    return ((table[p / g.block_size] * g.nkv + h) * g.block_size + p % g.block_size) * g.hs;
}

template <class TC>
__global__ void paged_kv_write_kernel(PagedGeom g, const int64_t* layout, TC* kc, TC* vc,
                                      HeadsArg k, HeadsArg v) {
    const int64_t total = g.n_rows * g.nkv * g.hs;
    for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
         idx += int64_t{gridDim.x} * blockDim.x) {
        const int64_t d = idx % g.hs, h = (idx / g.hs) % g.nkv, row = idx / (g.hs * g.nkv);
        const int64_t s = layout[row];
        if (s < 0) continue;  // a row no slice owns
        const int64_t* info = layout + g.n_rows + 3 * s;
        const int64_t p = info[1] + (row - info[0]);
        const int64_t dst = row_of(layout + info[2], p, g, h) + d;
        kc[dst] = from_f32<TC>(load_any(k.data, k.type, row * k.st + h * k.sh + d));
        vc[dst] = from_f32<TC>(load_any(v.data, v.type, row * v.st + h * v.sh + d));
    }
}

template <int D, class TC>
__global__ void __launch_bounds__(kThreads)
    paged_attn_kernel(PagedGeom g, const int64_t* layout, const TC* kc, const TC* vc, HeadsArg out,
                      HeadsArg q) {
    constexpr int NX = D / 32;
    extern __shared__ float smem[];  // [kWarps][D]: each warp's query
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t item = blockIdx.x * int64_t{kWarps} + warp;  // (row, query head)
    if (item >= g.n_rows * g.nh) return;                       // warp-uniform
    const int64_t row = item / g.nh, h = item % g.nh;
    const int64_t s = layout[row];
    if (s < 0) return;  // a row no slice owns: left untouched
    const int64_t* info = layout + g.n_rows + 3 * s;
    const int64_t* table = layout + info[2];
    const int64_t p = info[1] + (row - info[0]);  // this query's position
    const int64_t kh = h / (g.nh / g.nkv);
    float* qs = smem + warp * D;
    for (int d = lane; d < D; d += 32)
        qs[d] = d < g.hs ? load_any(q.data, q.type, row * q.st + h * q.sh + d) * g.scale : 0.0f;
    __syncwarp();
    float m = -INFINITY, l = 0.0f, acc[NX];
#pragma unroll
    for (int x = 0; x < NX; ++x) acc[x] = 0.0f;
    const int64_t first = g.window > 0 ? max(int64_t{0}, p - g.window + 1) : 0;
    for (int64_t j0 = first; j0 <= p; j0 += 32) {
        const int64_t j = j0 + lane;
        float sc = -INFINITY;
        if (j <= p) {
            const TC* kr = kc + row_of(table, j, g, kh);
            float a = 0.0f;
            for (int64_t d = 0; d < g.hs; ++d) a = fmaf(qs[d], to_f32(kr[d]), a);
            sc = a;
        }
        const float mnew = fmaxf(m, warp_max(sc));  // finite: lane 0's key is visible
        const float corr = expf(m - mnew);          // 0 on the first chunk
        const float pj = j <= p ? expf(sc - mnew) : 0.0f;
        l = l * corr + warp_sum(pj);
        m = mnew;
#pragma unroll
        for (int x = 0; x < NX; ++x) acc[x] *= corr;
        const int nj = static_cast<int>(min(int64_t{32}, p - j0 + 1));  // warp-uniform
        for (int jj = 0; jj < nj; ++jj) {
            const float pjj = __shfl_sync(kFullMask, pj, jj);
            const TC* vr = vc + row_of(table, j0 + jj, g, kh);
#pragma unroll
            for (int x = 0; x < NX; ++x) {
                const int d = lane + 32 * x;
                if (d < g.hs) acc[x] = fmaf(pjj, to_f32(vr[d]), acc[x]);
            }
        }
    }
    const float inv = 1.0f / l;  // l >= 1: the query sees its own key
#pragma unroll
    for (int x = 0; x < NX; ++x) {
        const int d = lane + 32 * x;
        if (d < g.hs) store_any(out.data, out.type, row * out.st + h * out.sh + d, acc[x] * inv);
    }
}

}  // namespace

void launch_paged_kv_write(cudaStream_t stream, const PagedGeom& g, const int64_t* layout,
                           void* k_cache, void* v_cache, FloatType cache_type, const HeadsArg& k,
                           const HeadsArg& v) {
    const int64_t total = g.n_rows * g.nkv * g.hs;
    if (total == 0) return;
    dispatch_float(cache_type, [&](auto tc) {
        using TC = decltype(tc);
        paged_kv_write_kernel<TC><<<grid_for(total, 256), 256, 0, stream>>>(
            g, layout, static_cast<TC*>(k_cache), static_cast<TC*>(v_cache), k, v);
        ZS_CUDA_CHECK_LAUNCH("paged_kv_write");
    });
}

void launch_paged_attention_forward(cudaStream_t stream, const PagedGeom& g, const int64_t* layout,
                                    const void* k_cache, const void* v_cache, FloatType cache_type,
                                    const HeadsArg& out, const HeadsArg& q) {
    const int64_t blocks = (g.n_rows * g.nh + kWarps - 1) / kWarps;
    if (blocks == 0) return;
    dispatch_head_dim(g.hs, [&](auto dc) {
        constexpr int D = decltype(dc)::value;
        dispatch_float(cache_type, [&](auto tc) {
            using TC = decltype(tc);
            paged_attn_kernel<D, TC>
                <<<grid_exact(blocks), kThreads, kWarps * D * sizeof(float), stream>>>(
                    g, layout, static_cast<const TC*>(k_cache), static_cast<const TC*>(v_cache),
                    out, q);
            ZS_CUDA_CHECK_LAUNCH("paged_attention_forward");
        });
    });
}

}  // namespace zs::backends::cuda
