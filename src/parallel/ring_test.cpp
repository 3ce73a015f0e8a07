// Ring attention over thread-ranks against the unsharded computation: the zig-zag visibility rule
// against a naive causal mask over global positions; forward outputs and lse against the double
// reference over the whole sequence, and dq, dk, dv against the unsharded backward, at R = 1..4
// with GQA, q/k/v as views of a fused projection; the sliding window refused by name; the byte
// formula against a count of what one rank hands to send.
#include "parallel/ring.h"

#include <chrono>
#include <cstddef>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "tests/test_util.h"

namespace zs::parallel {
namespace {

using core::DType;
using zs::test::Rng;
namespace ref = ops::reference;

TEST(Ring, VisibilityMatchesANaiveCausalMask) {
    const int64_t c = 3;
    for (int R = 1; R <= 5; ++R) {
        const int64_t T = 2 * R * c;
        for (int rank = 0; rank < R; ++rank) {
            const std::vector<int64_t> qpos = zigzag_positions(rank, R, T);
            for (int src = 0; src < R; ++src) {
                const std::vector<int64_t> kpos = zigzag_positions(src, R, T);
                for (int which = 0; which < 2; ++which) {
                    const RingVisible vis = ring_visible(rank, src, which, R);
                    const int64_t n = vis.n_chunks * c;
                    for (int64_t i = 0; i < c; ++i) {
                        for (int64_t j = 0; j < 2 * c; ++j) {
                            const bool naive = kpos[static_cast<size_t>(j)] <=
                                               qpos[static_cast<size_t>(which * c + i)];
                            // ops::attention's causal mask is aligned bottom-right.
                            const bool rule = j < n && (!vis.causal || j <= i + (n - c));
                            ASSERT_EQ(rule, naive)
                                << "R " << R << " rank " << rank << " src " << src << " chunk "
                                << which << " q " << i << " k " << j;
                        }
                    }
                }
            }
        }
    }
}

TEST(Ring, PositionsCoverTheSequenceOnce) {
    for (int R = 1; R <= 4; ++R) {
        const int64_t T = 2 * R * 5;
        std::vector<int> seen(static_cast<size_t>(T), 0);
        for (int rank = 0; rank < R; ++rank) {
            for (int64_t p : zigzag_positions(rank, R, T)) ++seen[static_cast<size_t>(p)];
        }
        for (int64_t p = 0; p < T; ++p) EXPECT_EQ(seen[static_cast<size_t>(p)], 1) << p;
    }
}

// This rank's zig-zag rows of x [B, T, ...] (dim 1 cut into 2R chunks), contiguous.
Tensor zigzag_rows(const Tensor& x, int rank, int R) {
    const int64_t c = x.size(1) / (2 * R);
    const ZigzagChunks z = zigzag_chunks(rank, R);
    core::Shape s = x.shape();
    s[1] = 2 * c;
    Tensor out = Tensor::empty(s, x.dtype());
    out.slice(1, 0, c).copy_from(x.slice(1, z.first * c, (z.first + 1) * c));
    out.slice(1, c, 2 * c).copy_from(x.slice(1, z.second * c, (z.second + 1) * c));
    return out;
}

// Head views [B, T, H, HS] at column `off` of a fused projection [B, T, W].
Tensor heads(const Tensor& fused, int64_t off, int64_t H, int64_t HS) {
    const int64_t B = fused.size(0), T = fused.size(1), W = fused.size(2);
    return fused.as_strided({B, T, H, HS}, {T * W, W, HS, 1}, off);
}

// Forwards to a ring group, logging each send/recv as it is posted ("send 31000", "recv 31001")
// and, on a `slow` rank, sleeping before each post: the ranks drift apart.
class PostLog final : public comm::Communicator {
public:
    PostLog(comm::Communicator& inner, bool slow) : inner_(inner), slow_(slow) {}
    int rank() const override { return inner_.rank(); }
    int size() const override { return inner_.size(); }
    std::string name() const override { return inner_.name(); }
    comm::Work allreduce(const Tensor& t, comm::ReduceOp op) override {
        return inner_.allreduce(t, op);
    }
    comm::Work reduce_scatter(const Tensor& out, const Tensor& in, comm::ReduceOp op) override {
        return inner_.reduce_scatter(out, in, op);
    }
    comm::Work allgather(const Tensor& out, const Tensor& in) override {
        return inner_.allgather(out, in);
    }
    comm::Work broadcast(const Tensor& t, int root) override { return inner_.broadcast(t, root); }
    comm::Work all_to_all(const Tensor& out, const Tensor& in) override {
        return inner_.all_to_all(out, in);
    }
    comm::Work send(const Tensor& t, int peer, int tag) override {
        post("send", tag);
        return inner_.send(t, peer, tag);
    }
    comm::Work recv(const Tensor& t, int peer, int tag) override {
        post("recv", tag);
        return inner_.recv(t, peer, tag);
    }
    void barrier() override { inner_.barrier(); }
    std::unique_ptr<comm::Communicator> split(int color, int key) override {
        return inner_.split(color, key);
    }
    std::vector<std::string> posts;

private:
    void post(const char* op, int tag) {
        if (slow_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        posts.push_back(fmt::format("{} {}", op, tag));
    }
    comm::Communicator& inner_;
    bool slow_;
};

// With `log`: rank 0 posts late (PostLog), and backward's posts are checked against the
// overlapped hand-off (below).
void check_ring(int R, int64_t c, int64_t NH, int64_t NKV, bool log = false) {
    const int64_t B = 2, T = 2 * R * c, HS = 16, W = (NH + 2 * NKV) * HS;
    const std::string what = fmt::format("R {} c {} NH {} NKV {}", R, c, NH, NKV);
    Rng rng(static_cast<uint64_t>(100 + R));
    const Tensor qkv = zs::test::random_tensor(rng, {B, T, W}, DType::f32, -2, 2);
    const Tensor dout = zs::test::random_tensor(rng, {B, T, NH, HS}, DType::f32);
    const Tensor q = heads(qkv, 0, NH, HS), k = heads(qkv, NH * HS, NKV, HS),
                 v = heads(qkv, (NH + NKV) * HS, NKV, HS);
    const ops::AttentionOptions opts{true, 0.3f, 0};
    // The oracles: the double reference forward, and the unsharded backward.
    const auto want =
        ref::attention(ref::from_tensor(q), ref::from_tensor(k), ref::from_tensor(v), opts);
    Tensor out = Tensor::empty({B, T, NH, HS}, DType::f32),
           lse = Tensor::empty({B, NH, T}, DType::f32);
    ops::attention_forward(out, lse, q, k, v, opts);
    Tensor dq = Tensor::empty({B, T, NH, HS}, DType::f32);
    Tensor dk = Tensor::empty({B, T, NKV, HS}, DType::f32), dv = dk.clone();
    ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, opts);
    const Tensor want_lse = zs::test::from_dtensor(want.lse, DType::f32);  // [B, NH, T]

