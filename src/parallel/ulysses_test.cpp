// The Ulysses exchange over thread-ranks against a naive gather: seq_to_heads gives each rank its
// heads (q split; k, v split or repeated by the GQA rule) of the whole sequence, laid out as the
// ranks' sequence shards side by side; heads_to_seq is its inverse for split pieces and sums the
// copies of a repeated one. The GQA rule's repeat counts, and the refusal of an sp that does not
// divide the heads, naming both.
#include "parallel/ulysses.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "tests/test_util.h"

namespace zs::parallel {
namespace {

using core::DType;
using zs::test::Rng;

TEST(Ulysses, KvRepeatRule) {
    EXPECT_EQ(kv_repeat(2, 2), 1);  // split: one KV head per rank
    EXPECT_EQ(kv_repeat(4, 2), 1);  // split: two per rank
    EXPECT_EQ(kv_repeat(2, 4), 2);  // replicated: each KV head on two ranks
    EXPECT_EQ(kv_repeat(1, 4), 4);  // multi-query: the one KV head on every rank
    EXPECT_EQ(kv_repeat(3, 2), 2);  // neither divides: 6 copies, 3 per rank
    EXPECT_EQ(kv_repeat(6, 4), 2);  // 12 copies, 3 per rank
    EXPECT_EQ(kv_repeat(5, 1), 1);
}

TEST(Ulysses, HeadsTheGroupDoesNotDivideAreRefusedNamingBoth) {
    try {
        check_ulysses_heads(6, 2, 4, "llama's");
        ADD_FAILURE() << "sp 4 over 6 heads accepted";
    } catch (const ConfigError& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("sp = 4"), std::string::npos) << m;
        EXPECT_NE(m.find("llama's 6 attention heads"), std::string::npos) << m;
    }
    EXPECT_NO_THROW(check_ulysses_heads(8, 2, 4, "llama's"));
}

struct Piece {
    int64_t H, repeat;
};

// Over P thread-ranks: pieces (whole-sequence tensors [B, T, H, HS]) cut into sequence shards,
// exchanged to heads and back.
void check_exchange(int P, const std::vector<Piece>& pieces, DType dtype) {
    const int64_t B = 2, Tl = 3, T = P * Tl, HS = 8;
    Rng rng(11);
    std::vector<Tensor> whole;
    int64_t Hc = 0;
    for (const Piece& p : pieces) {
        whole.push_back(zs::test::random_tensor(rng, {B, T, p.H, HS}, dtype));
        Hc += p.H * p.repeat / P;
    }
    const std::string what = fmt::format("P {} {}", P, to_string(dtype));
    comm::run_local(P, [&](int rank, comm::Communicator& c) {
        UlyssesExchange ex(c);
        std::vector<Tensor> mine;
        for (const Tensor& w : whole) mine.push_back(w.slice(1, rank * Tl, (rank + 1) * Tl));
        auto list = [&](const std::vector<Tensor>& xs) {
            std::vector<HeadPiece> v;
            for (size_t i = 0; i < xs.size(); ++i) v.push_back({xs[i], pieces[i].repeat});
            return v;
        };
        const std::vector<HeadPiece> in = list(mine);
        Tensor full = Tensor::empty({B, T, Hc, HS}, dtype);
        ASSERT_LE(in.size(), 3u);
        if (in.size() == 1) {
            ex.seq_to_heads(full, {in[0]});
        } else {
            ex.seq_to_heads(full, {in[0], in[1], in[2]});
        }
        // Naive: this rank's expanded heads of every piece, all tokens.
        int64_t at = 0;
        for (size_t i = 0; i < pieces.size(); ++i) {
            const int64_t Hl = pieces[i].H * pieces[i].repeat / P;
            for (int64_t e = 0; e < Hl; ++e) {
                const int64_t h = (rank * Hl + e) / pieces[i].repeat;
                for (int64_t b = 0; b < B; ++b)
                    for (int64_t t = 0; t < T; ++t)
                        for (int64_t d = 0; d < HS; ++d)
                            ASSERT_EQ(full.item({b, t, at + e, d}), whole[i].item({b, t, h, d}))
                                << what << " rank " << rank << " piece " << i << " head " << e;
            }
            at += Hl;
        }
        // Back to the sequence shards: the piece itself, times its copies.
        std::vector<Tensor> back;
        for (const Piece& p : pieces) back.push_back(Tensor::empty({B, Tl, p.H, HS}, dtype));
        const std::vector<HeadPiece> out = list(back);
        if (out.size() == 1) {
            ex.heads_to_seq({out[0]}, full);
        } else {
            ex.heads_to_seq({out[0], out[1], out[2]}, full);
        }
        for (size_t i = 0; i < pieces.size(); ++i) {
            for (int64_t k = 0; k < back[i].numel(); ++k) {
                const Tensor flat_back = back[i].view({-1}),
                             flat_mine = mine[i].contiguous().view({-1});
                ASSERT_EQ(flat_back.item({k}),
                          static_cast<double>(pieces[i].repeat) * flat_mine.item({k}))
                    << what << " rank " << rank << " piece " << i << " element " << k;
            }
        }
    });
}

TEST(Ulysses, ExchangeMatchesANaiveGather) {
    // q with 4 heads and k, v with 2: split at P = 2, repeated twice at P = 4.
    check_exchange(2, {{4, 1}, {2, 1}, {2, 1}}, DType::f32);
    check_exchange(4, {{4, 1}, {2, 2}, {2, 2}}, DType::f32);
    // 6 query heads, 3 KV heads over P = 2: each KV head repeated twice, 3 per rank.
    check_exchange(2, {{6, 1}, {3, 2}, {3, 2}}, DType::bf16);
    // One piece, three ranks.
    check_exchange(3, {{3, 1}}, DType::f32);
}

TEST(Ulysses, VolumeFormula) {
    // B 2, Tl 8, NH 4, NKV 2, HS 16, f32: q, k, v split at P = 2 (R = 1), repeated at P = 4.
    const int64_t row = 2 * 8 * 16 * 4;
    const UlyssesVolume v2 = ulysses_volume(2, 8, 4, 2, 16, 2, 4);
    EXPECT_EQ(v2.forward, row * (4 + 2 * 2) + row * 4);
    // Backward: q, k, v, the output and dout to the head shards, dq, dk, dv back.
    EXPECT_EQ(v2.backward, row * (4 + 2 * 2) + 2 * row * 4 + row * (4 + 2 * 2));
    const UlyssesVolume v4 = ulysses_volume(2, 8, 4, 2, 16, 4, 4);
    EXPECT_EQ(v4.forward, row * (4 + 2 * 2 * 2) + row * 4);
}

}  // namespace
}  // namespace zs::parallel
