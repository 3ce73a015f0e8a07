#include "backends/register.h"

#include <memory>
#include <mutex>

#include <fmt/format.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "backends/cpu/cpu_kernels.h"
#include "core/backend.h"

#ifdef ZS_CUDA
#include "backends/cuda/cuda_register.h"
#endif

namespace zs::backends {

namespace {
std::string g_cuda_reason = "this build has no CUDA backend (configure with -DZS_CUDA=ON)";
}

void register_all() {
    static std::once_flag once;
    std::call_once(once, [] {
        ops::register_kernels(core::DeviceType::cpu, std::make_unique<cpu::CpuKernels>());
#ifdef ZS_CUDA
        g_cuda_reason = cuda::try_register();
#endif
    });
}

std::string describe() {
    const dnnl_version_t* v = dnnl_version();
    std::string s = fmt::format("cpu (oneDNN {}.{}.{}, {} threads)", v->major, v->minor, v->patch,
                                omp_get_max_threads());
    if (ops::has_kernels(core::DeviceType::cuda)) s += ", cuda";
    return s;
}

std::string cuda_unavailable_reason() {
    return ops::has_kernels(core::DeviceType::cuda) ? std::string() : g_cuda_reason;
}

}  // namespace zs::backends
