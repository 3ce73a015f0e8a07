// io::AsyncIo against plain memory: every round trip is compared with the source bytes (memcpy
// is the reference), every ring setting with the default one, and every broken file with the
// error that must name it.
#include "io/aio.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>
#include <sys/mount.h>

#include "base/error.h"
#include "io/test_files_test.h"

namespace zs::io {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<uint8_t> v(n);
    for (auto& b : v) b = static_cast<uint8_t>(rng());
    return v;
}

AlignedBuffer buffer_with(const std::vector<uint8_t>& src) {
    AlignedBuffer b(src.size(), false);
    if (!src.empty()) std::memcpy(b.data(), src.data(), src.size());
    return b;
}

std::vector<uint8_t> file_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

std::string error_of(const AioWork& w) {
    try {
        w.wait();
    } catch (const IoError& e) {
        return e.what();
    }
    return "";
}

TEST(Aio, RoundTripsManySizesAndBlockSizes) {
    TempDir dir;
    const size_t sizes[] = {0,    1,         7,         4095,       4096,
                            4097, 65536 + 3, 1'000'000, (1u << 20), 3 * (1u << 20) + 123};
    for (int64_t bs : {int64_t{4096}, int64_t{65536}, int64_t{1} << 20}) {
        AioConfig c;
        c.block_size = bs;
        AsyncIo aio(c);
        for (size_t n : sizes) {
            SCOPED_TRACE(fmt::format("n {} block {}", n, bs));
            std::vector<uint8_t> src = random_bytes(n, static_cast<uint32_t>(n + bs));
            AlignedBuffer out = buffer_with(src);
            const std::string path = dir.file(fmt::format("t{}_{}.swp", n, bs));
            aio.write(path, out, n).wait();
            EXPECT_FALSE(fs::exists(path + ".tmp"));
            EXPECT_EQ(fs::file_size(path), aio_padded(n) + kAioAlign);
            AlignedBuffer in(n, true);
            aio.read(path, in, n).wait();
            EXPECT_TRUE(n == 0 || std::memcmp(in.data(), src.data(), n) == 0);
        }
    }
}

TEST(Aio, EveryRingSettingWritesTheSameBytes) {
    TempDir dir;
    const size_t n = 2 * (1u << 20) + 5000;
    std::vector<uint8_t> src = random_bytes(n, 7);
    AioConfig base;
    base.block_size = 65536;
    base.queue_depth = 1;
    std::vector<AioConfig> cfgs;
    cfgs.push_back(base);  // the reference: one block at a time
    for (int64_t qd : {2, 8, 32}) {
        for (bool single : {false, true}) {
            for (bool overlap : {false, true}) {
                AioConfig c = base;
                c.queue_depth = qd;
                c.single_submit = single;
                c.overlap_events = overlap;
                c.thread_count = qd == 8 ? 3 : 1;
                cfgs.push_back(c);
            }
        }
    }
    std::vector<uint8_t> ref;
    for (size_t i = 0; i < cfgs.size(); ++i) {
        const AioConfig& c = cfgs[i];
        SCOPED_TRACE(fmt::format("qd {} single {} overlap {} threads {}", c.queue_depth,
                                 c.single_submit, c.overlap_events, c.thread_count));
        AsyncIo aio(c);
        // Several requests in flight at once, polled.
        std::vector<AlignedBuffer> bufs;
        std::vector<AioWork> works;
        for (int k = 0; k < 4; ++k) bufs.push_back(buffer_with(src));
        for (int k = 0; k < 4; ++k)
            works.push_back(aio.write(dir.file(fmt::format("q{}_{}.swp", i, k)), bufs[k], n));
        for (AioWork& w : works) {
            while (!w.test()) std::this_thread::yield();
            w.wait();
        }
        for (int k = 0; k < 4; ++k) {
            std::vector<uint8_t> bytes = file_bytes(dir.file(fmt::format("q{}_{}.swp", i, k)));
            if (ref.empty()) ref = bytes;
            EXPECT_EQ(bytes, ref);
            AlignedBuffer in(n, false);
            aio.read(dir.file(fmt::format("q{}_{}.swp", i, k)), in, n).wait();
            EXPECT_EQ(std::memcmp(in.data(), src.data(), n), 0);
        }
        EXPECT_EQ(aio.bytes_written(), 4 * static_cast<int64_t>(aio_padded(n) + kAioAlign));
    }
}

