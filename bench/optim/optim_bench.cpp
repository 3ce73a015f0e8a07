// The CPU optimizer step on 100M parameters (one flat fp32 partition: master, grad, two Adam
// states), in parameters/s and GB/s, next to STREAM triad in the same process (the bandwidth
// bound: an AdamW step moves 28 bytes per parameter in fp32, 30 with a bf16 compute copy).
// The same step through DeepSpeed's cpu_adam and torch.optim.AdamW: bench/peers/adamw_peers.py.
//
//   build/bench/optim_bench --benchmark_format=json
#include <cmath>
#include <cstdlib>
#include <vector>

#include <benchmark/benchmark.h>

#include "core/buffer.h"
#include "optim/optimizer.h"
#include "stream.h"

namespace {

constexpr int64_t kParams = 100'000'000;

float* alloc(int64_t n, float value) {
    auto* p = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(n) * sizeof(float)));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = value;
    return p;
}

// args: kind (0 adamw, 1 lion, 2 sgd+momentum), compute copy (0 none, 1 bf16)
void BM_optimizer_step(benchmark::State& st) {
    const auto kind = static_cast<zs::optim::Kind>(
        st.range(0) == 0 ? 0 : (st.range(0) == 1 ? 3 : 2));  // adamw / lion / sgd
    zs::optim::Options o;
    o.kind = kind;
    o.weight_decay = 0.01f;
    o.momentum = 0.9f;
    zs::optim::Optimizer opt(o);
    float* master = alloc(kParams, 0.5f);
    float* grad = alloc(kParams, 1e-3f);
    float* m = alloc(kParams, 0.0f);
    float* v = opt.n_states() > 1 ? alloc(kParams, 0.0f) : nullptr;
    void* compute = st.range(1) ? std::aligned_alloc(64, kParams * 2) : nullptr;
    zs::optim::Segment seg{master, grad, m, v, compute, zs::core::DType::bf16, kParams, true};
    int64_t step = 0;
    for (auto _ : st) {
        opt.step({&seg, 1}, 1e-4f, ++step, 1.0f);
        benchmark::ClobberMemory();
    }
    if (!std::isfinite(master[12345]) || master[12345] >= 0.5f) {
        st.SkipWithError("the step did not move the parameters");
    }
    // Bytes moved per parameter: read grad + master + states, write master + states (+ copy).
    const double bytes = 4.0 + 8.0 + 8.0 * opt.n_states() + (compute ? 2.0 : 0.0);
    st.counters["params/s"] = benchmark::Counter(static_cast<double>(kParams) * st.iterations(),
                                                 benchmark::Counter::kIsRate);
    st.counters["GB/s"] =
        benchmark::Counter(bytes * kParams * st.iterations() / 1e9, benchmark::Counter::kIsRate);
    std::free(master);
    std::free(grad);
    std::free(m);
    std::free(v);
    std::free(compute);
}

}  // namespace

BENCHMARK(zs::bench::BM_stream_triad)->Name("BM_stream_triad")->UseRealTime();
BENCHMARK(BM_optimizer_step)
    ->ArgNames({"kind", "bf16_copy"})
    ->Args({0, 0})
    ->Args({0, 1})
    ->Args({1, 0})
    ->Args({2, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK_MAIN();
