// The Ulysses layout kernels against the naive reference (reference::ulysses_*) on every backend
// that implements them: P = 1..4 ranks, repeat 1 (split heads), 2 and 3 (repeated KV heads, the
// unpack summing the copies in f32), pieces at a head offset inside a wider chunk (q, k, v side by
// side), x as a strided view of a fused QKV projection, f32 and bf16. Copies are exact; the bf16
// sums of repeated heads round once, as a bf16 store of the f32 sum. Pack then unpack is the
// identity for repeat 1. The argument checks name the op.
#include "ops/ulysses.h"

#include <gtest/gtest.h>

#include "base/error.h"
#include "ops/kernels.h"
#include "tests/test_util.h"

namespace zs::ops {
namespace {

using namespace zs::test;
namespace ref = ops::reference;

struct Case {
    int64_t P, B, Tl, H, HS, repeat;
    DType dtype;
};

std::string describe(const Case& c) {
    return fmt::format("P {} B {} Tl {} H {} HS {} repeat {} {}", c.P, c.B, c.Tl, c.H, c.HS,
                       c.repeat, to_string(c.dtype));
}

const Case kCases[] = {{1, 1, 3, 2, 8, 1, DType::f32},  {2, 2, 3, 4, 8, 1, DType::f32},
                       {2, 1, 5, 1, 16, 2, DType::f32}, {4, 2, 2, 2, 20, 2, DType::f32},
                       {3, 2, 4, 1, 8, 3, DType::f32},  {2, 2, 3, 6, 40, 1, DType::bf16},
                       {4, 1, 3, 2, 24, 2, DType::bf16}};

bool implemented(core::Device dev) {
    try {
        Tensor s = Tensor::zeros({1, 1, 1, 1, 1}, DType::f32, dev);
        Tensor x = Tensor::zeros({1, 1, 1, 1}, DType::f32, dev);
        ulysses_pack_heads(s, x, 0, 1);
        return true;
    } catch (const NotSupported&) {
        return false;
    }
}

// A piece [B, Tl, H, HS] as a view into a wider fused row (as q sits in a QKV projection).
Tensor fused_view(Rng& rng, const Case& c, core::Device dev) {
    const int64_t W = (c.H + 3) * c.HS;
    Tensor fused = random_tensor(rng, {c.B, c.Tl, W}, c.dtype).to(dev);
    return fused.as_strided({c.B, c.Tl, c.H, c.HS}, {c.Tl * W, W, c.HS, 1}, 2 * c.HS);
}

TEST(Ulysses, HeadsPackAndUnpackMatchReference) {
    Rng rng(5);
    ASSERT_TRUE(implemented(core::Device::cpu()));
    for (core::Device dev : test_devices()) {
        if (!implemented(dev)) continue;
        for (const Case& c : kCases) {
            const std::string what = describe(c) + " on " + dev.str();
            const int64_t Hl = c.H * c.repeat / c.P, at = 1, Hc = Hl + 2;
            Tensor x = fused_view(rng, c, dev);
            Tensor send = Tensor::zeros({c.P, c.B, c.Tl, Hc, c.HS}, c.dtype, dev);
            ulysses_pack_heads(send, x, at, c.repeat);
            const DTensor want =
                ref::ulysses_pack_heads(ref::from_tensor(x.to(core::Device::cpu())), c.P, c.repeat);
            EXPECT_TRUE(all_close(send.slice(3, at, at + Hl), want, {0, 0}, what));
            EXPECT_TRUE(all_close(send.slice(3, 0, at), DTensor({c.P, c.B, c.Tl, at, c.HS}), {0, 0},
                                  what + " (other heads untouched)"));
            // Unpack from random chunks: the sum of each head's copies, rounded once.
            Tensor recv = random_tensor(rng, {c.P, c.B, c.Tl, Hc, c.HS}, c.dtype).to(dev);
            Tensor y = fused_view(rng, c, dev);
            ulysses_unpack_heads(y, recv, at, c.repeat);
            const DTensor sum = ref::ulysses_unpack_heads(
                ref::from_tensor(recv.to(core::Device::cpu()).slice(3, at, at + Hl)), c.H,
                c.repeat);
            // repeat 1 copies exactly; a sum of copies rounds in f32 (atol: inputs are in
            // [-1, 1]) and, in bf16, once more on the store (half a bf16 ulp: 2^-8 relative).
            const Tol tol = c.repeat == 1           ? Tol{0, 0}
                            : c.dtype == DType::f32 ? Tol{1e-6, 1e-6}
                                                    : Tol{1e-6, 1.0 / 256};
            EXPECT_TRUE(all_close(y, sum, tol, what + " unpack"));
            if (c.repeat == 1) {  // pack then unpack: the identity
                Tensor back = fused_view(rng, c, dev);
                ulysses_unpack_heads(back, send, at, 1);
                EXPECT_TRUE(all_close(back, ref::from_tensor(x.to(core::Device::cpu())), {0, 0},
                                      what + " round trip"));
            }
        }
    }
}

TEST(Ulysses, SequencePackAndUnpackMatchReference) {
    Rng rng(6);
    for (core::Device dev : test_devices()) {
        if (!implemented(dev)) continue;
        for (const Case& c : kCases) {
            const std::string what = describe(c) + " on " + dev.str();
            const int64_t Hc = c.H + 1, T = c.P * c.Tl;
            // full as a column view of a wider tensor (heads [1, 1 + Hc) of Hc + 2).
            Tensor wide = random_tensor(rng, {c.B, T, Hc + 2, c.HS}, c.dtype).to(dev);
            Tensor full = wide.slice(2, 1, 1 + Hc);
            Tensor send = Tensor::empty({c.P, c.B, c.Tl, Hc, c.HS}, c.dtype, dev);
            ulysses_pack_seq(send, full);
            const DTensor want =
                ref::ulysses_pack_seq(ref::from_tensor(full.to(core::Device::cpu())), c.P);
            EXPECT_TRUE(all_close(send, want, {0, 0}, what));
            Tensor back = Tensor::zeros({c.B, T, Hc + 2, c.HS}, c.dtype, dev);
            ulysses_unpack_seq(back.slice(2, 1, 1 + Hc), send);
            EXPECT_TRUE(all_close(back.slice(2, 1, 1 + Hc), ref::ulysses_unpack_seq(want), {0, 0},
                                  what + " unpack"));
            EXPECT_TRUE(all_close(back.slice(2, 0, 1), DTensor({c.B, T, 1, c.HS}), {0, 0},
                                  what + " (other heads untouched)"));
        }
    }
}

TEST(Ulysses, ArgumentChecksNameTheOp) {
    Tensor send = Tensor::zeros({2, 1, 3, 2, 8}, DType::f32);
    auto expect_error = [](auto&& fn, const char* op, const char* what) {
        try {
            fn();
            ADD_FAILURE() << "accepted: " << what;
        } catch (const ShapeError& e) {
            EXPECT_NE(std::string(e.what()).find(op), std::string::npos) << e.what();
        }
    };
    // 3 heads do not split over 2 ranks.
    expect_error(
        [&] {
            ulysses_pack_heads(send, Tensor::zeros({1, 3, 3, 8}, DType::f32), 0, 1);
        },
        "ulysses_pack_heads", "3 heads over 2 ranks");
    // The piece overflows the chunk's heads.
    expect_error(
        [&] {
            ulysses_pack_heads(send, Tensor::zeros({1, 3, 4, 8}, DType::f32), 1, 1);
        },
        "ulysses_pack_heads", "heads past the chunk");
    // Another dtype.
    expect_error(
        [&] {
            ulysses_unpack_heads(Tensor::zeros({1, 3, 2, 8}, DType::bf16), send, 0, 2);
        },
        "ulysses_unpack_heads", "bf16 into f32 chunks");
    // full's sequence is not P * Tl.
    expect_error(
        [&] {
            ulysses_unpack_seq(Tensor::zeros({1, 5, 2, 8}, DType::f32), send);
        },
        "ulysses_unpack_seq", "5 tokens from 2 x 3");
}

}  // namespace
}  // namespace zs::ops
