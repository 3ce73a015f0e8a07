// Flash-style attention in CUDA (tiled, online softmax; FlashAttention-2's backward), f32 math.
//
// Head dims are padded to D in {64, 128, 256} (zeros beyond HS in shared memory). Blocks have 4
// warps; a lane owns output dims d = lane + 32 x (x < D / 32) of a row in registers.
// Forward: a block owns kBq = 16 queries of one (batch, query head), 4 per warp; it streams key /
//   value tiles of kBk = 32 through shared memory (rows padded to D + 1 floats: conflict-free).
//   Per row, lane j scores key j0 + j, the warp keeps the running max m and normaliser l, and
//   P V is accumulated by broadcasting each p_j with a shuffle. Extra memory is the lse only.
// Backward, deterministic (no atomics): (1) Dvec = rowsum(dO * O); (2) a dQ kernel laid out like
//   the forward that recomputes P = exp(S - lse) and dS = P (dP - Dvec) per key tile; (3) a dK/dV
//   kernel where a block owns 16 keys of one query head and streams query tiles of 32, writing
//   per-query-head f32 partials; (4) a reduction over each kv group (GQA) into dk / dv.
// Causal masking is bottom-right aligned: query i sees keys j <= i + (Tk - Tq) (and, with a
// sliding window W, j > i + (Tk - Tq) - W); a query that sees no key outputs 0 with lse = -inf,
// and gets zero gradients.
#include <type_traits>

#include "backends/cuda/device_common.cuh"

namespace zs::backends::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 4;
constexpr int kBq = kWarps * kRowsPerWarp;   // queries per forward / dQ block
constexpr int kBk = 32;                      // keys per streamed tile (one per lane)
constexpr int kBkv = kWarps * kRowsPerWarp;  // keys per dK/dV block
constexpr int kBqs = 32;                     // queries per streamed tile in dK/dV (one per lane)

// Last key (inclusive) query i may see; negative when none.
__device__ __forceinline__ int64_t last_key(const AttnGeom& g, int64_t i) {
    return g.causal ? min(g.tk - 1, i + (g.tk - g.tq)) : g.tk - 1;
}
// First key query i may see: the start of its sliding window (0 without one).
__device__ __forceinline__ int64_t first_key(const AttnGeom& g, int64_t i) {
    return g.window > 0 ? max(int64_t{0}, i + (g.tk - g.tq) - g.window + 1) : 0;
}

template <class T>
__device__ __forceinline__ const T* head_row(const HeadsArg& a, int64_t b, int64_t t, int64_t h) {
    return static_cast<const T*>(a.data) + b * a.sb + t * a.st + h * a.sh;
}

// Load rows [t0, t0 + rows) of head h into dst[rows][ld] as f32 * mul; zeros past `limit` rows
// and past hs columns.
template <int D, class T>
__device__ __forceinline__ void load_tile(float* dst, int ld, const HeadsArg& a, int64_t b,
                                          int64_t t0, int rows, int64_t limit, int64_t h,
                                          int64_t hs, float mul) {
    for (int e = threadIdx.x; e < rows * D; e += blockDim.x) {
        const int r = e / D, d = e % D;
        const int64_t t = t0 + r;
        float v = 0.0f;
        if (t < limit && d < hs) v = to_f32(head_row<T>(a, b, t, h)[d]) * mul;
        dst[r * ld + d] = v;
    }
}

template <int D>
__device__ __forceinline__ float dot_rows(const float* a, const float* b) {
    float s = 0.0f;
#pragma unroll 8
    for (int d = 0; d < D; ++d) s = fmaf(a[d], b[d], s);
    return s;
}

