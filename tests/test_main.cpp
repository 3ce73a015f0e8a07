// The shared GoogleTest main: registers this build's backends, then runs the tests.
#include <gtest/gtest.h>

#include "backends/register.h"

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    zs::backends::register_all();
    return RUN_ALL_TESTS();
}
