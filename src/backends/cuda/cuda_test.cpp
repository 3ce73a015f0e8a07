// CUDA backend tests. Without a GPU, the device tests skip naming the reason
// (backends::cuda_unavailable_reason()); the error-macro and registration tests run everywhere.
// With a GPU: host <-> device round trips (bitwise), memory accounting on the cuda tracker,
// overlapping device copies against memmove, the zs::Error messages for bad ids / targets /
// positions (the CPU's wording), and bitwise determinism of the scatter-add and norm backward.
// The op tests (src/ops/*_test.cpp) check every cuda kernel against the double reference.
// The device seams (issue 13): one training step of a tiny Llama on cuda against the CPU, the
// AdamW / Adam segment kernel against optim::Optimizer, and the ZeRO engine's step on cuda.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "backends/cuda/cuda_util.h"
#include "backends/register.h"
#include "core/backend.h"
#include "models/config.h"
#include "models/params.h"
#include "models/transformer.h"
#include "ops/adam.h"
#include "ops/embedding.h"
#include "ops/kernels.h"
#include "ops/loss.h"
#include "ops/norm.h"
#include "ops/rope.h"
#include "optim/optimizer.h"
#include "tests/test_util.h"
#include "zero/engine.h"

namespace zs::backends::cuda {
namespace {

using namespace zs::test;
using core::Device;
using core::MemCategory;

cudaError_t returns(cudaError_t e) { return e; }
cublasStatus_t returns_blas(cublasStatus_t s) { return s; }

TEST(CudaUtil, CheckMacroNamesTheCallAndTheError) {
    try {
        ZS_CUDA_CHECK(returns(cudaErrorInvalidValue));
        FAIL() << "no throw";
    } catch (const Error& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("returns(cudaErrorInvalidValue)"), std::string::npos) << m;
        EXPECT_NE(m.find(cudaGetErrorName(cudaErrorInvalidValue)), std::string::npos) << m;
        EXPECT_NE(m.find(cudaGetErrorString(cudaErrorInvalidValue)), std::string::npos) << m;
        EXPECT_NE(e.where().find("cuda_test.cpp"), std::string::npos) << e.where();
    }
    EXPECT_NO_THROW(ZS_CUDA_CHECK(returns(cudaSuccess)));
}

TEST(CudaUtil, CublasCheckNamesTheStatus) {
    try {
        ZS_CUBLAS_CHECK(returns_blas(CUBLAS_STATUS_INVALID_VALUE));
        FAIL() << "no throw";
    } catch (const Error& e) {
        std::string m = e.what();
        EXPECT_NE(m.find("returns_blas"), std::string::npos) << m;
        EXPECT_NE(m.find(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE)), std::string::npos) << m;
    }
}

TEST(CudaRegistration, ReasonMatchesWhatIsRegistered) {
    std::string reason = backends::cuda_unavailable_reason();
    bool present = ops::has_kernels(core::DeviceType::cuda);
    EXPECT_EQ(present, core::has_backend(core::DeviceType::cuda));
    EXPECT_EQ(reason.empty(), present) << reason;
    if (!present) {
        // No device: allocating on cuda is a NotSupported naming the device, not a crash.
        EXPECT_THROW(Tensor::empty({4}, DType::f32, Device::cuda()), NotSupported);
    } else {
        EXPECT_NE(backends::describe().find("cuda"), std::string::npos);
    }
}

// Device tests: skip (from the main thread) when this machine has no usable GPU.
class CudaDevice : public ::testing::Test {
protected:
    void SetUp() override {
        std::string reason = backends::cuda_unavailable_reason();
        if (!reason.empty()) GTEST_SKIP() << "CUDA unavailable: " << reason;
    }
};

