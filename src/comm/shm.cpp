#include "comm/shm.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <random>

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <immintrin.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/error.h"
#include "base/log.h"
#include "core/half.h"

namespace zs::comm {

using core::DType;

namespace {

constexpr uint64_t kMagic = 0x7a73'73686d'0001ULL;  // "zsshm", layout version 1
constexpr size_t kLine = 64;
constexpr char kPrefix[] = "zs-shm-";

// Each counter on its own cache line: a rank's stores never invalidate a line another rank's
// counter shares.
struct alignas(kLine) Line {
    std::atomic<uint64_t> v{0};
};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "shared counters must be lock-free");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "shared counters must be lock-free");

long futex(std::atomic<uint32_t>* addr, int op, uint32_t val, const timespec* ts) {
    // Not FUTEX_PRIVATE_FLAG: the word is shared between processes.
    return syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), op, val, ts, nullptr, 0);
}

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace

int64_t env_int(const char* name, int64_t fallback, int64_t lo, int64_t hi) {
    const char* s = std::getenv(name);
    if (s == nullptr || *s == '\0') return fallback;
    char* end = nullptr;
    const long long v = std::strtoll(s, &end, 10);
    ZS_CHECK_T(ConfigError, end != nullptr && *end == '\0' && v >= lo && v <= hi,
               "environment variable {}='{}': expected an integer in [{}, {}]", name, s, lo, hi);
    return v;
}

namespace {

// Remove segments left by creators that are no longer alive (a crash between create and unlink).
void remove_stale_segments() {
    DIR* d = opendir("/dev/shm");
    if (d == nullptr) return;
    while (dirent* e = readdir(d)) {
        const std::string n = e->d_name;
        if (n.rfind(kPrefix, 0) != 0) continue;
        const long pid = std::strtol(n.c_str() + sizeof(kPrefix) - 1, nullptr, 10);
        if (pid <= 0) continue;
        if (kill(static_cast<pid_t>(pid), 0) == -1 && errno == ESRCH) {
            shm_unlink(("/" + n).c_str());
        }
    }
    closedir(d);
}

// Copy whose stores bypass the cache (non-temporal): for outputs larger than the caches it saves
// the read-for-ownership of every line written, a third of a plain copy's memory traffic. Ends
// with a store fence, so a release store after it publishes the data.
void copy_stream(char* dst, const char* src, size_t n) {
#ifdef __AVX512F__
    size_t head = (64 - (reinterpret_cast<uintptr_t>(dst) & 63)) & 63;
    head = std::min(head, n);
    std::memcpy(dst, src, head);
    dst += head;
    src += head;
    n -= head;
    size_t i = 0;
    for (; i + 256 <= n; i += 256) {
        const __m512i a = _mm512_loadu_si512(src + i), b = _mm512_loadu_si512(src + i + 64);
        const __m512i c = _mm512_loadu_si512(src + i + 128), d = _mm512_loadu_si512(src + i + 192);
        _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i), a);
        _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i + 64), b);
        _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i + 128), c);
        _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i + 192), d);
    }
    for (; i + 64 <= n; i += 64) {
        _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i), _mm512_loadu_si512(src + i));
    }
    std::memcpy(dst + i, src + i, n - i);
    _mm_sfence();
#else
    std::memcpy(dst, src, n);
#endif
}

// The copy for an op's output: streaming when the op is larger than `stream_from` bytes.
void copy_out(char* dst, const char* src, size_t n, bool stream) {
    if (stream) {
        copy_stream(dst, src, n);
    } else {
        std::memcpy(dst, src, n);
    }
}

// ---- reductions ----

template <class T>
struct Elem {
    static float load(const void* p, int64_t i) { return static_cast<const T*>(p)[i]; }
};

// Rank-order float reduction over a block of at most kBlock elements, accumulating in f32.
constexpr int64_t kBlock = 1024;

template <ReduceOp Op>
inline float combine(float a, float b) {
    if constexpr (Op == ReduceOp::max) return std::max(a, b);
    if constexpr (Op == ReduceOp::min) return std::min(a, b);
    return a + b;
}

