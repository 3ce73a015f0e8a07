// llama-quantize's per-tensor type rules for the schemes convert offers (quant_scheme.h).
#include "io/quant_scheme.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <string>

namespace zs::io {

using core::QType;

std::optional<QuantScheme> parse_quant_scheme(std::string_view name) {
    std::string l(name);
    std::transform(l.begin(), l.end(), l.begin(), [](unsigned char c) { return std::tolower(c); });
    // general.file_type values: llama.cpp's llama_ftype.
    if (l == "q4_0") return QuantScheme{QType::q4_0, false, 2};
    if (l == "q4_1") return QuantScheme{QType::q4_1, false, 3};
    if (l == "q8_0") return QuantScheme{QType::q8_0, false, 7};
    if (l == "q5_0") return QuantScheme{QType::q5_0, false, 8};
    if (l == "q5_1") return QuantScheme{QType::q5_1, false, 9};
    if (l == "q4_k") return QuantScheme{QType::q4_k, false, 14};  // MOSTLY_Q4_K_S
    if (l == "q4_k_m") return QuantScheme{QType::q4_k, true, 15};
    if (l == "q5_k") return QuantScheme{QType::q5_k, false, 16};  // MOSTLY_Q5_K_S
    if (l == "q5_k_m") return QuantScheme{QType::q5_k, true, 17};
    if (l == "q6_k") return QuantScheme{QType::q6_k, false, 18};
    return std::nullopt;
}

namespace {

bool is_k(QType t) { return t == QType::q4_k || t == QType::q5_k || t == QType::q6_k; }

// "blk.<i>." -> i; -1 for tensors outside the blocks.
int layer_of(std::string_view name) {
    if (!name.starts_with("blk.")) return -1;
    int i = -1;
    const char* p = name.data() + 4;
    const auto r = std::from_chars(p, name.data() + name.size(), i);
    return r.ec == std::errc() ? i : -1;
}

// llama.cpp's use_more_bits: the first and last eighth of the layers, and every third between.
bool more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

}  // namespace

QType quant_type_for(const QuantScheme& s, std::string_view name, int64_t ne0, int n_layers,
                     bool has_output) {
    if (!is_k(s.base)) return s.base;
    const bool head = name == "output.weight" || (!has_output && name == "token_embd.weight");
    QType t = s.base;
    if (head) {
        t = QType::q6_k;
    } else if (s.mix_m && (name.find("attn_v.weight") != std::string_view::npos ||
                           name.find("ffn_down") != std::string_view::npos)) {
        const int i = layer_of(name);
        if (i >= 0 && more_bits(i, n_layers)) t = QType::q6_k;
    }
    if (ne0 % 256 == 0) return t;
    if (head) return QType::q8_0;
    switch (t) {
        case QType::q4_k:
            return QType::q5_0;
        case QType::q5_k:
            return QType::q5_1;
        default:
            return QType::q8_0;
    }
}

}  // namespace zs::io
