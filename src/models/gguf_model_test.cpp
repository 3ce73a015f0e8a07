// A GGUF's settings that change the computation are applied, not dropped: a GGUF written here in
// llama.cpp's layout from the tiny llama_tied_mqa fixture (Q/K rows permuted for llama.cpp's
// interleaved RoPE) with Llama-3.1's RoPE scaling as llama.cpp stores it (a rope_freqs.weight
// tensor of per-dimension divisors) gives the logits of the same weights under a config.json with
// the equivalent "llama3" rope_scaling, and exports that rope_scaling. Keys and tensors the model
// does not use are listed. And (issue 19) a GGUF with Q8_0 matrices keeps them quantized.
#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>

#include "backends/cpu/qgemv.h"
#include "core/quant.h"
#include "io/gguf_writer.h"
#include "io/test_files_test.h"
#include "models/sources.h"
#include "models/transformer.h"
#include "models/weights.h"
#include "tests/test_util.h"

namespace zs::models {
namespace {

namespace ref = ops::reference;

// llama.cpp's Q/K row order (the inverse of io::unpermute_llama_qk).
Tensor permute_qk(const Tensor& w, int64_t n_heads) {
    Tensor src = w.contiguous();
    const int64_t rows = w.size(0), cols = w.size(1), hs = rows / n_heads, half = hs / 2;
    Tensor dst = Tensor::empty(w.shape(), DType::f32);
    for (int64_t h = 0; h < n_heads; ++h)
        for (int64_t i = 0; i < half; ++i)
            for (int64_t j = 0; j < 2; ++j)
                dst.select(0, h * hs + 2 * i + j).copy_from(src.select(0, h * hs + j * half + i));
    (void)cols;
    return dst;
}

Tensor logits_of(const ModelConfig& c, const WeightSource& src, const Tensor& ids) {
    Transformer model(c, RunConfig{});
    DenseParams params(model.layout(), DType::f32, false);
    load_hf_weights(model, params, src);
    params.bind(model.binding());
    return model.forward_logits(ids);
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
    auto da = ref::from_tensor(a), db = ref::from_tensor(b);
    double m = 0;
    for (int64_t i = 0; i < da.numel(); ++i) m = std::max(m, std::fabs(da[i] - db[i]));
    return m;
}

TEST(GgufModel, RopeFreqsAreAppliedAndExportAsLlama3Scaling) {
    const std::string dir = zs::test::source_path("tests/fixtures/hf/llama_tied_mqa");
    ModelFiles hf = open_model(dir);
    ModelConfig scaled = hf.config;  // Llama-3.1's published rope_scaling
    scaled.rope_scaling = {RopeScaling::Kind::llama3, 8.0, 1.0, 4.0, 8192};
    const ModelConfig& c = hf.config;
    ASSERT_EQ(c.rope_theta, 500000.0);

    io::GgufWriter w(32, 3);
    w.set("general.architecture", std::string("llama"));
    w.set("general.name", std::string("tiny"));
    w.set("llama.embedding_length", static_cast<uint32_t>(c.hidden_size));
    w.set("llama.block_count", static_cast<uint32_t>(c.n_layers));
    w.set("llama.feed_forward_length", static_cast<uint32_t>(c.intermediate));
    w.set("llama.attention.head_count", static_cast<uint32_t>(c.n_heads));
    w.set("llama.attention.head_count_kv", static_cast<uint32_t>(c.n_kv_heads));
    w.set("llama.attention.key_length", static_cast<uint32_t>(c.head_dim));
    w.set("llama.context_length", static_cast<uint32_t>(c.max_positions));
    w.set("llama.attention.layer_norm_rms_epsilon", c.norm_eps);
    w.set("llama.rope.freq_base", static_cast<float>(c.rope_theta));
    w.set("llama.expert_weights_scale", 2.5f);  // a key this model does not read
    // rope_freqs: base inv_freq over scaled inv_freq, per rotary pair (as llama.cpp converts).
    const std::vector<double> base = c.rope_inv_freq(), want = scaled.rope_inv_freq();
    Tensor factors = Tensor::empty({static_cast<int64_t>(base.size())}, DType::f32);
    int changed = 0;
    for (size_t i = 0; i < base.size(); ++i) {
        factors.data<float>()[i] = static_cast<float>(base[i] / want[i]);
        changed += base[i] != want[i];
    }
    ASSERT_GE(changed, 3);  // the scaling matters for this model
    w.add_tensor("rope_freqs.weight", factors);
    const WeightSource& src = *hf.weights;
    w.add_tensor("token_embd.weight", src.get("model.embed_tokens.weight").to(DType::f32));
    w.add_tensor("output_norm.weight", src.get("model.norm.weight").to(DType::f32));
    for (int64_t l = 0; l < c.n_layers; ++l) {
        auto hfw = [&](const char* n) {
            return src.get(fmt::format("model.layers.{}.{}", l, n)).to(DType::f32);
        };
        auto put = [&](const char* n, const Tensor& t) {
            w.add_tensor(fmt::format("blk.{}.{}", l, n), t);
        };
        put("attn_norm.weight", hfw("input_layernorm.weight"));
        put("attn_q.weight", permute_qk(hfw("self_attn.q_proj.weight"), c.n_heads));
        put("attn_k.weight", permute_qk(hfw("self_attn.k_proj.weight"), c.n_kv_heads));
        put("attn_v.weight", hfw("self_attn.v_proj.weight"));
        put("attn_output.weight", hfw("self_attn.o_proj.weight"));
        put("ffn_norm.weight", hfw("post_attention_layernorm.weight"));
        put("ffn_gate.weight", hfw("mlp.gate_proj.weight"));
        put("ffn_up.weight", hfw("mlp.up_proj.weight"));
        put("ffn_down.weight", hfw("mlp.down_proj.weight"));
    }
    w.add_tensor("blk.0.attn_rot_embd", factors);  // a tensor this model does not read
    zs::test::TempDir tmp;
    const std::string path = tmp.file("tiny.gguf");
    w.save(path);

    ModelFiles gg = open_model(path);
    EXPECT_EQ(gg.config.rope_freq_factors.size(), base.size());
    EXPECT_EQ(gg.config.unknown_keys, std::vector<std::string>{"llama.expert_weights_scale"});
    const auto* gsrc = dynamic_cast<const GgufSource*>(gg.weights.get());
    ASSERT_NE(gsrc, nullptr);
    EXPECT_EQ(gsrc->unused_tensors(), std::vector<std::string>{"blk.0.attn_rot_embd"});

    zs::test::Rng rng(7);
    Tensor ids = Tensor::empty({1, 48}, DType::i64);
    for (int64_t i = 0; i < 48; ++i) ids.data<int64_t>()[i] = rng.integer(0, c.vocab_size - 1);
    Tensor from_gguf = logits_of(gg.config, *gg.weights, ids);
    Tensor from_scaled = logits_of(scaled, src, ids);
    Tensor from_plain = logits_of(c, src, ids);
    EXPECT_LT(max_abs_diff(from_gguf, from_scaled), 1e-4);
    EXPECT_GT(max_abs_diff(from_gguf, from_plain), 1e-3);  // ignoring rope_freqs would show

    // Exported as config.json: the llama3 rope_scaling those factors came from.
    ModelConfig back = parse_hf_config(to_hf_config_json(gg.config), "exported");
    EXPECT_EQ(back.rope_scaling.kind, RopeScaling::Kind::llama3);
    EXPECT_EQ(back.rope_scaling.factor, 8.0);
    EXPECT_EQ(back.rope_scaling.original_max_positions, 8192);
    EXPECT_TRUE(back.rope_freq_factors.empty());
    // Factors no llama3 scaling produces are refused at export, not written wrong.
    ModelConfig odd = gg.config;
    odd.rope_freq_factors[0] = 3.0f;
    EXPECT_THROW(to_hf_config_json(odd), NotSupported);
}

// Issue 19: a GGUF whose ffn_down matrices are Q8_0 (the only ones of this tiny model with rows a
// multiple of 32) keeps them quantized: the blocks' groups hold their other parameters densely on
// their own (DenseParams' mixed groups), and the logits equal the dequantized model's: exactly up
// to f32 rounding on a prefill batch, within the Q8 activation rounding on a decode-sized one.
TEST(GgufModel, QuantizedMatricesStayQuantizedAndMatchTheDequantizedModel) {
    const std::string dir = zs::test::source_path("tests/fixtures/hf/llama_tied_mqa");
    ModelFiles hf = open_model(dir);
    const ModelConfig& c = hf.config;
    io::GgufWriter w(32, 3);
    w.set("general.architecture", std::string("llama"));
    w.set("llama.embedding_length", static_cast<uint32_t>(c.hidden_size));
    w.set("llama.block_count", static_cast<uint32_t>(c.n_layers));
    w.set("llama.feed_forward_length", static_cast<uint32_t>(c.intermediate));
    w.set("llama.attention.head_count", static_cast<uint32_t>(c.n_heads));
    w.set("llama.attention.head_count_kv", static_cast<uint32_t>(c.n_kv_heads));
    w.set("llama.attention.key_length", static_cast<uint32_t>(c.head_dim));
    w.set("llama.context_length", static_cast<uint32_t>(c.max_positions));
    w.set("llama.attention.layer_norm_rms_epsilon", c.norm_eps);
    w.set("llama.rope.freq_base", static_cast<float>(c.rope_theta));
    const WeightSource& src = *hf.weights;
    w.add_tensor("token_embd.weight", src.get("model.embed_tokens.weight").to(DType::f32));
    w.add_tensor("output_norm.weight", src.get("model.norm.weight").to(DType::f32));
    for (int64_t l = 0; l < c.n_layers; ++l) {
        auto hfw = [&](const char* n) {
            return src.get(fmt::format("model.layers.{}.{}", l, n)).to(DType::f32).contiguous();
        };
        auto put = [&](const char* n, const Tensor& t) {
            w.add_tensor(fmt::format("blk.{}.{}", l, n), t);
        };
        put("attn_norm.weight", hfw("input_layernorm.weight"));
        put("attn_q.weight", permute_qk(hfw("self_attn.q_proj.weight"), c.n_heads));
        put("attn_k.weight", permute_qk(hfw("self_attn.k_proj.weight"), c.n_kv_heads));
        put("attn_v.weight", hfw("self_attn.v_proj.weight"));
        put("attn_output.weight", hfw("self_attn.o_proj.weight"));
        put("ffn_norm.weight", hfw("post_attention_layernorm.weight"));
        put("ffn_gate.weight", hfw("mlp.gate_proj.weight"));
        put("ffn_up.weight", hfw("mlp.up_proj.weight"));
        const Tensor down = hfw("mlp.down_proj.weight");  // [C, FF], FF = 64
        ASSERT_EQ(down.size(1) % 32, 0);
        std::vector<uint8_t> blocks(static_cast<size_t>(down.numel() / 32 * 34));
        core::quantize(core::QType::q8_0, down.data<float>(), blocks.data(), down.numel());
        w.add_tensor(fmt::format("blk.{}.ffn_down.weight", l), io::GgmlType::q8_0,
                     {down.size(1), down.size(0)}, std::move(blocks));
    }
    zs::test::TempDir tmp;
    const std::string path = tmp.file("tiny_q8.gguf");
    w.save(path);

    ModelFiles gg = open_model(path);
    Transformer model(gg.config, RunConfig{});
    DenseParams dense(model.layout(), DType::f32, false);
    EXPECT_TRUE(load_hf_weights(model, dense, *gg.weights).empty());
    std::vector<core::QTensor> q = load_quantized_weights(model, *gg.weights);
    int n_quantized = 0;
    for (size_t i = 0; i < q.size(); ++i) {
        if (!q[i].defined()) continue;
        ++n_quantized;
        EXPECT_EQ(q[i].type(), core::QType::q8_0);
        EXPECT_NE(model.layout().params()[i].name.find("mlp.down.weight"), std::string::npos);
    }
    EXPECT_EQ(n_quantized, c.n_layers);
    DenseParams quant(model.layout(), DType::f32, std::move(q), {});
    EXPECT_TRUE(load_hf_weights(model, quant, *gg.weights).empty());
    for (int64_t i = 0; i < static_cast<int64_t>(model.layout().params().size()); ++i) {
        EXPECT_EQ(quant.has_weight(static_cast<ParamId>(i)),
                  !quant.quantized(static_cast<ParamId>(i)).defined());
    }
    // Prefill's route on this CPU (backends/cpu/qgemv.h): dequantized tiles + GEMM (exact up to
    // f32 rounding) or the int8 kernels (Q8 activations, decode's bound).
    bool q8_prefill = false;
    for (int64_t i = 0; i < static_cast<int64_t>(model.layout().params().size()); ++i) {
        const core::QTensor& qw = quant.quantized(static_cast<ParamId>(i));
        if (qw.defined()) {
            q8_prefill |= backends::cpu::resolve_prefill(backends::cpu::QuantPrefill::best, qw) ==
                          backends::cpu::QuantPrefill::int8;
        }
    }
    zs::test::Rng rng(11);
    for (int64_t T : {8, 40}) {  // decode-sized (Q8 GEMV), prefill
        Tensor ids = Tensor::empty({1, T}, DType::i64);
        for (int64_t i = 0; i < T; ++i) ids.data<int64_t>()[i] = rng.integer(0, c.vocab_size - 1);
        dense.bind(model.binding());
        const Tensor want = model.forward_logits(ids).clone();
        quant.bind(model.binding());
        const Tensor got = model.forward_logits(ids);
        double scale = 0;
        for (int64_t i = 0; i < want.numel(); ++i) {
            scale = std::max(scale, std::fabs(static_cast<double>(want.data<float>()[i])));
        }
        EXPECT_LT(max_abs_diff(got, want), (T <= 16 || q8_prefill ? 2e-2 : 1e-5) * scale)
            << "T=" << T;
    }
}

}  // namespace
}  // namespace zs::models
