// Parameters: the layout a model declares, and the binding through which layers read them.
//
// A model declares its parameters once (name, shape, init) in groups: group 0 is the embedding,
// groups 1..L the transformer blocks, group L+1 the head (final norm, untied output matrix). A
// group is the unit ZeRO-3 gathers and releases (DESIGN decision 3), so inside a group parameters
// sit at fixed element offsets of one flat buffer; a ZeRO shard is an (offset, size) of it.
//
// Layers never own weights: they read `binding.w(id)` / `binding.g(id)`, views that whoever owns
// the storage (a dense store for inference and stages 0-2, the ZeRO-3 coordinator per group)
// binds before the group runs.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/quant.h"
#include "core/tensor.h"

namespace zs::models {

using core::DType;
using core::Shape;
using core::Tensor;

using ParamId = int;
inline constexpr ParamId kNoParam = -1;

enum class Init { normal, zeros, ones };

struct ParamInfo {
    std::string name;  // internal name, e.g. "blocks.3.attn.qkv.weight"
    Shape shape;
    int group = 0;
    int64_t offset = 0;  // elements from the start of the group's flat buffer
    Init init = Init::normal;
    float init_std = 0.02f;
    bool weight_decay = true;  // false for biases and norm weights

    int64_t numel() const { return shape.numel(); }
};

struct GroupInfo {
    std::string name;  // "embed", "blocks.3", "head"
    int64_t numel = 0;
    std::vector<ParamId> params;
};

class ParamLayout {
public:
    // Append a parameter to group `group` (groups are created in order).
    ParamId add(int group, std::string name, const Shape& shape, Init init, float init_std = 0.02f,
                bool weight_decay = true);
    void add_group(std::string name);

    const std::vector<ParamInfo>& params() const { return params_; }
    const std::vector<GroupInfo>& groups() const { return groups_; }
    const ParamInfo& param(ParamId id) const { return params_[static_cast<size_t>(id)]; }
    const GroupInfo& group(int g) const { return groups_[static_cast<size_t>(g)]; }
    int n_groups() const { return static_cast<int>(groups_.size()); }
    // Throws zs::Error naming the parameter when absent.
    ParamId id(const std::string& name) const;
    bool contains(const std::string& name) const { return by_name_.count(name) != 0; }
    int64_t total_numel() const;

    // Parameters start at multiples of this many elements inside their group (64-byte aligned
    // for every dtype up to f32... and cache-line friendly for bf16).
    static constexpr int64_t kAlign = 32;

private:
    std::vector<ParamInfo> params_;
    std::vector<GroupInfo> groups_;
    std::unordered_map<std::string, ParamId> by_name_;
};

class WeightGradQueue;

// Views of every parameter's current weight and gradient. Rebound per group by their owner.
class ParamBinding {
public:
    ParamBinding() = default;
    explicit ParamBinding(const ParamLayout& layout) { reset(layout); }
    // Size the views for `layout` (all unbound).
    void reset(const ParamLayout& layout);
    const Tensor& w(ParamId id) const { return w_[static_cast<size_t>(id)]; }
    const Tensor& g(ParamId id) const { return g_[static_cast<size_t>(id)]; }
    // Point every parameter of `group` into `weights` (and `grads`, if defined): flat [numel]
    // buffers laid out as the group declares. Either may be undefined to unbind.
    void bind_group(int group, const Tensor& weights, const Tensor& grads);
    // Inference with block-quantized matrices: one parameter's dense view on its own, and its
    // quantized matrix. A linear layer reads qw(id) when it is defined (ops::quant_linear_forward)
    // and w(id) otherwise; the tied embedding has both (rows read from w, logits from qw).
    void bind_param(ParamId id, const Tensor& weight) { w_[static_cast<size_t>(id)] = weight; }
    void bind_quantized(ParamId id, const core::QTensor& w) { q_[static_cast<size_t>(id)] = w; }
    const core::QTensor& qw(ParamId id) const { return q_[static_cast<size_t>(id)]; }
    const ParamLayout& layout() const { return *layout_; }
    // The backward split (Zero Bubble's B and W): while a queue is set, the linear layers'
    // backwards compute only their input gradients and leave their weight-gradient GEMMs in it
    // (models/layers/layers.h); nullptr (the default) computes both at once.
    void defer_weight_grads(WeightGradQueue* q) { deferred_ = q; }
    WeightGradQueue* deferred_weight_grads() const { return deferred_; }

private:
    const ParamLayout* layout_ = nullptr;
    WeightGradQueue* deferred_ = nullptr;
    std::vector<Tensor> w_, g_;
    std::vector<core::QTensor> q_;
};

// Callbacks around each group's use, in execution order. ZeRO-3 gathers in before_*, releases
// in after_*, and launches the group's gradient reduce-scatter in after_backward. The default
// does nothing (weights resident).
class GroupHooks {
public:
    virtual ~GroupHooks() = default;
    virtual void before_forward(int group) { (void)group; }
    virtual void after_forward(int group) { (void)group; }
    virtual void before_backward(int group) { (void)group; }
    virtual void after_backward(int group) { (void)group; }
};

// The initial values of one parameter, f32 [numel], from its Init and a generator seeded by
// (seed, id): a parameter's values do not depend on which rank or in which order it is built.
void init_param_values(const ParamInfo& p, ParamId id, uint64_t seed, float* out);

// Dense storage for every group: one flat weight buffer (and optionally one flat f32 gradient
// buffer) per group, bound once. Inference and ZeRO stages 0-2 use this.
class DenseParams {
public:
    DenseParams(const ParamLayout& layout, DType dtype, bool with_grads,
                core::Device device = core::Device::cpu());
    // Inference with block-quantized matrices: quantized[id] (one per parameter, or empty), when
    // defined, is bound as that parameter's quantized weight and the parameter gets no dense
    // storage, unless `dense_too` lists it (the tied embedding: a table read by rows). A group
    // holding a quantized-only parameter keeps its dense parameters in separate tensors. On a
    // device other than the CPU the quantized matrices are copied there in their file layout
    // (core::QTensor::to) and the dense storage is allocated there.
    DenseParams(const ParamLayout& layout, DType dtype, std::vector<core::QTensor> quantized,
                const std::vector<ParamId>& dense_too, core::Device device = core::Device::cpu());
    void bind(ParamBinding& binding) const;
    const Tensor& group_weights(int g) const { return w_[static_cast<size_t>(g)]; }
    const Tensor& group_grads(int g) const { return g_[static_cast<size_t>(g)]; }
    // View of one parameter (undefined for a quantized-only one: has_weight() says).
    Tensor weight(ParamId id) const;
    bool has_weight(ParamId id) const;
    // The quantized matrix of a parameter (undefined when it is dense).
    const core::QTensor& quantized(ParamId id) const;
    Tensor grad(ParamId id) const;
    void zero_grads() const;
    // Fill every parameter from its Init with a seeded generator (same seed → same weights);
    // quantized-only parameters keep their blocks.
    void init(uint64_t seed) const;
    const ParamLayout& layout() const { return layout_; }

private:
    const ParamLayout& layout_;
    std::vector<Tensor> w_, g_;
    std::vector<Tensor> own_;       // [n_params]: per-parameter storage (mixed groups)
    std::vector<core::QTensor> q_;  // [n_params] or empty
};

}  // namespace zs::models