bool bytes_equal(const Tensor& a, const Tensor& b) {
    Tensor ca = a.to(Device::cpu()).contiguous(), cb = b.to(Device::cpu()).contiguous();
    return ca.shape() == cb.shape() && ca.dtype() == cb.dtype() &&
           std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

TEST_F(CudaDevice, RoundTripsAreBitwise) {
    Rng rng(301);
    for (DType dt : {DType::f32, DType::bf16}) {
        Tensor h = random_tensor(rng, {7, 33}, dt);
        Tensor d = h.to(Device::cuda());
        EXPECT_TRUE(d.device().is_cuda());
        EXPECT_TRUE(bytes_equal(d.to(Device::cpu()), h)) << to_string(dt);
        // A strided view goes through the host path and lands contiguous.
        EXPECT_TRUE(bytes_equal(d.slice(1, 3, 20).to(Device::cpu()), h.slice(1, 3, 20)));
        // Device -> device copy.
        EXPECT_TRUE(bytes_equal(d.clone(), h));
    }
    for (DType dt : {DType::i32, DType::i64}) {
        Tensor h = random_ints(rng, {100}, dt, -1000000, 1000000);
        EXPECT_TRUE(bytes_equal(h.to(Device::cuda()).to(Device::cpu()), h)) << to_string(dt);
    }
    Tensor z = Tensor::zeros({5, 9}, DType::f32, Device::cuda());
    EXPECT_TRUE(bytes_equal(z, Tensor::zeros({5, 9}, DType::f32)));
    z.fill(2.5);
    Tensor want = Tensor::empty({5, 9}, DType::f32);
    want.fill(2.5);
    EXPECT_TRUE(bytes_equal(z, want));
}

TEST_F(CudaDevice, MemoryIsAccountedOnTheCudaTracker) {
    const core::MemStats before = core::memory_stats(Device::cuda());
    const core::MemStats cpu_before = core::memory_stats(Device::cpu());
    {
        Tensor p = Tensor::empty({1000}, DType::f32, Device::cuda(), MemCategory::params);
        Tensor g = Tensor::empty({10, 10}, DType::bf16, Device::cuda(), MemCategory::grads);
        core::MemStats during = core::memory_stats(Device::cuda());
        EXPECT_EQ(during.current_of(MemCategory::params) - before.current_of(MemCategory::params),
                  4000);
        EXPECT_EQ(during.current_of(MemCategory::grads) - before.current_of(MemCategory::grads),
                  200);
        EXPECT_GE(during.peak_of(MemCategory::params), during.current_of(MemCategory::params));
        EXPECT_EQ(during.n_allocs - before.n_allocs, 2);
        // Device buffers are not counted on the host.
        EXPECT_EQ(core::memory_stats(Device::cpu()).current_of(MemCategory::params),
                  cpu_before.current_of(MemCategory::params));
    }
    const core::MemStats after = core::memory_stats(Device::cuda());
    EXPECT_EQ(after.current_of(MemCategory::params), before.current_of(MemCategory::params));
    EXPECT_EQ(after.current_of(MemCategory::grads), before.current_of(MemCategory::grads));
}

TEST_F(CudaDevice, OverlappingCopyWithinIsAMemmove) {
    std::vector<int32_t> host(64);
    for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<int32_t>(i * 7 + 1);
    Tensor d = Tensor::wrap(host.data(), {64}, DType::i32).to(Device::cuda());
    core::Backend& be = core::backend(Device::cuda());
    auto* p = static_cast<int32_t*>(d.data_ptr());
    be.copy_within(p + 5, p, 40 * sizeof(int32_t));   // forward overlap
    be.copy_within(p, p + 20, 30 * sizeof(int32_t));  // backward overlap
    std::memmove(host.data() + 5, host.data(), 40 * sizeof(int32_t));
    std::memmove(host.data(), host.data() + 20, 30 * sizeof(int32_t));
    EXPECT_TRUE(bytes_equal(d, Tensor::wrap(host.data(), {64}, DType::i32)));
}

TEST_F(CudaDevice, BadIdsTargetsAndPositionsAreNamed) {
    Tensor table = Tensor::zeros({10, 4}, DType::f32, Device::cuda());
    Tensor out = Tensor::empty({3, 4}, DType::f32, Device::cuda());
    int32_t ids[] = {1, 10, 12};
    try {
        ops::embedding_forward(out, Tensor::wrap(ids, {3}, DType::i32).to(Device::cuda()), table);
        FAIL() << "no throw";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("token id 10 at position 1"), std::string::npos)
            << e.what();
    }
    int64_t neg[] = {0, 3, -1};
    Tensor dtable = Tensor::zeros({10, 4}, DType::f32, Device::cuda());
    try {
        ops::embedding_backward(dtable, Tensor::zeros({3, 4}, DType::f32, Device::cuda()),
                                Tensor::wrap(neg, {3}, DType::i64).to(Device::cuda()));
        FAIL() << "no throw";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("token id -1 at position 2"), std::string::npos)
            << e.what();
    }

    Tensor logits = Tensor::zeros({3, 5}, DType::f32, Device::cuda());
    Tensor losses = Tensor::empty({3}, DType::f32, Device::cuda());
    int64_t t[] = {4, -100, 5};
    try {
        ops::cross_entropy(losses, Tensor(), logits,
                           Tensor::wrap(t, {3}, DType::i64).to(Device::cuda()));
        FAIL() << "no throw";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("target 5 at position 2"), std::string::npos)
            << e.what();
    }

    ops::RopeTable rt(8, 4, 10000.0);
    Tensor x = Tensor::zeros({2, 1, 4}, DType::f32, Device::cuda());
    int64_t pos[] = {3, 8};
    try {
        ops::rope_forward(x, Tensor::wrap(pos, {2}, DType::i64).to(Device::cuda()), rt);
        FAIL() << "no throw";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("position 8 at index 1"), std::string::npos)
            << e.what();
    }
}

