// ThreadTuner: the decode loop's thread count chosen from the speed it measures, so decode holds
// up when the cores are shared. A forked region of T threads waits at each join for its slowest
// thread; when another busy process takes a core, one of them is descheduled and every join
// (hundreds per token) waits a scheduler quantum: on 2 cores with one `yes` running, 2-thread
// decode falls ~30x while 1 thread, which never waits on a descheduled peer, keeps its speed.
//
// Policy (per decode loop, on the thread that runs the forwards): steps run at the current
// count; after `period` steps, or as soon as the last 8 steps average 1.5x the current count's
// reference time (the machine got busier), each other candidate count (max, max - 1, max / 2, 1)
// runs `kProbe` steps (one when that step already takes twice the current count's time); the
// fastest wins when it beats the current count by 10%. The first exploration comes after the
// first step; a confirmed choice doubles the period (up to 512 steps), a switch resets it to 32,
// and the period is at least 16x the slowest probe's time over the best (up to 4096 steps), so
// the probes cost ~1/16 of the time at worst and ~1% on a quiet machine.
// `ZS_THREAD_TUNER=0` (or max = 1) fixes the count at omp_get_max_threads().
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace zs::infer {

class ThreadTuner {
public:
    // max_threads <= 0: omp_get_max_threads() of the calling thread.
    explicit ThreadTuner(int max_threads = 0);
    // The count for the next step; sets it on the calling thread (omp_set_num_threads).
    int begin_step();
    // The wall time of the step begun last (comparable steps only: e.g. single-token decodes).
    void end_step(double seconds);
    int threads() const { return cur_; }
    bool enabled() const { return candidates_.size() > 1; }
    int64_t n_switches() const { return n_switches_; }

private:
    static constexpr int kProbe = 2;
    std::vector<int> candidates_;
    int cur_ = 1;
    int64_t period_ = 1, since_explore_ = 0;  // the first exploration after 1 step
    double cur_sum_ = 0;                      // current count's steps since the last exploration
    int64_t cur_n_ = 0;
    double ref_ = 0;              // current count's mean step time when last measured
    std::vector<double> recent_;  // last 8 step times at the current count
    // Exploration: probing candidates_[probe_idx_] (skipping cur_), its step times.
    bool exploring_ = false;
    size_t probe_idx_ = 0;
    std::vector<double> probe_times_, probe_mean_;
    int64_t n_switches_ = 0;
    void start_exploring();
    void finish_exploring();
};

}  // namespace zs::infer