template <int D, class T, class TO>
__global__ void __launch_bounds__(kThreads)
    attn_fwd_kernel(AttnGeom g, HeadsArg out, float* lse, HeadsArg q, HeadsArg k, HeadsArg v,
                    int64_t n_tiles) {
    constexpr int NX = D / 32;
    extern __shared__ float smem[];
    float* Qs = smem;                // [kBq][D], pre-scaled
    float* Ks = Qs + kBq * D;        // [kBk][D + 1]
    float* Vs = Ks + kBk * (D + 1);  // [kBk][D + 1]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t tile = blockIdx.x % n_tiles;
    const int64_t h = (blockIdx.x / n_tiles) % g.nh;
    const int64_t b = blockIdx.x / (n_tiles * g.nh);
    const int64_t kh = h / (g.nh / g.nkv);
    const int64_t i0 = tile * kBq;

    load_tile<D, T>(Qs, D, q, b, i0, kBq, g.tq, h, g.hs, g.scale);
    float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][NX];
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        m[rr] = -INFINITY;
        l[rr] = 0.0f;
#pragma unroll
        for (int x = 0; x < NX; ++x) acc[rr][x] = 0.0f;
    }
    const int64_t last_q = min(i0 + kBq, g.tq) - 1;
    const int64_t kend = last_key(g, last_q) + 1;  // keys any query of this block sees
    for (int64_t j0 = first_key(g, i0) / kBk * kBk; j0 < kend; j0 += kBk) {
        __syncthreads();  // the previous tile is no longer read (and Qs is complete)
        load_tile<D, T>(Ks, D + 1, k, b, j0, kBk, g.tk, kh, g.hs, 1.0f);
        load_tile<D, T>(Vs, D + 1, v, b, j0, kBk, g.tk, kh, g.hs, 1.0f);
        __syncthreads();
#pragma unroll
        for (int rr = 0; rr < kRowsPerWarp; ++rr) {
            const int r = warp * kRowsPerWarp + rr;
            const int64_t i = i0 + r;
            if (i >= g.tq) continue;  // warp-uniform
            const int64_t visible = min(int64_t{kBk}, last_key(g, i) - j0 + 1);
            const int64_t hidden = first_key(g, i) - j0;      // keys before the window
            if (visible <= 0 || visible <= hidden) continue;  // warp-uniform
            const bool seen = lane < visible && lane >= hidden;
            float s = -INFINITY;
            if (seen) s = dot_rows<D>(Qs + r * D, Ks + lane * (D + 1));
            const float mnew = fmaxf(m[rr], warp_max(s));
            const float corr = expf(m[rr] - mnew);  // 0 on the first visible tile
            const float p = seen ? expf(s - mnew) : 0.0f;
            l[rr] = l[rr] * corr + warp_sum(p);
            m[rr] = mnew;
#pragma unroll
            for (int x = 0; x < NX; ++x) acc[rr][x] *= corr;
            for (int jj = static_cast<int>(max(hidden, int64_t{0})); jj < visible; ++jj) {
                const float pj = __shfl_sync(kFullMask, p, jj);
                const float* vr = Vs + jj * (D + 1) + lane;
#pragma unroll
                for (int x = 0; x < NX; ++x) acc[rr][x] = fmaf(pj, vr[32 * x], acc[rr][x]);
            }
        }
    }
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const int64_t i = i0 + warp * kRowsPerWarp + rr;
        if (i >= g.tq) continue;
        const bool none = l[rr] == 0.0f;  // no visible key
        const float inv = none ? 0.0f : 1.0f / l[rr];
        TO* o = static_cast<TO*>(out.data) + b * out.sb + i * out.st + h * out.sh;
#pragma unroll
        for (int x = 0; x < NX; ++x) {
            const int d = lane + 32 * x;
            if (d < g.hs) o[d] = from_f32<TO>(acc[rr][x] * inv);
        }
        if (lse != nullptr && lane == 0) {
            lse[(b * g.nh + h) * g.tq + i] = none ? -INFINITY : m[rr] + logf(l[rr]);
        }
    }
}

