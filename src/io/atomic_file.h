// AtomicFile: write a file so that readers see either the old file or the complete new one.
//
// Data goes to "<path>.tmp"; commit() fsyncs it, renames it over <path>, and fsyncs the directory
// so the rename itself is durable (the order checkpoint commits rely on: data fsync -> rename ->
// directory fsync). Destroying an uncommitted AtomicFile removes the temporary file; <path> is
// untouched. Not thread-safe; one writer per file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace zs::io {

class AtomicFile {
public:
    // Creates (truncates) "<path>.tmp". Raises IoError naming it on failure.
    explicit AtomicFile(std::string path);
    ~AtomicFile();
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;

    void write(const void* data, size_t n);
    void write(std::string_view s) { write(s.data(), s.size()); }
    uint64_t bytes_written() const { return written_; }
    // Make the new contents visible at path(), durably. At most once.
    void commit();

    const std::string& path() const { return path_; }
    const std::string& tmp_path() const { return tmp_path_; }

private:
    std::string path_;
    std::string tmp_path_;
    int fd_ = -1;
    uint64_t written_ = 0;
    bool committed_ = false;
};

// Atomically replace the file at `path` with `contents`.
void write_file_atomic(const std::string& path, std::string_view contents);

// fsync the directory holding `path` (after a rename or create inside it).
void fsync_parent_dir(const std::string& path);

// Read a whole file; IoError naming the path on failure.
std::string read_file(const std::string& path);

// Fault injection (RELIABILITY.md): when the environment has ZS_FAULT=<site>:<n>, the n-th time
// the named site is reached the process kills itself with SIGKILL, so tests can stop a write at
// an exact point. AtomicFile::commit has the sites "file.before_fsync" and "file.before_rename".
// With ZS_FAULT_RANK=r only rank r of a multi-process job (OMPI_COMM_WORLD_RANK / RANK) dies.
void fault_point(const char* site);

}  // namespace zs::io
