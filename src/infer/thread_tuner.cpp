#include "infer/thread_tuner.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include <omp.h>

#include "base/log.h"

namespace zs::infer {

ThreadTuner::ThreadTuner(int max_threads) {
    const int mx = max_threads > 0 ? max_threads : omp_get_max_threads();
    cur_ = mx;
    const char* env = std::getenv("ZS_THREAD_TUNER");
    if (mx <= 1 || (env != nullptr && std::strcmp(env, "0") == 0)) {
        candidates_ = {mx};
        return;
    }
    candidates_ = {mx, mx - 1, mx / 2, 1};
    std::sort(candidates_.begin(), candidates_.end(), std::greater<>());
    candidates_.erase(std::unique(candidates_.begin(), candidates_.end()), candidates_.end());
    candidates_.erase(std::remove(candidates_.begin(), candidates_.end(), 0), candidates_.end());
}

int ThreadTuner::begin_step() {
    const int t = exploring_ ? candidates_[probe_idx_] : cur_;
    omp_set_num_threads(t);
    return t;
}

void ThreadTuner::start_exploring() {
    exploring_ = true;
    probe_idx_ = 0;
    if (candidates_[probe_idx_] == cur_) ++probe_idx_;
    probe_times_.clear();
    probe_mean_.assign(candidates_.size(), 0.0);
    if (!recent_.empty()) {
        ref_ = std::accumulate(recent_.begin(), recent_.end(), 0.0) /
               static_cast<double>(recent_.size());
    }
}

void ThreadTuner::finish_exploring() {
    exploring_ = false;
    // The current count's figure: its steps just before the exploration (recent_).
    const double cur_mean = recent_.empty() ? ref_
                                            : std::accumulate(recent_.begin(), recent_.end(), 0.0) /
                                                  static_cast<double>(recent_.size());
    int best = cur_;
    double best_t = cur_mean;
    for (size_t i = 0; i < candidates_.size(); ++i) {
        if (candidates_[i] == cur_ || probe_mean_[i] <= 0) continue;
        if (probe_mean_[i] < 0.9 * best_t) {
            best = candidates_[i];
            best_t = probe_mean_[i];
        }
    }
    // Keep what the probes cost at ~1/16 of the time: a count 100x slower than the best is not
    // tried again for 1600 steps.
    double worst = cur_mean / best_t;
    for (size_t i = 0; i < candidates_.size(); ++i) {
        if (probe_mean_[i] > 0) worst = std::max(worst, probe_mean_[i] / best_t);
    }
    const auto floor_period = static_cast<int64_t>(std::min(16.0 * worst, 4096.0));
    if (best != cur_) {
        log_debug("thread tuner: {} -> {} threads ({:.2f} ms vs {:.2f} ms per step)", cur_, best,
                  best_t * 1e3, cur_mean * 1e3);
        cur_ = best;
        period_ = std::max<int64_t>(32, floor_period);
        ++n_switches_;
        ref_ = best_t;
    } else {
        period_ = std::max<int64_t>(std::min<int64_t>(period_ * 2, 512), floor_period);
        ref_ = cur_mean;
    }
    recent_.clear();
    cur_sum_ = 0;
    cur_n_ = 0;
    since_explore_ = 0;
}

void ThreadTuner::end_step(double seconds) {
    if (!enabled()) return;
    if (exploring_) {
        probe_times_.push_back(seconds);
        // A probe step twice as slow as the current count's steps ends that probe at once (a
        // shared machine makes such a step cost a scheduler quantum per join: no need for more).
        const bool hopeless = ref_ > 0 && seconds > 2 * ref_;
        if (!hopeless && static_cast<int>(probe_times_.size()) < kProbe) return;
        // The last probe step (the first may pay for the team's resize).
        probe_mean_[probe_idx_] = probe_times_.back();
        probe_times_.clear();
        ++probe_idx_;
        if (probe_idx_ < candidates_.size() && candidates_[probe_idx_] == cur_) ++probe_idx_;
        if (probe_idx_ >= candidates_.size()) finish_exploring();
        return;
    }
    cur_sum_ += seconds;
    ++cur_n_;
    ++since_explore_;
    recent_.push_back(seconds);
    if (recent_.size() > 8) recent_.erase(recent_.begin());
    if (ref_ <= 0 && cur_n_ >= 4) ref_ = cur_sum_ / static_cast<double>(cur_n_);
    const double recent_mean =
        std::accumulate(recent_.begin(), recent_.end(), 0.0) / static_cast<double>(recent_.size());
    const bool slower = ref_ > 0 && recent_.size() == 8 && recent_mean > 1.5 * ref_;
    if (since_explore_ >= period_ || slower) start_exploring();
}

}  // namespace zs::infer