template <ReduceOp Op>
void reduce_f32(float* out, const std::vector<const void*>& ins, int64_t count) {
    const size_t n = ins.size();
    const float inv_n = static_cast<float>(n);
    if (n == 2) {
        const float* a = static_cast<const float*>(ins[0]);
        const float* b = static_cast<const float*>(ins[1]);
        for (int64_t i = 0; i < count; ++i) {
            float v = combine<Op>(a[i], b[i]);
            if constexpr (Op == ReduceOp::avg) v /= inv_n;
            out[i] = v;
        }
        return;
    }
    alignas(64) float acc[kBlock];
    for (int64_t i0 = 0; i0 < count; i0 += kBlock) {
        const int64_t k = std::min(kBlock, count - i0);
        const float* a = static_cast<const float*>(ins[0]) + i0;
        for (int64_t i = 0; i < k; ++i) acc[i] = a[i];
        for (size_t q = 1; q < n; ++q) {
            const float* b = static_cast<const float*>(ins[q]) + i0;
            for (int64_t i = 0; i < k; ++i) acc[i] = combine<Op>(acc[i], b[i]);
        }
        if constexpr (Op == ReduceOp::avg) {
            for (int64_t i = 0; i < k; ++i) acc[i] /= inv_n;
        }
        std::memcpy(out + i0, acc, static_cast<size_t>(k) * sizeof(float));
    }
}

// 16-bit floats: each block converted to f32 (the vectorised span conversions), reduced, rounded
// once.
template <ReduceOp Op>
void reduce_half(void* out, const std::vector<const void*>& ins, DType t, int64_t count) {
    const size_t n = ins.size();
    const size_t es = core::dtype_size(t);
    alignas(64) float acc[kBlock];
    alignas(64) float tmp[kBlock];
    for (int64_t i0 = 0; i0 < count; i0 += kBlock) {
        const size_t k = static_cast<size_t>(std::min(kBlock, count - i0));
        const size_t off = static_cast<size_t>(i0) * es;
        core::convert(acc, DType::f32, static_cast<const char*>(ins[0]) + off, t, k);
        for (size_t q = 1; q < n; ++q) {
            core::convert(tmp, DType::f32, static_cast<const char*>(ins[q]) + off, t, k);
            for (size_t i = 0; i < k; ++i) acc[i] = combine<Op>(acc[i], tmp[i]);
        }
        if constexpr (Op == ReduceOp::avg) {
            const float fn = static_cast<float>(n);
            for (size_t i = 0; i < k; ++i) acc[i] /= fn;
        }
        core::convert(static_cast<char*>(out) + off, t, acc, DType::f32, k);
    }
}

template <class T>
void reduce_int(void* out, const std::vector<const void*>& ins, int64_t count, ReduceOp op) {
    const size_t n = ins.size();
    for (int64_t i = 0; i < count; ++i) {
        int64_t acc = static_cast<const T*>(ins[0])[i];
        for (size_t q = 1; q < n; ++q) {
            const int64_t v = static_cast<const T*>(ins[q])[i];
            acc = op == ReduceOp::max   ? std::max(acc, v)
                  : op == ReduceOp::min ? std::min(acc, v)
                                        : acc + v;
        }
        if (op == ReduceOp::avg) acc /= static_cast<int64_t>(n);
        static_cast<T*>(out)[i] = static_cast<T>(acc);
    }
}

template <ReduceOp Op>
void reduce_float(void* out, const std::vector<const void*>& ins, DType t, int64_t count) {
    if (t == DType::f32) {
        reduce_f32<Op>(static_cast<float*>(out), ins, count);
    } else {
        reduce_half<Op>(out, ins, t, count);
    }
}

}  // namespace

void reduce_rank_order(void* out, const std::vector<const void*>& ins, DType t, int64_t count,
                       ReduceOp op) {
    ZS_ASSERT(!ins.empty(), "reduce over no inputs");
    switch (t) {
        case DType::i32:
            return reduce_int<int32_t>(out, ins, count, op);
        case DType::i64:
            return reduce_int<int64_t>(out, ins, count, op);
        case DType::i8:
            return reduce_int<int8_t>(out, ins, count, op);
        case DType::f32:
        case DType::bf16:
        case DType::f16:
            break;
    }
    switch (op) {
        case ReduceOp::sum:
            return reduce_float<ReduceOp::sum>(out, ins, t, count);
        case ReduceOp::avg:
            return reduce_float<ReduceOp::avg>(out, ins, t, count);
        case ReduceOp::max:
            return reduce_float<ReduceOp::max>(out, ins, t, count);
        case ReduceOp::min:
            return reduce_float<ReduceOp::min>(out, ins, t, count);
    }
}

