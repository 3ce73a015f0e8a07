#include "io/aio.h"

#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <system_error>

#include <fcntl.h>
#include <liburing.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/error.h"
#include "base/log.h"
#include "core/backend.h"

namespace zs::io {

namespace {

constexpr uint64_t kMagic = 0x315346414f49535aULL;  // "ZSIOAFS1" little-endian

struct Footer {
    uint64_t magic = kMagic;
    uint64_t n = 0;         // data bytes
    uint64_t data_sum = 0;  // XXH3-64 of the data
    uint64_t self_sum = 0;  // XXH3-64 of the three fields above
};

std::string errno_text(int err) {
    return fmt::format("{} (errno {})", std::generic_category().message(err), err);
}

core::MemoryTracker& cpu_tracker() { return core::backend(core::Device::cpu()).memory(); }

std::atomic<bool> g_pin_refused_logged{false};

}  // namespace

// ------------------------------------------------------------------------------- AlignedBuffer

AlignedBuffer::AlignedBuffer(size_t bytes, bool pin, core::MemCategory cat) : cat_(cat) {
    capacity_ = aio_padded(std::max<size_t>(bytes, 1));
    void* p = nullptr;
    if (posix_memalign(&p, kAioAlign, capacity_) != 0 || p == nullptr) {
        ZS_THROW(Error, "aio: cannot allocate an aligned buffer of {} bytes", capacity_);
    }
    data_ = static_cast<std::byte*>(p);
    // Not cleared: a write zeroes its padding, a read fills the whole padded size.
    cpu_tracker().on_alloc(cat_, static_cast<int64_t>(capacity_));
    if (pin) {
        if (::mlock(data_, capacity_) == 0) {
            pinned_ = true;
        } else if (!g_pin_refused_logged.exchange(true)) {
            int err = errno;
            log_info(
                "aio: pin_memory: mlock of {} refused ({}; RLIMIT_MEMLOCK / CAP_IPC_LOCK): "
                "buffers stay pageable",
                core::format_bytes(static_cast<int64_t>(capacity_)), errno_text(err));
        }
    }
}

AlignedBuffer::~AlignedBuffer() { reset(); }

void AlignedBuffer::reset() {
    if (!data_) return;
    if (pinned_) ::munlock(data_, capacity_);
    cpu_tracker().on_free(cat_, static_cast<int64_t>(capacity_));
    std::free(data_);
    data_ = nullptr;
    capacity_ = 0;
    pinned_ = false;
}

AlignedBuffer::AlignedBuffer(AlignedBuffer&& o) noexcept
    : data_(o.data_), capacity_(o.capacity_), pinned_(o.pinned_), cat_(o.cat_) {
    o.data_ = nullptr;
    o.capacity_ = 0;
    o.pinned_ = false;
}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
        reset();
        data_ = o.data_;
        capacity_ = o.capacity_;
        pinned_ = o.pinned_;
        cat_ = o.cat_;
        o.data_ = nullptr;
        o.capacity_ = 0;
        o.pinned_ = false;
    }
    return *this;
}

// ------------------------------------------------------------------------------------ AioWork

struct AioWork::State {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::string error;  // empty: success
    void finish(std::string err) {
        {
            std::lock_guard<std::mutex> lk(mu);
            error = std::move(err);
            done = true;
        }
        cv.notify_all();
    }
};

bool AioWork::test() const {
    if (!s_) return true;
    std::lock_guard<std::mutex> lk(s_->mu);
    return s_->done;
}

void AioWork::wait() const {
    if (!s_) return;
    std::unique_lock<std::mutex> lk(s_->mu);
    s_->cv.wait(lk, [this] { return s_->done; });
    if (!s_->error.empty()) ZS_THROW(IoError, "{}", s_->error);
}

// -------------------------------------------------------------------------------------- worker

struct AsyncIo::Request {
    bool write = false;
    std::string path;
    std::byte* data = nullptr;
    size_t n = 0;
    std::shared_ptr<AioWork::State> state;
};

struct AsyncIo::Worker {
    AsyncIo& owner;
    io_uring ring{};
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::unique_ptr<Request>> queue;
    bool stop = false;
    std::thread thread;

