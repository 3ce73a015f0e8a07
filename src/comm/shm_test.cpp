// The shared-memory transport with thread-ranks of one process (each thread maps the segment on
// its own, as a process would): every collective, dtype and op against the local backend (the
// oracle, which reduces in the same rank order: bit-identical), over sizes that split into many
// chunks; the segment's name gone once every rank mapped it; stale and foreign segments; a rank
// that never arrives named within the timeout.
#include "comm/shm.h"

#include <cmath>
#include <cstring>
#include <random>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/error.h"

namespace zs::comm {
namespace {

using core::DType;
using Clock = std::chrono::steady_clock;

// Bootstrap over the local communicator (as mpi.cpp does over MPI).
ShmTransport::Bootstrap boot_over(Communicator& c) {
    ShmTransport::Bootstrap b;
    b.broadcast_name = [&c](const std::string& s) {
        Tensor buf = Tensor::zeros({256}, DType::i8);
        std::memcpy(buf.data_ptr(), s.data(), std::min<size_t>(s.size(), 255));
        c.broadcast(buf, 0).wait();
        return std::string(static_cast<const char*>(buf.data_ptr()));
    };
    b.all_ok = [&c](bool ok) {
        Tensor v = Tensor::empty({1}, DType::i32);
        v.data<int32_t>()[0] = ok ? 1 : 0;
        c.allreduce(v, ReduceOp::min).wait();
        return v.data<int32_t>()[0] == 1;
    };
    return b;
}

ShmTransport::Op op_named(const char* name, int64_t seq, double timeout_s = 30) {
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(timeout_s));
    return ShmTransport::Op{name, seq, std::string(1, 'g'), 3, 4000, timeout_s, deadline};
}

// Random values of rank r (ints small enough that sums of 4 stay in range for i8).
Tensor random_tensor(int r, int64_t n, DType t, uint32_t salt) {
    std::mt19937 gen(static_cast<uint32_t>(r) * 7919u + salt);
    std::uniform_real_distribution<float> d(-8.f, 8.f);
    Tensor f = Tensor::empty({n}, DType::f32);
    for (int64_t i = 0; i < n; ++i) f.data<float>()[i] = d(gen);
    if (t == DType::i8 || t == DType::i32 || t == DType::i64) {
        for (int64_t i = 0; i < n; ++i) f.data<float>()[i] = std::round(f.data<float>()[i] * 3);
    }
    return f.to(t);
}

bool same_bytes(const Tensor& a, const Tensor& b) {
    return a.nbytes() == b.nbytes() && std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0;
}

// Run every collective through the shared-memory transport and through the local backend and
// require the same bytes.
void check_against_local(int n, int64_t slot_bytes, const std::vector<int64_t>& lens,
                         int64_t stream_bytes = int64_t{1} << 40) {
    run_local(n, [&](int r, Communicator& c) {
        ShmTransport::Options opt;
        opt.slot_bytes = slot_bytes;
        opt.stream_bytes = stream_bytes;
        auto shm = ShmTransport::create(r, n, boot_over(c), opt);
        ASSERT_NE(shm, nullptr);
        int64_t seq = 0;
        for (int64_t len : lens) {
            for (DType t :
                 {DType::f32, DType::bf16, DType::f16, DType::i32, DType::i64, DType::i8}) {
                for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min}) {
                    const std::string tag =
                        fmt::format("n={} len={} {} {}", n, len, core::to_string(t), to_string(op));
                    const uint32_t salt = static_cast<uint32_t>(len * 31 + static_cast<int>(op));
                    Tensor a = random_tensor(r, len * n, t, salt), b = a.clone();
                    shm->allreduce(a.data_ptr(), t, a.numel(), op, op_named("allreduce", ++seq));
                    c.allreduce(b, op).wait();
                    ASSERT_TRUE(same_bytes(a, b)) << "allreduce " << tag;

                    Tensor in = random_tensor(r, len * n, t, salt + 1);
                    Tensor o1 = Tensor::empty({len}, t), o2 = Tensor::empty({len}, t);
                    shm->reduce_scatter(in.data_ptr(), o1.data_ptr(), t, len, op,
                                        op_named("reduce_scatter", ++seq));
                    c.reduce_scatter(o2, in, op).wait();
                    ASSERT_TRUE(same_bytes(o1, o2)) << "reduce_scatter " << tag;
                }
                Tensor mine = random_tensor(r, len, t, 5);
                Tensor g1 = Tensor::empty({len * n}, t), g2 = Tensor::empty({len * n}, t);
                shm->allgather(mine.data_ptr(), g1.data_ptr(), static_cast<int64_t>(mine.nbytes()),
                               op_named("allgather", ++seq));
                c.allgather(g2, mine).wait();
                ASSERT_TRUE(same_bytes(g1, g2)) << "allgather len=" << len;

                for (int root : {0, n - 1}) {
                    Tensor b1 = random_tensor(r, len, t, 9), b2 = b1.clone();
                    shm->broadcast(b1.data_ptr(), static_cast<int64_t>(b1.nbytes()), root,
                                   op_named("broadcast", ++seq));
                    c.broadcast(b2, root).wait();
                    ASSERT_TRUE(same_bytes(b1, b2)) << "broadcast root " << root;
                }

                Tensor x = random_tensor(r, len * n, t, 11);
                Tensor y1 = Tensor::empty({len * n}, t), y2 = Tensor::empty({len * n}, t);
                shm->all_to_all(x.data_ptr(), y1.data_ptr(), static_cast<int64_t>(x.nbytes()) / n,
                                op_named("all_to_all", ++seq));
                c.all_to_all(y2, x).wait();
                ASSERT_TRUE(same_bytes(y1, y2)) << "all_to_all len=" << len;
                shm->barrier(op_named("barrier", ++seq));
            }
        }
    });
}