// ---- the segment ----

struct ShmTransport::Header {
    std::atomic<uint64_t> magic;  // stored last by the creator (release)
    uint64_t nonce;
    int64_t size;
    int64_t slot_bytes;
    alignas(kLine) std::atomic<uint32_t> wake;      // futex word: bumped when a counter moves
    alignas(kLine) std::atomic<uint32_t> sleepers;  // ranks sleeping (or about to) on `wake`
};

struct ShmTransport::Control {
    Line arrival;  // sequence number of the collective this rank last entered
    Line pub;      // chunks published
    Line done;     // chunks finished (its reads of every buffer of that chunk are over)
};

namespace {

size_t header_bytes() { return round_up(sizeof(std::max_align_t) + 4 * kLine, 4096); }
size_t control_bytes(int size) { return round_up(static_cast<size_t>(size) * 3 * kLine, 4096); }
size_t segment_bytes(int size, int64_t slot) {
    return header_bytes() + control_bytes(size) +
           static_cast<size_t>(size) * 2 * static_cast<size_t>(slot);
}

}  // namespace

ShmTransport::Options ShmTransport::options_from_env() {
    Options o;
    o.slot_bytes = env_int("ZS_SHM_SLOT_KIB", o.slot_bytes >> 10, 4, int64_t{1} << 20) << 10;
    o.spin_us = static_cast<double>(env_int("ZS_SHM_SPIN_US", -1, -1, 1'000'000));
    o.stream_bytes = env_int("ZS_SHM_STREAM_KIB", o.stream_bytes >> 10, 0, int64_t{1} << 30) << 10;
    return o;
}

std::unique_ptr<ShmTransport> ShmTransport::create(int rank, int size, const Bootstrap& boot,
                                                   const Options& opt) {
    static_assert(sizeof(Header) <= 4 * kLine + sizeof(std::max_align_t));
    const size_t bytes = segment_bytes(size, opt.slot_bytes);
    std::string name, why;
    uint64_t nonce = 0;
    void* base = MAP_FAILED;
    if (rank == 0) {
        remove_stale_segments();
        std::random_device rd;
        nonce = (static_cast<uint64_t>(rd()) << 32) ^ rd();
        name = fmt::format("/{}{}-{:016x}", kPrefix, getpid(), nonce);
        const int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd < 0) {
            why = fmt::format("shm_open({}) failed: {}", name, std::strerror(errno));
        } else {
            if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
                why = fmt::format("ftruncate({}, {} bytes) failed: {}", name, bytes,
                                  std::strerror(errno));
            } else {
                base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                if (base == MAP_FAILED) {
                    why = fmt::format("mmap of {} ({} bytes) failed: {}", name, bytes,
                                      std::strerror(errno));
                }
            }
            close(fd);
        }
        if (base != MAP_FAILED) {
            // Touch every page now (tmpfs pages are allocated on first write) so a full /dev/shm
            // fails here rather than with SIGBUS in a collective: posix_fallocate would too, but
            // writing also faults the pages in on this side.
            std::memset(base, 0, bytes);
            auto* h = new (base) Header{};
            h->nonce = nonce;
            h->size = size;
            h->slot_bytes = opt.slot_bytes;
            h->magic.store(kMagic, std::memory_order_release);
        }
        // Announce "<name> <nonce>" (empty when creation failed).
        name = base == MAP_FAILED ? std::string() : name;
    }
    std::string announced = boot.broadcast_name(
        rank == 0 ? (name.empty() ? std::string() : name + " " + fmt::format("{}", nonce))
                  : std::string());
    if (rank != 0 && !announced.empty()) {
        const size_t sp = announced.find(' ');
        name = announced.substr(0, sp);
        nonce = std::strtoull(announced.c_str() + sp + 1, nullptr, 10);
        const int fd = shm_open(name.c_str(), O_RDWR, 0);
        if (fd < 0) {
            why = fmt::format("shm_open({}) failed: {}", name, std::strerror(errno));
        } else {
            struct stat st {};
            if (fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != bytes) {
                why = fmt::format("{} has {} bytes, expected {}", name,
                                  static_cast<long long>(st.st_size), bytes);
            } else {
                base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                if (base == MAP_FAILED) {
                    why = fmt::format("mmap of {} failed: {}", name, std::strerror(errno));
                }
            }
            close(fd);
        }
        if (base != MAP_FAILED) {
            auto* h = static_cast<Header*>(base);
            if (h->magic.load(std::memory_order_acquire) != kMagic || h->nonce != nonce ||
                h->size != size || h->slot_bytes != opt.slot_bytes) {
                why = fmt::format("{} is not the segment rank 0 created (stale or foreign)", name);
                munmap(base, bytes);
                base = MAP_FAILED;
            }
        }
    }
    const bool ok = boot.all_ok(!announced.empty() && base != MAP_FAILED);
    // Every rank has mapped it (or given up): the name is no longer needed.
    if (rank == 0 && !name.empty()) shm_unlink(name.c_str());
    if (!ok) {
        if (base != MAP_FAILED) munmap(base, bytes);
        if (!why.empty()) {
            log_warn("shared-memory collectives unavailable on rank {}: {}; using MPI", rank, why);
        }
        return nullptr;
    }
    return std::unique_ptr<ShmTransport>(new ShmTransport(rank, size, base, bytes, name, opt));
}

