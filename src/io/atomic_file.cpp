#include "io/atomic_file.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <system_error>
#include <unordered_map>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include "base/error.h"

namespace zs::io {

namespace {

std::string errno_text(int err) { return std::generic_category().message(err); }

std::string parent_dir(const std::string& path) {
    size_t slash = path.find_last_of('/');
    if (slash == std::string::npos) return ".";
    if (slash == 0) return "/";
    return path.substr(0, slash);
}

}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)), tmp_path_(path_ + ".tmp") {
    fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) {
        int err = errno;
        ZS_THROW(IoError, "{}: cannot create: {}", tmp_path_, errno_text(err));
    }
}

AtomicFile::~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_path_.c_str());
}

void AtomicFile::write(const void* data, size_t n) {
    ZS_ASSERT(!committed_ && fd_ >= 0, "write after commit");
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
        ssize_t w = ::write(fd_, p, n);
        if (w < 0) {
            int err = errno;
            if (err == EINTR) continue;
            ZS_THROW(IoError, "{}: write failed after {} bytes: {}", tmp_path_, written_,
                     errno_text(err));
        }
        p += w;
        n -= static_cast<size_t>(w);
        written_ += static_cast<uint64_t>(w);
    }
}

void AtomicFile::commit() {
    ZS_ASSERT(!committed_ && fd_ >= 0, "commit called twice");
    fault_point("file.before_fsync");
    if (::fsync(fd_) != 0) {
        int err = errno;
        ZS_THROW(IoError, "{}: fsync failed: {}", tmp_path_, errno_text(err));
    }
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) {
        int err = errno;
        ZS_THROW(IoError, "{}: close failed: {}", tmp_path_, errno_text(err));
    }
    fault_point("file.before_rename");
    if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
        int err = errno;
        ZS_THROW(IoError, "{}: cannot rename to {}: {}", tmp_path_, path_, errno_text(err));
    }
    committed_ = true;
    fsync_parent_dir(path_);
}

void write_file_atomic(const std::string& path, std::string_view contents) {
    AtomicFile f(path);
    f.write(contents);
    f.commit();
}

void fsync_parent_dir(const std::string& path) {
    std::string dir = parent_dir(path);
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        ZS_THROW(IoError, "{}: cannot open directory to fsync: {}", dir, errno_text(err));
    }
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    ZS_CHECK_T(IoError, rc == 0, "{}: directory fsync failed: {}", dir, errno_text(err));
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in.good()) {
        int err = errno;
        ZS_THROW(IoError, "{}: cannot open: {}", path, errno_text(err));
    }
    std::stringstream ss;
    ss << in.rdbuf();
    ZS_CHECK_T(IoError, !in.bad(), "{}: read error", path);
    return ss.str();
}

void fault_point(const char* site) {
    static const char* spec = std::getenv("ZS_FAULT");
    if (spec == nullptr) return;
    std::string s(spec);
    auto colon = s.rfind(':');
    if (colon == std::string::npos || s.compare(0, colon, site) != 0) return;
    int target = std::atoi(s.c_str() + colon + 1);
    // ZS_FAULT_RANK=r limits the fault to one rank of a multi-process job.
    if (const char* fr = std::getenv("ZS_FAULT_RANK")) {
        const char* me = std::getenv("OMPI_COMM_WORLD_RANK");
        if (me == nullptr) me = std::getenv("RANK");
        if (me == nullptr || std::atoi(me) != std::atoi(fr)) return;
    }
    // NOTE(zs): a process-wide hit counter; this is a test hook, inert unless ZS_FAULT is set.
    static std::mutex mu;
    static std::unordered_map<std::string, int> hits;
    std::lock_guard<std::mutex> lock(mu);
    if (++hits[site] == target) {
        std::fprintf(stderr, "zerospeed: ZS_FAULT %s hit %d: killing this process\n", site, target);
        std::fflush(stderr);
        ::kill(::getpid(), SIGKILL);
    }
}

}  // namespace zs::io
