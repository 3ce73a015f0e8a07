// The shared GoogleTest main: registers this build's backends, says which matmul kernels this CPU
// gets (so a log from an AMX machine and one from an AVX-512-only machine can be told apart),
// then runs the tests.
#include <cstdio>

#include <gtest/gtest.h>

#include "backends/cpu/cpu_kernels.h"
#include "backends/register.h"

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    zs::backends::register_all();
    std::printf("[ kernels ] %s\n", zs::backends::cpu::describe_matmul_routes().c_str());
    return RUN_ALL_TESTS();
}