TEST_F(CudaDevice, CrossEntropyCountsValidTargets) {
    Rng rng(5);
    Tensor logits = random_tensor(rng, {6, 11}, DType::f32, -3, 3);
    int32_t t[] = {0, -100, 10, 3, -100, 7};
    Tensor targets = Tensor::wrap(t, {6}, DType::i32);
    Tensor losses = Tensor::empty({6}, DType::f32, Device::cuda());
    int64_t n =
        ops::cross_entropy(losses, Tensor(), logits.to(Device::cuda()), targets.to(Device::cuda()));
    auto want = ops::reference::cross_entropy(ops::reference::from_tensor(logits),
                                              ops::reference::int_values(targets), {});
    EXPECT_EQ(n, want.count);
    EXPECT_TRUE(all_close(losses, want.losses, tol_for(DType::f32), "losses"));
}

TEST_F(CudaDevice, EmbeddingBackwardIsBitwiseTheCpuOrder) {
    // Each (id, column) is summed in token order on both devices: identical f32 bits.
    Rng rng(17);
    const int64_t N = 300, V = 37, C = 70;
    Tensor ids = random_ints(rng, {N}, DType::i32, 0, V - 1);
    Tensor g = random_tensor(rng, {N, C}, DType::f32);
    Tensor base = random_tensor(rng, {V, C}, DType::f32);
    Tensor cpu = base.clone();
    ops::embedding_backward(cpu, g, ids);
    Tensor dev = base.to(Device::cuda());
    ops::embedding_backward(dev, g.to(Device::cuda()), ids.to(Device::cuda()));
    EXPECT_TRUE(bytes_equal(dev, cpu));
}

TEST_F(CudaDevice, NormBackwardIsDeterministic) {
    Rng rng(23);
    const int64_t N = 513, C = 96;
    Tensor x = random_tensor(rng, {N, C}, DType::f32).to(Device::cuda());
    Tensor w = random_tensor(rng, {C}, DType::f32).to(Device::cuda());
    Tensor b = random_tensor(rng, {C}, DType::f32).to(Device::cuda());
    Tensor g = random_tensor(rng, {N, C}, DType::f32).to(Device::cuda());
    Tensor out = Tensor::empty({N, C}, DType::f32, Device::cuda());
    Tensor mean = Tensor::empty({N}, DType::f32, Device::cuda());
    Tensor rstd = Tensor::empty({N}, DType::f32, Device::cuda());
    ops::layernorm_forward(out, mean, rstd, x, w, b, 1e-5f);
    std::vector<Tensor> runs;
    for (int r = 0; r < 2; ++r) {
        Tensor dx = Tensor::zeros({N, C}, DType::f32, Device::cuda());
        Tensor dw = Tensor::zeros({C}, DType::f32, Device::cuda());
        Tensor db = Tensor::zeros({C}, DType::f32, Device::cuda());
        ops::layernorm_backward(dx, dw, db, g, x, w, mean, rstd);
        runs.push_back(dw);
        runs.push_back(db);
    }
    EXPECT_TRUE(bytes_equal(runs[0], runs[2]));
    EXPECT_TRUE(bytes_equal(runs[1], runs[3]));
}

