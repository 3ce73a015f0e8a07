// Pipeline schedules against the rules and the theory: every generated schedule of every policy
// over many (stages, micro-batches) passes the validator within its memory bound (tight for
// 1F1B); the simulated bubble equals the closed forms (p-1)/(Vm+p-1) for gpipe, 1f1b and
// interleaved at any costs; the Zero Bubble policies beat 1F1B by the paper's margins; and the
// validator rejects each kind of broken schedule with a message naming the rule.
#include "parallel/pipeline_schedule.h"

#include <algorithm>

#include <gtest/gtest.h>

#include "base/error.h"

namespace zs::parallel {
namespace {

std::vector<PipeSchedule> all_schedules(int P, int M) {
    std::vector<PipeSchedule> out;
    for (PipePolicy p :
         {PipePolicy::gpipe, PipePolicy::one_f_one_b, PipePolicy::zb_h1, PipePolicy::zb_h2}) {
        out.push_back(make_pipe_schedule(p, P, M));
    }
    if (M % P == 0) {
        for (int V : {2, 3}) out.push_back(make_pipe_schedule(PipePolicy::interleaved, P, M, V));
    }
    return out;
}

TEST(PipeSchedule, EveryPolicyValidatesWithinItsMemoryBound) {
    for (int P = 1; P <= 8; ++P) {
        for (int M = 1; M <= 16; ++M) {
            for (const PipeSchedule& s : all_schedules(P, M)) {
                SCOPED_TRACE(::testing::Message() << to_string(s.policy) << " P=" << P << " M=" << M
                                                  << " V=" << s.chunks);
                PipeCheck c;
                ASSERT_NO_THROW(c = validate(s));
                for (int r = 0; r < P; ++r) {
                    const int bound = pipe_memory_bound(s.policy, P, M, s.chunks, r);
                    EXPECT_LE(c.peak_held[static_cast<size_t>(r)], bound);
                    // 1F1B and GPipe reach their bounds exactly (the bound is the schedule's).
                    if (s.policy == PipePolicy::one_f_one_b || s.policy == PipePolicy::gpipe) {
                        EXPECT_EQ(c.peak_held[static_cast<size_t>(r)], bound);
                    }
                }
            }
        }
    }
}

TEST(PipeSchedule, OneFOneBMatchesDeepSpeedOrder) {
    // DeepSpeed's TrainSchedule for 4 stages, 6 micro-batches: rank 1 warms up with 2 forwards.
    PipeSchedule s = make_pipe_schedule(PipePolicy::one_f_one_b, 4, 6);
    std::vector<std::string> got;
    for (const PipeInstr& i : s.by_rank[1]) {
        if (i.op == PipeOp::forward || i.op == PipeOp::backward) got.push_back(to_string(i));
    }
    const std::vector<std::string> want = {"F0", "F1",  "F2", "BW0", "F3",  "BW1",
                                           "F4", "BW2", "F5", "BW3", "BW4", "BW5"};
    EXPECT_EQ(got, want);
}

TEST(PipeSchedule, SimulatedBubbleEqualsTheory) {
    for (const PipeCosts& c :
         {PipeCosts{1, 1, 1, 0}, PipeCosts{1, 1.5, 0.5, 0}, PipeCosts{2, 1, 3, 0}}) {
        for (int P : {2, 3, 4, 8}) {
            for (int M : {1, 4, 8, 16}) {
                for (PipePolicy p : {PipePolicy::gpipe, PipePolicy::one_f_one_b}) {
                    const PipeTimeline tl = simulate(make_pipe_schedule(p, P, M), c);
                    SCOPED_TRACE(::testing::Message() << to_string(p) << " P=" << P << " M=" << M);
                    EXPECT_NEAR(tl.makespan, (M + P - 1) * (c.f + c.b + c.w), 1e-9);
                    EXPECT_NEAR(tl.bubble(), pipe_theory_bubble(P, M, 1), 1e-12);
                    EXPECT_NEAR(tl.period(), tl.makespan, 1e-9);
                    EXPECT_NEAR(tl.bubble(0), pipe_theory_bubble(P, M, 1), 1e-12);
                    for (int r = 1; r < P; ++r) {
                        EXPECT_LE(tl.bubble(r), pipe_theory_bubble(P, M, 1) + 1e-12);
                    }
                }
                if (M % P == 0) {
                    // Megatron-LM's interleaved schedule: the bubble shrinks by V when forward
                    // and backward take equal time.
                    const PipeCosts eq{1, 0.5, 0.5, 0};
                    for (int V : {2, 4}) {
                        const PipeTimeline tl =
                            simulate(make_pipe_schedule(PipePolicy::interleaved, P, M, V), eq);
                        EXPECT_NEAR(tl.bubble(), pipe_theory_bubble(P, M, V), 1e-12)
                            << "P=" << P << " M=" << M << " V=" << V;
                    }
                }
            }
        }
    }
}

TEST(PipeSchedule, ZeroBubbleBeatsOneFOneB) {
    for (const PipeCosts& c : {PipeCosts{1, 1, 1, 0}, PipeCosts{1, 1, 0.5, 0}}) {
        for (int P : {2, 4, 8}) {
            for (int M : {2 * P, 4 * P}) {
                SCOPED_TRACE(::testing::Message() << "P=" << P << " M=" << M << " W=" << c.w);
                const double work = M * (c.f + c.b + c.w);
                const PipeTimeline f1 =
                    simulate(make_pipe_schedule(PipePolicy::one_f_one_b, P, M), c);
                const PipeTimeline h1 =
                    simulate(make_pipe_schedule(PipePolicy::zb_h1, P, M, 1, c), c);
                const PipeTimeline h2 =
                    simulate(make_pipe_schedule(PipePolicy::zb_h2, P, M, 1, c), c);
                // The paper's idle time per step: 1F1B (p-1)(F+B+W), ZB-H1 (p-1)(F+B-W) (a third
                // of 1F1B's when F = B = W), ZB-H2 (p-1)(F+B-2W) floored at zero: the period
                // (rank 0's span) minus the work.
                EXPECT_NEAR(f1.period() - work, (P - 1) * (c.f + c.b + c.w), 1e-9);
                EXPECT_NEAR(h1.period() - work, (P - 1) * (c.f + c.b - c.w), 1e-9);
                EXPECT_NEAR(h2.period() - work, (P - 1) * std::max(0.0, c.f + c.b - 2 * c.w), 1e-9);
                EXPECT_LT(h2.bubble(), h1.bubble() + 1e-12);
            }
        }
    }
}

TEST(PipeSchedule, ImpossibleArgumentsAreRefusedByName) {
    auto msg = [](auto fn) {
        try {
            fn();
        } catch (const ConfigError& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    EXPECT_NE(msg([] { make_pipe_schedule(PipePolicy::interleaved, 4, 6, 2); }).find("multiple"),
              std::string::npos);
    EXPECT_NE(msg([] { make_pipe_schedule(PipePolicy::one_f_one_b, 4, 8, 2); }).find("chunks"),
              std::string::npos);
    EXPECT_NE(msg([] { make_pipe_schedule(PipePolicy::gpipe, 0, 8); }).find("stages"),
              std::string::npos);
    EXPECT_NE(
        msg([] { parse_pipe_policy("1F1B-lazy", "pipeline.schedule"); }).find("pipeline.schedule"),
        std::string::npos);
}

// Each kind of broken schedule is caught and named.
TEST(PipeSchedule, ValidatorRejectsBrokenSchedules) {
    auto expect_error = [](PipeSchedule s, const std::string& needle) {
        try {
            validate(s);
            ADD_FAILURE() << "accepted; expected: " << needle;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    const PipeSchedule good = make_pipe_schedule(PipePolicy::one_f_one_b, 3, 4);
    const PipeSchedule zb = make_pipe_schedule(PipePolicy::zb_h1, 3, 4);
    auto find = [](const std::vector<PipeInstr>& l, PipeInstr i) {
        return static_cast<size_t>(std::find(l.begin(), l.end(), i) - l.begin());
    };
    {  // forward before its input arrived
        PipeSchedule s = good;
        auto& l = s.by_rank[1];
        std::swap(l[find(l, {PipeOp::recv_act, 0, 0})], l[find(l, {PipeOp::forward, 0, 0})]);
        expect_error(s, "before its input activation arrived");
    }
    {  // backward before the gradient arrived
        PipeSchedule s = good;
        auto& l = s.by_rank[0];
        std::swap(l[find(l, {PipeOp::recv_grad, 0, 0})], l[find(l, {PipeOp::backward, 0, 0})]);
        expect_error(s, "before its output's gradient arrived");
    }
    {  // W before B
        PipeSchedule s = zb;
        auto& l = s.by_rank[2];
        std::swap(l[find(l, {PipeOp::backward_input, 1, 0})],
                  l[find(l, {PipeOp::backward_weight, 1, 0})]);
        expect_error(s, "(W) before the input gradient (B)");
    }
    {  // a micro-batch's W missing
        PipeSchedule s = zb;
        auto& l = s.by_rank[0];
        l.erase(l.begin() + static_cast<std::ptrdiff_t>(find(l, {PipeOp::backward_weight, 3, 0})));
        expect_error(s, "micro-batch 3 chunk 0: missing W");
    }
    {  // the step not last
        PipeSchedule s = good;
        auto& l = s.by_rank[2];
        std::swap(l[l.size() - 1], l[l.size() - 2]);
        expect_error(s, "must be the last");
    }
    {  // sends received out of order
        PipeSchedule s = good;
        auto& l = s.by_rank[0];
        const size_t a = find(l, {PipeOp::send_act, 0, 0}), b = find(l, {PipeOp::send_act, 1, 0});
        std::swap(l[a], l[b]);  // send mb 1's activation before mb 0's: invalid (not yet computed)
        expect_error(s, "sent before its forward");
    }
    {  // more activations than 1F1B's bound: rank 0 runs all forwards first (GPipe order)
        PipeSchedule s = make_pipe_schedule(PipePolicy::gpipe, 3, 4);
        s.policy = PipePolicy::one_f_one_b;
        expect_error(s, "above the policy's bound of 3");
    }
    {  // a true deadlock that passes the local rules: rank 0 waits for mb 0's gradient before
       // sending mb 0's activation.
        PipeSchedule s = make_pipe_schedule(PipePolicy::gpipe, 2, 1);
        auto& l0 = s.by_rank[0];
        std::swap(l0[find(l0, {PipeOp::send_act, 0, 0})], l0[find(l0, {PipeOp::recv_grad, 0, 0})]);
        expect_error(s, "deadlock: rank 0 waits at recv_grad 0; rank 1 waits at recv_act 0;");
    }
}

}  // namespace
}  // namespace zs::parallel
