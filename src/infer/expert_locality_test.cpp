// ExpertLocality against a hand-worked routing and against a naive recount (sets, every home
// rank enumerated) of random routings; the Transformer's routing observer sees forward_tokens'
// routing (one call per MoE layer, the rows of the batch).
#include "infer/expert_locality.h"

#include <algorithm>
#include <set>

#include <gtest/gtest.h>

#include "infer/engine_test_util.h"
#include "models/kv_cache.h"

namespace zs::infer {
namespace {

TEST(ExpertLocality, HandWorkedSteps) {
    // 1 layer, 4 experts over ep 2 (rank 0: experts 0, 1; rank 1: 2, 3), top-2, 10 bytes a row.
    ExpertLocality loc(1, 4, 2, 2, 10);
    const int32_t steps[4][2] = {{0, 1}, {1, 0}, {1, 2}, {3, 2}};
    for (const auto& s : steps) loc.observe(0, s);
    const auto& l = loc.layers()[0];
    EXPECT_EQ(l.steps, 3);
    EXPECT_EQ(l.same_set, 1);         // {0,1} then {0,1}
    EXPECT_EQ(l.overlap, 2 + 1 + 1);  // {0,1}, {1}, {2}
    // Home: 1 of 2 rows remote per step on average: 3 rows, 30 bytes.
    EXPECT_DOUBLE_EQ(loc.bytes_home(), 30.0);
    // Co-located: prev {0,1} -> rank 0: cur {0,1} 0 remote; prev {0,1} -> rank 0: cur {1,2}
    // 1 remote; prev {1,2} tie -> rank 0: cur {2,3} 2 remote. 3 rows, 30 bytes.
    EXPECT_DOUBLE_EQ(loc.bytes_colocated(), 30.0);
    EXPECT_NEAR(loc.same_set_rate(), 1.0 / 3, 1e-12);
}

TEST(ExpertLocality, RandomRoutingsAgainstANaiveRecount) {
    test::Rng rng(9);
    const int64_t L = 3, E = 8, ep = 4;
    const int k = 2;
    ExpertLocality loc(L, E, k, ep, 1);
    std::vector<std::vector<std::set<int>>> seen(L);
    for (int step = 0; step < 40; ++step) {
        for (int64_t l = 0; l < L; ++l) {
            std::set<int> s;
            // Sticky routing: keep the last set half of the time.
            if (!seen[l].empty() && rng.integer(0, 1) == 0) {
                s = seen[l].back();
            } else {
                while (static_cast<int>(s.size()) < k)
                    s.insert(static_cast<int>(rng.integer(0, E - 1)));
            }
            std::vector<int32_t> v(s.begin(), s.end());
            if (rng.integer(0, 1)) std::reverse(v.begin(), v.end());  // order must not matter
            loc.observe(l, v.data());
            seen[l].push_back(s);
        }
    }
    double same = 0, n = 0, home = 0, colo = 0;
    for (int64_t l = 0; l < L; ++l) {
        for (size_t i = 1; i < seen[l].size(); ++i) {
            const std::set<int>&a = seen[l][i - 1], &b = seen[l][i];
            n += 1;
            same += a == b;
            for (int h = 0; h < ep; ++h) {
                for (int e : b) home += (e / (E / ep) != h) / static_cast<double>(ep);
            }
            std::vector<int> cnt(ep, 0);
            for (int e : a) ++cnt[e / (E / ep)];
            const int r = static_cast<int>(std::max_element(cnt.begin(), cnt.end()) - cnt.begin());
            for (int e : b) colo += e / (E / ep) != r;
        }
    }
    EXPECT_EQ(loc.steps(), static_cast<int64_t>(n));
    EXPECT_NEAR(loc.same_set_rate(), same / n, 1e-12);
    EXPECT_NEAR(loc.bytes_home(), home, 1e-9);
    EXPECT_NEAR(loc.bytes_colocated(), colo, 1e-9);
    EXPECT_LT(loc.bytes_colocated(), loc.bytes_home());  // sticky routing pays
}

TEST(ExpertLocality, ObserverSeesTheForwardsRouting) {
    const models::ModelConfig cfg = models::parse_hf_config(
        R"({"model_type": "mixtral", "vocab_size": 67, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 24, "num_local_experts": 4, "num_experts_per_tok": 2,
        "max_position_embeddings": 64, "rms_norm_eps": 1e-6})",
        "test");
    models::Transformer m(cfg, models::RunConfig{});
    models::DenseParams p(m.layout(), DType::f32, false);
    p.init(3);
    p.bind(m.binding());
    std::vector<std::pair<int64_t, std::vector<int32_t>>> calls;
    m.set_routing_observer([&](int64_t layer, const Tensor& idx) {
        ASSERT_EQ(idx.size(1), 2);
        calls.emplace_back(
            layer, std::vector<int32_t>(idx.data<int32_t>(), idx.data<int32_t>() + idx.numel()));
    });
    models::ContiguousKvCache kv(cfg, 8, DType::f32);
    std::vector<int32_t> ids = {5, 9, 11};
    Tensor pos = Tensor::empty({3}, DType::i32);
    for (int i = 0; i < 3; ++i) pos.data<int32_t>()[i] = i;
    m.forward_tokens(Tensor::wrap(ids.data(), {3}, DType::i32), pos, kv, {2});
    ASSERT_EQ(calls.size(), 2u);
    for (int64_t l = 0; l < 2; ++l) {
        EXPECT_EQ(calls[static_cast<size_t>(l)].first, l);
        const auto& v = calls[static_cast<size_t>(l)].second;
        ASSERT_EQ(v.size(), 6u);  // 3 tokens x top-2
        for (size_t i = 0; i < v.size(); i += 2) {
            EXPECT_NE(v[i], v[i + 1]);
            EXPECT_GE(std::min(v[i], v[i + 1]), 0);
            EXPECT_LT(std::max(v[i], v[i + 1]), 4);
        }
    }
    // The same tokens decoded one at a time route each token as the prefill did (row i of the
    // prefill's routing is decode step i's).
    const auto prefill = calls;
    calls.clear();
    models::ContiguousKvCache kv2(cfg, 8, DType::f32);
    for (int i = 0; i < 3; ++i) {
        m.forward_tokens(Tensor::wrap(ids.data() + i, {1}, DType::i32), pos.slice(0, i, i + 1), kv2,
                         {0});
        kv2.commit(1);
    }
    ASSERT_EQ(calls.size(), 6u);
    for (size_t c = 0; c < calls.size(); ++c) {
        const auto step = static_cast<int64_t>(c / 2);
        const auto& want = prefill[c % 2].second;
        EXPECT_EQ(calls[c].first, static_cast<int64_t>(c % 2));
        EXPECT_EQ(calls[c].second,
                  std::vector<int32_t>(want.begin() + 2 * step, want.begin() + 2 * step + 2))
            << "step " << step << " layer " << c % 2;
    }
}

}  // namespace
}  // namespace zs::infer