// Dvec[b, h, i] = sum_d dO[b, i, h, d] * O[b, i, h, d]; one warp per row.
template <class TG>
__global__ void attn_bwd_dvec_kernel(AttnGeom g, HeadsArg dout, HeadsArg out, float* dvec) {
    const int lane = threadIdx.x & 31;
    const int64_t rows = g.b * g.nh * g.tq;
    const int64_t warps = int64_t{gridDim.x} * (blockDim.x >> 5);
    for (int64_t idx = blockIdx.x * int64_t{blockDim.x >> 5} + (threadIdx.x >> 5); idx < rows;
         idx += warps) {
        const int64_t i = idx % g.tq, h = (idx / g.tq) % g.nh, b = idx / (g.tq * g.nh);
        const TG* a = head_row<TG>(dout, b, i, h);
        const TG* o = head_row<TG>(out, b, i, h);
        float s = 0.0f;
        for (int64_t d = lane; d < g.hs; d += 32) s += to_f32(a[d]) * to_f32(o[d]);
        s = warp_sum(s);
        if (lane == 0) dvec[idx] = s;
    }
}

template <int D, class T, class TG>
__global__ void __launch_bounds__(kThreads)
    attn_bwd_dq_kernel(AttnGeom g, HeadsArg dq, HeadsArg dout, HeadsArg q, HeadsArg k, HeadsArg v,
                       const float* lse, const float* dvec, int64_t n_tiles) {
    constexpr int NX = D / 32;
    extern __shared__ float smem[];
    float* Qs = smem;                // [kBq][D], pre-scaled
    float* dOs = Qs + kBq * D;       // [kBq][D]
    float* Ks = dOs + kBq * D;       // [kBk][D + 1]
    float* Vs = Ks + kBk * (D + 1);  // [kBk][D + 1]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t tile = blockIdx.x % n_tiles;
    const int64_t h = (blockIdx.x / n_tiles) % g.nh;
    const int64_t b = blockIdx.x / (n_tiles * g.nh);
    const int64_t kh = h / (g.nh / g.nkv);
    const int64_t i0 = tile * kBq;

    load_tile<D, T>(Qs, D, q, b, i0, kBq, g.tq, h, g.hs, g.scale);
    load_tile<D, TG>(dOs, D, dout, b, i0, kBq, g.tq, h, g.hs, 1.0f);
    float li[kRowsPerWarp], di[kRowsPerWarp], acc[kRowsPerWarp][NX];
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const int64_t i = i0 + warp * kRowsPerWarp + rr;
        const int64_t row = (b * g.nh + h) * g.tq + i;
        li[rr] = i < g.tq ? lse[row] : 0.0f;
        di[rr] = i < g.tq ? dvec[row] : 0.0f;
#pragma unroll
        for (int x = 0; x < NX; ++x) acc[rr][x] = 0.0f;
    }
    const int64_t last_q = min(i0 + kBq, g.tq) - 1;
    const int64_t kend = last_key(g, last_q) + 1;
    for (int64_t j0 = first_key(g, i0) / kBk * kBk; j0 < kend; j0 += kBk) {
        __syncthreads();
        load_tile<D, T>(Ks, D + 1, k, b, j0, kBk, g.tk, kh, g.hs, 1.0f);
        load_tile<D, T>(Vs, D + 1, v, b, j0, kBk, g.tk, kh, g.hs, 1.0f);
        __syncthreads();
#pragma unroll
        for (int rr = 0; rr < kRowsPerWarp; ++rr) {
            const int r = warp * kRowsPerWarp + rr;
            const int64_t i = i0 + r;
            if (i >= g.tq) continue;
            const int64_t visible = min(int64_t{kBk}, last_key(g, i) - j0 + 1);
            const int64_t hidden = first_key(g, i) - j0;  // keys before the window
            if (visible <= 0 || visible <= hidden) continue;
            float ds = 0.0f;
            if (lane < visible && lane >= hidden) {
                const float s = dot_rows<D>(Qs + r * D, Ks + lane * (D + 1));
                const float p = expf(s - li[rr]);
                const float dp = dot_rows<D>(dOs + r * D, Vs + lane * (D + 1));
                ds = p * (dp - di[rr]);
            }
            for (int jj = static_cast<int>(max(hidden, int64_t{0})); jj < visible; ++jj) {
                const float dsj = __shfl_sync(kFullMask, ds, jj);
                const float* kr = Ks + jj * (D + 1) + lane;
#pragma unroll
                for (int x = 0; x < NX; ++x) acc[rr][x] = fmaf(dsj, kr[32 * x], acc[rr][x]);
            }
        }
    }
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const int64_t i = i0 + warp * kRowsPerWarp + rr;
        if (i >= g.tq) continue;
        T* o = static_cast<T*>(dq.data) + b * dq.sb + i * dq.st + h * dq.sh;
