// <immintrin.h> without GCC 12's false -W(maybe-)uninitialized on _mm512_undefined_* (GCC bug
// 105593): the diagnostics are location-based, so silencing them around the include silences
// only the intrinsic headers' own code.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#else
#include <immintrin.h>
#endif