ShmTransport::ShmTransport(int rank, int size, void* base, size_t bytes, std::string name,
                           const Options& opt)
    : rank_(rank), size_(size), base_(base), bytes_(bytes), name_(std::move(name)), opt_(opt) {
    if (opt_.spin_us < 0) {
        const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        opt_.spin_us = cpus > 0 && size > cpus ? 0.0 : 50.0;
    }
}

ShmTransport::~ShmTransport() { munmap(base_, bytes_); }

ShmTransport::Header* ShmTransport::header() const { return static_cast<Header*>(base_); }

ShmTransport::Control* ShmTransport::control(int r) const {
    return reinterpret_cast<Control*>(static_cast<char*>(base_) + header_bytes()) + r;
}

char* ShmTransport::buffer(int r, uint64_t chunk) const {
    const size_t slot = static_cast<size_t>(opt_.slot_bytes);
    return static_cast<char*>(base_) + header_bytes() + control_bytes(size_) +
           (static_cast<size_t>(r) * 2 + chunk % 2) * slot;
}

// ---- synchronisation ----

void ShmTransport::notify() {
    Header* h = header();
    if (h->sleepers.load(std::memory_order_seq_cst) == 0) return;  // the fast path: no syscall
    h->wake.fetch_add(1, std::memory_order_seq_cst);
    futex(&h->wake, FUTEX_WAKE, INT_MAX, nullptr);
}

template <class Ready>
void ShmTransport::wait(Ready&& ready, int who, const Op& o) {
    if (ready()) return;
    using clock = std::chrono::steady_clock;
    const auto spin_until =
        clock::now() + std::chrono::duration_cast<clock::duration>(
                           std::chrono::duration<double, std::micro>(opt_.spin_us));
    for (uint32_t i = 1;; ++i) {
        if (ready()) return;
        _mm_pause();
        if ((i & 63) == 0 && clock::now() >= spin_until) break;
    }
    Header* h = header();
    for (;;) {
        if (clock::now() >= o.deadline) {
            if (ready()) return;
            fail(o, who);
        }
        h->sleepers.fetch_add(1, std::memory_order_seq_cst);
        const uint32_t seen = h->wake.load(std::memory_order_seq_cst);
        if (ready()) {
            h->sleepers.fetch_sub(1, std::memory_order_seq_cst);
            return;
        }
        // Bounded sleeps so the deadline is checked even if no one moves.
        timespec ts{0, 20'000'000};
        futex(&h->wake, FUTEX_WAIT, seen, &ts);
        h->sleepers.fetch_sub(1, std::memory_order_seq_cst);
    }
}