TEST(Aio, BrokenFilesAreNamedNeverRead) {
    TempDir dir;
    AsyncIo aio(AioConfig{});
    const size_t n = 300'000;
    std::vector<uint8_t> src = random_bytes(n, 3);
    AlignedBuffer buf = buffer_with(src);
    const std::string path = dir.file("x.swp");
    aio.write(path, buf, n).wait();
    const std::vector<uint8_t> good = file_bytes(path);
    AlignedBuffer in(n, false);

    // Missing: the path and the errno.
    std::string e = error_of(aio.read(dir.file("missing.swp"), in, n));
    EXPECT_NE(e.find("missing.swp"), std::string::npos) << e;
    EXPECT_NE(e.find("errno 2"), std::string::npos) << e;
    // Truncated (a short read).
    fs::resize_file(path, good.size() - 4096);
    e = error_of(aio.read(path, in, n));
    EXPECT_NE(e.find(path), std::string::npos) << e;
    EXPECT_NE(e.find("truncated"), std::string::npos) << e;
    // One data byte flipped.
    std::vector<uint8_t> bad = good;
    bad[n / 2] ^= 0x10;
    test::write_bytes(path, bad);
    e = error_of(aio.read(path, in, n));
    EXPECT_NE(e.find(path), std::string::npos) << e;
    EXPECT_NE(e.find("checksum mismatch"), std::string::npos) << e;
    // The footer damaged, or a different size asked for.
    bad = good;
    bad[aio_padded(n) + 9] ^= 1;
    test::write_bytes(path, bad);
    e = error_of(aio.read(path, in, n));
    EXPECT_NE(e.find("bad footer"), std::string::npos) << e;
    test::write_bytes(path, good);
    AlignedBuffer small(n - 1, false);
    e = error_of(aio.read(path, small, n - 1));
    EXPECT_NE(e.find(path), std::string::npos) << e;
    aio.read(path, in, n).wait();  // the restored file reads back
    EXPECT_EQ(std::memcmp(in.data(), src.data(), n), 0);
}

TEST(Aio, BadConfigNamesTheKey) {
    AioConfig c;
    c.block_size = 1000;
    EXPECT_THROW(
        {
            try {
                AsyncIo a(c);
            } catch (const ConfigError& e) {
                EXPECT_NE(std::string(e.what()).find("aio.block_size"), std::string::npos);
                throw;
            }
        },
        ConfigError);
    c = AioConfig{};
    c.queue_depth = 0;
    EXPECT_THROW(AsyncIo{c}, ConfigError);
}

// A full disk: a 256 KiB tmpfs made by the test. tmpfs refuses O_DIRECT, so this also runs the
// buffered fallback.
TEST(Aio, FullDiskNamesPathAndErrnoAndKeepsTheOldFile) {
    TempDir dir;
    const std::string mnt = dir.file("small");
    fs::create_directory(mnt);
    if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=256k") != 0) {
        GTEST_SKIP() << "cannot mount a tmpfs (" << std::strerror(errno)
                     << "): needs root / CAP_SYS_ADMIN";
    }
    struct Unmount {
        std::string p;
        ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); }
    } unmount{mnt};
    AsyncIo aio(AioConfig{});
    const std::string path = mnt + "/state.swp";
    const size_t small_n = 100'000, big_n = 1'000'000;
    std::vector<uint8_t> old_bytes = random_bytes(small_n, 11);
    AlignedBuffer small = buffer_with(old_bytes);
    aio.write(path, small, small_n).wait();
    std::vector<uint8_t> big_src = random_bytes(big_n, 12);
    AlignedBuffer big = buffer_with(big_src);
    std::string e = error_of(aio.write(path, big, big_n));
    EXPECT_NE(e.find(path), std::string::npos) << e;
    EXPECT_NE(e.find("No space left on device (errno 28)"), std::string::npos) << e;
    EXPECT_FALSE(fs::exists(path + ".tmp"));  // nothing half-written left behind
    // The previous complete file is still there and good; the failed one is never read as good.
    AlignedBuffer in(small_n, false);
    aio.read(path, in, small_n).wait();
    EXPECT_EQ(std::memcmp(in.data(), old_bytes.data(), small_n), 0);
    AlignedBuffer in_big(big_n, false);
    EXPECT_THROW(aio.read(path, in_big, big_n).wait(), IoError);
}

}  // namespace
}  // namespace zs::io
