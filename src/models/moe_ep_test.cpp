// models::Moe under expert parallelism against the same layer without it: two thread-ranks each
// route their own tokens; at ep 1 each runs all E experts, at ep 2 each holds E/2 and the rows
// travel with all_to_all_v. With a capacity factor that drops, the kept assignments on each rank
// are those of ep 1 and those DeepSpeed's top2gating keeps (replayed here from the recorded
// routing: cumsum locations, second choices after every first choice, capacity
// ceil(k N / E x capacity_factor) at least min_capacity); the outputs, dx and the router's
// gradient are ep 1's, and each expert's gradient is the sum of both ranks' ep-1 gradients.
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "comm/communicator.h"
#include "models/layers/layers.h"

namespace zs::models {
namespace {

constexpr int64_t kE = 4, kC = 16, kFF = 12, kN = 24;

// Deterministic values from a parameter's global name, so ep 1 and ep 2 hold the same experts.
float value(const std::string& name, int64_t i) {
    uint64_t h = 1469598103934665603ull;
    for (char ch : name) h = (h ^ static_cast<uint8_t>(ch)) * 1099511628211ull;
    h ^= static_cast<uint64_t>(i) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return static_cast<float>(static_cast<double>(h % 20001) / 10000.0 - 1.0) * 0.3f;
}

struct Layer {
    ParamLayout layout;
    std::unique_ptr<DenseParams> params;
    ParamBinding binding;
    Moe moe;
    std::vector<std::string> names;  // per ParamId
};

// The layer at `rank` of `ep` expert-parallel ranks (ep 1: every expert).
std::unique_ptr<Layer> make_layer(const ModelConfig& cfg, comm::Communicator* ep) {
    auto l = std::make_unique<Layer>();
    l->layout.add_group("moe");
    MoeParams p;
    p.router = l->layout.add(0, "router", {kE, kC}, Init::zeros);
    const int64_t P = ep ? ep->size() : 1, El = kE / P, e0 = ep ? ep->rank() * El : 0;
    for (int64_t e = e0; e < e0 + El; ++e) {
        MlpParams m;
        m.up = l->layout.add(0, fmt::format("experts.{}.up", e), {2 * kFF, kC}, Init::zeros);
        m.down = l->layout.add(0, fmt::format("experts.{}.down", e), {kC, kFF}, Init::zeros);
        p.experts.push_back(m);
    }
    if (const int64_t sff = cfg.moe.shared_intermediate; sff > 0) {  // Qwen2-MoE
        p.shared.up = l->layout.add(0, "shared.up", {2 * sff, kC}, Init::zeros);
        p.shared.down = l->layout.add(0, "shared.down", {kC, sff}, Init::zeros);
        p.shared_gate = l->layout.add(0, "shared_gate", {1, kC}, Init::zeros);
    }
    l->params = std::make_unique<DenseParams>(l->layout, DType::f32, true);
    for (size_t id = 0; id < l->layout.params().size(); ++id) {
        const ParamInfo& info = l->layout.param(static_cast<ParamId>(id));
        Tensor w = l->params->weight(static_cast<ParamId>(id));
        for (int64_t i = 0; i < info.numel(); ++i) w.data<float>()[i] = value(info.name, i);
        l->names.push_back(info.name);
    }
    l->binding.reset(l->layout);
    l->params->bind(l->binding);
    l->moe = Moe(cfg, std::move(p), nullptr, ep);
    return l;
}

struct Result {
    std::vector<std::vector<int64_t>> rows;  // kept assignments per expert
    std::vector<int32_t> indices;            // [N, k]
    Tensor out, dx;
    std::map<std::string, Tensor> grads;
};

Result run(const ModelConfig& cfg, comm::Communicator* ep, int rank) {
    std::unique_ptr<Layer> l = make_layer(cfg, ep);
    Tensor x = Tensor::empty({kN, kC}, DType::f32), dres = Tensor::empty({kN, kC}, DType::f32);
    for (int64_t i = 0; i < kN * kC; ++i) {
        x.data<float>()[i] = value(fmt::format("x{}", rank), i) * 4;
        dres.data<float>()[i] = value(fmt::format("d{}", rank), i);
    }
    Result r;
    r.out = Tensor::zeros({kN, kC}, DType::f32);
    Moe::Saved s;
    l->moe.forward(l->binding, s, r.out, x, nullptr);
    r.rows = s.rows;
    r.indices.assign(s.indices.data<int32_t>(), s.indices.data<int32_t>() + kN * cfg.moe.top_k);
    l->params->zero_grads();
    r.dx = Tensor::empty({kN, kC}, DType::f32);
    l->moe.backward(l->binding, s, r.dx, dres, x, nullptr, 0.0);
    for (size_t id = 0; id < l->names.size(); ++id)
        r.grads[l->names[id]] = l->params->grad(static_cast<ParamId>(id)).clone();
    return r;
}

double max_diff(const Tensor& a, const Tensor& b) {
    double m = 0;
    for (int64_t i = 0; i < a.numel(); ++i)
        m = std::max(m, std::fabs(double(a.data<float>()[i]) - b.data<float>()[i]));
    return m;
}

// DeepSpeed's top2gating on a recorded routing [N, k]: locations1 = cumsum(mask1) - 1,
// locations2 = cumsum(mask2) - 1 + sum(mask1), kept where location < capacity.
std::vector<std::vector<int64_t>> deepspeed_kept(const std::vector<int32_t>& indices, int k,
                                                 int64_t cap, int64_t N = kN) {
    std::vector<std::vector<int64_t>> want(kE);
    std::vector<int64_t> first(kE, 0);
    for (int64_t n = 0; n < N; ++n) ++first[indices[static_cast<size_t>(n * k)]];
    for (int j = 0; j < k; ++j) {
        std::vector<int64_t> seen(kE, 0);
        for (int64_t n = 0; n < N; ++n) {
            const int32_t e = indices[static_cast<size_t>(n * k + j)];
            const int64_t loc = seen[e]++ + (j == 1 ? first[e] : 0);
            if (loc < cap) want[e].push_back(n * k + j);
        }
    }
    return want;
}

TEST(MoeExpertParallel, DropsOutputsAndGradientsEqualEpOne) {
    ModelConfig cfg;
    cfg.hidden_size = kC;
    cfg.intermediate = kFF;
    cfg.mlp = MlpKind::moe;
    cfg.moe.n_experts = kE;
    cfg.moe.top_k = 2;
    cfg.moe.capacity_factor = 0.75f;  // 9 of the 12 average assignments per expert
    cfg.moe.min_capacity = 2;
    Result one[2], two[2];
    comm::run_local(2, [&](int rank, comm::Communicator&) { one[rank] = run(cfg, nullptr, rank); });
    comm::run_local(2, [&](int rank, comm::Communicator& c) { two[rank] = run(cfg, &c, rank); });
    const int k = cfg.moe.top_k;
    const auto cap = static_cast<int64_t>(
        std::max<double>(std::ceil(static_cast<double>(k * kN) / kE * cfg.moe.capacity_factor),
                         static_cast<double>(cfg.moe.min_capacity)));
    int64_t dropped = 0;
    for (int r = 0; r < 2; ++r) {
        const std::string at = fmt::format("rank {}", r);
        EXPECT_EQ(one[r].indices, two[r].indices) << at;
        EXPECT_EQ(one[r].rows, two[r].rows) << at;
        const std::vector<std::vector<int64_t>> want = deepspeed_kept(one[r].indices, k, cap);
        EXPECT_EQ(one[r].rows, want) << at;
        for (const auto& v : want) dropped -= static_cast<int64_t>(v.size());
        dropped += kN * k;
        EXPECT_LT(max_diff(one[r].out, two[r].out), 1e-5) << at;
        EXPECT_LT(max_diff(one[r].dx, two[r].dx), 1e-5) << at;
        EXPECT_LT(max_diff(one[r].grads["router"], two[r].grads["router"]), 1e-5) << at;
        // This rank's experts at ep 2 saw both ranks' rows: their gradient is the ep-1 sum.
        for (const auto& [name, g] : two[r].grads) {
            if (name == "router") continue;
            Tensor sum = one[0].grads[name].clone();
            for (int64_t i = 0; i < sum.numel(); ++i)
                sum.data<float>()[i] += one[1].grads[name].data<float>()[i];
            EXPECT_LT(max_diff(g, sum), 1e-5) << at << " " << name;
        }
    }
    EXPECT_GT(dropped, 0);  // the capacity did drop assignments
}

ModelConfig gating_config() {
    ModelConfig cfg;
    cfg.hidden_size = kC;
    cfg.intermediate = kFF;
    cfg.mlp = MlpKind::moe;
    cfg.moe.n_experts = kE;
    cfg.moe.top_k = 2;
    cfg.moe.min_capacity = 2;
    return cfg;
}

Tensor test_input(const std::string& name, float scale) {
    Tensor t = Tensor::empty({kN, kC}, DType::f32);
    for (int64_t i = 0; i < kN * kC; ++i) t.data<float>()[i] = value(name, i) * scale;
    return t;
}

// Kept assignments per expert of one forward in training or evaluation mode.
std::vector<std::vector<int64_t>> kept_rows(const ModelConfig& cfg, bool training,
                                            std::vector<int32_t>* indices) {
    std::unique_ptr<Layer> l = make_layer(cfg, nullptr);
    Tensor out = Tensor::zeros({kN, kC}, DType::f32);
    Moe::Saved s;
    l->moe.forward(l->binding, s, out, test_input("x0", 4), nullptr, training);
    if (indices) {
        indices->assign(s.indices.data<int32_t>(), s.indices.data<int32_t>() + kN * cfg.moe.top_k);
    }
    return s.rows;
}

int64_t n_kept(const std::vector<std::vector<int64_t>>& rows) {
    int64_t n = 0;
    for (const auto& r : rows) n += static_cast<int64_t>(r.size());
    return n;
}

// eval_capacity_factor applies when the layer evaluates (forward's training false, as
// DeepSpeed's gate under model.eval()), capacity_factor when it trains; the assignments
// evaluation keeps are those DeepSpeed's rule keeps at the eval capacity.
TEST(MoeGating, EvalCapacityFactorDropsWhatDeepSpeedDrops) {
    ModelConfig cfg = gating_config();
    cfg.moe.capacity_factor = 2.0f;       // 24 per expert: nothing dropped in training
    cfg.moe.eval_capacity_factor = 0.5f;  // 6 of the 12 average assignments per expert
    const int k = cfg.moe.top_k;
    std::vector<int32_t> indices;
    const auto train_rows = kept_rows(cfg, true, &indices);
    EXPECT_EQ(n_kept(train_rows), kN * k);
    const auto eval_rows = kept_rows(cfg, false, nullptr);
    const int64_t cap = std::max<int64_t>(
        static_cast<int64_t>(std::ceil(static_cast<double>(k * kN) / kE * 0.5)), 2);
    EXPECT_EQ(cfg.moe.capacity(kN, false), cap);
    EXPECT_EQ(eval_rows, deepspeed_kept(indices, k, cap));
    EXPECT_LT(n_kept(eval_rows), kN * k);  // the eval capacity did drop
    // The other way round: the training factor drops, evaluation keeps everything.
    std::swap(cfg.moe.capacity_factor, cfg.moe.eval_capacity_factor);
    EXPECT_EQ(kept_rows(cfg, true, nullptr), deepspeed_kept(indices, k, cap));
    EXPECT_EQ(n_kept(kept_rows(cfg, false, nullptr)), kN * k);
}

// drop_tokens false: no capacity limit whatever the factors (DeepSpeed: capacity = the largest
// expert count).
TEST(MoeGating, DropTokensFalseKeepsEveryAssignment) {
    ModelConfig cfg = gating_config();
    cfg.moe.capacity_factor = 0.25f;
    cfg.moe.eval_capacity_factor = 0.25f;
    EXPECT_LT(n_kept(kept_rows(cfg, true, nullptr)), kN * cfg.moe.top_k);
    cfg.moe.drop_tokens = false;
    EXPECT_EQ(n_kept(kept_rows(cfg, true, nullptr)), kN * cfg.moe.top_k);
    EXPECT_EQ(n_kept(kept_rows(cfg, false, nullptr)), kN * cfg.moe.top_k);
}

// ST-MoE router z-loss: coef x mean over rows of logsumexp(x W_r^T)^2. The gradient backward
// adds (the difference of backward with and without z_scale) against central finite differences
// of coef x z_loss in the router weights and the input (z depends on the logits only, so a
// perturbation that flips a routing choice does not disturb it).
TEST(MoeGating, RouterZLossGradientMatchesFiniteDifferences) {
    const ModelConfig cfg = gating_config();
    const double coef = 0.3;
    std::unique_ptr<Layer> l = make_layer(cfg, nullptr);
    Tensor x = test_input("x0", 4), dres = test_input("d0", 1);
    auto z_of = [&](const Tensor& xin) {
        RouterStats st;
        st.reset(kE);
        Moe::Saved s;
        Tensor out = Tensor::zeros({kN, kC}, DType::f32);
        l->moe.forward(l->binding, s, out, xin, &st);
        EXPECT_EQ(st.n_rows, kN);
        return coef * st.z_loss();
    };
    // Analytic: backward with and without the z term, same dres.
    auto grads = [&](double z_scale, Tensor& dx) {
        RouterStats st;
        st.reset(kE);
        Moe::Saved s;
        Tensor out = Tensor::zeros({kN, kC}, DType::f32);
        l->moe.forward(l->binding, s, out, x, &st);
        l->params->zero_grads();
        dx = Tensor::empty({kN, kC}, DType::f32);
        l->moe.backward(l->binding, s, dx, dres, x, &st, 0.0, z_scale);
        return l->params->grad(ParamId{0}).clone();  // the router
    };
    Tensor dx0, dx1;
    const Tensor g0 = grads(0.0, dx0);
    const Tensor g1 = grads(coef / kN, dx1);
    ASSERT_EQ(l->names[0], "router");
    Tensor w = l->params->weight(ParamId{0});
    const double eps = 1e-2;
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < w.numel(); i += 3) {
        float& wi = w.data<float>()[i];
        const float keep = wi;
        wi = keep + static_cast<float>(eps);
        const double up = z_of(x);
        wi = keep - static_cast<float>(eps);
        const double down = z_of(x);
        wi = keep;
        const double fd = (up - down) / (2 * eps);
        const double an = double(g1.data<float>()[i]) - g0.data<float>()[i];
        worst = std::max(worst, std::fabs(fd - an));
        scale = std::max(scale, std::fabs(fd));
    }
    EXPECT_GT(scale, 1e-3);  // the z-loss has a gradient to check
    EXPECT_LT(worst, 2e-3 * scale + 1e-5) << "router weights, largest |fd| " << scale;
    worst = scale = 0;
    for (int64_t i = 0; i < x.numel(); i += 7) {
        Tensor xp = x.clone(), xm = x.clone();
        xp.data<float>()[i] += static_cast<float>(eps);
        xm.data<float>()[i] -= static_cast<float>(eps);
        const double fd = (z_of(xp) - z_of(xm)) / (2 * eps);
        const double an = double(dx1.data<float>()[i]) - dx0.data<float>()[i];
        worst = std::max(worst, std::fabs(fd - an));
        scale = std::max(scale, std::fabs(fd));
    }
    EXPECT_GT(scale, 1e-4);
    EXPECT_LT(worst, 2e-3 * scale + 1e-5) << "input, largest |fd| " << scale;
}

// Inference under ep (serve / generate --ep): every ep rank holds the same N rows, and with
// replicated_over_ep each runs its experts over the rows routed to them and the shared expert
// over its slice [N r / ep, N (r + 1) / ep) — ragged, empty for some ranks at N = 1 and 3 —
// then all-gathers the outputs. Every rank's output is the ep-1 layer's, and the rows each
// rank's experts ran are the assignments the ep-1 routing sends to them (counted from its top-k
// indices, kept per DeepSpeed's rule when the eval capacity drops): over the ranks, every routed
// row once. Without the flag (every rank dispatching the whole batch) each rank's experts run
// ep times as many.
void expect_replicated_rows_once(const ModelConfig& cfg, int P, int64_t N) {
    const int k = cfg.moe.top_k;
    const std::string at = fmt::format("ep {} N {} shared {} eval capacity {}", P, N,
                                       cfg.moe.shared_intermediate, cfg.moe.eval_capacity_factor);
    const Tensor x = test_input("x0", 4).slice(0, 0, N).clone();
    const Tensor res0 = test_input("r0", 1).slice(0, 0, N).clone();
    std::unique_ptr<Layer> one = make_layer(cfg, nullptr);
    Tensor want = res0.clone();
    Moe::Saved s1;
    one->moe.forward(one->binding, s1, want, x, nullptr, false);
    std::vector<int32_t> idx(s1.indices.data<int32_t>(), s1.indices.data<int32_t>() + N * k);
    const int64_t cap = cfg.moe.capacity(N, false);
    std::vector<int64_t> per_expert(kE, 0);
    if (cap < N * k) {
        const auto kept = deepspeed_kept(idx, k, cap, N);
        for (int64_t e = 0; e < kE; ++e) per_expert[e] = static_cast<int64_t>(kept[e].size());
    } else {
        for (int32_t e : idx) ++per_expert[e];
    }
    int64_t routed = 0;
    for (int64_t c : per_expert) routed += c;
    EXPECT_EQ(one->moe.expert_rows(), routed) << at;
    std::vector<int64_t> ran(static_cast<size_t>(P), 0);
    comm::run_local(P, [&](int rank, comm::Communicator& c) {
        std::unique_ptr<Layer> l = make_layer(cfg, &c);
        Tensor out = res0.clone();
        Moe::Saved s;
        l->moe.forward(l->binding, s, out, x, nullptr, false, true);
        const std::string here = fmt::format("{} rank {}", at, rank);
        EXPECT_LT(max_diff(out, want), 1e-5) << here;
        const int64_t El = kE / P;
        int64_t mine = 0;
        for (int64_t e = rank * El; e < (rank + 1) * El; ++e) mine += per_expert[e];
        ran[static_cast<size_t>(rank)] = l->moe.expert_rows();
        EXPECT_EQ(l->moe.expert_rows(), mine) << here;
        // The same batch dispatched whole by every rank: right outputs, ep times the rows.
        l->moe.reset_expert_rows();
        Tensor whole = res0.clone();
        l->moe.forward(l->binding, s, whole, x, nullptr, false, false);
        EXPECT_LT(max_diff(whole, want), 1e-5) << here;
        EXPECT_EQ(l->moe.expert_rows(), P * mine) << here;
    });
    int64_t sum = 0;
    for (int64_t r : ran) sum += r;
    EXPECT_EQ(sum, routed) << at;
}

TEST(MoeExpertParallel, ReplicatedInputsDispatchEachRoutedRowOnce) {
    ModelConfig cfg = gating_config();
    for (int P : {2, 4}) {
        for (int64_t N : {1, 3, 5, 7, 24}) expect_replicated_rows_once(cfg, P, N);
    }
}

TEST(MoeExpertParallel, ReplicatedInputsWithSharedExpertAndEvalDrops) {
    ModelConfig cfg = gating_config();
    cfg.moe.shared_intermediate = 8;  // Qwen2-MoE: the shared expert over each rank's slice
    for (int P : {2, 4}) {
        for (int64_t N : {1, 5, 24}) expect_replicated_rows_once(cfg, P, N);
    }
    cfg.moe.eval_capacity_factor = 0.5f;  // capacity over all 24 rows drops some
    ASSERT_LT(cfg.moe.capacity(kN, false), kN * cfg.moe.top_k / kE);
    for (int P : {2, 4}) expect_replicated_rows_once(cfg, P, kN);
}

}  // namespace
}  // namespace zs::models
