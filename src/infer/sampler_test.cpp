// Sampler against analytic distributions: empirical frequencies match softmax(l / T) restricted
// and renormalised by top-k / top-p / min-p (within 5 standard errors over 100k draws); greedy,
// penalties and seeds against their formulas.
#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "base/error.h"

namespace zs::infer {
namespace {

std::vector<double> softmax(const std::vector<float>& l, double t) {
    double m = *std::max_element(l.begin(), l.end()), s = 0;
    std::vector<double> p(l.size());
    for (size_t i = 0; i < l.size(); ++i) s += (p[i] = std::exp((l[i] - m) / t));
    for (double& x : p) x /= s;
    return p;
}

// Draw n samples and compare frequencies with `want` (zero entries must never appear).
void expect_distribution(const SamplingParams& sp, const std::vector<float>& logits,
                         const std::vector<double>& want, int n = 100000) {
    Sampler s(sp, static_cast<int64_t>(logits.size()));
    std::vector<int> count(logits.size(), 0);
    for (int i = 0; i < n; ++i) ++count[static_cast<size_t>(s.sample(logits.data()).token)];
    for (size_t i = 0; i < logits.size(); ++i) {
        if (want[i] == 0) {
            EXPECT_EQ(count[i], 0) << "token " << i << " is outside the allowed set";
            continue;
        }
        double f = static_cast<double>(count[i]) / n;
        double se = std::sqrt(want[i] * (1 - want[i]) / n);
        EXPECT_NEAR(f, want[i], 5 * se + 1e-4) << "token " << i;
    }
}

const std::vector<float> kLogits = {2.0f, 1.0f, 0.5f, -1.0f, 0.0f, 1.5f};

TEST(Sampler, TemperatureMatchesSoftmax) {
    for (float t : {0.5f, 1.0f, 1.7f}) {
        SamplingParams sp;
        sp.temperature = t;
        sp.seed = 7;
        expect_distribution(sp, kLogits, softmax(kLogits, t));
    }
}

TEST(Sampler, TopKRestrictsAndRenormalises) {
    SamplingParams sp;
    sp.top_k = 3;
    sp.seed = 1;
    auto p = softmax(kLogits, 1.0);
    std::vector<double> want(6, 0.0);
    double s = p[0] + p[5] + p[1];
    want[0] = p[0] / s;
    want[5] = p[5] / s;
    want[1] = p[1] / s;
    expect_distribution(sp, kLogits, want);
}

TEST(Sampler, TopPKeepsSmallestSetReachingMass) {
    // probabilities 0.5, 0.3, 0.15, 0.05 → top_p 0.79 keeps {0, 1}, as HF's TopPLogitsWarper.
    std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
    SamplingParams sp;
    sp.top_p = 0.79f;
    sp.seed = 3;
    expect_distribution(sp, l, {0.5 / 0.8, 0.3 / 0.8, 0, 0});
    sp.top_p = 0.81f;
    expect_distribution(sp, l, {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0});
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
    std::vector<float> l = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
    SamplingParams sp;
    sp.min_p = 0.25f;  // threshold 0.125
    sp.seed = 4;
    expect_distribution(sp, l, {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0});
}

TEST(Sampler, GreedyAndLogprobs) {
    SamplingParams sp;
    sp.temperature = 0;
    sp.top_logprobs = 3;
    std::vector<float> l = {1.0f, 3.0f, 3.0f, 2.0f};
    Sampler s(sp, 4);
    SampleResult r = s.sample(l.data());
    EXPECT_EQ(r.token, 1);  // tie → lower id
    double z = std::log(std::exp(1.0) + 2 * std::exp(3.0) + std::exp(2.0));
    EXPECT_NEAR(r.logprob, 3.0 - z, 1e-6);
    ASSERT_EQ(r.top.size(), 3u);
    EXPECT_EQ(r.top[0].first, 1);
    EXPECT_EQ(r.top[1].first, 2);
    EXPECT_EQ(r.top[2].first, 3);
    EXPECT_NEAR(r.top[2].second, 2.0 - z, 1e-6);
}

// Greedy over a vocabulary longer than the argmax's lanes: std::max_element's answer (first of
// equal maxima, NaN never chosen after element 0, -inf everywhere else) wherever the maximum sits,
// with and without a modifier (the in-place fast path and the copy).
TEST(Sampler, GreedyIsTheFirstMaximumAtAnyPosition) {
    std::mt19937 g(5);
    std::uniform_real_distribution<float> u(-4.0f, 4.0f);
    for (int n : {1, 15, 16, 17, 100, 49152 + 7}) {
        for (int trial = 0; trial < 20; ++trial) {
            std::vector<float> l(static_cast<size_t>(n));
            for (float& x : l) x = trial % 3 == 0 ? -INFINITY : u(g);
            const auto at = static_cast<size_t>(g() % static_cast<unsigned>(n));
            l[at] = 9.0f;
            if (trial % 2 == 1) l[(at + static_cast<size_t>(n) / 2) % l.size()] = 9.0f;  // tie
            if (n > 2 && trial % 4 == 1)
                l[(at + 1) % l.size() == 0 ? 1 : (at + 1) % l.size()] = NAN;
            const auto want =
                static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
            SamplingParams sp;
            sp.temperature = 0;
            EXPECT_EQ(Sampler(sp, n).sample(l.data()).token, want)
                << "n " << n << " trial " << trial;
            sp.logit_bias = {{0, 0.0f}};  // a modifier that changes nothing: the copying path
            EXPECT_EQ(Sampler(sp, n).sample(l.data()).token, want)
                << "n " << n << " trial " << trial;
        }
    }
}

TEST(Sampler, LogitBiasIsAddedBeforeSelectionNotToLogprobs) {
    std::vector<float> l = {1.0f, 3.0f, 2.5f, 2.0f};
    SamplingParams sp;
    sp.temperature = 0;
    sp.logit_bias = {{1, -1.0f}, {3, 0.75f}};  // 3 -> 2, 2 -> 2.75: token 3 wins
    Sampler s(sp, 4);
    SampleResult r = s.sample(l.data());
    EXPECT_EQ(r.token, 3);
    double z = std::log(std::exp(1.0) + std::exp(3.0) + std::exp(2.5) + std::exp(2.0));
    EXPECT_NEAR(r.logprob, 2.0 - z, 1e-6);  // raw model distribution
    // Sampling: -100 removes a token in practice, +100 forces one.
    sp.temperature = 1.0f;
    sp.logit_bias = {{1, -100.0f}, {2, -100.0f}, {3, -100.0f}};
    Sampler t(sp, 4);
    for (int i = 0; i < 50; ++i) EXPECT_EQ(t.sample(l.data()).token, 0);
}

// The response_format mask: masked tokens get -inf after logit bias (a bias cannot revive them),
// the rest keep softmax(l / T) renormalised over the allowed set; logprobs stay the raw model's.
TEST(Sampler, MaskRestrictsDrawsButNotLogprobs) {
    const std::vector<uint8_t> allowed = {0, 1, 1, 0, 1, 0};
    SamplingParams sp;
    sp.logit_bias = {{0, 100.0f}};
    sp.seed = 3;
    Sampler s(sp, static_cast<int64_t>(kLogits.size()));
    std::vector<float> l = kLogits;
    std::vector<double> p = softmax({0, l[1], l[2], 0, l[4], 0}, 1.0);
    const double z = p[1] + p[2] + p[4];
    std::vector<int> count(l.size(), 0);
    const int n = 100000;
    double raw_z = 0;
    for (float x : l) raw_z += std::exp(static_cast<double>(x));
    for (int i = 0; i < n; ++i) {
        SampleResult r = s.sample(l.data(), allowed.data());
        ++count[static_cast<size_t>(r.token)];
        ASSERT_NEAR(r.logprob, l[static_cast<size_t>(r.token)] - std::log(raw_z), 1e-5);
    }
    for (size_t t = 0; t < l.size(); ++t) {
        if (!allowed[t]) {
            EXPECT_EQ(count[t], 0) << "masked token " << t << " drawn";
            continue;
        }
        const double want = p[t] / z, f = static_cast<double>(count[t]) / n;
        EXPECT_NEAR(f, want, 5 * std::sqrt(want * (1 - want) / n) + 1e-4) << "token " << t;
    }
    // Greedy and top-k pick among the allowed tokens only.
    for (int top_k : {0, 1}) {
        SamplingParams g;
        g.temperature = top_k ? 1.0f : 0.0f;
        g.top_k = top_k;
        Sampler gs(g, static_cast<int64_t>(l.size()));
        EXPECT_EQ(gs.sample(l.data(), allowed.data()).token, 1);  // token 0 (2.0) is masked
    }
}

TEST(Sampler, PenaltiesFollowTheirFormulas) {
    // Repetition penalty 2 on a seen token with logit 3 → 1.5 (still the max vs 1.4): greedy
    // keeps it; at 2.5 → 1.2 < 1.4 and the other wins.
    std::vector<float> l = {3.0f, 1.4f};
    int32_t seen = 0;
    SamplingParams sp;
    sp.temperature = 0;
    sp.repetition_penalty = 2.0f;
    Sampler a(sp, 2);
    a.observe_prompt(&seen, 1);
    EXPECT_EQ(a.sample(l.data()).token, 0);
    sp.repetition_penalty = 2.5f;
    Sampler b(sp, 2);
    b.observe_prompt(&seen, 1);
    EXPECT_EQ(b.sample(l.data()).token, 1);
    // Frequency 0.6 x 2 occurrences + presence 0.5 = 1.7 off token 0: 3 - 1.7 = 1.3 < 1.4.
    SamplingParams fp;
    fp.temperature = 0;
    fp.frequency_penalty = 0.6f;
    fp.presence_penalty = 0.5f;
    Sampler c(fp, 2);
    c.observe_output(0);
    EXPECT_EQ(c.sample(l.data()).token, 0);  // 3 - 1.1 = 1.9
    c.observe_output(0);
    EXPECT_EQ(c.sample(l.data()).token, 1);
    // Prompt tokens are not penalised by frequency/presence (OpenAI semantics).
    Sampler d(fp, 2);
    d.observe_prompt(&seen, 1);
    EXPECT_EQ(d.sample(l.data()).token, 0);
}

// Without logprobs the same tokens are drawn (greedy and seeded), and no logprob is reported.
TEST(Sampler, LogprobsOffDrawsTheSameTokens) {
    for (float temp : {0.0f, 1.3f}) {
        SamplingParams sp;
        sp.seed = 99;
        sp.temperature = temp;
        sp.top_logprobs = 2;
        SamplingParams off = sp;
        off.logprobs = false;
        Sampler a(sp, 6), b(off, 6);
        for (int i = 0; i < 100; ++i) {
            SampleResult ra = a.sample(kLogits.data()), rb = b.sample(kLogits.data());
            EXPECT_EQ(ra.token, rb.token);
            EXPECT_EQ(ra.top.size(), 2u);
            EXPECT_EQ(rb.logprob, 0.0f);
            EXPECT_TRUE(rb.top.empty());
        }
    }
}

TEST(Sampler, SameSeedSameTokens) {
    SamplingParams sp;
    sp.seed = 1234;
    sp.temperature = 1.3f;
    Sampler a(sp, 6), b(sp, 6);
    std::set<int> distinct;
    for (int i = 0; i < 200; ++i) {
        int ta = a.sample(kLogits.data()).token;
        EXPECT_EQ(ta, b.sample(kLogits.data()).token);
        distinct.insert(ta);
    }
    EXPECT_GT(distinct.size(), 3u);
}

TEST(Sampler, BadParametersAreNamed) {
    SamplingParams sp;
    sp.top_p = 1.5f;
    try {
        Sampler s(sp, 4);
        FAIL();
    } catch (const zs::ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("top_p"), std::string::npos);
    }
    sp = {};
    sp.temperature = -1;
    EXPECT_THROW(Sampler(sp, 4), zs::ConfigError);
}

}  // namespace
}  // namespace zs::infer
