#include "base/error.h"

#include <cstdio>
#include <cstdlib>

namespace zs::detail {

void assert_fail(const char* file, int line, const char* cond, const std::string& msg) {
    std::fprintf(stderr, "zerospeed: internal error at %s:%d: assertion `%s` failed%s%s\n", file,
                 line, cond, msg.empty() ? "" : ": ", msg.c_str());
    std::fflush(stderr);
    std::abort();
}

}  // namespace zs::detail
