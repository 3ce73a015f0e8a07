// core::Backend: what a device must provide to hold tensors (allocation, copies, sync) plus its
// memory accounting. Kernels live one layer up (ops::Kernels); this is only the memory side.
//
// Backends are registered once at start-up (the CPU backend is always present; backends/cuda adds
// CUDA when the build has it and a device is found) and are immutable afterwards, so lookups need
// no locking. Allocation and copy functions are thread-safe.
#pragma once

#include <cstddef>
#include <memory>

#include "core/device.h"
#include "core/memory.h"

namespace zs::core {

struct AllocOptions {
    bool pinned = false;      // page-locked host memory (DMA to a GPU); CPU only
    bool huge_pages = false;  // back large CPU buffers by transparent huge pages
};

class Backend {
public:
    virtual ~Backend() = default;
    virtual DeviceType type() const = 0;
    virtual const char* name() const = 0;

    // Raw memory, at least 64-byte aligned. Accounting is done by Buffer, not here.
    virtual void* allocate(size_t bytes, const AllocOptions& opts) = 0;
    virtual void deallocate(void* p, size_t bytes, const AllocOptions& opts) = 0;

    // Copies between this device and the host or within this device. Synchronous.
    virtual void copy_from_host(void* dst, const void* src, size_t bytes) = 0;
    virtual void copy_to_host(void* dst, const void* src, size_t bytes) = 0;
    virtual void copy_within(void* dst, const void* src, size_t bytes) = 0;
    virtual void memset_zero(void* dst, size_t bytes) = 0;
    // Wait until all queued work on the device has finished.
    virtual void synchronize() {}
    // The device's ordered work queue, for libraries that must order their work with ours
    // (a cudaStream_t on CUDA, where every kernel of the backend runs; null where work is
    // synchronous, as on the CPU), and the device ordinal it lives on.
    virtual void* native_stream() const { return nullptr; }
    virtual int device_index() const { return 0; }

    MemoryTracker& memory() { return memory_; }

private:
    MemoryTracker memory_;
};

// The backend for a device type. Throws NotSupported naming the device when none is registered
// (e.g. cuda in a CPU-only build or on a machine without a GPU).
Backend& backend(DeviceType t);
inline Backend& backend(Device d) { return backend(d.type); }
bool has_backend(DeviceType t);

// Install a backend (start-up only, before any tensor of that type exists).
void register_backend(std::unique_ptr<Backend> b);

// Memory statistics of a device: shorthand for backend(d).memory().stats().
MemStats memory_stats(Device d = Device::cpu());

}  // namespace zs::core
