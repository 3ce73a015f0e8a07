// `zerospeed doctor`: a quick health check of this build on this machine. It verifies a few
// kernels against the double reference and prints their throughput, so a user can tell at once
// whether bf16 runs on AMX / AVX-512-BF16 and what a matmul achieves here.
#include <cmath>
#include <cstdio>
#include <random>

#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "backends/register.h"
#include "base/timer.h"
#include "cli/commands.h"
#include "core/tensor.h"
#include "ops/attention.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/reference/reference.h"

namespace zs::cli {

namespace {

using core::DType;
using core::Tensor;

Tensor random(std::mt19937& g, const core::Shape& s, DType t) {
    Tensor x = Tensor::empty(s, DType::f32);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    float* p = x.data<float>();
    for (int64_t i = 0; i < x.numel(); ++i) p[i] = u(g);
    return x.to(t);
}

const char* isa_name(dnnl::cpu_isa isa) {
    switch (isa) {
        case dnnl::cpu_isa::avx512_core_amx:
            return "avx512_core_amx (AMX bf16/int8)";
        case dnnl::cpu_isa::avx512_core_bf16:
            return "avx512_core_bf16 (AVX-512 BF16)";
        case dnnl::cpu_isa::avx512_core_vnni:
            return "avx512_core_vnni (bf16 emulated in f32)";
        case dnnl::cpu_isa::avx512_core:
            return "avx512_core";
        case dnnl::cpu_isa::avx2:
            return "avx2";
        default:
            return "other";
    }
}

double max_rel_err(const Tensor& got, const ops::reference::DTensor& want) {
    auto g = ops::reference::from_tensor(got);
    double worst = 0;
    for (int64_t i = 0; i < g.numel(); ++i) {
        worst = std::max(worst, std::fabs(g[i] - want[i]) / (1e-3 + std::fabs(want[i])));
    }
    return worst;
}

}  // namespace

int run_doctor(const DoctorOptions& opts) {
    std::printf("backends: %s\n", backends::describe().c_str());
    std::string why = backends::cuda_unavailable_reason();
    if (!why.empty()) std::printf("cuda: %s\n", why.c_str());
    std::printf("oneDNN CPU ISA: %s\n", isa_name(dnnl::get_effective_cpu_isa()));

    std::mt19937 g(301);
    bool ok = true;
    {  // correctness spot checks against the double reference
        Tensor a = random(g, {37, 53}, DType::bf16), b = random(g, {53, 29}, DType::bf16);
        Tensor out = Tensor::empty({37, 29}, DType::f32);
        ops::matmul(out, a, b);
        double e =
            max_rel_err(out, ops::reference::matmul(ops::reference::from_tensor(a),
                                                    ops::reference::from_tensor(b), {}, {}, {}));
        std::printf("check matmul bf16:    max rel err %.2e %s\n", e, e < 1e-3 ? "ok" : "FAIL");
        ok = ok && e < 1e-3;
        Tensor q = random(g, {1, 45, 4, 64}, DType::f32), k = random(g, {1, 45, 2, 64}, DType::f32);
        Tensor o = Tensor::empty({1, 45, 4, 64}, DType::f32);
        ops::attention_forward(o, Tensor(), q, k, k);
        auto r = ops::reference::attention(ops::reference::from_tensor(q),
                                           ops::reference::from_tensor(k),
                                           ops::reference::from_tensor(k), {});
        e = max_rel_err(o, r.out);
        std::printf("check attention f32:  max rel err %.2e %s\n", e, e < 1e-3 ? "ok" : "FAIL");
        ok = ok && e < 1e-3;
    }
    const int64_t n = opts.size;
    for (DType t : {DType::f32, DType::bf16}) {
        Tensor a = random(g, {n, n}, t), b = random(g, {n, n}, t);
        Tensor c = Tensor::empty({n, n}, DType::f32);
        ops::matmul(c, a, b);  // warm-up (primitive creation)
        int iters = 0;
        Timer tm;
        while (tm.seconds() < 0.5 || iters < 2) {
            ops::matmul(c, a, b);
            ++iters;
        }
        double gflops = 2.0 * n * n * n * iters / tm.seconds() / 1e9;
        std::printf("matmul %s %lldx%lldx%lld: %.1f GFLOP/s (%d threads)\n", to_string(t),
                    static_cast<long long>(n), static_cast<long long>(n), static_cast<long long>(n),
                    gflops, omp_get_max_threads());
    }
    std::printf("%s\n", ok ? "doctor: all checks passed" : "doctor: some checks FAILED");
    return ok ? 0 : 1;
}

}  // namespace zs::cli
