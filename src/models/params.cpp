#include "models/params.h"

#include <algorithm>
#include <random>

#include "base/error.h"

namespace zs::models {

void ParamLayout::add_group(std::string name) {
    groups_.push_back(GroupInfo{std::move(name), 0, {}});
}

ParamId ParamLayout::add(int group, std::string name, const Shape& shape, Init init, float init_std,
                         bool weight_decay) {
    ZS_ASSERT(group >= 0 && group < n_groups(), "group {} not declared", group);
    ZS_ASSERT(by_name_.count(name) == 0, "parameter {} declared twice", name);
    GroupInfo& g = groups_[static_cast<size_t>(group)];
    ParamInfo p;
    p.name = std::move(name);
    p.shape = shape;
    p.group = group;
    p.offset = (g.numel + kAlign - 1) / kAlign * kAlign;
    p.init = init;
    p.init_std = init_std;
    p.weight_decay = weight_decay;
    g.numel = p.offset + p.numel();
    auto id = static_cast<ParamId>(params_.size());
    g.params.push_back(id);
    by_name_.emplace(p.name, id);
    params_.push_back(std::move(p));
    return id;
}

ParamId ParamLayout::id(const std::string& name) const {
    auto it = by_name_.find(name);
    ZS_CHECK(it != by_name_.end(), "model has no parameter '{}'", name);
    return it->second;
}

int64_t ParamLayout::total_numel() const {
    int64_t n = 0;
    for (const ParamInfo& p : params_) n += p.numel();
    return n;
}

void ParamBinding::reset(const ParamLayout& layout) {
    layout_ = &layout;
    w_.assign(layout.params().size(), Tensor());
    g_.assign(layout.params().size(), Tensor());
    q_.assign(layout.params().size(), core::QTensor());
}

void ParamBinding::bind_group(int group, const Tensor& weights, const Tensor& grads) {
    const GroupInfo& gi = layout_->group(group);
    for (ParamId id : gi.params) {
        const ParamInfo& p = layout_->param(id);
        auto& w = w_[static_cast<size_t>(id)];
        auto& g = g_[static_cast<size_t>(id)];
        w = weights.defined()
                ? weights.as_strided(p.shape, core::contiguous_strides(p.shape), p.offset)
                : Tensor();
        g = grads.defined() ? grads.as_strided(p.shape, core::contiguous_strides(p.shape), p.offset)
                            : Tensor();
    }
}

DenseParams::DenseParams(const ParamLayout& layout, DType dtype, bool with_grads,
                         core::Device device)
    : layout_(layout) {
    for (const GroupInfo& g : layout.groups()) {
        Tensor w = Tensor::empty({g.numel}, dtype, device, core::MemCategory::params);
        w.zero();  // alignment gaps stay zero (checksums and exports are deterministic)
        w_.push_back(w);
        g_.push_back(with_grads
                         ? Tensor::zeros({g.numel}, DType::f32, device, core::MemCategory::grads)
                         : Tensor());
    }
}

DenseParams::DenseParams(const ParamLayout& layout, DType dtype,
                         std::vector<core::QTensor> quantized,
                         const std::vector<ParamId>& dense_too, core::Device device)
    : layout_(layout), q_(std::move(quantized)) {
    const auto n = layout.params().size();
    ZS_ASSERT(q_.empty() || q_.size() == n, "{} quantized slots for {} parameters", q_.size(), n);
    q_.resize(n);
    for (core::QTensor& q : q_) {
        if (q.defined()) q = q.to(device);
    }
    own_.resize(n);
    std::vector<bool> dense(n, true);
    for (size_t i = 0; i < n; ++i) dense[i] = !q_[i].defined();
    for (ParamId id : dense_too) dense[static_cast<size_t>(id)] = true;
    for (int g = 0; g < layout.n_groups(); ++g) {
        const GroupInfo& gi = layout.group(g);
        const bool mixed = std::any_of(gi.params.begin(), gi.params.end(),
                                       [&](ParamId id) { return !dense[static_cast<size_t>(id)]; });
        g_.emplace_back();
        if (!mixed) {
            w_.push_back(Tensor::zeros({gi.numel}, dtype, device, core::MemCategory::params));
            continue;
        }
        w_.emplace_back();
        for (ParamId id : gi.params) {
            if (dense[static_cast<size_t>(id)]) {
                own_[static_cast<size_t>(id)] =
                    Tensor::zeros(layout.param(id).shape, dtype, device, core::MemCategory::params);
            }
        }
    }
}

void DenseParams::bind(ParamBinding& binding) const {
    for (int g = 0; g < layout_.n_groups(); ++g) {
        if (w_[static_cast<size_t>(g)].defined() || own_.empty()) {
            binding.bind_group(g, w_[static_cast<size_t>(g)], g_[static_cast<size_t>(g)]);
        } else {
            for (ParamId id : layout_.group(g).params) {
                binding.bind_param(id, own_[static_cast<size_t>(id)]);
            }
        }
    }
    for (size_t i = 0; i < layout_.params().size(); ++i) {
        binding.bind_quantized(static_cast<ParamId>(i), quantized(static_cast<ParamId>(i)));
    }
}

Tensor DenseParams::weight(ParamId id) const {
    const ParamInfo& p = layout_.param(id);
    const Tensor& flat = w_[static_cast<size_t>(p.group)];
    if (!flat.defined()) return own_.empty() ? Tensor() : own_[static_cast<size_t>(id)];
    return flat.as_strided(p.shape, core::contiguous_strides(p.shape), p.offset);
}

bool DenseParams::has_weight(ParamId id) const {
    return w_[static_cast<size_t>(layout_.param(id).group)].defined() ||
           (!own_.empty() && own_[static_cast<size_t>(id)].defined());
}

const core::QTensor& DenseParams::quantized(ParamId id) const {
    static const core::QTensor kNone;
    return q_.empty() ? kNone : q_[static_cast<size_t>(id)];
}

Tensor DenseParams::grad(ParamId id) const {
    const ParamInfo& p = layout_.param(id);
    const Tensor& g = g_[static_cast<size_t>(p.group)];
    ZS_ASSERT(g.defined(), "gradients were not allocated");
    return g.as_strided(p.shape, core::contiguous_strides(p.shape), p.offset);
}

void DenseParams::zero_grads() const {
    for (const Tensor& g : g_) {
        if (g.defined()) g.zero();
    }
}

void init_param_values(const ParamInfo& p, ParamId id, uint64_t seed, float* out) {
    const int64_t n = p.numel();
    switch (p.init) {
        case Init::normal: {
            std::mt19937_64 gen(seed ^ (0x9e3779b97f4a7c15ull * static_cast<uint64_t>(id + 1)));
            std::normal_distribution<float> nd(0.0f, p.init_std);
            for (int64_t j = 0; j < n; ++j) out[j] = nd(gen);
            return;
        }
        case Init::zeros:
            std::fill(out, out + n, 0.0f);
            return;
        case Init::ones:
            std::fill(out, out + n, 1.0f);
            return;
    }
}

void DenseParams::init(uint64_t seed) const {
    for (size_t i = 0; i < layout_.params().size(); ++i) {
        const ParamInfo& p = layout_.params()[i];
        if (!has_weight(static_cast<ParamId>(i))) continue;  // quantized only
        Tensor f =
            Tensor::empty(p.shape, DType::f32, core::Device::cpu(), core::MemCategory::buffers);
        init_param_values(p, static_cast<ParamId>(i), seed, f.data<float>());
        weight(static_cast<ParamId>(i)).copy_from(f);
    }
}

}  // namespace zs::models