void ShmTransport::fail(const Op& o, int who) {
    std::string missing;
    for (int q = 0; q < size_; ++q) {
        const auto seen = static_cast<int64_t>(control(q)->arrival.v.load());
        if (seen < o.seq) {
            missing += fmt::format("{}{} (last entered #{})", missing.empty() ? "" : ", ", q, seen);
        }
    }
    const std::string detail =
        missing.empty()
            ? fmt::format("every rank entered it; rank {} stopped moving (a transport stall)", who)
            : "rank(s) never arrived: " + missing;
    ZS_THROW(CommError, "{}: did not complete within {} s; {}", o.what(), o.timeout_s, detail);
}

std::string ShmTransport::Op::what() const {
    return fmt::format("{} #{} on group '{}' ({} ranks, {} bytes)", name, seq, group, ranks, bytes);
}

void ShmTransport::enter(const Op& o) {
    control(rank_)->arrival.v.store(static_cast<uint64_t>(o.seq), std::memory_order_release);
}

void ShmTransport::wait_free(uint64_t g, const Op& o) {
    if (g < 2) return;
    for (int q = 0; q < size_; ++q) {
        if (q == rank_) continue;
        Control* c = control(q);
        wait([&] { return c->done.v.load(std::memory_order_acquire) >= g - 1; }, q, o);
    }
}

void ShmTransport::publish(uint64_t g) {
    control(rank_)->pub.v.store(g + 1, std::memory_order_seq_cst);
    notify();
}

void ShmTransport::wait_published(int q, uint64_t g, const Op& o) {
    Control* c = control(q);
    wait([&] { return c->pub.v.load(std::memory_order_acquire) >= g + 1; }, q, o);
}

void ShmTransport::finish(uint64_t g) {
    control(rank_)->done.v.store(g + 1, std::memory_order_seq_cst);
    notify();
}

// ---- the collectives ----

void ShmTransport::allreduce(void* data, DType t, int64_t count, ReduceOp op, const Op& o) {
    enter(o);
    const size_t es = core::dtype_size(t);
    const int64_t per = opt_.slot_bytes / static_cast<int64_t>(es);
    char* base = static_cast<char*>(data);
    std::vector<const void*> ins(static_cast<size_t>(size_));
    for (int64_t off = 0; off < count; off += per) {
        const int64_t k = std::min(per, count - off);
        const uint64_t g = chunk_++;
        char* mine = base + static_cast<size_t>(off) * es;
        wait_free(g, o);
        std::memcpy(buffer(rank_, g), mine, static_cast<size_t>(k) * es);
        publish(g);
        for (int q = 0; q < size_; ++q) {
            if (q != rank_) wait_published(q, g, o);
            ins[static_cast<size_t>(q)] = q == rank_ ? mine : buffer(q, g);
        }
        // Every rank reduces the whole chunk itself: the same inputs in the same order, so the
        // same bits everywhere, with one synchronisation per chunk. (Reduce-scatter + allgather
        // through the segment would move as many bytes at 2 ranks and add a second one.)
        reduce_rank_order(mine, ins, t, k, op);
        finish(g);
    }
}