#pragma unroll
        for (int x = 0; x < NX; ++x) {
            const int d = lane + 32 * x;
            if (d < g.hs) o[d] = from_f32<T>(acc[rr][x] * g.scale);
        }
    }
}

// dK, dV partials of one query head for kBkv keys: part[b, h, j, :] in f32, [B, NH, Tk, HS].
template <int D, class T, class TG>
__global__ void __launch_bounds__(kThreads)
    attn_bwd_dkv_kernel(AttnGeom g, float* dk_part, float* dv_part, HeadsArg dout, HeadsArg q,
                        HeadsArg k, HeadsArg v, const float* lse, const float* dvec,
                        int64_t n_tiles) {
    constexpr int NX = D / 32;
    extern __shared__ float smem[];
    float* Ks = smem;                  // [kBkv][D]
    float* Vs = Ks + kBkv * D;         // [kBkv][D]
    float* Qs = Vs + kBkv * D;         // [kBqs][D + 1], pre-scaled
    float* dOs = Qs + kBqs * (D + 1);  // [kBqs][D + 1]
    float* ls = dOs + kBqs * (D + 1);  // [kBqs]
    float* dsv = ls + kBqs;            // [kBqs]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int64_t tile = blockIdx.x % n_tiles;
    const int64_t h = (blockIdx.x / n_tiles) % g.nh;
    const int64_t b = blockIdx.x / (n_tiles * g.nh);
    const int64_t kh = h / (g.nh / g.nkv);
    const int64_t j0 = tile * kBkv;

    load_tile<D, T>(Ks, D, k, b, j0, kBkv, g.tk, kh, g.hs, 1.0f);
    load_tile<D, T>(Vs, D, v, b, j0, kBkv, g.tk, kh, g.hs, 1.0f);
    float dk[kRowsPerWarp][NX], dv[kRowsPerWarp][NX];
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
#pragma unroll
        for (int x = 0; x < NX; ++x) dk[rr][x] = dv[rr][x] = 0.0f;
    }
    // The first query that sees key j0: i + (Tk - Tq) >= j0.
    const int64_t istart = g.causal ? max(int64_t{0}, j0 - (g.tk - g.tq)) : 0;
    // With a sliding window, the last query that sees key j0 + kBkv - 1.
    const int64_t iend = g.window > 0 ? min(g.tq, j0 + kBkv - 1 - (g.tk - g.tq) + g.window) : g.tq;
    for (int64_t qi0 = istart; qi0 < iend; qi0 += kBqs) {
        __syncthreads();
        load_tile<D, T>(Qs, D + 1, q, b, qi0, kBqs, g.tq, h, g.hs, g.scale);
        load_tile<D, TG>(dOs, D + 1, dout, b, qi0, kBqs, g.tq, h, g.hs, 1.0f);
        if (threadIdx.x < kBqs) {
            const int64_t i = qi0 + threadIdx.x;
            const int64_t row = (b * g.nh + h) * g.tq + i;
            ls[threadIdx.x] = i < g.tq ? lse[row] : 0.0f;
            dsv[threadIdx.x] = i < g.tq ? dvec[row] : 0.0f;
        }
        __syncthreads();
        const int nq = static_cast<int>(min(int64_t{kBqs}, g.tq - qi0));
        const int64_t i = qi0 + lane;  // this lane's query
#pragma unroll
        for (int rr = 0; rr < kRowsPerWarp; ++rr) {
            const int r = warp * kRowsPerWarp + rr;
            const int64_t j = j0 + r;
            if (j >= g.tk) continue;  // warp-uniform
            const bool visible = lane < nq && j <= last_key(g, i) && j >= first_key(g, i);
            float p = 0.0f, ds = 0.0f;
            if (visible) {
                const float s = dot_rows<D>(Qs + lane * (D + 1), Ks + r * D);
                p = expf(s - ls[lane]);
                const float dp = dot_rows<D>(dOs + lane * (D + 1), Vs + r * D);
                ds = p * (dp - dsv[lane]);
            }
            for (int ii = 0; ii < nq; ++ii) {
                const float pi = __shfl_sync(kFullMask, p, ii);
                const float dsi = __shfl_sync(kFullMask, ds, ii);
                const float* qr = Qs + ii * (D + 1) + lane;
                const float* gr = dOs + ii * (D + 1) + lane;
#pragma unroll
                for (int x = 0; x < NX; ++x) {
                    dv[rr][x] = fmaf(pi, gr[32 * x], dv[rr][x]);
                    dk[rr][x] = fmaf(dsi, qr[32 * x], dk[rr][x]);  // Q pre-scaled
                }
            }
        }
    }
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const int64_t j = j0 + warp * kRowsPerWarp + rr;
        if (j >= g.tk) continue;
        const int64_t off = ((b * g.nh + h) * g.tk + j) * g.hs;
