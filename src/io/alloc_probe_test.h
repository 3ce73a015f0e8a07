// AllocProbe (tests only): the largest single heap allocation made through operator new while a
// probe is active, so tests can check that a parser never allocates a size taken from a file
// before checking it against the bytes available. alloc_probe_test.cpp replaces the global
// operator new/delete of the io test binary to observe every allocation.
#pragma once

#include <cstddef>

namespace zs::test {

class AllocProbe {
public:
    AllocProbe();  // resets the running maximum
    ~AllocProbe();
    AllocProbe(const AllocProbe&) = delete;
    AllocProbe& operator=(const AllocProbe&) = delete;
    // Largest single allocation (bytes) since construction.
    size_t max_bytes() const;
};

}  // namespace zs::test
