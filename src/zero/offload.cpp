#include "zero/offload.h"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>

#include <signal.h>
#include <unistd.h>

#include "base/error.h"
#include "base/log.h"

namespace zs::zero {

namespace fs = std::filesystem;

const char* to_string(Tier t) {
    switch (t) {
        case Tier::memory:
            return "memory";
        case Tier::cpu:
            return "cpu";
        case Tier::nvme:
            return "nvme";
    }
    return "?";
}

namespace {

std::atomic<int> g_store_id{0};

// Swap directories of this host's processes that no longer run (killed: their destructor never
// ran) are removed; nothing ever reads them.
void remove_stale(const std::string& root, const std::string& host) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root, ec)) {
        const std::string name = e.path().filename().string();
        if (!name.starts_with(host + ".")) continue;
        const long pid = std::strtol(name.c_str() + host.size() + 1, nullptr, 10);
        if (pid <= 0 || pid == ::getpid() || ::kill(static_cast<pid_t>(pid), 0) == 0 ||
            errno != ESRCH) {
            continue;
        }
        std::error_code rm;
        fs::remove_all(e.path(), rm);
        if (!rm) {
            log_info("zero: removed the swap directory of a process that died: {}",
                     e.path().string());
        }
    }
}

}  // namespace

SwapStore::SwapStore(Tier tier, const OffloadConfig& cfg, int rank, const std::string& nvme_path,
                     bool pin, const std::string& what)
    : tier_(tier), pin_(pin) {
    ZS_CHECK(tier != Tier::memory, "SwapStore: the memory tier needs no store");
    if (tier != Tier::nvme) return;
    ZS_CHECK_T(ConfigError, !nvme_path.empty(),
               "zero_optimization.offload_{}.nvme_path: required when device is \"nvme\"", what);
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    const std::string root = nvme_path + "/zerospeed_swap";
    remove_stale(root, host);
    dir_ = fmt::format("{}/{}.{}.{}.r{}.{}", root, host, ::getpid(), g_store_id++, rank, what);
    std::error_code ec;
    fs::create_directories(dir_, ec);
    ZS_CHECK_T(IoError, !ec, "{}: cannot create the swap directory (nvme_path): {}", dir_,
               ec.message());
    aio_ = std::make_unique<io::AsyncIo>(cfg.aio);
}

SwapStore::~SwapStore() {
    aio_.reset();  // drains the requests in flight
    if (!dir_.empty()) {
        std::error_code ec;
        fs::remove_all(dir_, ec);
        if (ec) log_warn("zero: cannot remove the swap directory {}: {}", dir_, ec.message());
    }
}

std::string SwapStore::path(int id) const { return fmt::format("{}/{}.swp", dir_, id); }

io::AioWork SwapStore::write(int id, io::AlignedBuffer& buf, size_t n) {
    if (aio_) return aio_->write(path(id), buf, n);
    if (host_.size() <= static_cast<size_t>(id)) host_.resize(static_cast<size_t>(id) + 1);
    io::AlignedBuffer& h = host_[static_cast<size_t>(id)];
    if (h.capacity() < io::aio_padded(n)) {
        h = io::AlignedBuffer(n, pin_, core::MemCategory::optimizer);
    }
    std::memcpy(h.data(), buf.data(), n);
    host_written_ += static_cast<int64_t>(n);
    return {};
}

io::AioWork SwapStore::read(int id, io::AlignedBuffer& buf, size_t n) {
    if (aio_) return aio_->read(path(id), buf, n);
    ZS_CHECK(
        static_cast<size_t>(id) < host_.size() && host_[static_cast<size_t>(id)].capacity() >= n,
        "zero: cpu tier record {} read before it was written", id);
    std::memcpy(buf.data(), host_[static_cast<size_t>(id)].data(), n);
    host_read_ += static_cast<int64_t>(n);
    return {};
}

int64_t SwapStore::bytes_written() const { return aio_ ? aio_->bytes_written() : host_written_; }
int64_t SwapStore::bytes_read() const { return aio_ ? aio_->bytes_read() : host_read_; }

}  // namespace zs::zero