#pragma unroll
        for (int x = 0; x < NX; ++x) {
            const int d = lane + 32 * x;
            if (d < g.hs) {
                dk_part[off + d] = dk[rr][x];
                dv_part[off + d] = dv[rr][x];
            }
        }
    }
}

// dk[b, j, kh, :] = sum over the group's query heads of the partials (fixed order); same for dv.
template <class T>
__global__ void attn_bwd_group_sum_kernel(AttnGeom g, HeadsArg dk, HeadsArg dv,
                                          const float* dk_part, const float* dv_part) {
    const int64_t group = g.nh / g.nkv;
    const int64_t total = g.b * g.tk * g.nkv * g.hs;
    for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
         idx += int64_t{gridDim.x} * blockDim.x) {
        const int64_t d = idx % g.hs;
        const int64_t kh = (idx / g.hs) % g.nkv;
        const int64_t j = (idx / (g.hs * g.nkv)) % g.tk;
        const int64_t b = idx / (g.hs * g.nkv * g.tk);
        float sk = 0.0f, sv = 0.0f;
        for (int64_t h = kh * group; h < (kh + 1) * group; ++h) {
            const int64_t off = ((b * g.nh + h) * g.tk + j) * g.hs + d;
            sk += dk_part[off];
            sv += dv_part[off];
        }
        static_cast<T*>(dk.data)[b * dk.sb + j * dk.st + kh * dk.sh + d] = from_f32<T>(sk);
        static_cast<T*>(dv.data)[b * dv.sb + j * dv.st + kh * dv.sh + d] = from_f32<T>(sv);
    }
}

// Set the kernel's dynamic shared memory limit (needed above 48 KiB) and return the byte count.
template <class K>
size_t prepare_smem(K kernel, size_t floats) {
    const size_t bytes = floats * sizeof(float);
    ZS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(bytes)));
    return bytes;
}

}  // namespace

