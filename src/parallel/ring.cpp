#include "parallel/ring.h"

#include <cmath>

#include "base/error.h"
#include "ops/activation.h"

namespace zs::parallel {

namespace {

// Tags of the two streams around the ring (below comm::kAllToAllVTag, above any other user's).
constexpr int kRingKvTag = 31000;
constexpr int kRingDkvTag = 31001;

void ensure(Tensor& t, const core::Shape& shape, core::DType dtype, core::Device device) {
    if (t.defined() && t.shape() == shape && t.dtype() == dtype && t.device() == device) return;
    t = Tensor();  // release first, so the peak does not hold both
    t = Tensor::empty(shape, dtype, device, core::MemCategory::buffers);
}

// acc += part, both [B, n, H, HS] with n-by-H-by-HS contiguous per sequence (acc f32, part f32 or
// bf16): one row-wise add per sequence, since a slice over tokens does not collapse across B.
void accumulate(const Tensor& acc, const Tensor& part) {
    for (int64_t b = 0; b < acc.size(0); ++b) {
        ops::add(acc.select(0, b), acc.select(0, b), part.select(0, b));
    }
}

}  // namespace

ZigzagChunks zigzag_chunks(int rank, int R) {
    ZS_ASSERT(R >= 1 && rank >= 0 && rank < R);
    return {rank, 2 * static_cast<int64_t>(R) - 1 - rank};
}

std::vector<int64_t> zigzag_positions(int rank, int R, int64_t T) {
    ZS_ASSERT(T % (2 * R) == 0);
    const int64_t c = T / (2 * R);
    const ZigzagChunks z = zigzag_chunks(rank, R);
    std::vector<int64_t> pos;
    pos.reserve(static_cast<size_t>(2 * c));
    for (int64_t chunk : {z.first, z.second}) {
        for (int64_t t = 0; t < c; ++t) pos.push_back(chunk * c + t);
    }
    return pos;
}

RingVisible ring_visible(int rank, int src, int which, int R) {
    const ZigzagChunks mine = zigzag_chunks(rank, R), block = zigzag_chunks(src, R);
    const int64_t x = which == 0 ? mine.first : mine.second;
    // block.first < block.second; keys are visible up to (and, causally, on) chunk x.
    if (block.first > x) return {0, false};
    if (block.first == x) return {1, true};
    if (block.second < x) return {2, false};
    if (block.second == x) return {2, true};
    return {1, false};
}

RingVolume ring_volume(int64_t B, int64_t Tl, int64_t n_kv_heads, int64_t head_dim, int R,
                       size_t elem_bytes) {
    const int64_t block = 2 * B * Tl * n_kv_heads * head_dim;  // k and v, elements
    const auto hops = static_cast<int64_t>(R - 1);
    RingVolume v;
    v.forward = hops * block * static_cast<int64_t>(elem_bytes);
    v.backward =
        v.forward +
        (R > 1 ? static_cast<int64_t>(R) * block * static_cast<int64_t>(sizeof(float)) : 0);
    return v;
}

RingAttention::Dims RingAttention::check(const char* op, const ops::AttentionOptions& opts,
                                         const Tensor& q, const Tensor& k,
                                         const Tensor& lse) const {
    // A window covering the whole sequence hides nothing.
    const int64_t T = int64_t{ring_.size()} * q.size(1);
    ZS_CHECK_T(NotSupported, opts.causal && (opts.window == 0 || opts.window >= T),
               "{}: ring attention (ring group '{}') runs causal attention without a sliding "
               "window shorter than the sequence; got causal = {}, window = {} for {} tokens",
               op, ring_.name(), opts.causal, opts.window, T);
    ZS_CHECK_T(ShapeError,
               q.dim() == 4 && k.dim() == 4 && q.size(0) == k.size(0) && q.size(1) == k.size(1) &&
                   q.size(1) % 2 == 0,
               "{}: ring attention takes q [B, Tl, NH, HS] and k, v [B, Tl, NKV, HS] with Tl even "
               "(two zig-zag chunks), got q {} and k {}",
               op, q.shape().str(), k.shape().str());
    Dims d{q.size(0), q.size(1), q.size(1) / 2, q.size(2), k.size(2), q.size(3)};
    ZS_CHECK_T(ShapeError,
               lse.defined() && lse.dtype() == core::DType::f32 && lse.is_contiguous() &&
                   lse.numel() == d.B * d.NH * d.Tl,
               "{}: ring attention needs lse [B, NH, Tl] = [{}, {}, {}] f32 contiguous, got {}", op,
               d.B, d.NH, d.Tl, lse.defined() ? lse.str() : std::string("none"));
    return d;
}

void RingAttention::load_kv(const Tensor& k, const Tensor& v) {
    const core::Shape s{2, k.size(0), k.size(1), k.size(2), k.size(3)};
    for (Tensor& t : kv_) ensure(t, s, k.dtype(), k.device());
    kv_[0].select(0, 0).copy_from(k);
    kv_[0].select(0, 1).copy_from(v);
}

void RingAttention::forward(const ops::AttentionOptions& opts, const Tensor& out, const Tensor& lse,
                            const Tensor& q, const Tensor& k, const Tensor& v) {
    const Dims d = check("ring attention forward", opts, q, k, lse);
    const int R = ring_.size(), r = ring_.rank();
    load_kv(k, v);
    ensure(acc_, {d.B, d.Tl, d.NH, d.HS}, core::DType::f32, q.device());
    ensure(part_, {d.B, d.c, d.NH, d.HS}, core::DType::f32, q.device());
    ensure(part_lse_, {d.B, d.NH, d.c}, core::DType::f32, q.device());
    acc_.fill(0.0);
    const Tensor lse_c = lse.view({2, d.B, d.NH, d.c});
    lse_c.fill(-INFINITY);
    int cur = 0;
    for (int s = 0; s < R; ++s) {
        const int src = (r - s + R) % R;
        // Post the next block's transfer first: it runs while this block is attended.
        comm::Work sent, received;
        if (s + 1 < R) {
            sent = ring_.send(kv_[cur], (r + 1) % R, kRingKvTag);
            received = ring_.recv(kv_[1 - cur], (r - 1 + R) % R, kRingKvTag);
        }
        for (int which = 0; which < 2; ++which) {
            const RingVisible vis = ring_visible(r, src, which, R);
            if (vis.n_chunks == 0) continue;
            const int64_t n = vis.n_chunks * d.c, q0 = which * d.c;
            ops::attention_forward(
                part_, part_lse_, q.slice(1, q0, q0 + d.c), kv_[cur].select(0, 0).slice(1, 0, n),
                kv_[cur].select(0, 1).slice(1, 0, n), {vis.causal, opts.scale, 0});
            ops::attention_merge(acc_.slice(1, q0, q0 + d.c), lse_c.select(0, which), part_,
                                 part_lse_);
        }
        if (s + 1 < R) {
            sent.wait();
            received.wait();
            cur = 1 - cur;
        }
    }
    out.copy_from(acc_);
}

void RingAttention::backward(const ops::AttentionOptions& opts, const Tensor& dq, const Tensor& dk,
                             const Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                             const Tensor& v, const Tensor& out, const Tensor& lse) {
    const Dims d = check("ring attention backward", opts, q, k, lse);
    const int R = ring_.size(), r = ring_.rank();
    load_kv(k, v);
    const core::Shape kv_shape = kv_[0].shape();
    for (Tensor& t : dkv_) ensure(t, kv_shape, core::DType::f32, q.device());
    ensure(acc_, {d.B, d.Tl, d.NH, d.HS}, core::DType::f32, q.device());
    ensure(dq_part_, {d.B, d.c, d.NH, d.HS}, q.dtype(), q.device());
    ensure(dkv_part_, kv_shape, q.dtype(), q.device());
    acc_.fill(0.0);
    dkv_[0].fill(0.0);
    const Tensor lse_c = lse.view({2, d.B, d.NH, d.c});
    // The dK/dV accumulators travel one step behind their blocks, overlapped with compute: at
    // step s the accumulator of the block held (what its earlier holders summed) arrives in
    // dkv_[s % 2] while this rank attends its first query chunk; this rank's share is added and
    // the sum posted on to the next rank, and that transfer runs during step s + 1's blocks. The
    // other accumulator (the one sent at step s - 1) is free again when the recv into it is
    // posted at step s + 1, so two suffice. Each sum is incoming + chunk 0's + chunk 1's share,
    // in that order, on every rank: the same result as handing it on synchronously.
    const int next = (r + 1) % R, prev = (r - 1 + R) % R;
    comm::Work dsent[2], dreceived;
    int cur = 0;
    for (int s = 0; s < R; ++s) {
        const int src = (r - s + R) % R;
        Tensor& dacc = dkv_[s % 2];
        comm::Work sent, received;
        if (s + 1 < R) {
            sent = ring_.send(kv_[cur], next, kRingKvTag);
            received = ring_.recv(kv_[1 - cur], prev, kRingKvTag);
        }
        if (s > 0) {
            dsent[s % 2].wait();  // posted at step s - 2 from this buffer
            dreceived = ring_.recv(dacc, prev, kRingDkvTag);
        }
        for (int which = 0; which < 2; ++which) {
            const RingVisible vis = ring_visible(r, src, which, R);
            if (vis.n_chunks == 0) continue;
            const int64_t n = vis.n_chunks * d.c, q0 = which * d.c;
            const Tensor dkp = dkv_part_.select(0, 0).slice(1, 0, n),
                         dvp = dkv_part_.select(0, 1).slice(1, 0, n);
            ops::attention_backward(
                dq_part_, dkp, dvp, dout.slice(1, q0, q0 + d.c), q.slice(1, q0, q0 + d.c),
                kv_[cur].select(0, 0).slice(1, 0, n), kv_[cur].select(0, 1).slice(1, 0, n),
                out.slice(1, q0, q0 + d.c), lse_c.select(0, which), {vis.causal, opts.scale, 0});
            accumulate(acc_.slice(1, q0, q0 + d.c), dq_part_);
            dreceived.wait();
            accumulate(dacc.select(0, 0).slice(1, 0, n), dkp);
            accumulate(dacc.select(0, 1).slice(1, 0, n), dvp);
        }
        dreceived.wait();  // also when this rank's queries see none of the block
        // Hand this block's dK/dV on; after R hops each is back at its owner.
        if (R > 1) dsent[s % 2] = ring_.send(dacc, next, kRingDkvTag);
        if (s + 1 < R) {
            sent.wait();
            received.wait();
            cur = 1 - cur;
        }
    }
    // This rank's own block's accumulator, from the last rank to add to it.
    const int fin = R > 1 ? R % 2 : 0;
    if (R > 1) {
        dsent[fin].wait();
        dreceived = ring_.recv(dkv_[fin], prev, kRingDkvTag);
        dreceived.wait();
        dsent[1 - fin].wait();
    }
    dq.copy_from(acc_);
    dk.copy_from(dkv_[fin].select(0, 0));
    dv.copy_from(dkv_[fin].select(0, 1));
}

}  // namespace zs::parallel
