// CUDA helpers shared by the CUDA backend's host code and its .cu files: the ZS_CUDA_CHECK /
// ZS_CUBLAS_CHECK macros (they throw zs::Error naming the call, file:line and CUDA's own error
// name and text) and RAII owners for streams and cuBLAS handles.
//
// This header is compiled by nvcc too, so it must not pull in fmt (nvcc's front end rejects fmt's
// consteval format strings): the raise functions are defined in cuda_util.cpp, built by the host
// compiler.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

namespace zs::backends::cuda {

// Throw zs::Error: "CUDA call 'cudaMalloc(...)' failed at file:line: cudaErrorMemoryAllocation
// (out of memory)".
[[noreturn]] void raise_cuda_error(cudaError_t err, const char* call, const char* file, int line);
[[noreturn]] void raise_cublas_error(cublasStatus_t st, const char* call, const char* file,
                                     int line);
// Raise (as above) when the last kernel launch on this thread failed.
void check_launch(const char* kernel, const char* file, int line);

// Owns a CUDA stream created on the current device. Non-copyable, movable.
class Stream {
public:
    Stream();
    ~Stream();
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    Stream(Stream&& o) noexcept : s_(o.s_) { o.s_ = nullptr; }
    Stream& operator=(Stream&& o) noexcept;

    cudaStream_t get() const { return s_; }

private:
    cudaStream_t s_ = nullptr;
};

// Owns a cuBLAS handle bound to one stream. Non-copyable, movable.
class CublasHandle {
public:
    explicit CublasHandle(cudaStream_t stream);
    ~CublasHandle();
    CublasHandle(const CublasHandle&) = delete;
    CublasHandle& operator=(const CublasHandle&) = delete;
    CublasHandle(CublasHandle&& o) noexcept : h_(o.h_) { o.h_ = nullptr; }
    CublasHandle& operator=(CublasHandle&& o) noexcept;

    cublasHandle_t get() const { return h_; }

private:
    cublasHandle_t h_ = nullptr;
};

}  // namespace zs::backends::cuda

#define ZS_CUDA_CHECK(call)                                                                  \
    do {                                                                                     \
        cudaError_t zs_cuda_err_ = (call);                                                   \
        if (zs_cuda_err_ != cudaSuccess) [[unlikely]] {                                      \
            ::zs::backends::cuda::raise_cuda_error(zs_cuda_err_, #call, __FILE__, __LINE__); \
        }                                                                                    \
    } while (0)

#define ZS_CUBLAS_CHECK(call)                                                                   \
    do {                                                                                        \
        cublasStatus_t zs_cublas_st_ = (call);                                                  \
        if (zs_cublas_st_ != CUBLAS_STATUS_SUCCESS) [[unlikely]] {                              \
            ::zs::backends::cuda::raise_cublas_error(zs_cublas_st_, #call, __FILE__, __LINE__); \
        }                                                                                       \
    } while (0)

// After a kernel launch: a bad launch configuration surfaces here, naming the kernel.
#define ZS_CUDA_CHECK_LAUNCH(kernel_name) \
    ::zs::backends::cuda::check_launch(kernel_name, __FILE__, __LINE__)