void ShmTransport::reduce_scatter(const void* in, void* out, DType t, int64_t count, ReduceOp op,
                                  const Op& o) {
    enter(o);
    const size_t es = core::dtype_size(t);
    // Per chunk: elements [a, a + e) of every block; block j's range at j * e in the buffer.
    const int64_t per = std::max<int64_t>(1, opt_.slot_bytes / static_cast<int64_t>(es) / size_);
    const char* src = static_cast<const char*>(in);
    char* dst = static_cast<char*>(out);
    std::vector<const void*> ins(static_cast<size_t>(size_));
    const bool stream = count * static_cast<int64_t>(es) >= opt_.stream_bytes;
    const int64_t stage_elems = 4096 / static_cast<int64_t>(es);
    std::vector<char> stage(stream ? 4096 : 0);
    for (int64_t a = 0; a < count; a += per) {
        const int64_t e = std::min(per, count - a);
        const uint64_t g = chunk_++;
        wait_free(g, o);
        char* buf = buffer(rank_, g);
        for (int j = 0; j < size_; ++j) {
            if (j == rank_) continue;  // nobody reads my own block from the segment
            std::memcpy(buf + static_cast<size_t>(j * per) * es,
                        src + static_cast<size_t>(j * count + a) * es, static_cast<size_t>(e) * es);
        }
        publish(g);
        for (int q = 0; q < size_; ++q) {
            if (q != rank_) wait_published(q, g, o);
            ins[static_cast<size_t>(q)] =
                q == rank_ ? src + static_cast<size_t>(rank_ * count + a) * es
                           : buffer(q, g) + static_cast<size_t>(rank_ * per) * es;
        }
        if (stream) {
            // Reduced through a cached block, stored past the cache.
            std::vector<const void*> part(ins.size());
            for (int64_t b = 0; b < e; b += stage_elems) {
                const int64_t k = std::min(stage_elems, e - b);
                for (size_t q = 0; q < ins.size(); ++q)
                    part[q] = static_cast<const char*>(ins[q]) + static_cast<size_t>(b) * es;
                reduce_rank_order(stage.data(), part, t, k, op);
                copy_stream(dst + static_cast<size_t>(a + b) * es, stage.data(),
                            static_cast<size_t>(k) * es);
            }
        } else {
            reduce_rank_order(dst + static_cast<size_t>(a) * es, ins, t, e, op);
        }
        finish(g);
    }
}

void ShmTransport::allgather(const void* in, void* out, int64_t bytes, const Op& o) {
    enter(o);
    const char* src = static_cast<const char*>(in);
    char* dst = static_cast<char*>(out);
    const int64_t per = opt_.slot_bytes;
    const bool stream = bytes * size_ >= opt_.stream_bytes;
    char* own = dst + rank_ * bytes;
    const bool in_place = own == src;
    if (!in_place && own < src + bytes && src < own + bytes) {  // overlapping, not in place
        std::memmove(own, src, static_cast<size_t>(bytes));
        src = own;
    }
    for (int64_t a = 0; a < bytes; a += per) {
        const int64_t k = std::min(per, bytes - a);
        const uint64_t g = chunk_++;
        wait_free(g, o);
        std::memcpy(buffer(rank_, g), src + a, static_cast<size_t>(k));
        publish(g);
        // My own block from the chunk just read (still in cache), while the peers copy theirs.
        if (src != own) copy_out(own + a, src + a, static_cast<size_t>(k), stream);
        for (int i = 1; i < size_; ++i) {
            const int q = (rank_ + i) % size_;  // start with the next rank: spread the reads
            wait_published(q, g, o);
            copy_out(dst + q * bytes + a, buffer(q, g), static_cast<size_t>(k), stream);
        }
        finish(g);
    }
}

void ShmTransport::broadcast(void* data, int64_t bytes, int root, const Op& o) {
    enter(o);
    char* p = static_cast<char*>(data);
    const int64_t per = opt_.slot_bytes;
    const bool stream = bytes >= opt_.stream_bytes;
    for (int64_t a = 0; a < bytes; a += per) {
        const int64_t k = std::min(per, bytes - a);
        const uint64_t g = chunk_++;
        if (rank_ == root) {
            wait_free(g, o);
            std::memcpy(buffer(rank_, g), p + a, static_cast<size_t>(k));
            publish(g);
        } else {
            wait_published(root, g, o);
            copy_out(p + a, buffer(root, g), static_cast<size_t>(k), stream);
        }
        finish(g);
    }
}

void ShmTransport::all_to_all(const void* in, void* out, int64_t bytes, const Op& o) {
    enter(o);
    const char* src = static_cast<const char*>(in);
    char* dst = static_cast<char*>(out);
    const int64_t per = std::max<int64_t>(1, opt_.slot_bytes / size_);
    const bool stream = bytes * size_ >= opt_.stream_bytes;
    std::memmove(dst + rank_ * bytes, src + rank_ * bytes, static_cast<size_t>(bytes));
    for (int64_t a = 0; a < bytes; a += per) {
        const int64_t e = std::min(per, bytes - a);
        const uint64_t g = chunk_++;
        wait_free(g, o);
        char* buf = buffer(rank_, g);
        for (int j = 0; j < size_; ++j) {
            if (j != rank_) std::memcpy(buf + j * per, src + j * bytes + a, static_cast<size_t>(e));
        }
        publish(g);
        for (int i = 1; i < size_; ++i) {
            const int q = (rank_ + i) % size_;
            wait_published(q, g, o);
            copy_out(dst + q * bytes + a, buffer(q, g) + rank_ * per, static_cast<size_t>(e),
                     stream);
        }
        finish(g);
    }
}

