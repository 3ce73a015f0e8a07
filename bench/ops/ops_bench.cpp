// Kernel benchmarks: each checks its result against the reference once, then times.
//   GEMM (f32, bf16) through ops::matmul, next to oneDNN's matmul primitive called directly and
//   OpenBLAS sgemm on the same shapes (the ceilings); memory-bound ops (layernorm, rmsnorm,
//   softmax, gelu, add) in GB/s (bytes read + written) next to STREAM copy/triad measured in the
//   same process (bench/stream.h); attention forward/backward in tokens/s.
// Run: build/bench/ops_bench --benchmark_format=json (see docs/BENCHMARKS.md).
#include <cmath>
#include <cstring>
#include <random>

#include <benchmark/benchmark.h>
#include <cblas.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include "backends/cpu/cpu_kernels.h"
#include "backends/register.h"
#include "core/half.h"
#include "core/quant.h"
#include "core/tensor.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/paged_attention.h"
#include "ops/reference/reference.h"
#include "ops/softmax.h"
#include "stream.h"

namespace {

using zs::core::DType;
using zs::core::Tensor;

Tensor rnd(const zs::core::Shape& s, DType t, uint64_t seed = 1) {
    Tensor f = Tensor::empty(s, DType::f32);
    std::mt19937_64 g(seed);
    std::uniform_real_distribution<float> u(-1, 1);
    float* p = f.data<float>();
    for (int64_t i = 0; i < f.numel(); ++i) p[i] = u(g);
    return f.to(t);
}

void check_matmul_once(DType t) {
    static bool done[2] = {false, false};
    if (done[t == DType::bf16]) return;
    done[t == DType::bf16] = true;
    Tensor a = rnd({33, 47}, t), b = rnd({47, 29}, t), c = Tensor::empty({33, 29}, DType::f32);
    zs::ops::matmul(c, a, b);
    auto want = zs::ops::reference::matmul(zs::ops::reference::from_tensor(a),
                                           zs::ops::reference::from_tensor(b), {}, {}, {});
    auto got = zs::ops::reference::from_tensor(c);
    for (int64_t i = 0; i < got.numel(); ++i) {
        if (std::fabs(got[i] - want[i]) > 1e-3 * (1 + std::fabs(want[i]))) {
            std::fprintf(stderr, "matmul self-check failed\n");
            std::abort();
        }
    }
}

// args: M, K, N, dtype (0 f32, 1 bf16)
void BM_matmul(benchmark::State& st) {
    const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
    DType t = st.range(3) ? DType::bf16 : DType::f32;
    check_matmul_once(t);
    Tensor a = rnd({M, K}, t), b = rnd({K, N}, t), c = Tensor::empty({M, N}, DType::f32);
    zs::ops::matmul(c, a, b);
    for (auto _ : st) {
        zs::ops::matmul(c, a, b);
        benchmark::DoNotOptimize(c.data_ptr());
    }
    st.counters["GFLOP/s"] =
        benchmark::Counter(2.0 * M * N * K * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

// The decode step's linear layers: M <= 4 rows times a weight matrix [N, K] (SmolLM2-135M's
// lm_head 49152 x 576 and MLP 1536 x 576). Memory-bound: the figure is weight GB/s, to compare
// with the STREAM triad of the same run; the peer is oneDNN's matmul primitive on the same shape.
void BM_decode_linear(benchmark::State& st) {
    const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
    DType t = st.range(3) ? DType::bf16 : DType::f32;
    Tensor x = rnd({M, K}, t), w = rnd({N, K}, t), y = Tensor::empty({M, N}, t);
    zs::ops::linear_forward(y, x, w);
    for (auto _ : st) {
        zs::ops::linear_forward(y, x, w);
        benchmark::DoNotOptimize(y.data_ptr());
    }
    st.counters["weight_GB/s"] = benchmark::Counter(
        static_cast<double>(w.nbytes()) * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

// add(n, k) for each matrix SmolLM2-135M reads per decoded token: 30 layers of fused qkv
// 960 x 576, o 576 x 576, gate_up 3072 x 576 and down 576 x 1536, then the lm_head 49152 x 576;
// one_layer: the first layer's four alone (a few MB, in cache).
template <class F>
void add_token_matrices(const F& add, bool one_layer) {
    for (int l = 0; l < (one_layer ? 1 : 30); ++l) {
        add(960, 576);
        add(576, 576);
        add(3072, 576);
        add(576, 1536);
    }
    if (!one_layer) add(49152, 576);
}

// One decode token's worth of SmolLM2-135M's matrices, each read once per iteration as in
// generation (30 layers of fused qkv 960 x 576, o 576 x 576, gate_up 3072 x 576, down 576 x 1536,
// then the lm_head 49152 x 576): 540 MB in f32, so every weight comes from DRAM, and the cost of
// starting each small product shows. args: dtype. The roofline is the STREAM triad.
void BM_decode_token(benchmark::State& st) {
    DType t = st.range(0) ? DType::bf16 : DType::f32;
    struct Mat {
        Tensor w, x, y;
    };
    std::vector<Mat> mats;
    auto add = [&](int64_t n, int64_t k) {
        mats.push_back(
            {rnd({n, k}, t, mats.size() + 7), rnd({1, k}, t, 3), Tensor::empty({1, n}, t)});
    };
    add_token_matrices(add, false);
    double bytes = 0;
    for (const Mat& m : mats) bytes += static_cast<double>(m.w.nbytes());
    for (auto _ : st) {
        for (const Mat& m : mats) zs::ops::linear_forward(m.y, m.x, m.w);
        benchmark::DoNotOptimize(mats.back().y.data_ptr());
    }
    st.counters["weight_GB/s"] =
        benchmark::Counter(bytes * st.iterations() / 1e9, benchmark::Counter::kIsRate);
    st.counters["tokens/s"] =
        benchmark::Counter(static_cast<double>(st.iterations()), benchmark::Counter::kIsRate);
}

// An n x k matrix of type qt (k rounded up to its block: K-quants 576 -> 768) of random bytes
// with every f16 scale field set to a small normal value: timing does not depend on the codes.
zs::core::QTensor random_qtensor(zs::core::QType qt, int64_t n, int64_t k, std::mt19937_64& g) {
    const zs::core::QTypeTraits& tr = zs::core::qtype_traits(qt);
    k = (k + tr.block_size - 1) / tr.block_size * tr.block_size;
    zs::core::QTensor w = zs::core::QTensor::empty(qt, n, k);
    uint8_t* p = w.mutable_data();
    for (size_t i = 0; i < w.nbytes(); ++i) p[i] = static_cast<uint8_t>(g());
    const uint16_t h = 0x2000;  // f16 2^-7: a normal scale
    for (int64_t b = 0; b < n * k / tr.block_size; ++b) {
        uint8_t* blk = p + b * tr.block_bytes;
        std::memcpy(blk + (qt == zs::core::QType::q6_k ? 208 : 0), &h, 2);
        if (qt == zs::core::QType::q4_1 || qt == zs::core::QType::q5_1 ||
            qt == zs::core::QType::q4_k || qt == zs::core::QType::q5_k) {
            std::memcpy(blk + 2, &h, 2);
        }
    }
    return w;
}

// BM_decode_token with block-quantized matrices (ops::quant_linear_forward): the same shapes, the
// activations bf16 as in generation. Blocks are random bytes with every f16 scale field set to a
// small normal value (timing does not depend on the codes). args: type (core::QType index),
// layout (0: the file's rows, 1: interleaved16 as loaded, for the types that have it), size (0:
// the whole token; 1: one layer's four matrices without the LM head, ~3 MB in cache: the kernel's
// compute rather than the memory's speed).
void BM_decode_token_quant(benchmark::State& st) {
    const auto qt = static_cast<zs::core::QType>(st.range(0));
    struct Mat {
        zs::core::QTensor w;
        Tensor x, y;
    };
    std::vector<Mat> mats;
    std::mt19937_64 g(11);
    auto add = [&](int64_t n, int64_t k) {
        zs::core::QTensor w = random_qtensor(qt, n, k, g);
        if (st.range(1) == 1) w = zs::core::interleave16(w);
        mats.push_back({w, rnd({1, w.cols()}, DType::bf16, 3), Tensor::empty({1, n}, DType::bf16)});
    };
    add_token_matrices(add, st.range(2) == 1);
    double bytes = 0;
    for (const Mat& m : mats) bytes += static_cast<double>(m.w.nbytes());
    for (auto _ : st) {
        for (const Mat& m : mats) zs::ops::quant_linear_forward(m.y, m.x, m.w);
        benchmark::DoNotOptimize(mats.back().y.data_ptr());
    }
    st.SetLabel(std::string(zs::core::to_string(qt)) + (st.range(1) == 1 ? " interleaved16" : ""));
    st.counters["weight_GB/s"] =
        benchmark::Counter(bytes * st.iterations() / 1e9, benchmark::Counter::kIsRate);
    st.counters["tokens/s"] =
        benchmark::Counter(static_cast<double>(st.iterations()), benchmark::Counter::kIsRate);
}

// The load-time repack (core::interleave16) of one 3072 x 4096 matrix (a 7B model's FFN shape),
// file bytes per second. args: type (core::QType index).
void BM_interleave16(benchmark::State& st) {
    const auto qt = static_cast<zs::core::QType>(st.range(0));
    std::mt19937_64 g(14);
    const zs::core::QTensor w = random_qtensor(qt, 3072, 4096, g);
    for (auto _ : st) {
        const zs::core::QTensor p = zs::core::interleave16(w);
        benchmark::DoNotOptimize(p.data());
    }
    st.SetLabel(std::string(zs::core::to_string(qt)));
    st.counters["file_GB/s"] = benchmark::Counter(
        static_cast<double>(w.nbytes()) * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

// Prefill of M = 512 tokens through one SmolLM2-135M layer's quantized linears (q, k, v, o, gate,
// up, down: N x K = 576x576, 192x576, 192x576, 576x576, 1536x576, 1536x576, 576x1536; K rounded
// up to the block for K-quants), f32 activations (`--dtype auto` on a CPU without native bf16),
// weights interleaved16 as loaded, by each prefill route (qgemv.h QuantPrefill). Checks one
// product against a dequantize-then-multiply reference first. Reports GFLOP/s (2 M N K per
// product) and layer-tokens/s. args: type (core::QType index), route (1 dequant, 2 int8), shape
// (0..3: 576x576, 192x576, 1536x576, 576x1536 alone; 4: the whole layer).
void BM_prefill_quant(benchmark::State& st) {
    const auto qt = static_cast<zs::core::QType>(st.range(0));
    const auto route = static_cast<zs::backends::cpu::QuantPrefill>(st.range(1));
    constexpr int64_t M = 512;
    struct Mat {
        zs::core::QTensor w;
        Tensor x, y;
    };
    std::vector<Mat> mats;
    std::mt19937_64 g(12);
    auto add = [&](int64_t n, int64_t k) {
        const zs::core::QTensor w = random_qtensor(qt, n, k, g);
        k = w.cols();
        mats.push_back({zs::core::interleave16(w), rnd({M, k}, DType::f32, 5),
                        Tensor::empty({M, n}, DType::f32)});
    };
    const int64_t shapes[4][2] = {{576, 576}, {192, 576}, {1536, 576}, {576, 1536}};
    const int layer[7] = {0, 1, 1, 0, 2, 2, 3};
    if (st.range(2) < 4) {
        add(shapes[st.range(2)][0], shapes[st.range(2)][1]);
    } else {
        for (int s : layer) add(shapes[s][0], shapes[s][1]);
    }
    zs::backends::cpu::CpuKernels kern;
    {  // check: one product against the dequantized weights in double precision
        const Mat& m = mats.front();
        kern.quant_prefill(m.y, m.x, m.w, Tensor(), 0.0f, route);
        const int64_t n = m.w.rows(), k = m.w.cols();
        std::vector<uint8_t> row(static_cast<size_t>(m.w.row_bytes()));
        std::vector<float> wf(static_cast<size_t>(k));
        for (int64_t r = 0; r < n; r += 37) {
            zs::core::deinterleave_row(m.w, r, row.data());
            zs::core::dequantize(qt, row.data(), wf.data(), k);
            for (int64_t i = 0; i < M; i += 101) {
                double want = 0.0, mag = 0.0;
                for (int64_t c = 0; c < k; ++c) {
                    want += static_cast<double>(wf[static_cast<size_t>(c)]) *
                            m.x.data<float>()[i * k + c];
                    mag += std::fabs(wf[static_cast<size_t>(c)]);
                }
                // Q8 activations: at most half a step (max|x| / 127 <= 1 / 127) per element.
                if (std::fabs(m.y.data<float>()[i * n + r] - want) > mag / 254.0 + 1e-3) {
                    std::fprintf(stderr, "prefill self-check failed\n");
                    std::abort();
                }
            }
        }
    }
    double flops = 0;
    for (const Mat& m : mats) flops += 2.0 * M * static_cast<double>(m.w.rows() * m.w.cols());
    for (auto _ : st) {
        for (const Mat& m : mats) kern.quant_prefill(m.y, m.x, m.w, Tensor(), 0.0f, route);
        benchmark::DoNotOptimize(mats.back().y.data_ptr());
    }
    st.SetLabel(std::string(zs::core::to_string(qt)) + " " + zs::backends::cpu::to_string(route));
    st.counters["GFLOP/s"] =
        benchmark::Counter(flops * st.iterations() / 1e9, benchmark::Counter::kIsRate);
    st.counters["tokens/s"] =
        benchmark::Counter(static_cast<double>(M * st.iterations()), benchmark::Counter::kIsRate);
}

void BM_decode_linear_onednn(benchmark::State& st) {
    const int64_t M = st.range(0), N = st.range(1), K = st.range(2);
    auto dt = st.range(3) ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
    DType t = st.range(3) ? DType::bf16 : DType::f32;
    Tensor x = rnd({M, K}, t), w = rnd({N, K}, t), y = Tensor::empty({M, N}, DType::f32);
    dnnl::engine eng(dnnl::engine::kind::cpu, 0);
    dnnl::stream s(eng);
    using tag = dnnl::memory::format_tag;
    dnnl::memory::desc xmd({M, K}, dt, tag::ab), wmd({K, N}, dt, tag::ba),
        ymd({M, N}, dnnl::memory::data_type::f32, tag::ab);
    dnnl::matmul prim(dnnl::matmul::primitive_desc(dnnl::matmul::desc(xmd, wmd, ymd), eng));
    dnnl::memory xm(xmd, eng, x.data_ptr()), wm(wmd, eng, w.data_ptr()), ym(ymd, eng, y.data_ptr());
    for (auto _ : st) {
        prim.execute(s, {{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, ym}});
        s.wait();
    }
    st.counters["weight_GB/s"] = benchmark::Counter(
        static_cast<double>(w.nbytes()) * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

void decode_args(benchmark::internal::Benchmark* b) {
    for (int64_t dt : {0, 1}) {
        b->Args({1, 49152, 576, dt})->Args({4, 49152, 576, dt})->Args({8, 49152, 576, dt});
        b->Args({1, 1536, 576, dt});
    }
}

// The same GEMM through oneDNN's matmul primitive directly (created once, outside the loop).
void BM_matmul_onednn_direct(benchmark::State& st) {
    const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
    auto dt = st.range(3) ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
    DType t = st.range(3) ? DType::bf16 : DType::f32;
    Tensor a = rnd({M, K}, t), b = rnd({K, N}, t), c = Tensor::empty({M, N}, DType::f32);
    dnnl::engine eng(dnnl::engine::kind::cpu, 0);
    dnnl::stream s(eng);
    using tag = dnnl::memory::format_tag;
    dnnl::memory::desc amd({M, K}, dt, tag::ab), bmd({K, N}, dt, tag::ab),
        cmd({M, N}, dnnl::memory::data_type::f32, tag::ab);
    dnnl::matmul prim(dnnl::matmul::primitive_desc(dnnl::matmul::desc(amd, bmd, cmd), eng));
    dnnl::memory am(amd, eng, a.data_ptr()), bm(bmd, eng, b.data_ptr()), cm(cmd, eng, c.data_ptr());
    for (auto _ : st) {
        prim.execute(s, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
        s.wait();
    }
    st.counters["GFLOP/s"] =
        benchmark::Counter(2.0 * M * N * K * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

void BM_sgemm_openblas(benchmark::State& st) {
    const int64_t M = st.range(0), K = st.range(1), N = st.range(2);
    Tensor a = rnd({M, K}, DType::f32), b = rnd({K, N}, DType::f32),
           c = Tensor::empty({M, N}, DType::f32);
    openblas_set_num_threads(omp_get_max_threads());
    for (auto _ : st) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(M),
                    static_cast<int>(N), static_cast<int>(K), 1.0f, a.data<float>(),
                    static_cast<int>(K), b.data<float>(), static_cast<int>(N), 0.0f,
                    c.data<float>(), static_cast<int>(N));
    }
    st.counters["GFLOP/s"] =
        benchmark::Counter(2.0 * M * N * K * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

void gemm_args(benchmark::internal::Benchmark* b) {
    for (int dt : {0, 1}) {
        b->Args({2048, 2048, 2048, dt});
        b->Args({4096, 768, 3072, dt});  // GPT-2 MLP up: tokens x C -> 4C
        b->Args({4096, 3072, 768, dt});  // MLP down
        b->Args({4096, 768, 2304, dt});  // fused qkv
    }
}

// Memory-bound ops over rows of C: args rows, C, dtype. Bytes = read + written.
template <int Op>
void BM_rowwise(benchmark::State& st) {
    const int64_t R = st.range(0), C = st.range(1);
    DType t = st.range(2) ? DType::bf16 : DType::f32;
    Tensor x = rnd({R, C}, t), out = Tensor::empty({R, C}, t), y = rnd({R, C}, t, 2);
    Tensor w = rnd({C}, t, 3), bb = rnd({C}, t, 4), rstd = Tensor::empty({R}, DType::f32),
           mean = Tensor::empty({R}, DType::f32);
    double bytes_per = 2.0 * static_cast<double>(x.nbytes());
    for (auto _ : st) {
        if constexpr (Op == 0) zs::ops::layernorm_forward(out, mean, rstd, x, w, bb, 1e-5f);
        if constexpr (Op == 1) zs::ops::rmsnorm_forward(out, rstd, x, w, 1e-5f);
        if constexpr (Op == 2) zs::ops::softmax_forward(out, x);
        if constexpr (Op == 3) zs::ops::gelu_forward(out, x);
        if constexpr (Op == 4) zs::ops::add(out, x, y);
        benchmark::DoNotOptimize(out.data_ptr());
    }
    if (Op == 4) bytes_per *= 1.5;
    st.counters["GB/s"] =
        benchmark::Counter(bytes_per * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

void row_args(benchmark::internal::Benchmark* b) {
    // 32768 x 768 rows: 100 MB (f32) per tensor, well past the last-level cache.
    b->Args({32768, 768, 0})->Args({32768, 768, 1})->Args({1024, 50257, 0});
}

// args: T, dtype; B = 4, NH = 12, HS = 64 (GPT-2 small); causal.
template <bool Backward>
void BM_attention(benchmark::State& st) {
    const int64_t B = 4, T = st.range(0), NH = 12, HS = 64;
    DType t = st.range(1) ? DType::bf16 : DType::f32;
    Tensor q = rnd({B, T, NH, HS}, t, 1), k = rnd({B, T, NH, HS}, t, 2),
           v = rnd({B, T, NH, HS}, t, 3);
    Tensor o = Tensor::empty({B, T, NH, HS}, t), lse = Tensor::empty({B, NH, T}, DType::f32);
    Tensor dout = rnd({B, T, NH, HS}, t, 4), dq = Tensor::empty(q.shape(), t),
           dk = Tensor::empty(k.shape(), t), dv = Tensor::empty(v.shape(), t);
    zs::ops::attention_forward(o, lse, q, k, v);
    for (auto _ : st) {
        if constexpr (Backward) {
            zs::ops::attention_backward(dq, dk, dv, dout, q, k, v, o, lse);
        } else {
            zs::ops::attention_forward(o, lse, q, k, v);
        }
    }
    st.counters["tokens/s"] = benchmark::Counter(static_cast<double>(B * T) * st.iterations(),
                                                 benchmark::Counter::kIsRate);
    // Causal: half the T^2 score matrix; 4 * HS flops per score forward (QK^T and PV).
    double flops = (Backward ? 2.5 : 1.0) * 4.0 * B * NH * HS * T * T / 2.0;
    st.counters["GFLOP/s"] =
        benchmark::Counter(flops * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

// One decode token's attention over a KV cache of T positions, SmolLM2-135M's shape: 30 layers,
// 9 query heads over 3 kv heads of 64 dims. Each iteration reads the next 30 of C per-layer
// caches: C = 96 (41 MB at T = 600 in bf16) brings the K/V rows from memory as in generation,
// where the weights streamed between layers evict them; C = 1 keeps them in cache (the kernel's
// compute alone). args: T, C, layout (0: token-major [T, NKV, HS] buffers; 1: head-major
// [NKV, T, HS] seen through a transposed view, as models::ContiguousKvCache keeps them on the
// CPU), dtype of the cache and the query (0: bf16, `--kv-cache-dtype bf16`; 1: f32, the f32
// cache `generate` keeps by default). Counter: KV bytes read per second.
void BM_decode_attention(benchmark::State& st) {
    const int64_t T = st.range(0), NH = 9, NKV = 3, HS = 64, kLayers = 30, kCaches = st.range(1);
    const DType dt = st.range(3) == 1 ? DType::f32 : DType::bf16;
    std::vector<Tensor> ks, vs;
    for (int64_t c = 0; c < kCaches; ++c) {
        if (st.range(2) == 1) {  // head-major storage [1, NKV, T, HS], viewed as [1, T, NKV, HS]
            ks.push_back(rnd({1, NKV, T, HS}, dt, 2 * c + 1).transpose(1, 2));
            vs.push_back(rnd({1, NKV, T, HS}, dt, 2 * c + 2).transpose(1, 2));
            continue;
        }
        ks.push_back(rnd({1, T, NKV, HS}, dt, 2 * c + 1));
        vs.push_back(rnd({1, T, NKV, HS}, dt, 2 * c + 2));
    }
    Tensor q = rnd({1, 1, NH, HS}, dt, 5), o = Tensor::empty({1, 1, NH, HS}, dt);
    int64_t next = 0;
    for (auto _ : st) {
        for (int64_t l = 0; l < kLayers; ++l, next = (next + 1) % kCaches) {
            zs::ops::attention_forward(o, Tensor(), q, ks[static_cast<size_t>(next)],
                                       vs[static_cast<size_t>(next)]);
        }
        benchmark::DoNotOptimize(o.data_ptr());
    }
    const double bytes = 2.0 * kLayers * static_cast<double>(ks[0].nbytes());
    st.counters["kv_GB/s"] =
        benchmark::Counter(bytes * st.iterations() / 1e9, benchmark::Counter::kIsRate);
    st.counters["tokens/s"] =
        benchmark::Counter(static_cast<double>(st.iterations()), benchmark::Counter::kIsRate);
}

// The serving engine's decode attention: S sequences of T cached positions each decode one
// token, over a paged cache (block size 16, SmolLM2-135M's 9 query / 3 kv heads of 64
// dims), the sequences' blocks interleaved in the pool as a busy server leaves them. args: T, S,
// C: each iteration runs the next 30 of C per-layer pools as BM_decode_attention does (C = 1:
// one layer, the rows in cache, the kernel's compute; C = 96: the rows from memory as in
// `generate --kv-cache-dtype bf16`, which decodes through this kernel), D: 1 an f32 cache (the
// server's default under f32 compute, as for a quantized GGUF), 2 int8 and 3 fp8 E4M3
// (`--kv-cache-dtype int8|fp8`: a byte per value, an f16 scale per 32), else bf16. Counter: KV
// bytes/s (the scales included).
void BM_paged_decode_attention(benchmark::State& st) {
    const int64_t T = st.range(0), S = st.range(1), NH = 9, NKV = 3, HS = 64, kBlock = 16;
    const int64_t kCaches = st.range(2), kLayers = kCaches == 1 ? 1 : 30;
    const auto quant = st.range(3) == 2   ? zs::ops::KvQuant::int8
                       : st.range(3) == 3 ? zs::ops::KvQuant::fp8_e4m3
                                          : zs::ops::KvQuant::none;
    // The query's dtype, and the cache's when not quantized (queries f32 as under f32 compute).
    const DType dt = st.range(3) == 0 ? DType::bf16 : DType::f32;
    const int64_t per_seq = (T + 1 + kBlock - 1) / kBlock, n_blocks = per_seq * S;
    std::vector<zs::ops::PagedKvCache> caches;
    std::mt19937_64 g(13);
    for (int64_t c = 0; c < kCaches; ++c) {
        zs::ops::PagedKvCache pc;
        pc.quant = quant;
        if (quant == zs::ops::KvQuant::none) {
            pc.k = rnd({n_blocks, NKV, kBlock, HS}, dt, 2 * c + 1);
            pc.v = rnd({n_blocks, NKV, kBlock, HS}, dt, 2 * c + 2);
        } else {  // random codes (fp8: finite) and scales near what real rows give
            const zs::core::Shape sh{n_blocks, NKV, kBlock, HS},
                ssh{n_blocks, NKV, kBlock, HS / zs::ops::kKvQuantGroup};
            for (Tensor* t : {&pc.k, &pc.v}) {
                *t = Tensor::empty(sh, DType::i8);
                auto* b = t->data<int8_t>();
                for (int64_t i = 0; i < t->numel(); ++i)
                    b[i] = static_cast<int8_t>(static_cast<uint8_t>(g() % 256) & 0xf7);
            }
            for (Tensor* t : {&pc.k_scale, &pc.v_scale}) {
                *t = Tensor::empty(ssh, DType::f16);
                auto* b = t->data<zs::core::f16>();
                for (int64_t i = 0; i < t->numel(); ++i)
                    b[i] = zs::core::f32_to_f16(0.01f + 0.001f * static_cast<float>(g() % 16));
            }
        }
        caches.push_back(std::move(pc));
    }
    std::vector<std::vector<zs::ops::BlockId>> tables(static_cast<size_t>(S));
    std::vector<zs::ops::SeqSlice> seqs;
    for (int64_t i = 0; i < S; ++i) {
        for (int64_t b = 0; b < per_seq; ++b)
            tables[static_cast<size_t>(i)].push_back(static_cast<zs::ops::BlockId>(b * S + i));
        seqs.push_back({i, 1, T, tables[static_cast<size_t>(i)]});
    }
    Tensor q = rnd({S, NH, HS}, dt, 5), o = Tensor::empty({S, NH, HS}, dt);
    int64_t next = 0;
    for (auto _ : st) {
        for (int64_t l = 0; l < kLayers; ++l, next = (next + 1) % kCaches) {
            zs::ops::paged_attention_forward(o, q, caches[static_cast<size_t>(next)], seqs);
        }
        benchmark::DoNotOptimize(o.data_ptr());
    }
    const double per_value = quant != zs::ops::KvQuant::none
                                 ? 1.0 + 2.0 / zs::ops::kKvQuantGroup
                                 : static_cast<double>(zs::core::dtype_size(dt));
    const double bytes = 2.0 * static_cast<double>(kLayers * S * (T + 1) * NKV * HS) * per_value;
    st.counters["kv_GB/s"] =
        benchmark::Counter(bytes * st.iterations() / 1e9, benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(zs::bench::BM_stream_triad)->Name("BM_stream_triad")->UseRealTime();
BENCHMARK(zs::bench::BM_stream_copy)->Name("BM_stream_copy")->UseRealTime();
BENCHMARK(BM_decode_linear)->Apply(decode_args)->UseRealTime();
BENCHMARK(BM_decode_token)->Arg(0)->Arg(1)->UseRealTime();
BENCHMARK(BM_decode_token_quant)
    ->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7}, {0}, {0}})  // q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k
    ->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7}, {1}, {0, 1}})  // interleaved; 1: in cache
    ->UseRealTime();
BENCHMARK(BM_interleave16)->Arg(0)->Arg(5)->Arg(7)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_prefill_quant)
    ->ArgsProduct({{0, 1, 2, 3, 4, 5, 6, 7}, {1, 2}, {4}})  // the interleaved types, whole layer
    ->ArgsProduct({{0, 1, 5, 7}, {1, 2}, {0, 1, 2, 3}})     // Q8_0 Q4_0 Q4_K Q6_K by shape
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_decode_linear_onednn)->Apply(decode_args)->UseRealTime();
BENCHMARK(BM_decode_attention)
    ->Args({600, 96, 0, 0})
    ->Args({600, 1, 0, 0})
    ->Args({600, 96, 1, 0})
    ->Args({600, 1, 1, 0})
    ->Args({600, 96, 1, 1})
    ->Args({600, 1, 1, 1})
    ->Args({600, 96, 0, 1})
    ->Args({300, 96, 1, 1})
    ->UseRealTime();
BENCHMARK(BM_paged_decode_attention)
    ->Args({600, 1, 1, 0})
    ->Args({600, 8, 1, 0})
    ->Args({600, 1, 96, 0})
    ->Args({600, 1, 1, 1})
    ->Args({600, 1, 96, 1})
    ->Args({300, 1, 96, 1})
    ->Args({600, 1, 1, 2})
    ->Args({600, 1, 1, 3})
    ->Args({600, 1, 96, 2})
    ->UseRealTime();
BENCHMARK(BM_matmul)->Apply(gemm_args)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_matmul_onednn_direct)->Apply(gemm_args)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_sgemm_openblas)
    ->Args({2048, 2048, 2048, 0})
    ->Args({4096, 768, 3072, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_rowwise<0>)->Name("BM_layernorm")->Apply(row_args)->UseRealTime();
BENCHMARK(BM_rowwise<1>)->Name("BM_rmsnorm")->Apply(row_args)->UseRealTime();
BENCHMARK(BM_rowwise<2>)->Name("BM_softmax")->Apply(row_args)->UseRealTime();
BENCHMARK(BM_rowwise<3>)->Name("BM_gelu")->Apply(row_args)->UseRealTime();
BENCHMARK(BM_rowwise<4>)->Name("BM_add")->Apply(row_args)->UseRealTime();
BENCHMARK(BM_attention<false>)
    ->Name("BM_attention_fwd")
    ->Args({1024, 0})
    ->Args({1024, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_attention<true>)
    ->Name("BM_attention_bwd")
    ->Args({1024, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

int main(int argc, char** argv) {
    zs::backends::register_all();
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
