#include "io/atomic_file.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <unordered_map>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include "base/error.h"

namespace zs::io {

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
    tmp_ = path_ + ".tmp-" + std::to_string(getpid());
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ZS_CHECK_T(IoError, fd_ >= 0, "cannot create '{}': {}", tmp_, std::strerror(errno));
}

AtomicFile::~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
        ssize_t w = ::write(fd_, p, n);
        if (w < 0 && errno == EINTR) continue;
        ZS_CHECK_T(IoError, w > 0, "write to '{}' failed: {}", tmp_, std::strerror(errno));
        p += w;
        n -= static_cast<size_t>(w);
    }
}

void AtomicFile::commit() {
    fault_point("file.before_fsync");
    ZS_CHECK_T(IoError, ::fsync(fd_) == 0, "fsync of '{}' failed: {}", tmp_, std::strerror(errno));
    ::close(fd_);
    fd_ = -1;
    fault_point("file.before_rename");
    ZS_CHECK_T(IoError, std::rename(tmp_.c_str(), path_.c_str()) == 0, "rename '{}' -> '{}': {}",
               tmp_, path_, std::strerror(errno));
    committed_ = true;
    fsync_dir(std::filesystem::path(path_).parent_path().string());
}

void write_file_atomic(const std::string& path, std::string_view contents) {
    AtomicFile f(path);
    f.write(contents.data(), contents.size());
    f.commit();
}

void fsync_dir(const std::string& dir) {
    std::string d = dir.empty() ? "." : dir;
    int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ZS_CHECK_T(IoError, fd >= 0, "cannot open directory '{}': {}", d, std::strerror(errno));
    int rc = ::fsync(fd);
    ::close(fd);
    ZS_CHECK_T(IoError, rc == 0, "fsync of directory '{}' failed: {}", d, std::strerror(errno));
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    ZS_CHECK_T(IoError, in.good(), "cannot open '{}': {}", path, std::strerror(errno));
    std::stringstream ss;
    ss << in.rdbuf();
    ZS_CHECK_T(IoError, !in.bad(), "error reading '{}'", path);
    return ss.str();
}

void fault_point(const char* site) {
    static const char* spec = std::getenv("ZS_FAULT");
    if (spec == nullptr) return;
    // ZS_FAULT = "site:n"; the count of hits per site is process-wide (this is a test hook).
    static std::mutex mu;
    static std::unordered_map<std::string, int> hits;
    std::string s(spec);
    auto colon = s.rfind(':');
    if (colon == std::string::npos || s.compare(0, colon, site) != 0) return;
    int target = std::atoi(s.c_str() + colon + 1);
    std::lock_guard<std::mutex> lock(mu);
    if (++hits[site] == target) {
        std::fprintf(stderr, "zerospeed: ZS_FAULT %s hit %d: killing this process\n", site, target);
        std::fflush(stderr);
        ::kill(getpid(), SIGKILL);
    }
}

}  // namespace zs::io
