// `convert --quantize` schemes: which block type each tensor of a GGUF model is written in.
//
// The simple types (q8_0, q4_0, q4_1, q5_0, q5_1) put every matrix in that type. The k-quant
// types follow llama-quantize's rules for the same name, so the files compare tensor for tensor:
//   q4_k, q5_k, q6_k   every matrix in the type, except the output head (or, where the model ties
//                      it, the token embedding) in q6_k;
//   q4_k_m, q5_k_m     that, plus attn_v and ffn_down in q6_k in the layers llama.cpp's
//                      use_more_bits picks (the first and last eighth, and every third between);
// and a matrix whose rows are not a multiple of 256 elements takes llama.cpp's fallback:
// q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0 (the head or tied embedding: q8_0). llama-quantize's
// "Q4_K" is its Q4_K_M (q4_k_m here); its Q6_K is q6_k here, tensor for tensor. q4_k and q5_k
// are pure, not llama.cpp's _S mixes (which raise a few early layers), though general.file_type
// says _S (the closest name it has).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "core/quant.h"

namespace zs::io {

struct QuantScheme {
    core::QType base;
    bool mix_m = false;      // the _M mix
    uint32_t file_type = 0;  // llama.cpp's general.file_type (LLAMA_FTYPE_MOSTLY_*)
};

// "q4_k_m", "Q4_K_M", "q8_0", ...; nullopt for an unknown name.
std::optional<QuantScheme> parse_quant_scheme(std::string_view name);

// The type of matrix `name` (GGUF tensor name, rows of `ne0` elements, ne0 a multiple of 32) in
// a model of `n_layers` blocks; `has_output`: the file has its own output.weight.
core::QType quant_type_for(const QuantScheme& s, std::string_view name, int64_t ne0, int n_layers,
                           bool has_output);

}  // namespace zs::io