void launch_attention_forward(cudaStream_t stream, const AttnGeom& g, const HeadsArg& out,
                              float* lse, const HeadsArg& q, const HeadsArg& k, const HeadsArg& v) {
    const int64_t n_tiles = (g.tq + kBq - 1) / kBq;
    const int64_t blocks = n_tiles * g.nh * g.b;
    if (blocks == 0) return;
    dispatch_head_dim(g.hs, [&](auto dc) {
        constexpr int D = decltype(dc)::value;
        dispatch_float(q.type, [&](auto tq) {
            dispatch_float(out.type, [&](auto to) {
                using T = decltype(tq);
                using TO = decltype(to);
                auto kernel = attn_fwd_kernel<D, T, TO>;
                size_t smem = prepare_smem(kernel, kBq * D + 2 * kBk * (D + 1));
                kernel<<<grid_exact(blocks), kThreads, smem, stream>>>(g, out, lse, q, k, v,
                                                                       n_tiles);
                ZS_CUDA_CHECK_LAUNCH("attention_forward");
            });
        });
    });
}

size_t attention_backward_scratch_floats(const AttnGeom& g) {
    return static_cast<size_t>(g.b * g.nh * g.tq + 2 * g.b * g.nh * g.tk * g.hs);
}

void launch_attention_backward(cudaStream_t stream, const AttnGeom& g, const HeadsArg& dq,
                               const HeadsArg& dk, const HeadsArg& dv, const HeadsArg& dout,
                               const HeadsArg& q, const HeadsArg& k, const HeadsArg& v,
                               const HeadsArg& out, const float* lse, float* scratch) {
    float* dvec = scratch;                                // [B, NH, Tq]
    float* dk_part = dvec + g.b * g.nh * g.tq;            // [B, NH, Tk, HS]
    float* dv_part = dk_part + g.b * g.nh * g.tk * g.hs;  // [B, NH, Tk, HS]
    const int64_t rows = g.b * g.nh * g.tq;
    if (rows > 0) {
        dispatch_float(dout.type, [&](auto tg) {
            using TG = decltype(tg);
            attn_bwd_dvec_kernel<TG>
                <<<grid_for(rows * 32, kThreads), kThreads, 0, stream>>>(g, dout, out, dvec);
            ZS_CUDA_CHECK_LAUNCH("attention_backward_dvec");
        });
    }
    dispatch_head_dim(g.hs, [&](auto dc) {
        constexpr int D = decltype(dc)::value;
        dispatch_float(q.type, [&](auto tq) {
            dispatch_float(dout.type, [&](auto tg) {
                using T = decltype(tq);
                using TG = decltype(tg);
                const int64_t q_tiles = (g.tq + kBq - 1) / kBq;
                if (q_tiles * g.nh * g.b > 0) {
                    auto kernel = attn_bwd_dq_kernel<D, T, TG>;
                    size_t smem = prepare_smem(kernel, 2 * kBq * D + 2 * kBk * (D + 1));
                    kernel<<<grid_exact(q_tiles * g.nh * g.b), kThreads, smem, stream>>>(
                        g, dq, dout, q, k, v, lse, dvec, q_tiles);
                    ZS_CUDA_CHECK_LAUNCH("attention_backward_dq");
                }
                const int64_t k_tiles = (g.tk + kBkv - 1) / kBkv;
                if (k_tiles * g.nh * g.b > 0) {
                    auto kernel = attn_bwd_dkv_kernel<D, T, TG>;
                    size_t smem =
                        prepare_smem(kernel, 2 * kBkv * D + 2 * kBqs * (D + 1) + 2 * kBqs);
                    kernel<<<grid_exact(k_tiles * g.nh * g.b), kThreads, smem, stream>>>(
                        g, dk_part, dv_part, dout, q, k, v, lse, dvec, k_tiles);
                    ZS_CUDA_CHECK_LAUNCH("attention_backward_dkv");
                }
            });
        });
    });
    const int64_t total = g.b * g.tk * g.nkv * g.hs;
    if (total > 0) {
        dispatch_float(dk.type, [&](auto tk) {
            using T = decltype(tk);
            attn_bwd_group_sum_kernel<T>
                <<<grid_for(total, 256), 256, 0, stream>>>(g, dk, dv, dk_part, dv_part);
            ZS_CUDA_CHECK_LAUNCH("attention_backward_group_sum");
        });
    }
}

}  // namespace zs::backends::cuda
