// Registers the CUDA backend (core::Backend) and its kernel table (ops::Kernels) for
// DeviceType::cuda when this process can use a GPU. Called once by backends::register_all().
#pragma once

#include <string>

namespace zs::backends::cuda {

// "" on success; otherwise a human-readable reason the CUDA backend is unavailable ("no GPU
// found", "CUDA driver version is insufficient ...", "kernels built for sm_90 cannot run on ...").
// Uses device 0 of those visible (one GPU per process: select it with CUDA_VISIBLE_DEVICES).
std::string try_register();

}  // namespace zs::backends::cuda