    explicit Worker(AsyncIo& o) : owner(o) {
        const unsigned depth = static_cast<unsigned>(owner.cfg_.queue_depth);
        int rc = io_uring_queue_init(depth, &ring, 0);
        if (rc < 0) {
            ZS_THROW(IoError,
                     "aio: io_uring_queue_init({}) failed: {} (is io_uring disabled by "
                     "/proc/sys/kernel/io_uring_disabled or a seccomp profile?)",
                     depth, errno_text(-rc));
        }
        thread = std::thread([this] { run(); });
    }
    ~Worker() {
        {
            std::lock_guard<std::mutex> lk(mu);
            stop = true;
        }
        cv.notify_all();
        thread.join();
        io_uring_queue_exit(&ring);
    }

    void run() {
        for (;;) {
            std::unique_ptr<Request> r;
            {
                std::unique_lock<std::mutex> lk(mu);
                cv.wait(lk, [this] { return stop || !queue.empty(); });
                if (queue.empty()) return;  // stop, and nothing left
                r = std::move(queue.front());
                queue.pop_front();
            }
            std::string err;
            try {
                if (r->write) {
                    do_write(*r);
                } else {
                    do_read(*r);
                }
            } catch (const std::exception& e) {
                err = e.what();
                if (err.empty()) err = "aio: unknown error on " + r->path;
            }
            r->state->finish(std::move(err));
        }
    }

    int open_file(const std::string& path, int flags) {
        if (owner.cfg_.direct) {
            int fd = ::open(path.c_str(), flags | O_DIRECT | O_CLOEXEC, 0644);
            if (fd >= 0) return fd;
            int err = errno;
            if (err != EINVAL) {
                ZS_THROW(IoError, "{}: cannot open: {}", path, errno_text(err));
            }
            if (!owner.direct_refused_logged_.exchange(true)) {
                log_info(
                    "aio: {}: the file system refuses O_DIRECT ({}): using buffered I/O (the "
                    "page cache holds the swapped data)",
                    path, errno_text(err));
            }
        }
        int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
        if (fd < 0) {
            int err = errno;
            ZS_THROW(IoError, "{}: cannot open: {}", path, errno_text(err));
        }
        return fd;
    }

    struct Block {
        std::byte* buf;
        uint64_t off;
        uint32_t len;
    };

    // Runs every block through the ring with at most queue_depth in flight. Throws IoError naming
    // `path`, the offset and the errno of the first failure (after the blocks in flight drain).
    void run_blocks(int fd, const std::string& path, std::vector<Block> blocks, bool write) {
        const AioConfig& c = owner.cfg_;
        const size_t qd = static_cast<size_t>(c.queue_depth);
        std::deque<Block> todo(blocks.begin(), blocks.end());
        std::vector<Block> slots;  // user_data indexes this
        std::vector<size_t> free_slots;
        size_t inflight = 0;
        std::string first_error;
        auto fail = [&](std::string e) {
            if (first_error.empty()) first_error = std::move(e);
        };
        while ((first_error.empty() && !todo.empty()) || inflight > 0) {
            // Fill the queue: up to queue_depth blocks (a whole batch when !overlap_events,
            // which only refills once the batch has drained).
            const bool may_fill = c.overlap_events || inflight == 0;
            size_t queued = 0;
            while (may_fill && first_error.empty() && !todo.empty() && inflight < qd) {
                io_uring_sqe* sqe = io_uring_get_sqe(&ring);
                if (!sqe) break;
                Block b = todo.front();
                todo.pop_front();
                size_t slot;
                if (!free_slots.empty()) {
                    slot = free_slots.back();
                    free_slots.pop_back();
                    slots[slot] = b;
                } else {
                    slot = slots.size();
                    slots.push_back(b);
                }
                if (write) {
                    io_uring_prep_write(sqe, fd, b.buf, b.len, b.off);
                } else {
                    io_uring_prep_read(sqe, fd, b.buf, b.len, b.off);
                }
                io_uring_sqe_set_data64(sqe, slot);
                ++inflight;
                ++queued;
                if (c.single_submit) submit(path);
            }
            if (queued > 0 && !c.single_submit) submit(path);
            if (inflight == 0) break;
            // Reap: one completion at a time (overlap_events) or the whole batch.
            do {
                io_uring_cqe* cqe = nullptr;
                int rc = io_uring_wait_cqe(&ring, &cqe);
                if (rc == -EINTR) continue;
                if (rc < 0) ZS_THROW(IoError, "{}: io_uring_wait_cqe: {}", path, errno_text(-rc));
                const size_t slot = static_cast<size_t>(io_uring_cqe_get_data64(cqe));
                const int res = cqe->res;
                io_uring_cqe_seen(&ring, cqe);
                --inflight;
                Block b = slots[slot];
                free_slots.push_back(slot);
                if (res < 0) {
                    fail(fmt::format("{}: {} of {} bytes at offset {} failed: {}", path,
                                     write ? "write" : "read", b.len, b.off, errno_text(-res)));
                } else if (res == 0) {
                    fail(write ? fmt::format("{}: write at offset {} wrote nothing: {}", path,
                                             b.off, errno_text(ENOSPC))
                               : fmt::format("{}: unexpected end of file at offset {} (short "
                                             "read: the file is truncated)",
                                             path, b.off));
                } else if (static_cast<uint32_t>(res) < b.len) {
                    // A short transfer: the rest goes again (its error, if any, comes then).
                    const uint32_t done = static_cast<uint32_t>(res);
                    todo.push_front({b.buf + done, b.off + done, b.len - done});
                }
                (write ? owner.written_ : owner.read_) += res > 0 ? res : 0;
            } while (!c.overlap_events && inflight > 0);
        }
        if (!first_error.empty()) ZS_THROW(IoError, "{}", first_error);
    }