    comm::run_local(R, [&](int rank, comm::Communicator& group) {
        PostLog ring(group, log && rank == 0);
        RingAttention attn(ring);
        const Tensor mine = zigzag_rows(qkv, rank, R);
        const Tensor ql = heads(mine, 0, NH, HS), kl = heads(mine, NH * HS, NKV, HS),
                     vl = heads(mine, (NH + NKV) * HS, NKV, HS);
        const int64_t Tl = 2 * c;
        Tensor o = Tensor::empty({B, Tl, NH, HS}, DType::f32);
        Tensor l = Tensor::empty({B, NH, Tl}, DType::f32);
        attn.forward(opts, o, l, ql, kl, vl);
        const std::string who = fmt::format("{} rank {}", what, rank);
        EXPECT_TRUE(zs::test::all_close(
            o, ref::from_tensor(zigzag_rows(zs::test::from_dtensor(want.out, DType::f32), rank, R)),
            {1e-5, 1e-5}, who + " out"));
        // lse holds each chunk's [B, NH, c] in turn.
        const ZigzagChunks z = zigzag_chunks(rank, R);
        for (int which = 0; which < 2; ++which) {
            const int64_t chunk = which == 0 ? z.first : z.second;
            EXPECT_TRUE(
                zs::test::all_close(l.view({2, B, NH, c}).select(0, which),
                                    ref::from_tensor(want_lse.slice(2, chunk * c, (chunk + 1) * c)),
                                    {1e-5, 1e-5}, fmt::format("{} lse chunk {}", who, which)));
        }
        Tensor gq = Tensor::empty({B, Tl, NH, HS}, DType::f32);
        Tensor gk = Tensor::empty({B, Tl, NKV, HS}, DType::f32), gv = gk.clone();
        const size_t forward_posts = ring.posts.size();
        attn.backward(opts, gq, gk, gv, zigzag_rows(dout, rank, R), ql, kl, vl, o, l);
        if (log) {
            // Step s posts the next K/V block's transfer, then asks for the held block's dK/dV
            // (s > 0) before attending it, and hands the sum on after; the last recv brings
            // this rank's own block's dK/dV home. The synchronous hand-off would post each
            // step's dK/dV send before its recv.
            const std::string kv = ring.posts.at(0).substr(5);
            const std::string dkv = std::to_string(std::stoi(kv) + 1);
            std::vector<std::string> posts_want;
            for (int s = 0; s < R; ++s) {
                if (s + 1 < R) {
                    posts_want.push_back("send " + kv);
                    posts_want.push_back("recv " + kv);
                }
                if (s > 0) posts_want.push_back("recv " + dkv);
                if (R > 1) posts_want.push_back("send " + dkv);
            }
            if (R > 1) posts_want.push_back("recv " + dkv);
            const std::vector<std::string> got(
                ring.posts.begin() + static_cast<std::ptrdiff_t>(forward_posts), ring.posts.end());
            EXPECT_EQ(got, posts_want) << who;
        }
        EXPECT_TRUE(zs::test::all_close(gq, ref::from_tensor(zigzag_rows(dq, rank, R)),
                                        {1e-5, 1e-4}, who + " dq"));
        EXPECT_TRUE(zs::test::all_close(gk, ref::from_tensor(zigzag_rows(dk, rank, R)),
                                        {1e-5, 1e-4}, who + " dk"));
        EXPECT_TRUE(zs::test::all_close(gv, ref::from_tensor(zigzag_rows(dv, rank, R)),
                                        {1e-5, 1e-4}, who + " dv"));
    });
}

TEST(Ring, AttentionMatchesTheUnshardedComputation) {
    check_ring(1, 5, 4, 2);
    check_ring(2, 5, 4, 2);   // GQA, chunks across tile boundaries below one tile
    check_ring(3, 7, 6, 2);   // odd ring
    check_ring(4, 9, 4, 1);   // multi-query
    check_ring(2, 40, 4, 4);  // chunks over a key tile (64)
}

// Backward hands each block's dK/dV on one step behind it, overlapped with the next step's
// blocks, and the result stays the unsharded one when the ranks drift apart (rank 0 posts late).
TEST(Ring, BackwardOverlapsTheDkvHandOffAndMatches) {
    for (int R : {2, 3, 4}) check_ring(R, 5, 4, 2, true);
}

TEST(Ring, SlidingWindowIsRefusedByName) {
    comm::run_local(2, [&](int, comm::Communicator& ring) {
        RingAttention attn(ring);
        const Tensor q = Tensor::zeros({1, 4, 2, 8}, DType::f32),
                     k = Tensor::zeros({1, 4, 1, 8}, DType::f32);
        Tensor out = Tensor::empty({1, 4, 2, 8}, DType::f32),
               lse = Tensor::empty({1, 2, 4}, DType::f32);
        try {
            attn.forward({true, 0.0f, 7}, out, lse, q, k, k);
            ADD_FAILURE() << "a sliding window accepted";
        } catch (const NotSupported& e) {
            EXPECT_NE(std::string(e.what()).find("sliding window"), std::string::npos) << e.what();
        }
    });
}

// The formula against the bytes the ring moves: R - 1 blocks of k and v forward; backward those
// again plus R f32 dK/dV blocks.
TEST(Ring, VolumeFormula) {
    const int64_t B = 2, Tl = 8, NKV = 2, HS = 16;
    const int64_t block = 2 * B * Tl * NKV * HS;
    for (int R : {1, 2, 4}) {
        const RingVolume v = ring_volume(B, Tl, NKV, HS, R, 2);
        EXPECT_EQ(v.forward, (R - 1) * block * 2) << R;
        EXPECT_EQ(v.backward, (R - 1) * block * 2 + (R > 1 ? R * block * 4 : 0)) << R;
    }
}

}  // namespace
}  // namespace zs::parallel
