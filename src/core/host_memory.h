// Host heap policy (core/backend.cpp's CPU backend keeps every freed block in the heap for speed,
// so a process's resident memory stays at its high-water mark plus fragmentation).
#pragma once

#include <cstddef>

namespace zs::core {

// From now on, host blocks of at least `threshold` bytes are mapped and returned to the system
// when freed, and the heap's free top is trimmed past it. Offloaded training calls it: its large
// buffers change size group by group, and a memory cap must see what is in use.
void return_large_host_blocks(size_t threshold);

}  // namespace zs::core
