// ThreadTuner against a simulated machine: step times as a function of the thread count, quiet
// (2 threads 1.8x faster than 1) and shared with a busy process (every 2-thread step waits
// scheduler quanta: 30x slower; 1 thread unaffected). The naive reference is the fastest count of
// each phase; the tuner must settle on it within a bounded number of steps and spend a bounded
// share of the time on probes.
#include "infer/thread_tuner.h"

#include <gtest/gtest.h>
#include <omp.h>

namespace zs::infer {
namespace {

struct Phase {
    double t1, t2;  // seconds per step at 1 and 2 threads
    int64_t steps;
};

TEST(ThreadTuner, FollowsTheFasterCountAsTheMachineGetsBusyAndQuietAgain) {
    const int saved = omp_get_max_threads();
    ThreadTuner tuner(2);
    ASSERT_TRUE(tuner.enabled());
    const Phase quiet{0.018, 0.010, 600}, busy{0.018, 0.300, 600};
    int phase = 0;
    for (const Phase& ph : {quiet, busy, quiet}) {
        ++phase;
        const int best = ph.t2 < ph.t1 ? 2 : 1;
        double spent = 0, ideal = 0;
        int64_t settled_at = -1;
        for (int64_t i = 0; i < ph.steps; ++i) {
            const int t = tuner.begin_step();
            ASSERT_TRUE(t == 1 || t == 2);
            EXPECT_EQ(omp_get_max_threads(), t);
            const double s = t == 2 ? ph.t2 : ph.t1;
            tuner.end_step(s);
            spent += s;
            ideal += std::min(ph.t1, ph.t2);
            if (settled_at < 0 && tuner.threads() == best) settled_at = i;
        }
        EXPECT_EQ(tuner.threads(), best);
        EXPECT_GE(settled_at, 0);
        if (phase == 3) {
            // Back from 1 thread once the period since the busy probes (16 x 0.3 / 0.018 = 267
            // steps) has passed.
            EXPECT_LE(settled_at, 300);
            continue;
        }
        // Busy: within a few steps (the 8-step window); quiet: from the first step.
        EXPECT_LE(settled_at, phase == 2 ? 12 : 1);
        // Probes and the steps before settling cost at most 5% over the best count's time (plus
        // the slow steps before the switch when the machine turns busy).
        EXPECT_LE(spent, 1.05 * ideal + (phase == 2 ? 10 * ph.t2 : 0.0))
            << "t1 " << ph.t1 << " t2 " << ph.t2;
    }
    EXPECT_GE(tuner.n_switches(), 2);
    omp_set_num_threads(saved);
}

TEST(ThreadTuner, OneThreadOrDisabledNeverChanges) {
    const int saved = omp_get_max_threads();
    ThreadTuner one(1);
    EXPECT_FALSE(one.enabled());
    for (int i = 0; i < 100; ++i) {
        EXPECT_EQ(one.begin_step(), 1);
        one.end_step(i % 2 ? 1.0 : 0.001);
    }
    omp_set_num_threads(saved);
}

}  // namespace
}  // namespace zs::infer
