// CudaContext and CudaBackend: stream-ordered allocation from the device's memory pool, copies on
// the backend's stream.
#include "backends/cuda/cuda_backend.h"

#include <cstdint>

#include "base/error.h"
#include "base/log.h"

namespace zs::backends::cuda {

namespace {

// cudaMallocAsync rejects 0 bytes; every allocation gets at least this much (and the pool's
// 256-byte alignment, more than the 64 bytes core::Backend promises).
constexpr size_t kMinAlloc = 256;

int set_device(int device) {
    ZS_CUDA_CHECK(cudaSetDevice(device));
    return device;
}

}  // namespace

CudaContext::CudaContext(int device)
    : device_(set_device(device)), stream_(), cublas_(stream_.get()) {
    // Keep freed blocks in the pool instead of returning them to the driver at every
    // synchronisation: a training step frees and reallocates the same activation sizes.
    cudaMemPool_t pool = nullptr;
    ZS_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device_));
    uint64_t threshold = UINT64_MAX;
    ZS_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
}

void CudaContext::bind_thread() const { ZS_CUDA_CHECK(cudaSetDevice(device_)); }

void CudaContext::synchronize() const { ZS_CUDA_CHECK(cudaStreamSynchronize(stream_.get())); }

void* CudaBackend::allocate(size_t bytes, const core::AllocOptions& /*opts*/) {
    ctx_->bind_thread();
    void* p = nullptr;
    size_t size = bytes < kMinAlloc ? kMinAlloc : bytes;
    cudaError_t err = cudaMallocAsync(&p, size, ctx_->stream());
    if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();  // clear the (non-sticky) error so later calls do not see it
        size_t free_bytes = 0, total_bytes = 0;
        cudaMemGetInfo(&free_bytes, &total_bytes);
        ZS_THROW(Error,
                 "out of GPU memory: could not allocate {} on cuda:{} ({} free of {}; this "
                 "process holds {})",
                 core::format_bytes(static_cast<int64_t>(bytes)), ctx_->device(),
                 core::format_bytes(static_cast<int64_t>(free_bytes)),
                 core::format_bytes(static_cast<int64_t>(total_bytes)),
                 core::format_bytes(memory().stats().current_total));
    }
    ZS_CUDA_CHECK(err);
    return p;
}

void CudaBackend::deallocate(void* p, size_t /*bytes*/, const core::AllocOptions& /*opts*/) {
    // Called from Buffer's destructor: never throws. Stream-ordered, so kernels already queued
    // that read this memory finish first.
    cudaError_t err = cudaFreeAsync(p, ctx_->stream());
    if (err != cudaSuccess && err != cudaErrorCudartUnloading) {
        log_warn("cudaFreeAsync failed: {} ({})", cudaGetErrorName(err), cudaGetErrorString(err));
    }
}

void CudaBackend::copy_from_host(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    ZS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx_->stream()));
    ctx_->synchronize();
}

void CudaBackend::copy_to_host(void* dst, const void* src, size_t bytes) {
    if (bytes == 0) return;
    ZS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx_->stream()));
    ctx_->synchronize();
}

void CudaBackend::copy_within(void* dst, const void* src, size_t bytes) {
    if (bytes == 0 || dst == src) return;
    auto d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
    cudaStream_t st = ctx_->stream();
    if (d < s + bytes && s < d + bytes) {
        // Overlapping ranges (memmove semantics, as on the CPU): cudaMemcpy's result would be
        // undefined, so bounce through a temporary.
        void* tmp = allocate(bytes, {});
        ZS_CUDA_CHECK(cudaMemcpyAsync(tmp, src, bytes, cudaMemcpyDeviceToDevice, st));
        ZS_CUDA_CHECK(cudaMemcpyAsync(dst, tmp, bytes, cudaMemcpyDeviceToDevice, st));
        deallocate(tmp, bytes, {});
        return;
    }
    ZS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, st));
}

void CudaBackend::memset_zero(void* dst, size_t bytes) {
    if (bytes == 0) return;
    ZS_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, ctx_->stream()));
}

void CudaBackend::synchronize() { ctx_->synchronize(); }

}  // namespace zs::backends::cuda