// RunConfig::device (issue 13): the same forward_backward of a tiny Llama (GQA, RoPE, SwiGLU,
// RMSNorm, untied head), with its activations, weights and gradients on cuda, gives the CPU run's
// loss and gradients to f32 tolerance. NOTE(issue 13): written and compiled in a session without
// a GPU; it has not run yet (it skips there, as every CudaDevice test does).
TEST_F(CudaDevice, TinyLlamaForwardBackwardMatchesCpu) {
    const models::ModelConfig cfg = models::parse_hf_config(
        R"({"model_type": "llama", "vocab_size": 53, "hidden_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 40, "max_position_embeddings": 32, "rms_norm_eps": 1e-6})",
        "tiny llama");
    Rng rng(5);
    const models::TrainBatch batch{random_ints(rng, {2, 7}, DType::i32, 0, cfg.vocab_size - 1),
                                   random_ints(rng, {2, 7}, DType::i32, 0, cfg.vocab_size - 1)};
    const std::vector<std::string> names = {"embed.tokens", "blocks.0.attn.qkv.weight",
                                            "blocks.1.mlp.down.weight", "head.norm.weight",
                                            "head.out.weight"};
    struct Run {
        models::LossStats stats;
        std::vector<Tensor> grads;  // on the host, in `names` order
    };
    auto run_on = [&](Device dev) {
        models::Transformer model(cfg, {.device = dev});
        models::DenseParams params(model.layout(), DType::f32, true, dev);
        params.init(1);
        params.bind(model.binding());
        params.zero_grads();
        Run r;
        r.stats = model.forward_backward(batch, 1.0f / 14.0f);
        for (const std::string& n : names) {
            r.grads.push_back(params.grad(model.layout().id(n)).to(Device::cpu()));
        }
        return r;
    };
    const Run cpu = run_on(Device::cpu()), gpu = run_on(Device::cuda());
    EXPECT_EQ(gpu.stats.n_tokens, cpu.stats.n_tokens);
    EXPECT_NEAR(gpu.stats.loss_sum, cpu.stats.loss_sum, 1e-4 * std::fabs(cpu.stats.loss_sum));
    for (size_t i = 0; i < names.size(); ++i) {
        EXPECT_TRUE(all_close(gpu.grads[i], ops::reference::from_tensor(cpu.grads[i]),
                              tol_for(DType::f32), names[i]));
    }
}

