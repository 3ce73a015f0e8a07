#include "models/weights.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string_view>

#include <fmt/format.h>

#include "base/error.h"
#include "core/quant_pack.h"
#include "models/transformer.h"

namespace zs::models {

std::vector<HfPart> hf_parts(const ModelConfig& cfg, const std::string& name) {
    switch (cfg.arch) {
        case Arch::gpt2:
            return gpt2_hf_parts(cfg, name);
        case Arch::llama:
        case Arch::qwen2:
        case Arch::mixtral:
            return llama_hf_parts(cfg, name);
    }
    return {};
}

namespace {

Shape part_shape(const ParamInfo& p, const HfPart& part) {
    Shape s = p.shape;
    if (part.row_end >= 0) s[0] = part.row_end - part.row_begin;
    if (part.transpose) {
        ZS_ASSERT(s.ndim() == 2);
        std::swap(s[0], s[1]);
    }
    return s;
}

Tensor part_view(const Tensor& w, const HfPart& part) {
    Tensor v = part.row_end >= 0 ? w.slice(0, part.row_begin, part.row_end) : w;
    return part.transpose ? v.transpose(0, 1) : v;
}

// HF tensor `part` of parameter p from src, its presence, shape and dtype checked.
Tensor checked_part(const ModelConfig& cfg, const ParamInfo& p, const HfPart& part,
                    const WeightSource& src) {
    ZS_CHECK_T(IoError, src.has(part.hf_name), "{}: missing tensor '{}' (needed for {})",
               src.describe(), part.hf_name, p.name);
    Tensor t = src.get(part.hf_name);
    Shape want = part_shape(p, part);
    ZS_CHECK_T(IoError, t.shape() == want,
               "{}: tensor '{}' has shape {}; the config ({} layers, hidden {}) expects {}",
               src.describe(), part.hf_name, t.shape().str(), cfg.n_layers, cfg.hidden_size,
               want.str());
    ZS_CHECK_T(IoError, core::is_floating(t.dtype()),
               "{}: tensor '{}' has dtype {}; expected a float type", src.describe(), part.hf_name,
               to_string(t.dtype()));
    return t;
}

void fill_param(const ModelConfig& cfg, const ParamInfo& p, const Tensor& w,
                const WeightSource& src, std::set<std::string>* used) {
    for (const HfPart& part : hf_parts(cfg, p.name)) {
        part_view(w, part).copy_from(checked_part(cfg, p, part, src));
        if (used) used->insert(part.hf_name);
    }
}

}  // namespace

std::vector<std::string> load_hf_weights(const Transformer& model, const DenseParams& params,
                                         const WeightSource& src) {
    const ModelConfig& cfg = model.config();
    std::set<std::string> used;
    const auto& infos = model.layout().params();
    if (model.tp_size() > 1) {
        // Tensor parallelism: each rank copies only its rows or columns of each HF tensor (from a
        // mapped safetensors file only the pages holding them are read; nothing is materialised
        // whole).
        const Transformer whole(cfg, RunConfig{});
        for (size_t i = 0; i < infos.size(); ++i) {
            const auto id = static_cast<ParamId>(i);
            // By name: under ep as well, this rank's layout holds only its experts.
            const ParamInfo& wp = whole.layout().param(whole.layout().id(infos[i].name));
            const Tensor& w = params.weight(id);
            const Transformer::TpSelection sel = model.tp_selection(id);
            if (sel.dim < 0) {
                fill_param(cfg, wp, w, src, &used);
                continue;
            }
            for (const HfPart& part : hf_parts(cfg, wp.name)) {
                const Tensor t = checked_part(cfg, wp, part, src);
                const Tensor v = part.transpose ? t.transpose(0, 1) : t;  // whole-parameter rows
                const int64_t pb = part.row_end >= 0 ? part.row_begin : 0;
                const int64_t pe = part.row_end >= 0 ? part.row_end : wp.shape[0];
                int64_t at = 0;
                for (const auto& [b, e] : sel.ranges) {
                    if (sel.dim == 0) {
                        const int64_t lo = std::max(b, pb), hi = std::min(e, pe);
                        if (lo < hi) {
                            w.slice(0, at + lo - b, at + hi - b)
                                .copy_from(v.slice(0, lo - pb, hi - pb));
                        }
                    } else {
                        w.slice(0, pb, pe).slice(1, at, at + e - b).copy_from(v.slice(1, b, e));
                    }
                    at += e - b;
                }
                used.insert(part.hf_name);
            }
        }
    } else {
        for (size_t i = 0; i < infos.size(); ++i) {
            const ParamInfo& p = infos[i];
            if (!params.has_weight(static_cast<ParamId>(i))) {  // quantized only
                for (const HfPart& part : hf_parts(cfg, p.name)) used.insert(part.hf_name);
                continue;
            }
            fill_param(cfg, p, params.weight(static_cast<ParamId>(i)), src, &used);
        }
    }
    std::vector<std::string> unused;
    for (const std::string& n : src.names()) {
        if (!used.count(n)) unused.push_back(n);
    }
    return unused;
}

std::vector<core::QTensor> load_quantized_weights(const Transformer& model,
                                                  const WeightSource& src) {
    const ModelConfig& cfg = model.config();
    const auto& infos = model.layout().params();
    std::vector<core::QTensor> out(infos.size());
    if (model.tp_size() > 1) return out;
    auto is_linear = [&](ParamId id) {
        const std::string& n = infos[static_cast<size_t>(id)].name;
        auto ends = [&](const char* suffix) { return n.ends_with(suffix); };
        return id == model.lm_head_param() ||
               (n.starts_with("blocks.") && n.find(".moe.") == std::string::npos &&
                (ends(".attn.qkv.weight") || ends(".attn.out.weight") || ends(".mlp.up.weight") ||
                 ends(".mlp.down.weight")));
    };
    for (size_t i = 0; i < infos.size(); ++i) {
        const auto id = static_cast<ParamId>(i);
        const ParamInfo& p = infos[i];
        if (!is_linear(id) || p.shape.ndim() != 2) continue;
        std::vector<core::QTensor> parts;
        bool ok = true;
        for (const HfPart& part : hf_parts(cfg, p.name)) {
            std::optional<core::QTensor> q = src.has(part.hf_name) && !part.transpose
                                                 ? src.get_quantized(part.hf_name)
                                                 : std::nullopt;
            const int64_t rows = part.row_end >= 0 ? part.row_end - part.row_begin : p.shape[0];
            ok = ok && q && q->cols() == p.shape[1] && q->rows() == rows;
            if (!ok) break;
            parts.push_back(*q);
        }
        if (!ok || parts.empty()) continue;
        // Parts of different types: one q8_0 matrix when each widens exactly, else dense.
        const bool mixed = std::any_of(parts.begin(), parts.end(),
                                       [&](const auto& q) { return q.type() != parts[0].type(); });
        if (mixed) {
            if (!std::all_of(parts.begin(), parts.end(),
                             [](const auto& q) { return core::widens_to_q8_0(q.type()); })) {
                continue;
            }
            for (core::QTensor& q : parts) q = core::widen_to_q8_0(q);
        }
        if (parts.size() == 1) {
            out[i] = parts[0];
            continue;
        }
        core::QTensor w = core::QTensor::empty(parts[0].type(), p.shape[0], p.shape[1]);
        size_t at = 0;
        for (const core::QTensor& q : parts) {
            std::memcpy(w.mutable_data() + at, q.data(), q.nbytes());
            at += q.nbytes();
        }
        out[i] = w;
    }
    // Repacked once for the decode kernels (core/quant.h, interleaved16), into one buffer on
    // transparent huge pages (core/quant_pack.h); ZS_QUANT_REPACK=0 keeps the file layout and
    // ZS_QUANT_HUGE_PAGES=0 4 KiB pages (to measure the differences).
    const char* e = std::getenv("ZS_QUANT_REPACK");
    if (e == nullptr || std::string_view(e) != "0") {
        const char* h = std::getenv("ZS_QUANT_HUGE_PAGES");
        core::interleave16_all(out, h == nullptr || std::string_view(h) != "0");
    }
    return out;
}

Tensor load_hf_group(const Transformer& model, int g, const WeightSource& src) {
    Tensor full = Tensor::zeros({model.layout().group(g).numel}, DType::f32, core::Device::cpu(),
                                core::MemCategory::buffers);
    fill_hf_group(model, g, src, full);
    return full;
}

void fill_hf_group(const Transformer& model, int g, const WeightSource& src, const Tensor& dst) {
    const GroupInfo& gi = model.layout().group(g);
    ZS_CHECK(dst.numel() == gi.numel && dst.is_contiguous(),
             "fill_hf_group: group {} holds {} elements, the destination is {}", g, gi.numel,
             dst.str());
    for (ParamId id : gi.params) {
        const ParamInfo& p = model.layout().param(id);
        fill_param(model.config(), p,
                   dst.as_strided(p.shape, core::contiguous_strides(p.shape), p.offset), src,
                   nullptr);
    }
}

std::vector<std::pair<std::string, Tensor>> export_hf_group(const Transformer& model, int g,
                                                            const Tensor& full) {
    std::vector<std::pair<std::string, Tensor>> out;
    for (ParamId id : model.layout().group(g).params) {
        const ParamInfo& p = model.layout().param(id);
        Tensor w = full.as_strided(p.shape, core::contiguous_strides(p.shape), p.offset);
        for (const HfPart& part : hf_parts(model.config(), p.name)) {
            out.emplace_back(part.hf_name, part_view(w, part).contiguous());
        }
    }
    return out;
}

std::vector<std::pair<std::string, Tensor>> export_hf_weights(const Transformer& model,
                                                              const DenseParams& params) {
    std::vector<std::pair<std::string, Tensor>> out;
    const auto& infos = model.layout().params();
    for (size_t i = 0; i < infos.size(); ++i) {
        Tensor w = params.weight(static_cast<ParamId>(i));
        for (const HfPart& part : hf_parts(model.config(), infos[i].name)) {
            out.emplace_back(part.hf_name, part_view(w, part).contiguous());
        }
    }
    return out;
}

}  // namespace zs::models
