#include "parallel/ulysses.h"

#include <numeric>

#include "base/error.h"
#include "ops/ulysses.h"

namespace zs::parallel {

int64_t kv_repeat(int64_t n_kv_heads, int sp) {
    ZS_ASSERT(n_kv_heads > 0 && sp > 0, "kv_repeat({}, {})", n_kv_heads, sp);
    return sp / std::gcd(n_kv_heads, int64_t{sp});
}

void check_ulysses_heads(int64_t n_heads, int64_t n_kv_heads, int sp, const std::string& what) {
    ZS_CHECK_T(ConfigError, sp >= 1 && n_heads % sp == 0,
               "sequence parallelism: sp = {} does not divide {} {} attention heads (Ulysses "
               "gives each of the sp ranks an equal share of the query heads)",
               sp, what, n_heads);
    ZS_CHECK_T(ConfigError, n_kv_heads >= 1 && n_heads % n_kv_heads == 0,
               "sequence parallelism: {} {} attention heads are not a multiple of its {} KV heads",
               what, n_heads, n_kv_heads);
}

UlyssesVolume ulysses_volume(int64_t B, int64_t Tl, int64_t n_heads, int64_t n_kv_heads,
                             int64_t head_dim, int sp, size_t elem_bytes) {
    const int64_t row = B * Tl * head_dim * static_cast<int64_t>(elem_bytes);
    const int64_t qkv = row * (n_heads + 2 * n_kv_heads * kv_repeat(n_kv_heads, sp));
    const int64_t out = row * n_heads;
    // Backward re-sends q, k, v and the output with dout (nothing head-sharded is kept between
    // the passes), then dq, dk, dv back.
    return {qkv + out, (qkv + 2 * out) + qkv};
}

Tensor UlyssesExchange::prepare(const Tensor& full, std::initializer_list<HeadPiece> pieces,
                                const char* op) const {
    const int P = sp_.size();
    ZS_CHECK_T(ShapeError, full.dim() == 4 && full.size(1) % P == 0 && full.is_contiguous(),
               "{}: the head-sharded tensor {} must be a contiguous [B, T, Hc, HS] with T "
               "divisible by the {} ranks of sp group '{}'",
               op, full.shape().str(), P, sp_.name());
    int64_t heads = 0;
    for (const HeadPiece& p : pieces) {
        ZS_CHECK_T(ShapeError,
                   p.x.dim() == 4 && p.x.size(0) == full.size(0) &&
                       p.x.size(1) * P == full.size(1) && p.x.size(2) * p.repeat % P == 0,
                   "{}: piece {} (repeat {}) is not a [B, T/{}, H, HS] shard of {} that splits "
                   "over the ranks",
                   op, p.x.shape().str(), p.repeat, P, full.shape().str());
        heads += p.x.size(2) * p.repeat / P;
    }
    ZS_CHECK_T(ShapeError, heads == full.size(2),
               "{}: the pieces give {} heads per rank, the head-sharded tensor {} has {}", op,
               heads, full.shape().str(), full.size(2));
    // One sequence's chunks [P, 1, Tl, Hc, HS]: freed when the call returns.
    return Tensor::empty({P, 1, full.size(1) / P, full.size(2), full.size(3)}, full.dtype(),
                         full.device(), core::MemCategory::buffers);
}

void UlyssesExchange::seq_to_heads(const Tensor& full, std::initializer_list<HeadPiece> pieces) {
    const Tensor send = prepare(full, pieces, "ulysses seq_to_heads");
    for (int64_t b = 0; b < full.size(0); ++b) {
        int64_t at = 0;
        for (const HeadPiece& p : pieces) {
            ops::ulysses_pack_heads(send, p.x.slice(0, b, b + 1), at, p.repeat);
            at += p.x.size(2) * p.repeat / sp_.size();
        }
        // full[b] is [P, Tl, Hc, HS]: rank s's chunk lands on its tokens [s Tl, (s + 1) Tl).
        sp_.all_to_all(full.select(0, b), send).wait();
    }
}

void UlyssesExchange::heads_to_seq(std::initializer_list<HeadPiece> pieces, const Tensor& full) {
    const Tensor recv = prepare(full, pieces, "ulysses heads_to_seq");
    for (int64_t b = 0; b < full.size(0); ++b) {
        // full[b]'s token block s is rank s's chunk.
        sp_.all_to_all(recv, full.select(0, b)).wait();
        int64_t at = 0;
        for (const HeadPiece& p : pieces) {
            ops::ulysses_unpack_heads(p.x.slice(0, b, b + 1), recv, at, p.repeat);
            at += p.x.size(2) * p.repeat / sp_.size();
        }
    }
}

}  // namespace zs::parallel
