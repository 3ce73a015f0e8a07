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
