#include "infer/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/error.h"

namespace zs::infer {

Sampler::Sampler(const SamplingParams& params, int64_t vocab_size)
    : p_(params),
      vocab_(vocab_size),
      rng_(params.seed),
      seen_mask_(static_cast<size_t>(vocab_size), 0) {
    ZS_CHECK_FIELD(p_.temperature >= 0.0f && std::isfinite(p_.temperature), "temperature",
                   "temperature must be >= 0 (got {})", p_.temperature);
    ZS_CHECK_FIELD(p_.top_p > 0.0f && p_.top_p <= 1.0f, "top_p", "top_p must be in (0, 1] (got {})",
                   p_.top_p);
    ZS_CHECK_FIELD(p_.min_p >= 0.0f && p_.min_p <= 1.0f, "min_p",
                   "min_p must be in [0, 1] (got {})", p_.min_p);
    ZS_CHECK_FIELD(p_.top_k >= 0, "top_k", "top_k must be >= 0 (got {})", p_.top_k);
    ZS_CHECK_FIELD(p_.repetition_penalty > 0.0f, "repetition_penalty",
                   "repetition_penalty must be > 0 (got {})", p_.repetition_penalty);
    ZS_CHECK_FIELD(std::fabs(p_.frequency_penalty) <= 2.0f, "frequency_penalty",
                   "frequency_penalty must be in [-2, 2] (got {})", p_.frequency_penalty);
    ZS_CHECK_FIELD(std::fabs(p_.presence_penalty) <= 2.0f, "presence_penalty",
                   "presence_penalty must be in [-2, 2] (got {})", p_.presence_penalty);
    ZS_CHECK_FIELD(p_.top_logprobs >= 0 && p_.top_logprobs <= 20, "top_logprobs",
                   "top_logprobs must be in [0, 20] (got {})", p_.top_logprobs);
    work_.resize(static_cast<size_t>(vocab_));
    idx_.resize(static_cast<size_t>(vocab_));
}

void Sampler::observe_prompt(const int32_t* tokens, int64_t n) {
    for (int64_t i = 0; i < n; ++i) {
        int32_t t = tokens[i];
        if (t >= 0 && t < vocab_ && !seen_mask_[static_cast<size_t>(t)]) {
            seen_mask_[static_cast<size_t>(t)] = 1;
            seen_.push_back(t);
        }
    }
}

void Sampler::observe_output(int32_t token) {
    if (token < 0 || token >= vocab_) return;
    ++output_counts_[token];
    observe_prompt(&token, 1);
}

namespace {

// r.logprob of r.token and the top_n most likely tokens, from the raw logits and their
// log-normaliser.
void fill_logprobs(SampleResult& r, const float* logits, size_t V, double log_z, int top_n) {
    r.logprob = static_cast<float>(logits[static_cast<size_t>(r.token)] - log_z);
    if (top_n <= 0) return;
    std::vector<int32_t> ids(V);
    std::iota(ids.begin(), ids.end(), 0);
    auto k = std::min<size_t>(static_cast<size_t>(top_n), V);
    std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                      [&](int32_t a, int32_t b) {
                          return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
                      });
    for (size_t i = 0; i < k; ++i) {
        r.top.emplace_back(ids[i], static_cast<float>(logits[static_cast<size_t>(ids[i])] - log_z));
    }
}

// std::max_element's answer (the first of equal maxima; NaN never wins after element 0), in
// two passes the compiler vectorises: the largest value by 16 independent lanes, then the first
// index holding it.
size_t argmax(const float* x, size_t n) {
    if (n == 0 || std::isnan(x[0])) return 0;
    constexpr size_t kLanes = 16;
    float lane[kLanes];
    std::fill(lane, lane + kLanes, x[0]);
    size_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
        for (size_t j = 0; j < kLanes; ++j) lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
    }
    float m = x[0];
    for (size_t j = 0; j < kLanes; ++j) m = lane[j] > m ? lane[j] : m;
    for (; i < n; ++i) m = x[i] > m ? x[i] : m;
    size_t k = 0;
    while (x[k] != m) ++k;  // m is one of x's values
    return k;
}

double log_normaliser(const float* logits, size_t V) {
    float mx = -INFINITY;
    for (size_t i = 0; i < V; ++i) mx = std::max(mx, logits[i]);
    double z = 0;
    for (size_t i = 0; i < V; ++i) z += std::exp(static_cast<double>(logits[i]) - mx);
    return mx + std::log(z);
}

}  // namespace

SampleResult score_token(const float* logits, int64_t vocab_size, int32_t token, int top_n) {
    const auto V = static_cast<size_t>(vocab_size);
    SampleResult r;
    r.token = token;
    fill_logprobs(r, logits, V, log_normaliser(logits, V), top_n);
    return r;
}

