// Every key of the transformers config classes zerospeed reads is classified by the parser, and
// settings it does not implement are refused naming key and value (nothing silently ignored).
// The key lists come from transformers itself (tests/fixtures/hf/config_classes.json, written by
// tools/reference/make_config_classes.py from each class's to_dict()).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/json.h"
#include "models/config.h"
#include "tests/test_util.h"

namespace zs::models {
namespace {

nlohmann::json classes() {
    return io::load_json(zs::test::source_path("tests/fixtures/hf/config_classes.json"))
        .at("classes");
}

TEST(ConfigKeys, EveryTransformersKeyIsClassified) {
    int n = 0;
    const nlohmann::json all = classes();
    for (const auto& [type, cfg] : all.items()) {
        for (const auto& [key, value] : cfg.items()) {
            ++n;
            EXPECT_FALSE(config_key_class(type, key).empty())
                << type << ": key '" << key << "' (default " << value.dump()
                << ") is neither used, known irrelevant, nor refused";
        }
    }
    EXPECT_GT(n, 150);
}

TEST(ConfigKeys, DefaultConfigsParseWithNoUnknownKey) {
    const nlohmann::json all = classes();
    for (const auto& [type, cfg] : all.items()) {
        ModelConfig c = parse_hf_config(cfg.dump(), type + " defaults");
        EXPECT_TRUE(c.unknown_keys.empty()) << type << ": " << c.unknown_keys.front();
        EXPECT_EQ(c.model_type, type);
    }
}

TEST(ConfigKeys, SettingsThatChangeTheComputationAreRead) {
    auto cfg = classes();
    // GPT-2: exact GELU, unscaled / layer-scaled attention.
    auto g = cfg.at("gpt2");
    g["activation_function"] = "gelu";
    g["scale_attn_weights"] = false;
    g["scale_attn_by_inverse_layer_idx"] = true;
    ModelConfig c = parse_hf_config(g.dump(), "gpt2");
    EXPECT_EQ(c.gelu, ops::GeluKind::kErf);
    EXPECT_FLOAT_EQ(c.attention_scale(0), 1.0f);
    EXPECT_FLOAT_EQ(c.attention_scale(3), 0.25f);
    EXPECT_GT(c.dropout, 0.0);  // HF's default pdrops are 0.1
    g["activation_function"] = "gelu_new";
    g["scale_attn_weights"] = true;
    c = parse_hf_config(g.dump(), "gpt2");
    EXPECT_EQ(c.gelu, ops::GeluKind::kTanh);
    EXPECT_FLOAT_EQ(c.attention_scale(5), 1.0f / (8.0f * 6.0f));  // head_dim 64, layer 5
    // Mistral: its window on every layer; Qwen2: only with use_sliding_window, from
    // max_window_layers on (or as layer_types says).
    auto m = cfg.at("mistral");
    c = parse_hf_config(m.dump(), "mistral");
    EXPECT_EQ(c.window(0), 4096);
    EXPECT_EQ(c.window(31), 4096);
    m["sliding_window"] = nullptr;
    EXPECT_EQ(parse_hf_config(m.dump(), "mistral").window(0), 0);
    auto q = cfg.at("qwen2");
    q.erase("layer_types");
    EXPECT_EQ(parse_hf_config(q.dump(), "qwen2").window(31), 0);  // use_sliding_window false
    q["use_sliding_window"] = true;  // Qwen2Config's to_dict() has sliding_window null then
    q["sliding_window"] = 4096;
    c = parse_hf_config(q.dump(), "qwen2");
    EXPECT_EQ(c.window(27), 0);
    EXPECT_EQ(c.window(28), 4096);
    q["layer_types"] = std::vector<std::string>(32, "full_attention");
    q["layer_types"][3] = "sliding_attention";
    c = parse_hf_config(q.dump(), "qwen2");
    EXPECT_EQ(c.window(3), 4096);
    EXPECT_EQ(c.window(28), 0);
    // Mixtral: the load-balancing loss counts only with output_router_logits, as in transformers.
    auto x = cfg.at("mixtral");
    EXPECT_EQ(parse_hf_config(x.dump(), "mixtral").moe.train_aux_coef(), 0.0f);
    x["output_router_logits"] = true;
    EXPECT_FLOAT_EQ(parse_hf_config(x.dump(), "mixtral").moe.train_aux_coef(), 0.001f);
}

TEST(ConfigKeys, UnsupportedSettingsAreRefusedNamingKeyAndValue) {
    auto cfg = classes();
    auto expect_refused = [](const nlohmann::json& j, const std::string& key) {
        try {
            parse_hf_config(j.dump(), "config.json");
            ADD_FAILURE() << key << " accepted";
        } catch (const ConfigError& e) {
            EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
        }
    };
    auto g = cfg.at("gpt2");
    g["add_cross_attention"] = true;
    expect_refused(g, "add_cross_attention");
    g = cfg.at("gpt2");
    g["activation_function"] = "relu";
    expect_refused(g, "activation_function");
    auto l = cfg.at("llama");
    l["quantization_config"] = {{"quant_method", "gptq"}, {"bits", 4}};
    expect_refused(l, "quantization_config");
    l = cfg.at("llama");
    l["pruned_heads"] = {{"0", {1, 2}}};
    expect_refused(l, "pruned_heads");
    l = cfg.at("llama");
    l["hidden_act"] = "gelu";
    expect_refused(l, "hidden_act");
    auto x = cfg.at("mixtral");
    x["router_jitter_noise"] = 0.1;
    expect_refused(x, "router_jitter_noise");
    auto q = cfg.at("qwen2");
    q["layer_types"][0] = "chunked_attention";
    expect_refused(q, "layer_types");
}

TEST(ConfigKeys, ExportRoundTripsEverySettingThatChangesTheComputation) {
    auto cfg = classes();
    auto l = cfg.at("llama");
    l["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 8192}};
    l.erase("rope_parameters");
    l["rope_theta"] = 500000.0;
    l["partial_rotary_factor"] = 0.5;
    auto g = cfg.at("gpt2");
    g["activation_function"] = "gelu";
    g["scale_attn_by_inverse_layer_idx"] = true;
    auto q = cfg.at("qwen2");
    q["use_sliding_window"] = true;
    q["sliding_window"] = 512;
    q["max_window_layers"] = 5;
    auto x = cfg.at("mixtral");
    x["sliding_window"] = 1024;
    x["output_router_logits"] = true;
    for (const auto& j : {l, g, q, x, cfg.at("mistral")}) {
        ModelConfig a = parse_hf_config(j.dump(), "original");
        ModelConfig b = parse_hf_config(to_hf_config_json(a), "exported");
        const std::string what = a.model_type;
        EXPECT_EQ(b.rope_inv_freq(), a.rope_inv_freq()) << what;
        EXPECT_EQ(b.rotary_dim, a.rotary_dim) << what;
        EXPECT_EQ(b.gelu, a.gelu) << what;
        for (int64_t layer = 0; layer < a.n_layers; ++layer) {
            EXPECT_EQ(b.window(layer), a.window(layer)) << what << " layer " << layer;
            EXPECT_EQ(b.attention_scale(layer), a.attention_scale(layer)) << what;
        }
        EXPECT_EQ(b.moe.train_aux_coef(), a.moe.train_aux_coef()) << what;
        EXPECT_EQ(b.n_params(), a.n_params()) << what;
        EXPECT_TRUE(b.unknown_keys.empty()) << what;
    }
}

}  // namespace
}  // namespace zs::models
