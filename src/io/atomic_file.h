// Crash-safe file writes: write to `path.tmp-<pid>`, fsync, rename over `path`, fsync the
// directory. A reader sees either the old file or the complete new one, never a partial write.
// Also the fault hook `ZS_FAULT=<site>:<n>` (RELIABILITY.md): the n-th time a named site is
// reached the process dies with SIGKILL, so tests can kill writes at exact points.
#pragma once

#include <string>
#include <string_view>

namespace zs::io {

class AtomicFile {
public:
    explicit AtomicFile(std::string path);
    ~AtomicFile();  // not committed: the temporary file is removed
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    void write(const void* data, size_t n);
    // fsync + rename + directory fsync. After commit() the file is durable at `path`.
    void commit();
    const std::string& path() const { return path_; }

private:
    std::string path_, tmp_;
    int fd_ = -1;
    bool committed_ = false;
};

// Write a whole file atomically.
void write_file_atomic(const std::string& path, std::string_view contents);
// fsync a directory (after renames inside it).
void fsync_dir(const std::string& dir);
// Read a whole file; IoError naming the path on failure.
std::string read_file(const std::string& path);

// Fault injection: if ZS_FAULT names `site` (e.g. "ckpt.write:3"), SIGKILL self on its n-th hit.
void fault_point(const char* site);

}  // namespace zs::io
