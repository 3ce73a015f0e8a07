#include "core/buffer.h"

namespace zs::core {

std::shared_ptr<Buffer> Buffer::allocate(size_t bytes, Device device, MemCategory category,
                                         const AllocOptions& opts) {
    Backend& be = backend(device);
    std::shared_ptr<Buffer> b(new Buffer());
    b->data_ = be.allocate(bytes, opts);
    b->bytes_ = bytes;
    b->device_ = device;
    b->category_ = category;
    b->opts_ = opts;
    b->owned_ = true;
    be.memory().on_alloc(category, static_cast<int64_t>(bytes));
    return b;
}

std::shared_ptr<Buffer> Buffer::wrap(void* data, size_t bytes, Device device,
                                     std::shared_ptr<void> keep_alive) {
    std::shared_ptr<Buffer> b(new Buffer());
    b->data_ = data;
    b->bytes_ = bytes;
    b->device_ = device;
    b->owned_ = false;
    b->keep_alive_ = std::move(keep_alive);
    return b;
}

Buffer::~Buffer() {
    if (!owned_) return;
    Backend& be = backend(device_);
    be.memory().on_free(category_, static_cast<int64_t>(bytes_));
    be.deallocate(data_, bytes_, opts_);
}

}  // namespace zs::core
