// Host heap policy (core/backend.cpp's CPU backend keeps every freed block in the heap for speed,
// so a process's resident memory stays at its high-water mark plus fragmentation).
#pragma once

#include <cstddef>
#include <cstdint>

namespace zs::core {

// From now on, host blocks of at least `threshold` bytes are mapped and returned to the system
// when freed, and the heap's free top is trimmed past it. Offloaded training calls it: its large
// buffers change size group by group, and a memory cap must see what is in use.
// keep_bytes > 0: freed blocks of at least `threshold` bytes (CPU backend tensors) are kept, up
// to keep_bytes in all (oldest returned first), and handed to the next allocation of the same
// size, alignment and pinning: offloaded training allocates the same group-sized buffers group
// after group (gathered weights, full and reduced gradients), and a kept block is not
// page-faulted in again. Kept blocks are not counted by the MemoryTracker (they are free).
void return_large_host_blocks(size_t threshold, size_t keep_bytes = 0);
// Bytes of freed blocks kept for reuse now, and allocations served from them since start-up.
size_t kept_host_bytes();
int64_t kept_host_reuses();

}  // namespace zs::core