    void submit(const std::string& path) {
        int rc;
        do {
            rc = io_uring_submit(&ring);
        } while (rc == -EINTR || rc == -EAGAIN);
        if (rc < 0) ZS_THROW(IoError, "{}: io_uring_submit: {}", path, errno_text(-rc));
    }

    std::vector<Block> blocks_of(std::byte* data, size_t padded) const {
        const size_t bs = static_cast<size_t>(owner.cfg_.block_size);
        std::vector<Block> out;
        for (size_t off = 0; off < padded; off += bs) {
            out.push_back({data + off, off, static_cast<uint32_t>(std::min(bs, padded - off))});
        }
        return out;
    }

    static Footer make_footer(size_t n, uint64_t sum) {
        Footer f;
        f.n = n;
        f.data_sum = sum;
        f.self_sum = XXH3_64bits(&f, offsetof(Footer, self_sum));
        return f;
    }

    void do_write(Request& r) {
        const size_t padded = aio_padded(r.n);
        std::memset(r.data + r.n, 0, padded - r.n);
        AlignedBuffer fbuf(kAioAlign, false);
        std::memset(fbuf.data(), 0, kAioAlign);  // the footer block's bytes after the fields
        const Footer f = make_footer(r.n, XXH3_64bits(r.data, r.n));
        std::memcpy(fbuf.data(), &f, sizeof f);
        const std::string tmp = r.path + ".tmp";
        int fd = open_file(tmp, O_WRONLY | O_CREAT | O_TRUNC);
        try {
            // The data, then the footer: a file with a valid footer has all its data.
            run_blocks(fd, tmp, blocks_of(r.data, padded), true);
            run_blocks(fd, tmp, {{fbuf.data(), padded, static_cast<uint32_t>(kAioAlign)}}, true);
            if (::close(fd) != 0) {
                int err = errno;
                fd = -1;
                ZS_THROW(IoError, "{}: close failed: {}", tmp, errno_text(err));
            }
            fd = -1;
            if (::rename(tmp.c_str(), r.path.c_str()) != 0) {
                int err = errno;
                ZS_THROW(IoError, "{}: cannot rename to {}: {}", tmp, r.path, errno_text(err));
            }
        } catch (...) {
            if (fd >= 0) ::close(fd);
            ::unlink(tmp.c_str());  // nothing half-written stays behind
            throw;
        }
    }