SampleResult Sampler::sample(const float* logits, const uint8_t* allowed) {
    const auto V = static_cast<size_t>(vocab_);
    SampleResult r;
    // Raw log-softmax normaliser, for reported log-probabilities.
    const double log_z = p_.logprobs ? log_normaliser(logits, V) : 0.0;
    const bool plain =
        p_.logit_bias.empty() && allowed == nullptr &&
        (p_.repetition_penalty == 1.0f || seen_.empty()) &&
        ((p_.frequency_penalty == 0.0f && p_.presence_penalty == 0.0f) || output_counts_.empty());
    if (p_.temperature == 0.0f && plain) {
        // Greedy on unmodified logits: the argmax read in place (no copy of the V logits, which
        // the LM head's threads left in two cores' caches: ~0.1 ms of a 5 ms token).
        r.token = static_cast<int32_t>(argmax(logits, V));
        if (p_.logprobs) fill_logprobs(r, logits, V, log_z, p_.top_logprobs);
        return r;
    }

    std::copy(logits, logits + V, work_.begin());
    for (const auto& [t, bias] : p_.logit_bias) {
        if (t >= 0 && static_cast<size_t>(t) < V) work_[static_cast<size_t>(t)] += bias;
    }
    if (allowed) {
        for (size_t i = 0; i < V; ++i) {
            if (!allowed[i]) work_[i] = -INFINITY;
        }
    }
    if (p_.repetition_penalty != 1.0f) {
        for (int32_t t : seen_) {
            float& l = work_[static_cast<size_t>(t)];
            l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
        }
    }
    if (p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f) {
        for (const auto& [t, c] : output_counts_) {
            work_[static_cast<size_t>(t)] -=
                p_.frequency_penalty * static_cast<float>(c) + p_.presence_penalty;
        }
    }
    if (p_.temperature == 0.0f) {
        r.token = static_cast<int32_t>(argmax(work_.data(), V));
    } else {
        // Candidates: all tokens, or the top_k by processed logit (ties: lower id first).
        std::iota(idx_.begin(), idx_.end(), 0);
        size_t n = V;
        auto better = [&](int32_t a, int32_t b) {
            float la = work_[static_cast<size_t>(a)], lb = work_[static_cast<size_t>(b)];
            return la > lb || (la == lb && a < b);
        };
        if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < V) {
            n = static_cast<size_t>(p_.top_k);
            std::nth_element(idx_.begin(), idx_.begin() + static_cast<std::ptrdiff_t>(n - 1),
                             idx_.end(), better);
        }
        const bool need_sort = p_.top_p < 1.0f;
        if (need_sort)
            std::sort(idx_.begin(), idx_.begin() + static_cast<std::ptrdiff_t>(n), better);
        float cmax = -INFINITY;
        for (size_t i = 0; i < n; ++i) cmax = std::max(cmax, work_[static_cast<size_t>(idx_[i])]);
        std::vector<double> prob(n);
        double sum = 0;
        for (size_t i = 0; i < n; ++i) {
            prob[i] = std::exp((static_cast<double>(work_[static_cast<size_t>(idx_[i])]) - cmax) /
                               p_.temperature);
            sum += prob[i];
        }
        for (double& q : prob) q /= sum;
        double pmax = *std::max_element(prob.begin(), prob.end());
        if (p_.min_p > 0.0f) {
            for (double& q : prob) {
                if (q < p_.min_p * pmax) q = 0.0;
            }
        }
        if (need_sort) {
            // idx_ sorted by descending logit = descending probability: keep the shortest prefix
            // whose mass reaches top_p (always at least one token).
            double cum = 0, kept_total = 0;
            for (size_t i = 0; i < n; ++i) kept_total += prob[i];
            for (size_t i = 0; i < n; ++i) {
                if (cum >= static_cast<double>(p_.top_p) * kept_total && i > 0) {
                    prob[i] = 0.0;
                    continue;
                }
                cum += prob[i];
            }
        }
        double total = std::accumulate(prob.begin(), prob.end(), 0.0);
        double u = std::uniform_real_distribution<double>(0.0, total)(rng_);
        size_t pick = 0;
        bool found = false;
        for (size_t i = 0; i < n; ++i) {
            if (prob[i] <= 0) continue;
            pick = i;
            if (u < prob[i]) {
                found = true;
                break;
            }
            u -= prob[i];
        }
        (void)found;  // rounding may leave u just past the end: the last kept token is drawn
        r.token = idx_[pick];
    }
    if (p_.logprobs) fill_logprobs(r, logits, V, log_z, p_.top_logprobs);
    return r;
}

}  // namespace zs::infer
