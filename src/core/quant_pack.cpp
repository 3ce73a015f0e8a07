// The interleaved16 layout of a QTensor (quant.h): what the decode kernels read.
//
// Rows are taken 16 at a time (a group; the last one padded with zero rows). A group is its
// units one after another, a unit being one block (32 elements: q8_0, q4_0, q4_1) or super-block
// (256: q4_k, q5_k, q6_k) of each of the 16 rows. A unit is a header of per-row scales, row-minor
// (value[s][r] at (16 s + r) * size), then the codes of its 32-element chunks as 64-byte slabs in
// which row r owns bytes [4 r, 4 r + 4):
//   8-bit codes (q8_0, stored as q + 128): 8 slabs per chunk, slab k holds elements 4k..4k+3.
//   4-bit codes: 4 slabs per chunk, slab p's byte i holds element 4p+i in its low nibble and
//     16+4p+i in its high nibble.
//   5-bit codes (q5_0, q5_1, q5_k): the low 4 bits as 4-bit codes (256 bytes), then one slab of the
//     high bits: bit p of byte i for element 4p+i, bit 4+p for element 16+4p+i.
//   6-bit codes (q6_k): the low 4 bits as 4-bit codes (256 bytes), then two slabs of the high 2
//     bits: the first for elements 0..15, the second for 16..31, bits 2p..2p+1 of byte i for
//     element 4p+i (+16).
// So one 64-byte slab meets one 4-byte broadcast of the activations in one vpdpbusd for all 16
// rows, and a 16-lane accumulator holds one output per row (no horizontal sums).
//
// Unit headers (f16 unless stated; byte offsets):
//   q8_0 (544 B):  d[16] @0                              codes @32   (-128 folded into sums)
//   q4_0 (288 B):  d[16] @0                              codes @32   (-8)
//   q4_1 (320 B):  d[16] @0, m[16] @32                   codes @64
//   q5_0 (352 B):  d[16] @0                              codes @32   (-16)
//   q5_1 (384 B):  d[16] @0, m[16] @32                   codes @64
//   q4_k (2368 B): d[16] @0, dmin[16] @32, u8 sc[8][16] @64, u8 mn[8][16] @192, codes @320
//   q5_k (2880 B): q4_k's header, codes @320 (320 per chunk)
//   q6_k (3360 B): d[16] @0, i8 sc[16][16] @32 (one per 16 elements), codes @288 (384 per chunk)
#include "core/quant_pack.h"

#include <cstring>
#include <vector>

#include "base/error.h"

