// MmapFile: a whole file mapped into memory, read-only as far as the file is concerned (RAII).
//
// The mapping is private and copy-on-write (MAP_PRIVATE | MAP_NORESERVE): tensors that view it may
// be written by their users, and such writes stay in this process's memory; the file on disk is
// never modified. Hold it by shared_ptr so tensor Buffers can keep it alive (core::Buffer::wrap's
// keep_alive). An empty file is valid: size() == 0 and data() == nullptr.
// Thread-safety: immutable after open(); any number of threads may read it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace zs::io {

class MmapFile {
public:
    // Map `path`. Raises IoError naming the path and the OS error text (missing file, permission,
    // a directory, mmap failure).
    static std::shared_ptr<MmapFile> open(const std::string& path);

    ~MmapFile();
    MmapFile(const MmapFile&) = delete;
    MmapFile& operator=(const MmapFile&) = delete;

    const std::string& path() const { return path_; }
    size_t size() const { return size_; }
    const uint8_t* data() const { return data_; }
    std::span<const uint8_t> bytes() const { return {data_, size_}; }
    // The same bytes, writable: writes land in private copy-on-write pages, never in the file.
    uint8_t* cow_data() const { return data_; }

private:
    MmapFile(std::string path, uint8_t* data, size_t size)
        : path_(std::move(path)), data_(data), size_(size) {}

    std::string path_;
    uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace zs::io
