// Buffer: owns bytes on one device and reports them to that device's MemoryTracker under a
// MemCategory for as long as it lives. Non-copyable; shared between tensor views by shared_ptr.
//
// A Buffer may also wrap memory it does not own (an mmap'd file, a caller's array): then it does
// not count towards accounting and `keep_alive` (if any) is released when the Buffer dies.
#pragma once

#include <cstddef>
#include <memory>

#include "core/backend.h"

namespace zs::core {

class Buffer {
public:
    // Allocate `bytes` on `device`, accounted under `category`. Contents are uninitialised.
    static std::shared_ptr<Buffer> allocate(size_t bytes, Device device, MemCategory category,
                                            const AllocOptions& opts = {});
    // Wrap external memory. `keep_alive` owns whatever backs `data` (may be null).
    static std::shared_ptr<Buffer> wrap(void* data, size_t bytes, Device device,
                                        std::shared_ptr<void> keep_alive = nullptr);

    ~Buffer();
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;

    void* data() const { return data_; }
    size_t size() const { return bytes_; }
    Device device() const { return device_; }
    MemCategory category() const { return category_; }
    bool owns_memory() const { return owned_; }

private:
    Buffer() = default;

    void* data_ = nullptr;
    size_t bytes_ = 0;
    Device device_;
    MemCategory category_ = MemCategory::buffers;
    AllocOptions opts_;
    bool owned_ = false;
    std::shared_ptr<void> keep_alive_;
};

}  // namespace zs::core
