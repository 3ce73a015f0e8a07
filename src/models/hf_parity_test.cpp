// Parity with Hugging Face transformers: tiny random models of each family saved by
// save_pretrained, with logits, loss, per-parameter gradients and a greedy continuation recorded
// by tools/reference/make_hf_fixtures.py. Required: max |logit diff| < 1e-4, loss to 1e-5,
// gradient relative error < 1e-3 per tensor, greedy tokens identical.
#include <cmath>

#include <gtest/gtest.h>

#include "comm/communicator.h"
#include "io/safetensors.h"
#include "models/kv_cache.h"
#include "models/sources.h"
#include "models/transformer.h"
#include "tests/test_util.h"

namespace zs::models {
namespace {

namespace ref = zs::ops::reference;

struct Loaded {
    ModelFiles files;
    std::unique_ptr<Transformer> model;
    std::unique_ptr<DenseParams> params;
    io::SafetensorsFile fixture;
};

Loaded load(const std::string& name) {
    std::string dir = zs::test::source_path("tests/fixtures/hf/" + name);
    Loaded l{open_model(dir), nullptr, nullptr,
             io::SafetensorsFile::open(dir + "/reference.safetensors")};
    l.model = std::make_unique<Transformer>(l.files.config, RunConfig{});
    l.params = std::make_unique<DenseParams>(l.model->layout(), DType::f32, true);
    std::vector<std::string> unused = load_hf_weights(*l.model, *l.params, *l.files.weights);
    EXPECT_TRUE(unused.empty()) << "unused tensor " << unused.front();
    l.params->bind(l.model->binding());
    return l;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
    auto da = ref::from_tensor(a), db = ref::from_tensor(b);
    EXPECT_EQ(da.shape, db.shape);
    double m = 0;
    for (int64_t i = 0; i < da.numel(); ++i) m = std::max(m, std::fabs(da[i] - db[i]));
    return m;
}

class HfParity : public ::testing::TestWithParam<std::string> {};

TEST_P(HfParity, LogitsLossGradientsAndGreedy) {
    Loaded l = load(GetParam());
    const ModelConfig& c = l.model->config();
    Tensor ids = l.fixture.tensor("input_ids").to(DType::i64);
    const int64_t B = ids.size(0), T = ids.size(1);

    Tensor logits = l.model->forward_logits(ids);
    Tensor want = l.fixture.tensor("logits").reshape({B * T, c.vocab_size});
    EXPECT_LT(max_abs_diff(logits, want), 1e-4) << "logits";

    // HF's causal LM loss: labels = input_ids, shifted inside; the last position predicts nothing.
    Tensor targets = Tensor::empty({B, T}, DType::i64);
    for (int64_t b = 0; b < B; ++b) {
        for (int64_t t = 0; t < T; ++t) {
            targets.data<int64_t>()[b * T + t] =
                t + 1 < T ? ids.data<int64_t>()[b * T + t + 1] : -100;
        }
    }
    l.params->zero_grads();
    LossStats st =
        l.model->forward_backward({ids, targets}, 1.0f / static_cast<float>(B * (T - 1)));
    double loss = st.mean() + c.moe.train_aux_coef() * st.aux_loss;
    EXPECT_NEAR(loss, l.fixture.tensor("loss").item(), 1e-5) << "loss";
    if (l.fixture.contains("aux_loss")) {
        EXPECT_NEAR(st.aux_loss, l.fixture.tensor("aux_loss").item(), 1e-5) << "aux loss";
    }

    // Gradients, per HF tensor (our fused parameters split back into HF's pieces).
    int checked = 0;
    const auto& infos = l.model->layout().params();
    for (size_t i = 0; i < infos.size(); ++i) {
        Tensor g = l.params->grad(static_cast<ParamId>(i));
        for (const HfPart& part : hf_parts(c, infos[i].name)) {
            Tensor mine = part.row_end >= 0 ? g.slice(0, part.row_begin, part.row_end) : g;
            if (part.transpose) mine = mine.transpose(0, 1);
            std::string key = "grad." + part.hf_name;
            ASSERT_TRUE(l.fixture.contains(key)) << key;
            Tensor theirs = l.fixture.tensor(key);
            auto a = ref::from_tensor(mine), b = ref::from_tensor(theirs);
            ASSERT_EQ(a.shape, b.shape) << key;
            double num = 0, den = 0;
            for (int64_t k = 0; k < a.numel(); ++k) {
                num += (a[k] - b[k]) * (a[k] - b[k]);
                den += b[k] * b[k];
            }
            EXPECT_LT(std::sqrt(num / std::max(den, 1e-30)), 1e-3) << key;
            ++checked;
        }
    }
    EXPECT_GT(checked, 5);

    // Greedy continuation with the KV cache.
    Tensor prompt = l.fixture.tensor("greedy.prompt").to(DType::i32);
    Tensor expect = l.fixture.tensor("greedy.output").to(DType::i64);
    const int64_t P = prompt.size(1), total = expect.size(1);
    ContiguousKvCache kv(c, total, DType::f32);
    std::vector<int32_t> seq(prompt.data<int32_t>(), prompt.data<int32_t>() + P);
    Tensor pos = Tensor::empty({total}, DType::i32);
    for (int64_t i = 0; i < total; ++i) pos.data<int32_t>()[i] = static_cast<int32_t>(i);
    int64_t done = 0;
    while (static_cast<int64_t>(seq.size()) < total) {
        int64_t n = static_cast<int64_t>(seq.size()) - done;
        Tensor in = Tensor::wrap(seq.data() + done, {n}, DType::i32);
        Tensor lg = l.model->forward_tokens(in, pos.slice(0, done, done + n), kv, {n - 1});
        kv.commit(n);
        done += n;
        const float* p = lg.data<float>();
        seq.push_back(static_cast<int32_t>(std::max_element(p, p + c.vocab_size) - p));
    }
    for (int64_t i = 0; i < total; ++i) {
        EXPECT_EQ(seq[static_cast<size_t>(i)], expect.data<int64_t>()[i]) << "greedy token " << i;
    }
}

INSTANTIATE_TEST_SUITE_P(Families, HfParity,
                         ::testing::Values("gpt2", "llama", "llama_tied_mqa", "qwen2", "mixtral",
                                           "gpt2_variants", "mistral_window", "qwen2_window",
                                           "qwen2_moe"));

// The MoE fixtures with their experts sharded over ep thread-ranks (RunConfig::ep), every rank
// running the same batch: logits, loss and greedy tokens equal HF's; the dense gradients too, and
// each rank's experts' gradients are ep times HF's (each token reaches its experts once from
// every rank).
class HfParityEp : public ::testing::TestWithParam<std::pair<std::string, int>> {};

TEST_P(HfParityEp, ExpertsShardedOverRanks) {
    const auto [name, ep] = GetParam();
    const std::string dir = zs::test::source_path("tests/fixtures/hf/" + name);
    comm::run_local(ep, [&](int rank, comm::Communicator& c) {
        ModelFiles files = open_model(dir);
        io::SafetensorsFile fixture = io::SafetensorsFile::open(dir + "/reference.safetensors");
        RunConfig rc;
        rc.ep = &c;
        Transformer model(files.config, rc);
        ASSERT_EQ(model.ep_size(), ep);
        DenseParams params(model.layout(), DType::f32, true);
        load_hf_weights(model, params, *files.weights);  // other ranks' experts stay unused
        params.bind(model.binding());
        const ModelConfig& cfg = model.config();
        const std::string at = name + " ep " + std::to_string(ep) + " rank " + std::to_string(rank);
        Tensor ids = fixture.tensor("input_ids").to(DType::i64);
        const int64_t B = ids.size(0), T = ids.size(1);
        Tensor logits = model.forward_logits(ids);
        EXPECT_LT(max_abs_diff(logits, fixture.tensor("logits").reshape({B * T, cfg.vocab_size})),
                  1e-4)
            << at;
        Tensor targets = Tensor::empty({B, T}, DType::i64);
        for (int64_t b = 0; b < B; ++b) {
            for (int64_t t = 0; t < T; ++t) {
                targets.data<int64_t>()[b * T + t] =
                    t + 1 < T ? ids.data<int64_t>()[b * T + t + 1] : -100;
            }
        }
        params.zero_grads();
        LossStats st =
            model.forward_backward({ids, targets}, 1.0f / static_cast<float>(B * (T - 1)));
        EXPECT_NEAR(st.mean() + cfg.moe.train_aux_coef() * st.aux_loss,
                    fixture.tensor("loss").item(), 1e-5)
            << at;
        int experts = 0;
        const auto& infos = model.layout().params();
        for (size_t i = 0; i < infos.size(); ++i) {
            const bool expert = infos[i].name.find(".moe.experts.") != std::string::npos;
            experts += expert;
            Tensor g = params.grad(static_cast<ParamId>(i));
            for (const HfPart& part : hf_parts(cfg, infos[i].name)) {
                Tensor mine = part.row_end >= 0 ? g.slice(0, part.row_begin, part.row_end) : g;
                if (part.transpose) mine = mine.transpose(0, 1);
                auto a = ref::from_tensor(mine),
                     b = ref::from_tensor(fixture.tensor("grad." + part.hf_name));
                ASSERT_EQ(a.shape, b.shape) << at << " " << part.hf_name;
                const double scale = expert ? ep : 1;
                double num = 0, den = 0;
                for (int64_t k = 0; k < a.numel(); ++k) {
                    num += (a[k] - scale * b[k]) * (a[k] - scale * b[k]);
                    den += scale * scale * b[k] * b[k];
                }
                EXPECT_LT(std::sqrt(num / std::max(den, 1e-30)), 1e-3) << at << " " << part.hf_name;
            }
        }
        // This rank holds its E / ep experts of every layer (2 weights each), no others.
        EXPECT_EQ(experts, 2 * cfg.n_layers * cfg.moe.n_experts / ep) << at;
        // Greedy decoding, every rank the same sequence.
        Tensor prompt = fixture.tensor("greedy.prompt").to(DType::i32);
        Tensor expect = fixture.tensor("greedy.output").to(DType::i64);
        const int64_t P = prompt.size(1), total = expect.size(1);
        ContiguousKvCache kv(cfg, total, DType::f32);
        std::vector<int32_t> seq(prompt.data<int32_t>(), prompt.data<int32_t>() + P);
        Tensor pos = Tensor::empty({total}, DType::i32);
        for (int64_t i = 0; i < total; ++i) pos.data<int32_t>()[i] = static_cast<int32_t>(i);
        int64_t done = 0;
        while (static_cast<int64_t>(seq.size()) < total) {
            int64_t n = static_cast<int64_t>(seq.size()) - done;
            Tensor in = Tensor::wrap(seq.data() + done, {n}, DType::i32);
            Tensor lg = model.forward_tokens(in, pos.slice(0, done, done + n), kv, {n - 1});
            kv.commit(n);
            done += n;
            const float* p = lg.data<float>();
            seq.push_back(static_cast<int32_t>(std::max_element(p, p + cfg.vocab_size) - p));
        }
        for (int64_t i = 0; i < total; ++i) {
            EXPECT_EQ(seq[static_cast<size_t>(i)], expect.data<int64_t>()[i])
                << at << " token " << i;
        }
    });
}

INSTANTIATE_TEST_SUITE_P(Moe, HfParityEp,
                         ::testing::Values(std::pair<std::string, int>{"mixtral", 2},
                                           std::pair<std::string, int>{"mixtral", 4},
                                           std::pair<std::string, int>{"qwen2_moe", 2}));

}  // namespace
}  // namespace zs::models
