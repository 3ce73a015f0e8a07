#include "infer/expert_locality.h"

#include <algorithm>

#include <fmt/format.h>

#include "base/error.h"

namespace zs::infer {

ExpertLocality::ExpertLocality(int64_t n_layers, int64_t n_experts, int top_k, int64_t ep,
                               int64_t row_bytes)
    : n_experts_(n_experts),
      ep_(ep),
      row_bytes_(row_bytes),
      top_k_(top_k),
      layers_(static_cast<size_t>(n_layers)),
      prev_(static_cast<size_t>(n_layers)) {
    ZS_CHECK_T(ConfigError, ep >= 1 && n_experts % ep == 0,
               "expert locality: ep {} must divide the {} experts", ep, n_experts);
}

void ExpertLocality::observe(int64_t layer, const int32_t* experts) {
    ZS_CHECK(layer >= 0 && layer < static_cast<int64_t>(layers_.size()), "layer {} of {}", layer,
             layers_.size());
    std::vector<int32_t> cur(experts, experts + top_k_);
    std::sort(cur.begin(), cur.end());
    std::vector<int32_t>& prev = prev_[static_cast<size_t>(layer)];
    if (!prev.empty()) {
        Layer& l = layers_[static_cast<size_t>(layer)];
        const int64_t per = n_experts_ / ep_;
        ++l.steps;
        l.same_set += cur == prev;
        std::vector<int32_t> both;
        std::set_intersection(cur.begin(), cur.end(), prev.begin(), prev.end(),
                              std::back_inserter(both));
        l.overlap += static_cast<int64_t>(both.size());
        // Home averaged over the ep ranks: each expert is local to exactly one of them.
        l.remote_home_x_ep += top_k_ * (ep_ - 1);
        std::vector<int64_t> on(static_cast<size_t>(ep_), 0);
        for (int32_t e : prev) ++on[static_cast<size_t>(e / per)];
        const auto target = std::max_element(on.begin(), on.end()) - on.begin();
        int64_t remote = 0;
        for (int32_t e : cur) remote += e / per != target;
        l.remote_colocated_x_ep += remote * ep_;
    }
    prev = std::move(cur);
}

int64_t ExpertLocality::steps() const {
    int64_t n = 0;
    for (const Layer& l : layers_) n += l.steps;
    return n;
}

double ExpertLocality::same_set_rate() const {
    int64_t same = 0;
    for (const Layer& l : layers_) same += l.same_set;
    return steps() ? static_cast<double>(same) / static_cast<double>(steps()) : 0.0;
}

double ExpertLocality::overlap_per_step() const {
    int64_t o = 0;
    for (const Layer& l : layers_) o += l.overlap;
    return steps() ? static_cast<double>(o) / static_cast<double>(steps()) : 0.0;
}

double ExpertLocality::bytes_home() const {
    int64_t r = 0;
    for (const Layer& l : layers_) r += l.remote_home_x_ep;
    return static_cast<double>(r) / static_cast<double>(ep_) * static_cast<double>(row_bytes_);
}

double ExpertLocality::bytes_colocated() const {
    int64_t r = 0;
    for (const Layer& l : layers_) r += l.remote_colocated_x_ep;
    return static_cast<double>(r) / static_cast<double>(ep_) * static_cast<double>(row_bytes_);
}

std::string ExpertLocality::report() const {
    std::string per;
    for (const Layer& l : layers_) {
        per += fmt::format(
            "{}{:.0f}%", per.empty() ? "" : " ",
            l.steps ? 100.0 * static_cast<double>(l.same_set) / static_cast<double>(l.steps) : 0.0);
    }
    const double home = bytes_home(), colo = bytes_colocated();
    return fmt::format(
        "expert locality: {} step-layers; same top-{} experts as the previous step {:.1f}% (per "
        "layer: {}), {:.2f} of {} shared; at ep {}: all-to-all {:.0f} bytes staying home, {:.0f} "
        "co-located with the previous step's experts ({:+.1f}%)",
        steps(), top_k_, 100.0 * same_set_rate(), per, overlap_per_step(), top_k_, ep_, home, colo,
        home > 0 ? 100.0 * (colo - home) / home : 0.0);
}

}  // namespace zs::infer
