#include "io/mmap_file.h"

#include <cerrno>
#include <system_error>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/error.h"

namespace zs::io {

namespace {

std::string errno_text(int err) { return std::generic_category().message(err); }

// Closes a file descriptor on scope exit.
struct FdCloser {
    int fd;
    ~FdCloser() {
        if (fd >= 0) ::close(fd);
    }
};

}  // namespace

std::shared_ptr<MmapFile> MmapFile::open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        ZS_THROW(IoError, "{}: cannot open: {}", path, errno_text(err));
    }
    FdCloser closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        int err = errno;
        ZS_THROW(IoError, "{}: cannot stat: {}", path, errno_text(err));
    }
    ZS_CHECK_T(IoError, S_ISREG(st.st_mode), "{}: not a regular file (a directory or device?)",
               path);
    size_t size = static_cast<size_t>(st.st_size);
    if (size == 0) return std::shared_ptr<MmapFile>(new MmapFile(path, nullptr, 0));

    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED) {
        int err = errno;
        ZS_THROW(IoError, "{}: cannot mmap {} bytes: {}", path, size, errno_text(err));
    }
    return std::shared_ptr<MmapFile>(new MmapFile(path, static_cast<uint8_t*>(p), size));
}

MmapFile::~MmapFile() {
    if (data_ != nullptr) ::munmap(data_, size_);
}

}  // namespace zs::io
