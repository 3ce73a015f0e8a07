// try_register(): probe for a usable GPU, then install CudaBackend and CudaKernels, which share
// one CudaContext (device, stream, cuBLAS handle).
#include "backends/cuda/cuda_register.h"

#include <memory>

#include <fmt/format.h>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_kernels.h"
#include "backends/cuda/launch.h"
#include "base/error.h"

#ifndef ZS_CUDA_ARCHS
#define ZS_CUDA_ARCHS "?"
#endif

namespace zs::backends::cuda {

namespace {

std::string cuda_error_text(cudaError_t err) {
    return fmt::format("{} ({})", cudaGetErrorName(err), cudaGetErrorString(err));
}

}  // namespace

std::string try_register() {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        cudaGetLastError();  // leave no error behind for later CUDA calls
        return "no usable GPU: cudaGetDeviceCount failed: " + cuda_error_text(err);
    }
    if (count == 0) return "no GPU found (cudaGetDeviceCount reports 0 devices)";
    constexpr int kDevice = 0;
    cudaDeviceProp prop{};
    err = cudaGetDeviceProperties(&prop, kDevice);
    if (err == cudaSuccess) err = cudaSetDevice(kDevice);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return "no usable GPU: cannot open device 0: " + cuda_error_text(err);
    }
    err = probe_kernel_image();
    if (err != cudaSuccess) {
        cudaGetLastError();
        return fmt::format(
            "this build's CUDA kernels (architectures {}) cannot run on {} (compute capability "
            "{}.{}): {}; rebuild with -DCMAKE_CUDA_ARCHITECTURES={}{}",
            ZS_CUDA_ARCHS, prop.name, prop.major, prop.minor, cuda_error_text(err), prop.major,
            prop.minor);
    }
    try {
        auto ctx = std::make_shared<CudaContext>(kDevice);
        core::register_backend(std::make_unique<CudaBackend>(ctx));
        ops::register_kernels(core::DeviceType::cuda, std::make_unique<CudaKernels>(ctx));
    } catch (const Error& e) {
        return std::string("CUDA initialisation failed: ") + e.what();
    }
    return "";
}

}  // namespace zs::backends::cuda
