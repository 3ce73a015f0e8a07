// The pipeline interpreter against a sequential reference: a toy model of P x V tanh layers
// (y = tanh(x W^T), loss 0.5 |y|^2 at the end), cut into virtual stages, run by every policy's
// schedule over P thread-ranks (activations and gradients really cross the pp communicator),
// gives each layer's summed weight gradient of the plain loop over micro-batches — B and W split
// for the Zero Bubble policies, fused for the others; and a schedule for the wrong number of
// ranks is refused by name.
#include "parallel/pipeline.h"

#include <cmath>
#include <map>
#include <mutex>

#include <gtest/gtest.h>

#include "base/error.h"

namespace zs::parallel {
namespace {

using core::DType;
using core::Tensor;

constexpr int64_t kN = 3, kD = 5;  // rows per micro-batch, width

float weight(int v, int64_t i, int64_t j) {
    return 0.3f * std::sin(0.7f * static_cast<float>(v * 31 + i * kD + j) + 0.1f);
}
float input(int mb, int64_t n, int64_t j) {
    return std::cos(0.5f * static_cast<float>(mb * 17 + n * kD + j));
}

// One layer's math on plain vectors (the reference and the stage share it, not the schedule).
struct Layer {
    std::vector<float> w, dw;
    explicit Layer(int v) : w(kD * kD), dw(kD * kD, 0.0f) {
        for (int64_t i = 0; i < kD; ++i)
            for (int64_t j = 0; j < kD; ++j) w[static_cast<size_t>(i * kD + j)] = weight(v, i, j);
    }
    std::vector<float> forward(const std::vector<float>& x) const {
        std::vector<float> y(kN * kD);
        for (int64_t n = 0; n < kN; ++n)
            for (int64_t i = 0; i < kD; ++i) {
                float h = 0;
                for (int64_t j = 0; j < kD; ++j)
                    h += x[static_cast<size_t>(n * kD + j)] * w[static_cast<size_t>(i * kD + j)];
                y[static_cast<size_t>(n * kD + i)] = std::tanh(h);
            }
        return y;
    }
    // gh from gy and y; gx from gh.
    static std::vector<float> grad_h(const std::vector<float>& gy, const std::vector<float>& y) {
        std::vector<float> gh(gy.size());
        for (size_t k = 0; k < gy.size(); ++k) gh[k] = gy[k] * (1.0f - y[k] * y[k]);
        return gh;
    }
    std::vector<float> grad_x(const std::vector<float>& gh) const {
        std::vector<float> gx(kN * kD, 0.0f);
        for (int64_t n = 0; n < kN; ++n)
            for (int64_t i = 0; i < kD; ++i)
                for (int64_t j = 0; j < kD; ++j)
                    gx[static_cast<size_t>(n * kD + j)] +=
                        gh[static_cast<size_t>(n * kD + i)] * w[static_cast<size_t>(i * kD + j)];
        return gx;
    }
    void grad_w(const std::vector<float>& gh, const std::vector<float>& x) {
        for (int64_t n = 0; n < kN; ++n)
            for (int64_t i = 0; i < kD; ++i)
                for (int64_t j = 0; j < kD; ++j)
                    dw[static_cast<size_t>(i * kD + j)] +=
                        gh[static_cast<size_t>(n * kD + i)] * x[static_cast<size_t>(n * kD + j)];
    }
};

std::vector<float> batch(int mb) {
    std::vector<float> x(kN * kD);
    for (int64_t n = 0; n < kN; ++n)
        for (int64_t j = 0; j < kD; ++j) x[static_cast<size_t>(n * kD + j)] = input(mb, n, j);
    return x;
}

// The sequential reference: every micro-batch through all VP layers and back.
std::vector<std::vector<float>> reference(int VP, int M) {
    std::vector<Layer> layers;
    for (int v = 0; v < VP; ++v) layers.emplace_back(v);
    for (int mb = 0; mb < M; ++mb) {
        std::vector<std::vector<float>> xs{batch(mb)}, ys;
        for (int v = 0; v < VP; ++v) {
            ys.push_back(layers[static_cast<size_t>(v)].forward(xs.back()));
            xs.push_back(ys.back());
        }
        std::vector<float> g = ys.back();  // d(0.5 |y|^2)/dy
        for (int v = VP - 1; v >= 0; --v) {
            const auto gh = Layer::grad_h(g, ys[static_cast<size_t>(v)]);
            layers[static_cast<size_t>(v)].grad_w(gh, xs[static_cast<size_t>(v)]);
            g = layers[static_cast<size_t>(v)].grad_x(gh);
        }
    }
    std::vector<std::vector<float>> out;
    for (const Layer& l : layers) out.push_back(l.dw);
    return out;
}

std::vector<float> to_vec(const Tensor& t) {
    const float* p = t.data<float>();
    return {p, p + t.numel()};
}
void from_vec(const Tensor& t, const std::vector<float>& v) {
    std::copy(v.begin(), v.end(), t.data<float>());
}

class ToyStage : public PipeStage {
public:
    ToyStage(int rank, int P, int V) : rank_(rank), P_(P), V_(V) {
        for (int c = 0; c < V; ++c) layers_.emplace_back(c * P + rank);
    }
    core::Shape boundary_shape() const override { return core::Shape{kN, kD}; }
    void forward(int mb, int chunk, const Tensor& in, const Tensor& out) override {
        const int v = chunk * P_ + rank_;
        Saved& s = saved_[{mb, chunk}];
        s.x = v == 0 ? batch(mb) : to_vec(in);
        s.y = layers_[static_cast<size_t>(chunk)].forward(s.x);
        if (out.defined()) from_vec(out, s.y);
    }
    void backward(int mb, int chunk, const Tensor& gout, const Tensor& gin) override {
        backward_input(mb, chunk, gout, gin);
        backward_weight(mb, chunk);
    }
    void backward_input(int mb, int chunk, const Tensor& gout, const Tensor& gin) override {
        const int v = chunk * P_ + rank_;
        Saved& s = saved_.at({mb, chunk});
        const std::vector<float> gy = v == P_ * V_ - 1 ? s.y : to_vec(gout);
        s.gh = Layer::grad_h(gy, s.y);
        if (gin.defined()) from_vec(gin, layers_[static_cast<size_t>(chunk)].grad_x(s.gh));
    }
    void backward_weight(int mb, int chunk) override {
        Saved& s = saved_.at({mb, chunk});
        layers_[static_cast<size_t>(chunk)].grad_w(s.gh, s.x);
        saved_.erase({mb, chunk});
    }
    void optimizer_step() override {
        EXPECT_TRUE(saved_.empty()) << "activations left after the step";
        ++steps;
    }
    std::vector<float> dw(int chunk) const { return layers_[static_cast<size_t>(chunk)].dw; }
    int steps = 0;

private:
    struct Saved {
        std::vector<float> x, y, gh;
    };
    int rank_, P_, V_;
    std::vector<Layer> layers_;
    std::map<std::pair<int, int>, Saved> saved_;
};

TEST(PipelineRun, EveryPolicyGivesTheSequentialGradients) {
    struct Case {
        PipePolicy policy;
        int P, M, V;
    };
    const std::vector<Case> cases = {
        {PipePolicy::gpipe, 2, 3, 1},       {PipePolicy::one_f_one_b, 2, 5, 1},
        {PipePolicy::one_f_one_b, 4, 8, 1}, {PipePolicy::interleaved, 2, 4, 2},
        {PipePolicy::interleaved, 4, 8, 2}, {PipePolicy::zb_h1, 3, 6, 1},
        {PipePolicy::zb_h1, 4, 8, 1},       {PipePolicy::zb_h2, 4, 8, 1},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(::testing::Message()
                     << to_string(c.policy) << " P=" << c.P << " M=" << c.M << " V=" << c.V);
        const PipeSchedule s = make_pipe_schedule(c.policy, c.P, c.M, c.V);
        const auto want = reference(c.P * c.V, c.M);
        std::mutex mu;
        std::vector<std::vector<float>> got(static_cast<size_t>(c.P * c.V));
        comm::run_local(c.P, [&](int rank, comm::Communicator& pp) {
            ToyStage stage(rank, c.P, c.V);
            run_schedule(s, pp, stage);
            std::lock_guard<std::mutex> lock(mu);
            EXPECT_EQ(stage.steps, 1);
            for (int ch = 0; ch < c.V; ++ch)
                got[static_cast<size_t>(ch * c.P + rank)] = stage.dw(ch);
        });
        for (size_t v = 0; v < want.size(); ++v) {
            ASSERT_EQ(got[v].size(), want[v].size());
            for (size_t k = 0; k < want[v].size(); ++k) {
                EXPECT_NEAR(got[v][k], want[v][k], 1e-6f * (1.0f + std::fabs(want[v][k])))
                    << "layer " << v << " element " << k;
            }
        }
    }
}

// mean_costs recovers the costs a timeline was simulated with: split (ZB) and fused schedules.
TEST(PipelineRun, MeanCostsOfASimulatedTimeline) {
    const PipeCosts c{0.7, 1.3, 0.9, 0.05};
    const PipeCosts zb = mean_costs(simulate(make_pipe_schedule(PipePolicy::zb_h1, 4, 8, 1, c), c));
    EXPECT_NEAR(zb.f, c.f, 1e-12);
    EXPECT_NEAR(zb.b, c.b, 1e-12);
    EXPECT_NEAR(zb.w, c.w, 1e-12);
    EXPECT_EQ(zb.comm, 0.0);
    const PipeCosts fused = mean_costs(simulate(make_pipe_schedule(PipePolicy::gpipe, 3, 5), c));
    EXPECT_NEAR(fused.f, c.f, 1e-12);
    EXPECT_NEAR(fused.b, c.b + c.w, 1e-12);
    EXPECT_EQ(fused.w, 0.0);
}

TEST(PipelineRun, WrongGroupSizeIsRefused) {
    const PipeSchedule s = make_pipe_schedule(PipePolicy::one_f_one_b, 3, 3);
    comm::run_local(2, [&](int rank, comm::Communicator& pp) {
        ToyStage stage(rank, 2, 1);
        try {
            run_schedule(s, pp, stage);
            ADD_FAILURE() << "accepted";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("has 3 stages"), std::string::npos) << e.what();
        }
    });
}

TEST(PipelineRun, FusedStageRefusesSplitSchedule) {
    struct Fused : ToyStage {
        using ToyStage::ToyStage;
        void backward_input(int mb, int chunk, const Tensor& g, const Tensor& gi) override {
            PipeStage::backward_input(mb, chunk, g, gi);
        }
    };
    const PipeSchedule s = make_pipe_schedule(PipePolicy::zb_h1, 1, 2);
    comm::run_local(1, [&](int rank, comm::Communicator& pp) {
        Fused stage(rank, 1, 1);
        try {
            run_schedule(s, pp, stage);
            ADD_FAILURE() << "accepted";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("cannot split its backward"), std::string::npos)
                << e.what();
        }
    });
}

}  // namespace
}  // namespace zs::parallel