// ops::adam_update (issue 13) against optim::Optimizer on the host, the CPU's update: AdamW with
// decay and a bf16 compute copy, Adam (L2) without bias correction and an f32 copy. Compiled, not
// yet run on a GPU.
TEST_F(CudaDevice, AdamUpdateMatchesTheCpuOptimizer) {
    Rng rng(31);
    const int64_t n = 1000;
    for (const optim::Kind kind : {optim::Kind::adamw, optim::Kind::adam}) {
        optim::Options o;
        o.kind = kind;
        o.weight_decay = 0.1f;
        o.bias_correction = kind == optim::Kind::adamw;
        const DType ct = kind == optim::Kind::adamw ? DType::bf16 : DType::f32;
        const optim::Optimizer opt(o);
        Tensor p = random_tensor(rng, {n}, DType::f32), g = random_tensor(rng, {n}, DType::f32);
        Tensor m = random_tensor(rng, {n}, DType::f32, -0.1, 0.1);
        Tensor v = random_tensor(rng, {n}, DType::f32, 0.0, 0.1);
        Tensor pd = p.to(Device::cuda()), gd = g.to(Device::cuda()), md = m.to(Device::cuda()),
               vd = v.to(Device::cuda());
        Tensor cd = Tensor::empty({n}, ct, Device::cuda()), c = Tensor::empty({n}, ct);
        for (int64_t step = 1; step <= 3; ++step) {
            optim::Segment seg{};
            seg.master = p.data<float>();
            seg.grad = g.data<float>();
            seg.state0 = m.data<float>();
            seg.state1 = v.data<float>();
            seg.compute = c.data_ptr();
            seg.compute_dtype = ct;
            seg.n = n;
            opt.step({&seg, 1}, 1e-2f, step, 0.5f);
            ops::adam_update(pd, md, vd, cd, gd, opt.adam_step(1e-2f, step, 0.5f, true));
        }
        const Tol tol{1e-6, 1e-5};
        EXPECT_TRUE(all_close(pd, ops::reference::from_tensor(p), tol, "master"));
        EXPECT_TRUE(all_close(md, ops::reference::from_tensor(m), tol, "m"));
        EXPECT_TRUE(all_close(vd, ops::reference::from_tensor(v), tol, "v"));
        EXPECT_TRUE(all_close(cd, ops::reference::from_tensor(c), tol_for(ct), "compute"));
    }
}

// zero::Config::device (issue 13): a single-rank stage-0 engine on cuda gives the CPU engine's
// gradient norm and, after two AdamW steps (updates of about lr = 1e-3 per element, well above
// the tolerance), its master weights. f32: the bf16 compute copy is checked in the kernel test
// above. Compiled, not yet run on a GPU, like the tests above.
TEST_F(CudaDevice, ZeroEngineStepOnCudaMatchesCpu) {
    const models::ModelConfig cfg = models::parse_hf_config(
        R"({"model_type": "llama", "vocab_size": 53, "hidden_size": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "intermediate_size": 40, "max_position_embeddings": 32, "rms_norm_eps": 1e-6})",
        "tiny llama");
    Rng rng(9);
    const models::TrainBatch batch{random_ints(rng, {2, 7}, DType::i32, 0, cfg.vocab_size - 1),
                                   random_ints(rng, {2, 7}, DType::i32, 0, cfg.vocab_size - 1)};
    optim::Options o;
    o.weight_decay = 0.1f;
    double sq[2] = {0, 0};
    std::vector<Tensor> master[2];  // per device: every group's master weights, on the host
    for (int i = 0; i < 2; ++i) {
        const Device dev = i == 0 ? Device::cpu() : Device::cuda();
        comm::run_local(1, [&](int, comm::Communicator& c) {
            models::Transformer model(cfg, {.device = dev});
            zero::Config zc;
            zc.device = dev;
            zero::Engine eng(model.layout(), model.binding(), c, zc, DType::f32, o,
                             [&](int g) { return model.grad_groups(g); });
            eng.init_weights(1);
            for (int64_t step = 1; step <= 2; ++step) {
                eng.begin_step(1);
                model.forward_backward(batch, 1.0f / 14.0f, 1.0f, &eng);
                eng.end_micro_batch();
                eng.finish_grads();
                if (step == 1) sq[i] = eng.grad_sq_norm();
                EXPECT_TRUE(eng.grads_finite());
                eng.step(1e-3f, step, 1.0f);
            }
            for (int g = 0; g < model.layout().n_groups(); ++g) {
                master[i].push_back(eng.gather_group(g));
            }
        });
    }
    EXPECT_NEAR(sq[1], sq[0], 1e-4 * sq[0]);
    ASSERT_EQ(master[1].size(), master[0].size());
    for (size_t g = 0; g < master[0].size(); ++g) {
        EXPECT_TRUE(all_close(master[1][g], ops::reference::from_tensor(master[0][g]),
                              Tol{1e-4, 1e-3}, "group " + std::to_string(g)));
    }
}

}  // namespace
}  // namespace zs::backends::cuda