namespace zs::core {

namespace {

constexpr int64_t R = kInterleaveRows;

int64_t unit_elems(QType t) { return qtype_traits(t).block_size; }

int64_t unit_bytes(QType t) {
    switch (t) {
        case QType::q8_0:
            return 544;
        case QType::q4_0:
            return 288;
        case QType::q4_1:
            return 320;
        case QType::q5_0:
            return 352;
        case QType::q5_1:
            return 384;
        case QType::q4_k:
            return 2368;
        case QType::q5_k:
            return 2880;
        case QType::q6_k:
            return 3360;
        default:
            return 0;
    }
}

int64_t header_bytes(QType t) {
    switch (t) {
        case QType::q8_0:
        case QType::q4_0:
        case QType::q5_0:
            return 32;
        case QType::q4_1:
        case QType::q5_1:
            return 64;
        case QType::q4_k:
        case QType::q5_k:
            return 320;
        case QType::q6_k:
            return 288;
        default:
            return 0;
    }
}

// Bits per code in the slabs.
int code_bits(QType t) {
    switch (t) {
        case QType::q8_0:
            return 8;
        case QType::q6_k:
            return 6;
        case QType::q5_0:
        case QType::q5_1:
        case QType::q5_k:
            return 5;
        default:
            return 4;
    }
}
int64_t chunk_bytes(QType t) { return 256 + 64 * (code_bits(t) - 4); }

void scale_min_k4(const uint8_t* s, int j, uint8_t* sc, uint8_t* mn) {
    if (j < 4) {
        *sc = s[j] & 63;
        *mn = s[j + 4] & 63;
    } else {
        *sc = static_cast<uint8_t>((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4));
        *mn = static_cast<uint8_t>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

// One file block of one row <-> its codes u[unit_elems] and header fields (hdr: the row's
// bytes of each header field, in header order, 2 bytes per f16 and 1 per u8/i8 scale).
struct RowUnit {
    uint8_t u[256];
    uint8_t f16s[2][2];  // d, m / dmin
    uint8_t sc[16];      // q4_k, q5_k: sc[8]; q6_k: sc[16]
    uint8_t mn[8];
};

void split(QType t, const uint8_t* x, RowUnit& ru) {
    switch (t) {
        case QType::q8_0:
            std::memcpy(ru.f16s[0], x, 2);
            for (int i = 0; i < 32; ++i) ru.u[i] = static_cast<uint8_t>(x[2 + i] ^ 0x80);
            return;
        case QType::q4_0:
        case QType::q4_1: {
            const int h = t == QType::q4_1 ? 4 : 2;
            std::memcpy(ru.f16s[0], x, 2);
            if (t == QType::q4_1) std::memcpy(ru.f16s[1], x + 2, 2);
            for (int i = 0; i < 16; ++i) {
                ru.u[i] = x[h + i] & 0x0F;
                ru.u[i + 16] = static_cast<uint8_t>(x[h + i] >> 4);
            }
            return;
        }
        case QType::q5_0:
        case QType::q5_1: {
            const int h = t == QType::q5_1 ? 4 : 2;
            std::memcpy(ru.f16s[0], x, 2);
            if (t == QType::q5_1) std::memcpy(ru.f16s[1], x + 2, 2);
            uint32_t qh;
            std::memcpy(&qh, x + h, 4);
            for (int i = 0; i < 16; ++i) {
                ru.u[i] = static_cast<uint8_t>((x[h + 4 + i] & 0x0F) | ((qh >> i) & 1) << 4);
                ru.u[i + 16] =
                    static_cast<uint8_t>((x[h + 4 + i] >> 4) | ((qh >> (i + 16)) & 1) << 4);
            }
            return;
        }
        case QType::q4_k:
        case QType::q5_k: {  // q5_k: bit 4 of element l of sub-block j is bit j of qh[l]
            const bool five = t == QType::q5_k;
            const uint8_t* qh = x + 16;
            std::memcpy(ru.f16s[0], x, 2);
            std::memcpy(ru.f16s[1], x + 2, 2);
            for (int j = 0; j < 8; ++j) {
                scale_min_k4(x + 4, j, &ru.sc[j], &ru.mn[j]);
                const uint8_t* q = x + (five ? 48 : 16) + 32 * (j / 2);
                for (int l = 0; l < 32; ++l) {
                    const int hi = five ? ((qh[l] >> j) & 1) << 4 : 0;
                    ru.u[32 * j + l] = static_cast<uint8_t>(((q[l] >> (4 * (j % 2))) & 0x0F) | hi);
                }
            }
            return;
        }
        case QType::q6_k:
            std::memcpy(ru.f16s[0], x + 208, 2);
            std::memcpy(ru.sc, x + 192, 16);
            for (int j = 0; j < 8; ++j) q6_k_codes(x, j, ru.u + 32 * j);
            return;
        default:
            ZS_ASSERT(false, "{} has no interleaved layout", to_string(t));
    }
}

void join(QType t, const RowUnit& ru, uint8_t* x) {
    const int64_t bytes = qtype_traits(t).block_bytes;
    std::memset(x, 0, static_cast<size_t>(bytes));
    switch (t) {
        case QType::q8_0:
            std::memcpy(x, ru.f16s[0], 2);
            for (int i = 0; i < 32; ++i) x[2 + i] = static_cast<uint8_t>(ru.u[i] ^ 0x80);
            return;
        case QType::q4_0:
        case QType::q4_1: {
            const int h = t == QType::q4_1 ? 4 : 2;
            std::memcpy(x, ru.f16s[0], 2);
            if (t == QType::q4_1) std::memcpy(x + 2, ru.f16s[1], 2);
            for (int i = 0; i < 16; ++i)
                x[h + i] = static_cast<uint8_t>(ru.u[i] | ru.u[i + 16] << 4);
            return;
        }
        case QType::q5_0:
        case QType::q5_1: {
            const int h = t == QType::q5_1 ? 4 : 2;
            std::memcpy(x, ru.f16s[0], 2);
            if (t == QType::q5_1) std::memcpy(x + 2, ru.f16s[1], 2);
            uint32_t qh = 0;
            for (int i = 0; i < 32; ++i) qh |= static_cast<uint32_t>(ru.u[i] >> 4) << i;
            std::memcpy(x + h, &qh, 4);
            for (int i = 0; i < 16; ++i) {
                x[h + 4 + i] = static_cast<uint8_t>((ru.u[i] & 0x0F) | (ru.u[i + 16] & 0x0F) << 4);
            }
            return;
        }
        case QType::q4_k:
        case QType::q5_k: {
            const bool five = t == QType::q5_k;
            std::memcpy(x, ru.f16s[0], 2);
            std::memcpy(x + 2, ru.f16s[1], 2);
            uint8_t* s = x + 4;
            for (int j = 0; j < 4; ++j) {
                s[j] = static_cast<uint8_t>(ru.sc[j] | (ru.sc[j + 4] >> 4) << 6);
                s[j + 4] = static_cast<uint8_t>(ru.mn[j] | (ru.mn[j + 4] >> 4) << 6);
                s[j + 8] = static_cast<uint8_t>((ru.sc[j + 4] & 0x0F) | (ru.mn[j + 4] & 0x0F) << 4);
            }
            for (int j = 0; j < 8; ++j) {
                uint8_t* q = x + (five ? 48 : 16) + 32 * (j / 2);
                for (int l = 0; l < 32; ++l) {
                    const int u = ru.u[32 * j + l];
                    q[l] = static_cast<uint8_t>(q[l] | (u & 0x0F) << (4 * (j % 2)));
                    if (five) x[16 + l] = static_cast<uint8_t>(x[16 + l] | (u >> 4) << j);
                }
            }
            return;
        }
        case QType::q6_k:
            std::memcpy(x + 208, ru.f16s[0], 2);
            std::memcpy(x + 192, ru.sc, 16);
            for (int j = 0; j < 8; ++j) {
                const int h = j / 4, k = j % 4;
                uint8_t* ql = x + 64 * h + 32 * (k % 2);
                uint8_t* qh = x + 128 + 32 * h;
                for (int l = 0; l < 32; ++l) {
                    const int u = ru.u[32 * j + l];
                    ql[l] = static_cast<uint8_t>(ql[l] | (u & 0x0F) << (k < 2 ? 0 : 4));
                    qh[l] = static_cast<uint8_t>(qh[l] | (u >> 4) << (2 * k));
                }
            }
            return;
        default:
            ZS_ASSERT(false, "{} has no interleaved layout", to_string(t));
    }
}

// Row r's codes ru.u of each chunk into a unit's slabs (the layout above): every byte row r owns
// is written whole (row r owns bytes [4 r, 4 r + 4) of every slab).
void put_codes(QType t, const RowUnit& ru, int64_t r, uint8_t* unit) {
    const int bits = code_bits(t);
    const int64_t chunks = unit_elems(t) / 32;
    for (int64_t c = 0; c < chunks; ++c) {
        uint8_t* cb = unit + header_bytes(t) + c * chunk_bytes(t) + 4 * r;
        const uint8_t* u = ru.u + 32 * c;
        if (bits == 8) {
            for (int k = 0; k < 8; ++k) std::memcpy(cb + 64 * k, u + 4 * k, 4);
            continue;
        }
        for (int p = 0; p < 4; ++p) {
            for (int i = 0; i < 4; ++i) {
                cb[64 * p + i] =
                    static_cast<uint8_t>((u[4 * p + i] & 0x0F) | (u[16 + 4 * p + i] & 0x0F) << 4);
            }
        }
        for (int i = 0; i < 4 && bits == 5; ++i) {
            int h = 0;
            for (int p = 0; p < 4; ++p) {
                h |= ((u[4 * p + i] >> 4) & 1) << p;
                h |= ((u[16 + 4 * p + i] >> 4) & 1) << (4 + p);
            }
            cb[256 + i] = static_cast<uint8_t>(h);
        }
        for (int half = 0; half < 2 && bits == 6; ++half) {
            for (int i = 0; i < 4; ++i) {
                int h = 0;
                for (int p = 0; p < 4; ++p) h |= ((u[16 * half + 4 * p + i] >> 4) & 3) << (2 * p);
                cb[256 + 64 * half + i] = static_cast<uint8_t>(h);
            }
        }
    }
}

// Header field offsets of row r in a unit.
void put_header(QType t, const RowUnit& ru, int64_t r, uint8_t* unit) {
    std::memcpy(unit + 2 * r, ru.f16s[0], 2);
    if (t == QType::q4_1 || t == QType::q5_1 || t == QType::q4_k || t == QType::q5_k)
        std::memcpy(unit + 32 + 2 * r, ru.f16s[1], 2);
    if (t == QType::q4_k || t == QType::q5_k) {
        for (int j = 0; j < 8; ++j) {
            unit[64 + R * j + r] = ru.sc[j];
            unit[192 + R * j + r] = ru.mn[j];
        }
    }
    if (t == QType::q6_k) {
        for (int s = 0; s < 16; ++s) unit[32 + R * s + r] = ru.sc[s];
    }
}

void get_header(QType t, const uint8_t* unit, int64_t r, RowUnit& ru) {
    std::memcpy(ru.f16s[0], unit + 2 * r, 2);
    if (t == QType::q4_1 || t == QType::q5_1 || t == QType::q4_k || t == QType::q5_k)
        std::memcpy(ru.f16s[1], unit + 32 + 2 * r, 2);
    if (t == QType::q4_k || t == QType::q5_k) {
        for (int j = 0; j < 8; ++j) {
            ru.sc[j] = unit[64 + R * j + r];
            ru.mn[j] = unit[192 + R * j + r];
        }
    }
    if (t == QType::q6_k) {
        for (int s = 0; s < 16; ++s) ru.sc[s] = unit[32 + R * s + r];
    }
}

}  // namespace

bool widens_to_q8_0(QType t) { return t == QType::q4_0 || t == QType::q5_0 || t == QType::q8_0; }

QTensor widen_to_q8_0(const QTensor& w) {
    ZS_CHECK_T(NotSupported, widens_to_q8_0(w.type()), "{}: {} does not widen to q8_0 exactly",
               w.str(), to_string(w.type()));
    ZS_ASSERT(w.layout() == QLayout::rows, "{} must be in the rows layout", w.str());
    if (w.type() == QType::q8_0) return w;
    QTensor out = QTensor::empty(QType::q8_0, w.rows(), w.cols(), w.device());
    const bool five = w.type() == QType::q5_0;
    const int64_t bb = qtype_traits(w.type()).block_bytes, blocks = w.rows() * w.cols() / 32;
    const uint8_t* src = w.data();
    uint8_t* dst = out.mutable_data();
    for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* x = src + b * bb;
        uint8_t* y = dst + b * 34;
        std::memcpy(y, x, 2);  // d
        uint32_t qh = 0;
        if (five) std::memcpy(&qh, x + 2, 4);
        const uint8_t* qs = x + (five ? 6 : 2);
        for (int i = 0; i < 32; ++i) {
            int c = i < 16 ? qs[i] & 0x0F : qs[i - 16] >> 4;
            if (five) c |= static_cast<int>((qh >> i) & 1u) << 4;
            y[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(c - (five ? 16 : 8)));
        }
    }
    return out;
}

bool can_interleave(QType t) { return unit_bytes(t) != 0; }

int64_t interleaved_group_bytes(QType t, int64_t k) {
    ZS_ASSERT(can_interleave(t), "{} has no interleaved layout", to_string(t));
    return k / unit_elems(t) * unit_bytes(t);
}

namespace {

// Where interleave16 places its results while interleave16_all runs on this thread.
struct Arena {
    std::shared_ptr<Buffer> buf;
    size_t at = 0;
};
thread_local Arena tl_arena;
constexpr size_t kArenaAlign = 4096;

size_t arena_size(size_t n) { return (n + kArenaAlign - 1) / kArenaAlign * kArenaAlign; }

}  // namespace

void interleave16_all(std::vector<QTensor>& ts, bool huge_pages) {
    auto packs = [](const QTensor& t) {
        return t.defined() && t.device().is_cpu() && t.layout() == QLayout::rows &&
               can_interleave(t.type());
    };
    size_t total = 0;
    for (const QTensor& t : ts) {
        if (packs(t)) {
            total += arena_size(static_cast<size_t>((t.rows() + R - 1) / R *
                                                    interleaved_group_bytes(t.type(), t.cols())));
        }
    }
    if (total == 0) return;
    AllocOptions opts;
    opts.huge_pages = huge_pages;
    tl_arena = {Buffer::allocate(total, Device::cpu(), MemCategory::params, opts), 0};
    try {
        for (QTensor& t : ts) {
            if (packs(t)) t = interleave16(t);
        }
    } catch (...) {
        tl_arena = {};
        throw;
    }
    ZS_ASSERT(tl_arena.at == total);
    tl_arena = {};
}

QTensor interleave16(const QTensor& w) {
    ZS_CHECK_T(NotSupported, can_interleave(w.type()), "{}: no interleaved layout for {}", w.str(),
               to_string(w.type()));
    ZS_ASSERT(w.layout() == QLayout::rows, "{} is already interleaved", w.str());
    const QType t = w.type();
    const int64_t units = w.cols() / unit_elems(t), ub = unit_bytes(t);
    const int64_t bb = qtype_traits(t).block_bytes;
    const int64_t groups = (w.rows() + R - 1) / R;
    QTensor out;
    const auto bytes = static_cast<size_t>(groups * units * ub);
    if (tl_arena.buf && w.device().is_cpu() && tl_arena.at + bytes <= tl_arena.buf->size()) {
        out.buf_ = tl_arena.buf;
        out.offset_ = tl_arena.at;
        tl_arena.at += arena_size(bytes);
    } else {
        out.buf_ = Buffer::allocate(bytes, w.device(), MemCategory::params);
    }
    out.type_ = t;
    out.layout_ = QLayout::interleaved16;
    out.rows_ = w.rows();
    out.cols_ = w.cols();
    uint8_t* dst = out.mutable_data();
    const std::vector<uint8_t> zero(static_cast<size_t>(bb), 0);
    // Groups in parallel, each writing only its own units and every byte of them (with a loop
    // per code on one thread this ran at ~180 MB/s on Zen 3: 20 s and more for a 7B model).
#pragma omp parallel for schedule(static) if (bytes >= (size_t{1} << 20))
    for (int64_t g = 0; g < groups; ++g) {
        for (int64_t b = 0; b < units; ++b) {
            uint8_t* unit = dst + (g * units + b) * ub;
            for (int64_t r = 0; r < R; ++r) {
                const int64_t row = g * R + r;
                RowUnit ru{};
                split(t, row < w.rows() ? w.row(row) + b * bb : zero.data(), ru);
                put_header(t, ru, r, unit);
                put_codes(t, ru, r, unit);
            }
        }
    }
    return out;
}

void deinterleave_row(const QTensor& w, int64_t r, uint8_t* dst) {
    ZS_ASSERT(w.layout() == QLayout::interleaved16 && 0 <= r && r < w.rows());
    const QType t = w.type();
    const int64_t units = w.cols() / unit_elems(t), ub = unit_bytes(t);
    const int64_t chunks = unit_elems(t) / 32, bb = qtype_traits(t).block_bytes;
    const uint8_t* grp = w.group(r / R);
    const int64_t rr = r % R;
    for (int64_t b = 0; b < units; ++b) {
        const uint8_t* unit = grp + b * ub;
        RowUnit ru{};
        get_header(t, unit, rr, ru);
        const int bits = code_bits(t);
        for (int64_t c = 0; c < chunks; ++c) {
            const uint8_t* cb = unit + header_bytes(t) + c * chunk_bytes(t) + 4 * rr;
            uint8_t* u = ru.u + 32 * c;
            if (bits == 8) {
                for (int k = 0; k < 8; ++k) std::memcpy(u + 4 * k, cb + 64 * k, 4);
                continue;
            }
            for (int p = 0; p < 4; ++p) {
                for (int i = 0; i < 4; ++i) {
                    const int v = cb[64 * p + i];
                    int lo = v & 0x0F, hi = v >> 4;
                    if (bits == 5) {
                        lo |= ((cb[256 + i] >> p) & 1) << 4;
                        hi |= ((cb[256 + i] >> (4 + p)) & 1) << 4;
                    } else if (bits == 6) {
                        lo |= ((cb[256 + i] >> (2 * p)) & 3) << 4;
                        hi |= ((cb[320 + i] >> (2 * p)) & 3) << 4;
                    }
                    u[4 * p + i] = static_cast<uint8_t>(lo);
                    u[16 + 4 * p + i] = static_cast<uint8_t>(hi);
                }
            }
        }
        join(t, ru, dst + b * bb);
    }
}

void q6_k_codes(const uint8_t* x, int j, uint8_t* out) {
    const int h = j / 4, k = j % 4;
    const uint8_t* ql = x + 64 * h + 32 * (k % 2);
    const uint8_t* qh = x + 128 + 32 * h;
    for (int l = 0; l < 32; ++l) {
        const int lo = (ql[l] >> (k < 2 ? 0 : 4)) & 0x0F;
        const int hi = (qh[l] >> (2 * k)) & 3;
        out[l] = static_cast<uint8_t>(lo | (hi << 4));
    }
}

}  // namespace zs::core
