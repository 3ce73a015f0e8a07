// The CUDA device: one GPU per process (choose it with CUDA_VISIBLE_DEVICES or the launcher's
// local rank), one stream on which every allocation, copy, memset, cuBLAS call and kernel of this
// backend is ordered, and a cuBLAS handle bound to that stream.
//
// Invariants: all device work of the backend goes to CudaContext::stream(), so work needs no
// events between ops; memory comes from the device's stream-ordered pool (cudaMallocAsync /
// cudaFreeAsync on that stream), so freeing a buffer while a kernel still reads it is safe.
// Copies to and from the host are synchronous (they wait for the stream); device-to-device
// copies and memsets are ordered on the stream but do not block the host.
#pragma once

#include <memory>
#include <mutex>

#include "backends/cuda/cuda_util.h"
#include "core/backend.h"

namespace zs::backends::cuda {

class CudaContext {
public:
    // Binds the calling thread to `device` and creates the stream and cuBLAS handle.
    explicit CudaContext(int device);
    CudaContext(const CudaContext&) = delete;
    CudaContext& operator=(const CudaContext&) = delete;

    int device() const { return device_; }
    cudaStream_t stream() const { return stream_.get(); }
    // Make `device` current on the calling thread (host threads other than the one that
    // registered the backend start on device 0).
    void bind_thread() const;

    // cuBLAS handle; hold the lock while using it (cuBLAS handles are not safe to share across
    // concurrently calling threads).
    cublasHandle_t cublas() const { return cublas_.get(); }
    std::mutex& cublas_mutex() { return cublas_mu_; }

    // Wait for all work queued on the stream; raises zs::Error naming any asynchronous failure.
    void synchronize() const;

private:
    int device_;
    Stream stream_;
    CublasHandle cublas_;
    std::mutex cublas_mu_;
};

class CudaBackend final : public core::Backend {
public:
    explicit CudaBackend(std::shared_ptr<CudaContext> ctx) : ctx_(std::move(ctx)) {}

    core::DeviceType type() const override { return core::DeviceType::cuda; }
    const char* name() const override { return "cuda"; }

    void* allocate(size_t bytes, const core::AllocOptions& opts) override;
    void deallocate(void* p, size_t bytes, const core::AllocOptions& opts) override;
    void copy_from_host(void* dst, const void* src, size_t bytes) override;
    void copy_to_host(void* dst, const void* src, size_t bytes) override;
    void copy_within(void* dst, const void* src, size_t bytes) override;
    void memset_zero(void* dst, size_t bytes) override;
    void* native_stream() const override { return ctx_->stream(); }
    int device_index() const override { return ctx_->device(); }
    void synchronize() override;

private:
    std::shared_ptr<CudaContext> ctx_;
};

}  // namespace zs::backends::cuda
