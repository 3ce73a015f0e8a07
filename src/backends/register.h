// Installs the kernel tables (and device backends) this build has: always the CPU; CUDA when
// built with -DZS_CUDA=ON and a GPU is present. Call once at start-up (CLI main, test main).
#pragma once

#include <string>

namespace zs::backends {

void register_all();

// "cpu (oneDNN 2.6, 2 threads)", "+ cuda: NVIDIA H200" ...: for logs and --version.
std::string describe();

// Why CUDA is unavailable ("" when it is available): "built without CUDA", "no GPU found", ...
std::string cuda_unavailable_reason();

}  // namespace zs::backends
