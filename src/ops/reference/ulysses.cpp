// Naive Ulysses layouts (ops/ulysses.h), index by index, for the op tests.
#include "base/error.h"
#include "ops/reference/reference.h"

namespace zs::ops::reference {

using core::Shape;

namespace {

// Flat indices in row-major 4- and 5-dimensional shapes.
int64_t at4(const Shape& s, int64_t a, int64_t b, int64_t c, int64_t d) {
    return ((a * s[1] + b) * s[2] + c) * s[3] + d;
}
int64_t at5(const Shape& s, int64_t a, int64_t b, int64_t c, int64_t d, int64_t e) {
    return (((a * s[1] + b) * s[2] + c) * s[3] + d) * s[4] + e;
}

}  // namespace

DTensor ulysses_pack_heads(const DTensor& x, int64_t P, int64_t repeat) {
    const int64_t B = x.shape[0], Tl = x.shape[1], H = x.shape[2], HS = x.shape[3];
    ZS_ASSERT((H * repeat) % P == 0, "{} heads x {} over {} ranks", H, repeat, P);
    const int64_t Hl = H * repeat / P;
    DTensor out(Shape{P, B, Tl, Hl, HS});
    for (int64_t j = 0; j < P; ++j)
        for (int64_t b = 0; b < B; ++b)
            for (int64_t t = 0; t < Tl; ++t)
                for (int64_t e = 0; e < Hl; ++e)
                    for (int64_t c = 0; c < HS; ++c)
                        out[at5(out.shape, j, b, t, e, c)] =
                            x[at4(x.shape, b, t, (j * Hl + e) / repeat, c)];
    return out;
}

DTensor ulysses_unpack_heads(const DTensor& chunks, int64_t H, int64_t repeat) {
    const int64_t P = chunks.shape[0], B = chunks.shape[1], Tl = chunks.shape[2];
    const int64_t Hl = chunks.shape[3], HS = chunks.shape[4];
    ZS_ASSERT(Hl * P == H * repeat, "{} chunk heads x {} ranks != {} heads x {}", Hl, P, H, repeat);
    DTensor x(Shape{B, Tl, H, HS});
    for (int64_t j = 0; j < P; ++j)
        for (int64_t b = 0; b < B; ++b)
            for (int64_t t = 0; t < Tl; ++t)
                for (int64_t e = 0; e < Hl; ++e)
                    for (int64_t c = 0; c < HS; ++c)
                        x[at4(x.shape, b, t, (j * Hl + e) / repeat, c)] +=
                            chunks[at5(chunks.shape, j, b, t, e, c)];
    return x;
}

DTensor ulysses_pack_seq(const DTensor& full, int64_t P) {
    const int64_t B = full.shape[0], T = full.shape[1], Hc = full.shape[2], HS = full.shape[3];
    ZS_ASSERT(T % P == 0, "{} tokens over {} ranks", T, P);
    const int64_t Tl = T / P;
    DTensor out(Shape{P, B, Tl, Hc, HS});
    for (int64_t s = 0; s < P; ++s)
        for (int64_t b = 0; b < B; ++b)
            for (int64_t t = 0; t < Tl; ++t)
                for (int64_t h = 0; h < Hc; ++h)
                    for (int64_t c = 0; c < HS; ++c)
                        out[at5(out.shape, s, b, t, h, c)] =
                            full[at4(full.shape, b, s * Tl + t, h, c)];
    return out;
}

DTensor ulysses_unpack_seq(const DTensor& chunks) {
    const int64_t P = chunks.shape[0], B = chunks.shape[1], Tl = chunks.shape[2];
    const int64_t Hc = chunks.shape[3], HS = chunks.shape[4];
    DTensor full(Shape{B, P * Tl, Hc, HS});
    for (int64_t s = 0; s < P; ++s)
        for (int64_t b = 0; b < B; ++b)
            for (int64_t t = 0; t < Tl; ++t)
                for (int64_t h = 0; h < Hc; ++h)
                    for (int64_t c = 0; c < HS; ++c)
                        full[at4(full.shape, b, s * Tl + t, h, c)] =
                            chunks[at5(chunks.shape, s, b, t, h, c)];
    return full;
}

}  // namespace zs::ops::reference
