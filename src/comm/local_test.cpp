// Collectives on the local backend for 1..8 ranks against serial computations; split groups;
// send/recv; a rank that skips a collective makes the others fail, naming op, sequence, group
// and the missing rank, within the timeout.
#include <atomic>
#include <chrono>

#include <gtest/gtest.h>

#include "base/error.h"
#include "comm/communicator.h"

namespace zs::comm {
namespace {

using core::DType;

// Rank r's value for element i: distinct, exactly representable.
float val(int r, int64_t i) { return static_cast<float>((r + 1) * 1000 + i % 97); }

Tensor filled(int r, int64_t n, DType t) {
    Tensor f = Tensor::empty({n}, DType::f32);
    for (int64_t i = 0; i < n; ++i) f.data<float>()[i] = val(r, i);
    return f.to(t);
}

TEST(Local, CollectivesMatchSerial) {
    for (int n : {1, 2, 3, 4, 8}) {
        for (DType t : {DType::f32, DType::bf16, DType::i32}) {
            for (int64_t len : {int64_t{0}, int64_t{1}, int64_t{13}}) {
                run_local(n, [&](int r, Communicator& c) {
                    Tensor a = filled(r, len * n, t);
                    c.allreduce(a, ReduceOp::sum).wait();
                    for (int64_t i = 0; i < len * n; ++i) {
                        double want = 0;
                        for (int q = 0; q < n; ++q) want += val(q, i);
                        ASSERT_NEAR(a.to(DType::f32).data<float>()[i], want,
                                    t == DType::bf16 ? want * 0.02 : 0)
                            << "allreduce n=" << n;
                    }
                    Tensor in = filled(r, len * n, t), out = Tensor::empty({len}, t);
                    c.reduce_scatter(out, in, ReduceOp::max).wait();
                    for (int64_t i = 0; i < len; ++i) {
                        ASSERT_EQ(
                            out.to(DType::f32).data<float>()[i],
                            filled(n - 1, len * n, t).to(DType::f32).data<float>()[r * len + i]);
                    }
                    Tensor mine = filled(r, len, t), all = Tensor::empty({len * n}, t);
                    c.allgather(all, mine).wait();
                    for (int q = 0; q < n; ++q) {
                        for (int64_t i = 0; i < len; ++i) {
                            ASSERT_EQ(all.to(DType::f32).data<float>()[q * len + i],
                                      filled(q, len, t).to(DType::f32).data<float>()[i]);
                        }
                    }
                    Tensor b = filled(r, len, t);
                    c.broadcast(b, n - 1).wait();
                    for (int64_t i = 0; i < len; ++i) {
                        ASSERT_EQ(b.to(DType::f32).data<float>()[i],
                                  filled(n - 1, len, t).to(DType::f32).data<float>()[i]);
                    }
                    Tensor x = filled(r, len * n, t), y = Tensor::empty({len * n}, t);
                    c.all_to_all(y, x).wait();
                    for (int j = 0; j < n; ++j) {
                        for (int64_t i = 0; i < len; ++i) {
                            ASSERT_EQ(
                                y.to(DType::f32).data<float>()[j * len + i],
                                filled(j, len * n, t).to(DType::f32).data<float>()[r * len + i]);
                        }
                    }
                });
            }
        }
    }
}

TEST(Local, SplitAndSendRecv) {
    run_local(4, [](int r, Communicator& c) {
        auto sub = c.split(r % 2, -r);  // evens {0, 2}, odds {1, 3}; key -r reverses the order
        EXPECT_EQ(sub->size(), 2);
        EXPECT_EQ(sub->rank(), r < 2 ? 1 : 0);
        Tensor t = Tensor::empty({1}, DType::f32);
        t.data<float>()[0] = static_cast<float>(r);
        sub->allreduce(t, ReduceOp::sum).wait();
        EXPECT_EQ(t.data<float>()[0], r % 2 == 0 ? 2.0f : 4.0f);
        // A ring: send to r+1, receive from r-1.
        Tensor s = Tensor::empty({3}, DType::i64), got = Tensor::empty({3}, DType::i64);
        s.fill(static_cast<double>(r));
        c.send(s, (r + 1) % 4, 7).wait();
        c.recv(got, (r + 3) % 4, 7).wait();
        EXPECT_EQ(got.data<int64_t>()[2], (r + 3) % 4);
        c.barrier();
    });
}

// Rank q sends (q * 3 + j * 5) % 7 elements to rank j (zeros included), valued q * 1000 + j * 100
// + i: each rank checks what arrives from every peer against that formula.
int64_t a2av_count(int q, int j) { return (q * 3 + j * 5) % 7; }

TEST(Local, AllToAllVMatchesTheFormula) {
    for (int n : {1, 2, 3, 4}) {
        run_local(n, [&](int r, Communicator& c) {
            std::vector<int64_t> in_counts, out_counts;
            int64_t in_total = 0, out_total = 0;
            for (int j = 0; j < n; ++j) {
                in_counts.push_back(a2av_count(r, j));
                out_counts.push_back(a2av_count(j, r));
                in_total += in_counts.back();
                out_total += out_counts.back();
            }
            Tensor in = Tensor::empty({in_total}, DType::i64);
            int64_t k = 0;
            for (int j = 0; j < n; ++j) {
                for (int64_t i = 0; i < in_counts[static_cast<size_t>(j)]; ++i)
                    in.data<int64_t>()[k++] = r * 1000 + j * 100 + i;
            }
            Tensor out = Tensor::empty({out_total + 3}, DType::i64);  // 3 spare at the end
            out.fill(-1.0);
            c.all_to_all_v(out, out_counts, in, in_counts).wait();
            k = 0;
            for (int q = 0; q < n; ++q) {
                for (int64_t i = 0; i < out_counts[static_cast<size_t>(q)]; ++i)
                    ASSERT_EQ(out.data<int64_t>()[k++], q * 1000 + r * 100 + i) << "from " << q;
            }
            EXPECT_EQ(out.data<int64_t>()[out_total], -1) << "wrote past the parts";
        });
    }
}

TEST(Local, AllToAllVMismatchedCountsFailOnEveryRank) {
    std::atomic<int> failures{0};
    run_local(3, [&](int r, Communicator& c) {
        std::vector<int64_t> in_counts = {2, 2, 2}, out_counts = {2, 2, 2};
        if (r == 1) out_counts[2] = 3;  // rank 1 expects 3 from rank 2, which sends 2
        Tensor in = Tensor::zeros({6}, DType::f32), out = Tensor::zeros({7}, DType::f32);
        try {
            c.all_to_all_v(out, out_counts, in, in_counts).wait();
        } catch (const ShapeError& e) {
            EXPECT_NE(
                std::string(e.what()).find("rank 2 sends 2 elements to rank 1, which expects 3"),
                std::string::npos)
                << e.what();
            ++failures;
        }
    });
    EXPECT_EQ(failures, 3);
}

TEST(Local, MissingRankIsNamedWithinTimeout) {
    std::atomic<int> failures{0};
    auto t0 = std::chrono::steady_clock::now();
    run_local(
        3,
        [&](int r, Communicator& c) {
            Tensor t = Tensor::zeros({1024}, DType::f32);
            c.allreduce(t, ReduceOp::sum).wait();  // #1: everyone
            if (r == 2) return;                    // rank 2 skips #2
            try {
                c.allreduce(t, ReduceOp::sum).wait();
                ADD_FAILURE() << "expected a timeout";
            } catch (const CommError& e) {
                std::string m = e.what();
                EXPECT_NE(m.find("allreduce #2"), std::string::npos) << m;
                EXPECT_NE(m.find("group 'local'"), std::string::npos) << m;
                EXPECT_NE(m.find("rank(s) 2 never arrived"), std::string::npos) << m;
                EXPECT_NE(m.find("4096 bytes"), std::string::npos) << m;
                ++failures;
            }
            // The communicator is poisoned: further calls fail at once.
            EXPECT_THROW(c.allreduce(t, ReduceOp::sum).wait(), CommError);
        },
        1.0);
    EXPECT_EQ(failures, 2);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(s, 4.0);
}

}  // namespace
}  // namespace zs::comm
