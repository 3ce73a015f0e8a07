// Embedding lookup (row gather) and its scatter-add backward in CUDA.
//
// Backward is deterministic without atomics or a sort: thread (column c, partition p) walks every
// token in order and adds dout[i, c] into dtable[ids[i], c] when ids[i] falls in partition p
// (ids are split into P residue classes, P a power of two chosen from the width only). Each
// (id, column) element is therefore owned by one thread and summed in token order, the same
// order as the CPU kernel, so f32 results match it bit for bit. The cost is that every thread
// reads all N ids (warp-uniform, cached loads); fine for the once-per-step embedding gradient.
#include "backends/cuda/device_common.cuh"

namespace zs::backends::cuda {

namespace {

constexpr int kThreads = 256;

template <class I>
__global__ void check_ids_kernel(const I* ids, int64_t n, int64_t v, unsigned long long* bad) {
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
         i += int64_t{gridDim.x} * blockDim.x) {
        int64_t id = load_index(ids, i);
        if (id < 0 || id >= v) report_bad(bad, i);
    }
}

template <class TO, class TT, class I>
__global__ void embedding_fwd_kernel(RowsArg out, const I* ids, int64_t n, RowsArg table, int64_t v,
                                     int64_t cols, bool accumulate, unsigned long long* bad) {
    TO* o = static_cast<TO*>(out.data);
    const TT* t = static_cast<const TT*>(table.data);
    const int64_t total = n * cols;
    for (int64_t idx = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; idx < total;
         idx += int64_t{gridDim.x} * blockDim.x) {
        const int64_t i = idx / cols, c = idx - i * cols;
        const int64_t id = load_index(ids, i);
        if (id < 0 || id >= v) {
            if (c == 0) report_bad(bad, i);
            continue;
        }
        float val = load(t, id * table.stride + c);
        if (accumulate) val += load(o, i * out.stride + c);
        store(o, i * out.stride + c, val);
    }
}

template <class TG, class I>
__global__ void embedding_bwd_kernel(float* dtable, int64_t cols, RowsArg dout, const I* ids,
                                     int64_t n, int64_t parts) {
    const int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
    if (c >= cols) return;
    const int64_t p = blockIdx.y;
    const TG* g = static_cast<const TG*>(dout.data);
    for (int64_t i = 0; i < n; ++i) {
        const int64_t id = load_index(ids, i);
        if ((id & (parts - 1)) != p) continue;
        dtable[id * cols + c] += load(g, i * dout.stride + c);
    }
}

// Partitions: a power of two giving about 128k threads, at most 64 and at most the vocabulary.
int64_t embedding_parts(int64_t v, int64_t cols) {
    int64_t p = 1;
    while (p < 64 && p * 2 <= v && p * cols < (int64_t{1} << 17)) p *= 2;
    return p;
}

}  // namespace

void launch_check_ids(cudaStream_t stream, const void* ids, IndexType id_type, int64_t n, int64_t v,
                      unsigned long long* bad) {
    if (n == 0) return;
    dispatch_index(id_type, [&](auto ti) {
        using I = decltype(ti);
        check_ids_kernel<I>
            <<<grid_for(n, kThreads), kThreads, 0, stream>>>(static_cast<const I*>(ids), n, v, bad);
        ZS_CUDA_CHECK_LAUNCH("check_ids");
    });
}

void launch_embedding_forward(cudaStream_t stream, const RowsArg& out, const void* ids,
                              IndexType id_type, int64_t n, const RowsArg& table, int64_t v,
                              int64_t cols, bool accumulate, unsigned long long* bad) {
    if (n == 0) return;
    if (cols == 0) {  // nothing to copy, but ids are still checked
        launch_check_ids(stream, ids, id_type, n, v, bad);
        return;
    }
    dispatch_float(out.type, [&](auto to) {
        dispatch_float(table.type, [&](auto tt) {
            dispatch_index(id_type, [&](auto ti) {
                using TO = decltype(to);
                using TT = decltype(tt);
                using I = decltype(ti);
                embedding_fwd_kernel<TO, TT, I>
                    <<<grid_for(n * cols, kThreads), kThreads, 0, stream>>>(
                        out, static_cast<const I*>(ids), n, table, v, cols, accumulate, bad);
                ZS_CUDA_CHECK_LAUNCH("embedding_forward");
            });
        });
    });
}

void launch_embedding_backward(cudaStream_t stream, float* dtable, int64_t v, int64_t cols,
                               const RowsArg& dout, const void* ids, IndexType id_type, int64_t n) {
    if (n == 0 || cols == 0) return;
    const int64_t parts = embedding_parts(v, cols);
    dim3 grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads),
              static_cast<unsigned>(parts));
    dispatch_float(dout.type, [&](auto tg) {
        dispatch_index(id_type, [&](auto ti) {
            using TG = decltype(tg);
            using I = decltype(ti);
            embedding_bwd_kernel<TG, I><<<grid, kThreads, 0, stream>>>(
                dtable, cols, dout, static_cast<const I*>(ids), n, parts);
            ZS_CUDA_CHECK_LAUNCH("embedding_backward");
        });
    });
}

}  // namespace zs::backends::cuda