void ShmTransport::all_to_all_v(const void* in, const std::vector<int64_t>& in_bytes, void* out,
                                const std::vector<int64_t>& out_bytes, const Op& o) {
    enter(o);
    const auto n = static_cast<size_t>(size_);
    const auto me = static_cast<size_t>(rank_);
    ZS_ASSERT(static_cast<int64_t>(2 * n * sizeof(int64_t)) <= opt_.slot_bytes,
              "a {}-byte slot cannot hold {} ranks' counts", opt_.slot_bytes, n);
    // Round 0: every rank's counts (in_bytes then out_bytes) through the segment.
    const uint64_t g0 = chunk_++;
    wait_free(g0, o);
    auto* row = reinterpret_cast<int64_t*>(buffer(rank_, g0));
    std::copy(in_bytes.begin(), in_bytes.end(), row);
    std::copy(out_bytes.begin(), out_bytes.end(), row + n);
    publish(g0);
    std::vector<std::vector<int64_t>> sent(n), expected(n);
    int64_t most = 0;
    for (size_t q = 0; q < n; ++q) {
        if (q != me) wait_published(static_cast<int>(q), g0, o);
        const auto* r = reinterpret_cast<const int64_t*>(buffer(static_cast<int>(q), g0));
        sent[q].assign(r, r + n);
        expected[q].assign(r + n, r + 2 * n);
        for (size_t j = 0; j < n; ++j) {
            if (j != q) most = std::max(most, sent[q][j]);
        }
    }
    finish(g0);
    check_all_to_all_v_pairs(sent, expected);
    // Offsets of my parts in `in` and `out`.
    std::vector<int64_t> in_off(n + 1, 0), out_off(n + 1, 0);
    for (size_t j = 0; j < n; ++j) {
        in_off[j + 1] = in_off[j] + in_bytes[j];
        out_off[j + 1] = out_off[j] + out_bytes[j];
    }
    const char* src = static_cast<const char*>(in);
    char* dst = static_cast<char*>(out);
    if (in_bytes[me] > 0) {  // (an empty part may have no storage)
        std::memmove(dst + out_off[me], src + in_off[me], static_cast<size_t>(in_bytes[me]));
    }
    // Then rounds of at most `per` bytes per pair, as many as the largest pair anywhere needs
    // (the same count on every rank: each derives it from the same table).
    const int64_t per = std::max<int64_t>(1, opt_.slot_bytes / size_);
    const int64_t rounds = (most + per - 1) / per;
    for (int64_t k = 0; k < rounds; ++k) {
        const int64_t a = k * per;
        const uint64_t g = chunk_++;
        wait_free(g, o);
        char* buf = buffer(rank_, g);
        for (size_t j = 0; j < n; ++j) {
            const int64_t e = std::min(per, in_bytes[j] - a);
            if (j != me && e > 0) {
                std::memcpy(buf + static_cast<int64_t>(j) * per, src + in_off[j] + a,
                            static_cast<size_t>(e));
            }
        }
        publish(g);
        for (int i = 1; i < size_; ++i) {
            const auto q = static_cast<size_t>((rank_ + i) % size_);
            const int64_t e = std::min(per, out_bytes[q] - a);
            if (e <= 0) continue;
            wait_published(static_cast<int>(q), g, o);
            std::memcpy(dst + out_off[q] + a, buffer(static_cast<int>(q), g) + rank_ * per,
                        static_cast<size_t>(e));
        }
        finish(g);
    }
}

void ShmTransport::barrier(const Op& o) {
    enter(o);
    const uint64_t g = chunk_++;
    publish(g);
    for (int q = 0; q < size_; ++q) {
        if (q != rank_) wait_published(q, g, o);
    }
    finish(g);
}

}  // namespace zs::comm
