// `zerospeed doctor`: a quick health check of this build on this machine. It verifies a few
// kernels against the double reference and prints their throughput, so a user can tell at once
// whether bf16 runs on AMX / AVX-512-BF16 and what a matmul achieves here.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>

#include <fmt/format.h>
#include <omp.h>

#include "backends/cpu/cpu_kernels.h"
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

// The CPU as a benchmark table should name it: /proc/cpuinfo's model name (often just "Intel(R)
// Xeon(R) Processor" in a VM), family/model, and the vector extensions that decide our kernels.
std::string describe_cpu() {
    std::ifstream f("/proc/cpuinfo");
    std::string line, name = "unknown", family = "?", model = "?";
    std::set<std::string> flags;
    auto value = [](const std::string& l) {
        auto colon = l.find(':');
        if (colon == std::string::npos || colon + 2 > l.size()) return std::string();
        return l.substr(colon + 2);
    };
    // The first processor's block (up to the first empty line) describes them all.
    while (std::getline(f, line) && !line.empty()) {
        if (line.rfind("model name", 0) == 0) name = value(line);
        if (line.rfind("cpu family", 0) == 0) family = value(line);
        if (line.rfind("model\t", 0) == 0) model = value(line);
        if (line.rfind("flags", 0) == 0) {
            std::istringstream words(value(line));
            for (std::string w; words >> w;) flags.insert(w);
        }
    }
    auto has = [&](const char* flag) { return flags.count(flag) != 0; };
    std::string ext = has("avx512f") ? "AVX-512" : has("avx2") ? "AVX2" : "no AVX2";
    if (has("avx512_bf16")) ext += ", AVX512-BF16";
    if (has("amx_bf16")) ext += ", AMX";
    if (!has("avx512_bf16") && !has("amx_bf16")) ext += ", no AVX512-BF16, no AMX";
    return fmt::format("{} (family {} model {}: {}), {} logical CPUs", name, family, model, ext,
                       omp_get_num_procs());
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
    std::printf("cpu: %s\n", describe_cpu().c_str());
    std::printf("matmul routes: %s\n", backends::cpu::describe_matmul_routes().c_str());
    if (opts.brief) return 0;

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