TEST(Shm, EveryCollectiveEqualsTheLocalBackendBitForBit) {
    // 1 KiB slots: 300 f32 elements x 3 ranks span several chunks (odd remainders too).
    for (int n : {2, 3, 4}) check_against_local(n, 1024, {1, 7, 300});
}

TEST(Shm, LargeMessagesAcrossManyChunks) {
    check_against_local(2, 64 << 10, {100'003});
    // Outputs written with non-temporal stores (any size; unaligned heads and tails).
    check_against_local(3, 4096, {1, 333, 5'001}, /*stream_bytes=*/0);
}

TEST(Shm, AllToAllVEqualsTheBaseVersion) {
    // Random counts (zeros included; parts far over one slot's share, so many rounds), the same
    // table on every rank; the base Communicator::all_to_all_v over the local backend is the
    // reference.
    for (int n : {2, 3, 4}) {
        std::mt19937 gen(static_cast<uint32_t>(n));
        std::uniform_int_distribution<int64_t> d(0, 900);
        std::vector<std::vector<int64_t>> counts(static_cast<size_t>(n));
        for (auto& row : counts) {
            for (int j = 0; j < n; ++j) row.push_back(d(gen) % 5 == 0 ? 0 : d(gen));
        }
        run_local(n, [&](int r, Communicator& c) {
            ShmTransport::Options opt;
            opt.slot_bytes = 1024;
            auto shm = ShmTransport::create(r, n, boot_over(c), opt);
            ASSERT_NE(shm, nullptr);
            std::vector<int64_t> in_counts = counts[static_cast<size_t>(r)], out_counts;
            int64_t in_total = 0, out_total = 0;
            for (int j = 0; j < n; ++j) {
                out_counts.push_back(counts[static_cast<size_t>(j)][static_cast<size_t>(r)]);
                in_total += in_counts[static_cast<size_t>(j)];
                out_total += out_counts.back();
            }
            Tensor in = random_tensor(r, in_total, DType::f32, 21);
            Tensor o1 = Tensor::zeros({out_total}, DType::f32), o2 = o1.clone();
            std::vector<int64_t> in_bytes, out_bytes;
            for (int64_t x : in_counts) in_bytes.push_back(x * 4);
            for (int64_t x : out_counts) out_bytes.push_back(x * 4);
            shm->all_to_all_v(in.data_ptr(), in_bytes, o1.data_ptr(), out_bytes,
                              op_named("all_to_all_v", 1));
            c.Communicator::all_to_all_v(o2, out_counts, in, in_counts).wait();
            ASSERT_TRUE(same_bytes(o1, o2)) << "n=" << n << " rank " << r;
            // A mismatched pair is the same error on every rank.
            out_bytes[0] += 4;
            if (r != 1) out_bytes[0] -= 4;
            EXPECT_THROW(shm->all_to_all_v(in.data_ptr(), in_bytes, o1.data_ptr(), out_bytes,
                                           op_named("all_to_all_v", 2)),
                         ShapeError);
        });
    }
}

TEST(Shm, InPlaceAllgather) {
    const int n = 3;
    const int64_t len = 1000;
    run_local(n, [&](int r, Communicator& c) {
        ShmTransport::Options opt;
        opt.slot_bytes = 1024;
        auto shm = ShmTransport::create(r, n, boot_over(c), opt);
        ASSERT_NE(shm, nullptr);
        Tensor all = Tensor::zeros({len * n}, DType::f32),
               want = Tensor::empty({len * n}, DType::f32);
        Tensor mine = random_tensor(r, len, DType::f32, 3);
        std::memcpy(all.data<float>() + r * len, mine.data_ptr(), mine.nbytes());
        shm->allgather(all.data<float>() + r * len, all.data_ptr(), len * 4, op_named("ag", 1));
        c.allgather(want, mine).wait();
        ASSERT_TRUE(same_bytes(all, want));
    });
}

TEST(Shm, NameIsUnlinkedOnceEveryRankMappedIt) {
    run_local(3, [&](int r, Communicator& c) {
        auto shm = ShmTransport::create(r, 3, boot_over(c), ShmTransport::Options{});
        ASSERT_NE(shm, nullptr);
        c.barrier();
        struct stat st {};
        EXPECT_NE(stat(("/dev/shm" + shm->segment_name()).c_str(), &st), 0)
            << shm->segment_name() << " still exists";
        // The mapping stays usable after the unlink.
        Tensor t = Tensor::empty({64}, DType::f32);
        t.fill(1.0);
        shm->allreduce(t.data_ptr(), DType::f32, 64, ReduceOp::sum, op_named("allreduce", 1));
        EXPECT_EQ(t.data<float>()[63], 3.f);
    });
}

TEST(Shm, StaleSegmentOfADeadCreatorIsRemoved) {
    const pid_t child = fork();
    if (child == 0) _exit(0);
    ASSERT_GT(child, 0);
    waitpid(child, nullptr, 0);  // its pid is now free (not reused this quickly in practice)
    const std::string stale = fmt::format("/zs-shm-{}-00000000deadbeef", child);
    const int fd = shm_open(stale.c_str(), O_CREAT | O_RDWR, 0600);
    ASSERT_GE(fd, 0);
    close(fd);
    run_local(2, [&](int r, Communicator& c) {
        auto shm = ShmTransport::create(r, 2, boot_over(c), ShmTransport::Options{});
        ASSERT_NE(shm, nullptr);
    });
    struct stat st {};
    EXPECT_NE(stat(("/dev/shm" + stale).c_str(), &st), 0) << stale << " was left behind";
}

TEST(Shm, AForeignSegmentIsNotMistakenForTheLiveOne) {
    // A segment of the right name pattern and size whose header was not written by this group's
    // rank 0: ranks 1.. are pointed at it; every rank must refuse (nullptr), none may use it.
    const std::string foreign = fmt::format("/zs-shm-{}-0000000000000001", getpid());
    const int fd = shm_open(foreign.c_str(), O_CREAT | O_RDWR, 0600);
    ASSERT_GE(fd, 0);
    const int64_t slot = 4096;
    const off_t size = 4096 + 4096 + 3 * 2 * slot;  // header + controls + buffers, for 3 ranks
    ASSERT_EQ(ftruncate(fd, size), 0);
    close(fd);
    run_local(3, [&](int r, Communicator& c) {
        ShmTransport::Bootstrap b = boot_over(c);
        auto real = b.broadcast_name;
        b.broadcast_name = [real, foreign, r](const std::string& s) {
            std::string got = real(s);
            // Keep rank 0's nonce, swap the name: the header cannot match.
            if (r == 0) return got;
            std::string swapped = foreign;
            swapped.append(got, got.find(' '), std::string::npos);
            return swapped;
        };
        ShmTransport::Options opt;
        opt.slot_bytes = slot;
        EXPECT_EQ(ShmTransport::create(r, 3, b, opt), nullptr);
    });
    shm_unlink(foreign.c_str());
}

TEST(Shm, ARankThatNeverArrivesIsNamed) {
    run_local(3, [&](int r, Communicator& c) {
        auto shm = ShmTransport::create(r, 3, boot_over(c), ShmTransport::Options{});
        ASSERT_NE(shm, nullptr);
        Tensor t = Tensor::empty({1000}, DType::f32);
        t.fill(1.0);
        shm->allreduce(t.data_ptr(), DType::f32, 1000, ReduceOp::sum, op_named("allreduce", 1));
        if (r == 2) {
            c.barrier();  // released once the others have failed
            return;
        }
        const auto t0 = Clock::now();
        try {
            shm->allreduce(t.data_ptr(), DType::f32, 1000, ReduceOp::sum,
                           op_named("allreduce", 2, 0.5));
            ADD_FAILURE() << "expected a timeout";
        } catch (const CommError& e) {
            EXPECT_NE(std::string(e.what()).find(
                          "allreduce #2 on group 'g' (3 ranks, 4000 bytes): did not complete "
                          "within 0.5 s; rank(s) never arrived: 2 (last entered #1)"),
                      std::string::npos)
                << e.what();
        }
        EXPECT_LT(Clock::now() - t0, std::chrono::seconds(3));
        c.barrier();
    });
}

TEST(Shm, ReduceRankOrderIsTheLeftFold) {
    // (a + b) + c in f32 differs from a + (b + c) for these values: the fold order is observable.
    float a = 1e8f, b = -1e8f, cc = 1.f;
    std::vector<const void*> ins = {&a, &b, &cc};
    float out = 0;
    reduce_rank_order(&out, ins, DType::f32, 1, ReduceOp::sum);
    EXPECT_EQ(out, (a + b) + cc);
    float x = 1.f, y = 1e8f, z = -1e8f;
    std::vector<const void*> ins2 = {&x, &y, &z};
    reduce_rank_order(&out, ins2, DType::f32, 1, ReduceOp::sum);
    EXPECT_EQ(out, (x + y) + z);
    EXPECT_NE((x + y) + z, x + (y + z));
}

}  // namespace
}  // namespace zs::comm