    void do_read(Request& r) {
        const size_t padded = aio_padded(r.n);
        int fd = open_file(r.path, O_RDONLY);
        AlignedBuffer fbuf(kAioAlign, false);
        try {
            struct stat st {};
            if (::fstat(fd, &st) != 0) {
                int err = errno;
                ZS_THROW(IoError, "{}: fstat failed: {}", r.path, errno_text(err));
            }
            const uint64_t expect = padded + kAioAlign;
            ZS_CHECK_T(IoError, static_cast<uint64_t>(st.st_size) == expect,
                       "{}: {} bytes on disk, expected {} for a tensor file of {} bytes (short or "
                       "truncated file)",
                       r.path, st.st_size, expect, r.n);
            std::vector<Block> blocks = blocks_of(r.data, padded);
            blocks.push_back({fbuf.data(), padded, static_cast<uint32_t>(kAioAlign)});
            run_blocks(fd, r.path, std::move(blocks), false);
        } catch (...) {
            ::close(fd);
            throw;
        }
        ::close(fd);
        Footer f;
        std::memcpy(&f, fbuf.data(), sizeof f);
        ZS_CHECK_T(IoError,
                   f.magic == kMagic && f.self_sum == XXH3_64bits(&f, offsetof(Footer, self_sum)),
                   "{}: not a complete zerospeed tensor file (bad footer)", r.path);
        ZS_CHECK_T(IoError, f.n == r.n, "{}: holds {} bytes, expected {}", r.path, f.n, r.n);
        const uint64_t sum = XXH3_64bits(r.data, r.n);
        ZS_CHECK_T(IoError, sum == f.data_sum,
                   "{}: checksum mismatch (XXH3 {:016x}, footer says {:016x}): the file is "
                   "corrupt",
                   r.path, sum, f.data_sum);
    }
};

// -------------------------------------------------------------------------------------- AsyncIo

AsyncIo::AsyncIo(AioConfig cfg) : cfg_(cfg) {
    ZS_CHECK_T(ConfigError,
               cfg_.block_size > 0 && cfg_.block_size % static_cast<int64_t>(kAioAlign) == 0 &&
                   cfg_.block_size <= (int64_t{1} << 30),
               "aio.block_size: expected a positive multiple of {} up to 1 GiB, got {}", kAioAlign,
               cfg_.block_size);
    ZS_CHECK_T(ConfigError, cfg_.queue_depth >= 1 && cfg_.queue_depth <= 4096,
               "aio.queue_depth: expected 1..4096, got {}", cfg_.queue_depth);
    ZS_CHECK_T(ConfigError, cfg_.thread_count >= 1 && cfg_.thread_count <= 64,
               "aio.thread_count: expected 1..64, got {}", cfg_.thread_count);
    for (int64_t i = 0; i < cfg_.thread_count; ++i) {
        workers_.push_back(std::make_unique<Worker>(*this));
    }
}

AsyncIo::~AsyncIo() { workers_.clear(); }  // each worker drains its queue, then joins

AioWork AsyncIo::submit(std::unique_ptr<Request> r) {
    ZS_CHECK_T(Error, r->data != nullptr, "aio: {}: no buffer", r->path);
    auto state = std::make_shared<AioWork::State>();
    r->state = state;
    Worker& w = *workers_[next_.fetch_add(1) % workers_.size()];
    {
        std::lock_guard<std::mutex> lk(w.mu);
        w.queue.push_back(std::move(r));
    }
    w.cv.notify_one();
    return AioWork(std::move(state));
}

AioWork AsyncIo::write(const std::string& path, AlignedBuffer& buf, size_t n) {
    ZS_CHECK(aio_padded(n) <= buf.capacity(), "aio: {}: {} bytes exceed the buffer's {}", path, n,
             buf.capacity());
    auto r = std::make_unique<Request>();
    r->write = true;
    r->path = path;
    r->data = buf.data();
    r->n = n;
    return submit(std::move(r));
}

AioWork AsyncIo::read(const std::string& path, AlignedBuffer& buf, size_t n) {
    ZS_CHECK(aio_padded(n) <= buf.capacity(), "aio: {}: {} bytes exceed the buffer's {}", path, n,
             buf.capacity());
    auto r = std::make_unique<Request>();
    r->path = path;
    r->data = buf.data();
    r->n = n;
    return submit(std::move(r));
}

}  // namespace zs::io
