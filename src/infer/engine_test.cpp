// Engine end to end on tiny random models. The oracle for every request is a solo greedy run
// through models::ContiguousKvCache (one sequence, contiguous cache, ops::attention_forward) with
// a naive argmax: concurrent requests with chunked prompts, KV exhaustion with preemption,
// aborts, prefix-cache reuse and both scheduling policies must all give the same tokens.
#include "infer/engine.h"

#include <cmath>
#include <map>

#include <gtest/gtest.h>

#include "base/error.h"
#include "infer/engine_test_util.h"
#include "models/kv_cache.h"
#include "ops/activation.h"
#include "tests/test_util.h"

namespace zs::infer {
namespace {

using models::Transformer;
using zs::test::Rng;

const char* kLlama = R"({"model_type": "llama", "vocab_size": 64, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 48, "max_position_embeddings": 256, "rms_norm_eps": 1e-6})";
const char* kGpt2 = R"({"model_type": "gpt2", "vocab_size": 61, "n_embd": 24, "n_layer": 2,
    "n_head": 3, "n_positions": 256})";

struct Model {
    std::unique_ptr<Transformer> model;
    std::unique_ptr<models::DenseParams> params;
};

// Weights ~ N(0, 0.02) leave a random model close to a bigram table; scaled up, attention over
// the context decides the next token, so a wrong key or position changes the output.
Model make(const std::string& json, float weight_scale = 12.0f, DType compute = DType::f32) {
    Model m;
    m.model = std::make_unique<Transformer>(models::parse_hf_config(json, "test config"),
                                            models::RunConfig{.compute_dtype = compute});
    m.params = std::make_unique<models::DenseParams>(m.model->layout(), compute, false);
    m.params->init(5);
    for (int g = 0; g < m.model->layout().n_groups(); ++g) {
        const Tensor& w = m.params->group_weights(g);
        zs::ops::scale(w, w, weight_scale);
    }
    m.params->bind(m.model->binding());
    return m;
}

struct Result {
    std::vector<int32_t> tokens;
    std::vector<float> logprobs;
    FinishReason reason = FinishReason::none;
    int64_t n_cached_prompt = 0;
};

struct Drain {
    std::map<RequestId, Result> results;
    int64_t steps = 0;
    int64_t mixed_steps = 0;  // steps with both prefill and decode tokens
};

// One step: checks its counters (a step with requests queued but no tokens is a deadlock) and
// collects its outputs.
void step_once(Engine& e, Drain& d) {
    const int64_t budget = e.scheduler().config().max_batch_tokens;
    std::vector<RequestOutput> outs = e.step();
    ++d.steps;
    const StepStats& st = e.last_step();
    ASSERT_GT(st.n_tokens, 0) << "an empty step with requests queued: deadlock";
    ASSERT_LE(st.n_tokens, budget);
    ASSERT_EQ(st.n_prefill_tokens + st.n_decode_tokens, st.n_tokens);
    ASSERT_EQ(st.kv_blocks_used + st.kv_blocks_free, e.kv_pool().n_blocks());
    d.mixed_steps += st.n_prefill_tokens > 0 && st.n_decode_tokens > 0;
    for (const RequestOutput& o : outs) {
        Result& r = d.results[o.id];
        ASSERT_EQ(r.reason, FinishReason::none) << "output after finishing";
        ASSERT_EQ(o.new_tokens.size(), o.new_samples.size());
        r.tokens.insert(r.tokens.end(), o.new_tokens.begin(), o.new_tokens.end());
        for (const SampleResult& sr : o.new_samples) r.logprobs.push_back(sr.logprob);
        ASSERT_EQ(o.n_output_tokens, static_cast<int64_t>(r.tokens.size()));
        r.n_cached_prompt = o.n_cached_prompt_tokens;
        if (o.finished) r.reason = o.finish_reason;
    }
}

// Step until every request finished, or fail after max_steps.
void drain(Engine& e, Drain& d, int64_t max_steps = 5000) {
    while (e.has_unfinished()) {
        ASSERT_LT(d.steps, max_steps) << "no progress";
        step_once(e, d);
        if (::testing::Test::HasFatalFailure()) return;
    }
}

EngineConfig engine_config(int64_t kv_blocks, int64_t block_size, int64_t budget,
                           DType kv_dtype = DType::f32) {
    EngineConfig c;
    c.kv_blocks = kv_blocks;
    c.block_size = block_size;
    c.kv_dtype = kv_dtype;
    c.scheduler.max_batch_tokens = budget;
    c.scheduler.max_seqs = std::min<int64_t>(16, budget);
    return c;
}

void expect_same_as_solo(Transformer& m, const std::vector<std::vector<int32_t>>& prompts,
                         const std::vector<RequestId>& ids, const std::vector<int64_t>& max_tokens,
                         const Drain& d, DType kv_dtype, bool check_logprobs) {
    for (size_t i = 0; i < prompts.size(); ++i) {
        Solo want = solo(m, prompts[i], max_tokens[i], kv_dtype);
        const Result& got = d.results.at(ids[i]);
        EXPECT_EQ(got.tokens, want.tokens)
            << "request " << i << " (prompt of " << prompts[i].size() << " tokens)";
        EXPECT_EQ(got.reason, FinishReason::length);
        if (!check_logprobs || got.logprobs.size() != want.logprobs.size()) continue;
        for (size_t t = 0; t < want.logprobs.size(); ++t) {
            EXPECT_NEAR(got.logprobs[t], want.logprobs[t], 1e-3) << "request " << i << " t " << t;
        }
    }
}

TEST(Engine, ConcurrentChunkedRequestsEqualSoloRuns) {
    for (const char* json : {kLlama, kGpt2}) {
        Model m = make(json);
        const int64_t V = m.model->config().vocab_size;
        Engine e(*m.model, engine_config(512, 4, 32));
        Rng rng(17);
        const std::vector<int64_t> lens = {1, 3, 17, 40, 64, 100, 5, 33, 16, 4};
        std::vector<std::vector<int32_t>> prompts;
        std::vector<RequestId> ids;
        std::vector<int64_t> max_tokens;
        Drain d;
        for (size_t i = 0; i < lens.size(); ++i) {
            prompts.push_back(random_prompt(rng, lens[i], V));
            max_tokens.push_back(8 + static_cast<int64_t>(i % 5));
            ids.push_back(e.add_request(prompts.back(), greedy(max_tokens.back())));
            // Staggered arrivals: later requests join while earlier ones decode.
            if (i == 4) {
                for (int s = 0; s < 3; ++s) step_once(e, d);
            }
        }
        drain(e, d);
        expect_same_as_solo(*m.model, prompts, ids, max_tokens, d, DType::f32, true);
        EXPECT_GT(d.mixed_steps, 0);
        EXPECT_EQ(e.counters().n_preemptions, 0);
        EXPECT_EQ(e.kv_pool().n_used(), 0);
    }
}

// serve_kv_exhaustion in miniature: KV for about two long sequences, 16 requests, both policies.
TEST(Engine, KvExhaustionPreemptsAndEveryRequestStillMatchesItsSoloRun) {
    Model m = make(kLlama);
    const int64_t V = m.model->config().vocab_size, max_tokens = 16, bs = 4;
    Rng rng(23);
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 16; ++i) prompts.push_back(random_prompt(rng, rng.integer(20, 40), V));
    std::vector<std::vector<int32_t>> want;
    for (const auto& p : prompts) want.push_back(solo(*m.model, p, max_tokens).tokens);
    for (SchedulePolicy policy : {SchedulePolicy::split_fuse, SchedulePolicy::prefill_first}) {
        // A 40-token prompt + 16 outputs needs 14 blocks: 30 hold two and a bit.
        EngineConfig cfg = engine_config(30, bs, 64);
        cfg.scheduler.policy = policy;
        Engine e(*m.model, cfg);
        std::vector<RequestId> ids;
        for (const auto& p : prompts) ids.push_back(e.add_request(p, greedy(max_tokens)));
        Drain d;
        drain(e, d, 3000);
        ASSERT_FALSE(HasFatalFailure()) << to_string(policy);
        EXPECT_GT(e.counters().n_preemptions, 0) << to_string(policy);
        for (size_t i = 0; i < ids.size(); ++i) {
            const Result& r = d.results[ids[i]];
            EXPECT_EQ(r.tokens, want[i]) << to_string(policy) << " request " << i;
            EXPECT_EQ(r.reason, FinishReason::length);
        }
        EXPECT_EQ(e.kv_pool().n_used(), 0);
        EXPECT_EQ(e.counters().n_finished, 16);
    }
}

// Sampling (temperature, top-p, seeds) survives preemption: the sampler keeps its generator and
// counts while the sequence is recomputed, so a starved run draws the same tokens as a roomy one.
TEST(Engine, SeededSamplingIsUnchangedByPreemption) {
    Model m = make(kLlama, 4.0f);
    const int64_t V = m.model->config().vocab_size;
    auto run = [&](int64_t kv_blocks, int64_t* preemptions) {
        Engine e(*m.model, engine_config(kv_blocks, 4, 48));
        Rng rng(29);
        std::vector<RequestId> ids;
        for (int i = 0; i < 12; ++i) {
            RequestOptions o;
            o.sampling.temperature = 0.9f;
            o.sampling.top_p = 0.95f;
            o.sampling.frequency_penalty = 0.3f;
            o.sampling.seed = 1000 + static_cast<uint64_t>(i);
            o.max_tokens = 14;
            o.ignore_eos = true;
            ids.push_back(e.add_request(random_prompt(rng, rng.integer(10, 36), V), o));
        }
        Drain d;
        drain(e, d, 3000);
        *preemptions = e.counters().n_preemptions;
        std::vector<std::vector<int32_t>> out;
        for (RequestId id : ids) out.push_back(d.results[id].tokens);
        return out;
    };
    int64_t p_roomy = 0, p_tight = 0;
    auto roomy = run(512, &p_roomy);
    auto tight = run(26, &p_tight);
    EXPECT_EQ(p_roomy, 0);
    EXPECT_GT(p_tight, 0);
    EXPECT_EQ(roomy, tight);
}

TEST(Engine, AbortMidPrefillAndMidDecodeFreesBlocksNow) {
    Model m = make(kLlama);
    const int64_t V = m.model->config().vocab_size, bs = 4;
    Engine e(*m.model, engine_config(256, bs, 8));
    Rng rng(31);
    std::vector<int32_t> pc = random_prompt(rng, 6, V), pa = random_prompt(rng, 40, V);
    std::vector<int32_t> pb = random_prompt(rng, 5, V);
    const RequestId c = e.add_request(pc, greedy(12));
    const RequestId a = e.add_request(pa, greedy(12));
    const RequestId b = e.add_request(pb, greedy(20));
    // Blocks held by the unfinished requests (no sharing in this test).
    auto held = [&]() {
        int64_t n = 0;
        for (RequestId id : {a, b, c}) {
            if (const Sequence* s = e.scheduler().find(id))
                n += static_cast<int64_t>(s->blocks.size());
        }
        return n;
    };
    Drain d;
    step_once(e, d);
    step_once(e, d);
    const Sequence* sa = e.scheduler().find(a);
    ASSERT_NE(sa, nullptr);
    ASSERT_GT(sa->num_computed, 0);
    ASSERT_LT(sa->num_computed, sa->prompt_len);  // mid-prefill
    EXPECT_EQ(e.kv_pool().n_used(), held());
    EXPECT_TRUE(e.abort(a));
    EXPECT_EQ(e.scheduler().find(a), nullptr);
    EXPECT_EQ(e.kv_pool().n_used(), held());
    EXPECT_FALSE(e.abort(a));
    while (d.results[b].tokens.size() < 3) step_once(e, d);
    ASSERT_TRUE(e.scheduler().find(b)->is_decode());  // mid-decode
    EXPECT_TRUE(e.abort(b));
    EXPECT_EQ(e.kv_pool().n_used(), held());
    drain(e, d);
    EXPECT_EQ(d.results[c].tokens, solo(*m.model, pc, 12).tokens);
    EXPECT_EQ(e.kv_pool().n_used(), 0);
    EXPECT_FALSE(e.has_unfinished());
    EXPECT_FALSE(e.abort(c));  // already finished
    EXPECT_FALSE(e.abort(12345));
}

TEST(Engine, PrefixCachingReusesSharedPromptBlocksWithIdenticalOutputs) {
    Model m = make(kLlama);
    const int64_t V = m.model->config().vocab_size, bs = 4;
    Rng rng(37);
    const std::vector<int32_t> shared = random_prompt(rng, 48, V);  // 12 full blocks
    std::vector<int32_t> pa = shared, pb = shared;
    for (int32_t t : random_prompt(rng, 5, V)) pa.push_back(t);
    pb.push_back(static_cast<int32_t>((pa[48] + 1) % V));  // differs right after the prefix
    for (int32_t t : random_prompt(rng, 6, V)) pb.push_back(t);
    for (bool caching : {true, false}) {
        EngineConfig cfg = engine_config(256, bs, 32);
        cfg.scheduler.prefix_caching = caching;
        Engine e(*m.model, cfg);
        Drain d;
        const RequestId a = e.add_request(pa, greedy(12));
        drain(e, d);
        // b shares exactly the 12 prefix blocks; c repeats a's prompt: all but its last token
        // can come from the cache, in whole blocks: (53 - 1) / 4 = 13 blocks.
        const RequestId b = e.add_request(pb, greedy(12));
        const RequestId c = e.add_request(pa, greedy(12));
        step_once(e, d);
        // While a shared block is used by b and c, it is referenced once per sequence.
        drain(e, d);
        EXPECT_EQ(d.results[a].tokens, solo(*m.model, pa, 12).tokens);
        EXPECT_EQ(d.results[b].tokens, solo(*m.model, pb, 12).tokens);
        EXPECT_EQ(d.results[c].tokens, d.results[a].tokens);
        EXPECT_EQ(e.kv_pool().n_used(), 0);
        EXPECT_EQ(d.results[a].n_cached_prompt, 0);
        EXPECT_EQ(d.results[b].n_cached_prompt, caching ? 48 : 0);
        EXPECT_EQ(d.results[c].n_cached_prompt, caching ? 52 : 0);
        if (caching) {
            EXPECT_EQ(e.counters().n_cached_prompt_tokens, 48 + 52);
            EXPECT_GT(e.kv_pool().stats().prefix_hits, 0);
        } else {
            EXPECT_EQ(e.counters().n_cached_prompt_tokens, 0);
        }
    }
}

TEST(Engine, ConcurrentRequestsShareTheCachedPrefixOfARunningOne) {
    Model m = make(kLlama);
    const int64_t V = m.model->config().vocab_size;
    Rng rng(41);
    const std::vector<int32_t> pa = random_prompt(rng, 30, V);
    std::vector<int32_t> pb(pa.begin(), pa.begin() + 24);
    for (int32_t t : random_prompt(rng, 3, V)) pb.push_back(t);
    Engine e(*m.model, engine_config(256, 4, 64));
    Drain d;
    const RequestId a = e.add_request(pa, greedy(10));
    step_once(e, d);  // a's prompt is computed and cached; a keeps running
    const RequestId b = e.add_request(pb, greedy(10));
    step_once(e, d);
    const Sequence* sa = e.scheduler().find(a);
    const Sequence* sb = e.scheduler().find(b);
    ASSERT_TRUE(sa && sb);
    // b's first 6 blocks are a's (refcount 2); the pool holds them once.
    for (size_t i = 0; i < 6; ++i) EXPECT_EQ(sa->blocks[i], sb->blocks[i]) << "block " << i;
    EXPECT_EQ(e.kv_pool().n_used(),
              static_cast<int64_t>(sa->blocks.size() + sb->blocks.size()) - 6);
    drain(e, d);
    EXPECT_EQ(d.results[a].tokens, solo(*m.model, pa, 10).tokens);
    EXPECT_EQ(d.results[b].tokens, solo(*m.model, pb, 10).tokens);
    EXPECT_EQ(e.kv_pool().n_used(), 0);
}

TEST(Engine, SplitFuseAndPrefillFirstGiveTheSameTokens) {
    Model m = make(kLlama);
    const int64_t V = m.model->config().vocab_size;
    Rng rng(43);
    std::vector<std::vector<int32_t>> prompts;
    for (int64_t n : {30, 2, 45, 7, 19, 60, 11}) prompts.push_back(random_prompt(rng, n, V));
    std::map<SchedulePolicy, std::vector<std::vector<int32_t>>> out;
    for (SchedulePolicy p : {SchedulePolicy::split_fuse, SchedulePolicy::prefill_first}) {
        EngineConfig cfg = engine_config(256, 4, 24);
        cfg.scheduler.policy = p;
        Engine e(*m.model, cfg);
        std::vector<RequestId> ids;
        Drain d;
        for (size_t i = 0; i < prompts.size(); ++i) {
            ids.push_back(e.add_request(prompts[i], greedy(9)));
            if (i % 2 == 1) step_once(e, d);  // arrivals spread over the first steps
        }
        drain(e, d);
        for (RequestId id : ids) out[p].push_back(d.results[id].tokens);
        if (p == SchedulePolicy::prefill_first) {
            EXPECT_EQ(d.mixed_steps, 0);
        } else {
            EXPECT_GT(d.mixed_steps, 0);
        }
    }
    EXPECT_EQ(out[SchedulePolicy::split_fuse], out[SchedulePolicy::prefill_first]);
    for (size_t i = 0; i < prompts.size(); ++i) {
        EXPECT_EQ(out[SchedulePolicy::split_fuse][i], solo(*m.model, prompts[i], 9).tokens);
    }
}

// bf16 compute and KV (the contiguous cache needs k/v in the compute dtype).
TEST(Engine, Bf16KvCacheMatchesABf16ContiguousCache) {
    Model m = make(kLlama, 12.0f, DType::bf16);
    const int64_t V = m.model->config().vocab_size;
    Engine e(*m.model, engine_config(256, 16, 40, DType::bf16));
    Rng rng(47);
    std::vector<std::vector<int32_t>> prompts;
    std::vector<RequestId> ids;
    for (int64_t n : {5, 37, 18, 70}) {
        prompts.push_back(random_prompt(rng, n, V));
        ids.push_back(e.add_request(prompts.back(), greedy(10)));
    }
    Drain d;
    drain(e, d);
    expect_same_as_solo(*m.model, prompts, ids, std::vector<int64_t>(4, 10), d, DType::bf16, false);
}

// Log-softmax rows [P - 1, n - 1) of one forward of `seq` from an empty paged cache in `quant`
// (the prediction of each token after the prompt, teacher-forced).
std::vector<std::vector<double>> forced_logprobs(Transformer& m, const std::vector<int32_t>& seq,
                                                 int64_t P, ops::KvQuant quant) {
    const auto n = static_cast<int64_t>(seq.size());
    KvBlockPool pool(KvCacheSpec::for_blocks(m.config(), (n + 15) / 16, 16, DType::bf16, quant));
    const std::vector<BlockId> table = *pool.allocate((n + 15) / 16);
    PagedKvAttention attn(pool);
    attn.set_batch({ops::SeqSlice{0, n, 0, table}});
    Tensor pos = Tensor::empty({n}, DType::i32);
    for (int64_t i = 0; i < n; ++i) pos.data<int32_t>()[i] = static_cast<int32_t>(i);
    std::vector<int64_t> rows;
    for (int64_t i = P - 1; i < n - 1; ++i) rows.push_back(i);
    std::vector<int32_t> ids = seq;
    Tensor logits = m.forward_tokens(Tensor::wrap(ids.data(), {n}, DType::i32), pos, attn, rows);
    const int64_t V = logits.size(1);
    std::vector<std::vector<double>> out;
    for (size_t r = 0; r < rows.size(); ++r) {
        const float* l = logits.data<float>() + static_cast<int64_t>(r) * V;
        const double mx = *std::max_element(l, l + V);
        double z = 0;
        for (int64_t v = 0; v < V; ++v) z += std::exp(l[v] - mx);
        std::vector<double> lp(static_cast<size_t>(V));
        for (int64_t v = 0; v < V; ++v) lp[static_cast<size_t>(v)] = l[v] - mx - std::log(z);
        out.push_back(std::move(lp));
    }
    return out;
}

// An int8 (and fp8) KV cache against bf16's on a model whose head size (32) takes the quantized
// layout. The rule: (1) the engine's greedy tokens with the quantized cache are exactly the
// argmax of one teacher-forced forward over the same cache (decode and chunks read the
// quantized cache as a prefill does); (2) along that text, every log-probability is within
// 0.05 nats (int8; 0.15 fp8) of the bf16 cache's, and the greedy choice is the same wherever
// bf16's top-two margin exceeds twice that bound.
TEST(Engine, QuantizedKvCacheStaysCloseToBf16) {
    const char* cfg = R"({"model_type": "llama", "vocab_size": 64, "hidden_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 96, "max_position_embeddings": 256, "rms_norm_eps": 1e-6})";
    Model m = make(cfg, 2.0f, DType::bf16);
    const int64_t V = m.model->config().vocab_size;
    for (auto [quant, bound] :
         {std::pair{ops::KvQuant::int8, 0.05}, std::pair{ops::KvQuant::fp8_e4m3, 0.15}}) {
        EngineConfig ec = engine_config(64, 16, 40, DType::bf16);
        ec.kv_quant = quant;
        Engine e(*m.model, ec);
        Rng rng(53);
        std::vector<std::vector<int32_t>> prompts;
        std::vector<RequestId> ids;
        for (int64_t n : {5, 37, 70}) {
            prompts.push_back(random_prompt(rng, n, V));
            ids.push_back(e.add_request(prompts.back(), greedy(16)));
        }
        Drain d;
        drain(e, d);
        double worst = 0;
        int64_t compared = 0;
        for (size_t i = 0; i < prompts.size(); ++i) {
            const std::vector<int32_t>& toks = d.results.at(ids[i]).tokens;
            std::vector<int32_t> seq = prompts[i];
            seq.insert(seq.end(), toks.begin(), toks.end());
            const auto P = static_cast<int64_t>(prompts[i].size());
            const auto q = forced_logprobs(*m.model, seq, P, quant);
            const auto b = forced_logprobs(*m.model, seq, P, ops::KvQuant::none);
            ASSERT_EQ(q.size(), toks.size());
            for (size_t t = 0; t < q.size(); ++t) {
                const auto qa = std::max_element(q[t].begin(), q[t].end()) - q[t].begin();
                EXPECT_EQ(qa, toks[t]) << to_string(quant) << " request " << i << " t " << t;
                std::vector<double> sorted = b[t];
                std::sort(sorted.rbegin(), sorted.rend());
                const auto ba = std::max_element(b[t].begin(), b[t].end()) - b[t].begin();
                for (int64_t v = 0; v < V; ++v) {
                    worst = std::max(worst, std::fabs(q[t][static_cast<size_t>(v)] -
                                                      b[t][static_cast<size_t>(v)]));
                }
                if (sorted[0] - sorted[1] > 2 * bound) {
                    EXPECT_EQ(qa, ba) << to_string(quant) << " request " << i << " t " << t;
                    ++compared;
                }
            }
        }
        EXPECT_LE(worst, bound) << to_string(quant);
        EXPECT_GT(compared, 10) << "too few confident positions to compare";
        std::printf("%s kv cache: max |logprob - bf16's| %.4f nats, %lld greedy choices compared\n",
                    to_string(quant), worst, static_cast<long long>(compared));
    }
}

TEST(Engine, StopsAtStopTokensEosAndMaxTokens) {
    Model m = make(kLlama);
    const int64_t V = m.model->config().vocab_size;
    Rng rng(53);
    const std::vector<int32_t> prompt = random_prompt(rng, 9, V);
    const std::vector<int32_t> full = solo(*m.model, prompt, 12).tokens;
    // The first token that did not occur before index 2: stopping on it ends the output there.
    size_t k = 2;
    while (std::find(full.begin(), full.begin() + static_cast<long>(k), full[k]) !=
           full.begin() + static_cast<long>(k)) {
        ++k;
    }
    ASSERT_LT(k, full.size());
    const std::vector<int32_t> upto(full.begin(), full.begin() + static_cast<long>(k) + 1);
    {
        Engine e(*m.model, engine_config(64, 4, 32));
        RequestOptions o = greedy(12);
        o.stop_token_ids = {full[k]};
        const RequestId id = e.add_request(prompt, o);
        Drain d;
        drain(e, d);
        EXPECT_EQ(d.results[id].tokens, upto);
        EXPECT_EQ(d.results[id].reason, FinishReason::stop);
    }
    // The same token as the model's EOS: stop unless ignore_eos.
    std::string json = kLlama;
    json.insert(json.rfind('}'), fmt::format(R"(, "eos_token_id": {})", full[k]));
    Model me = make(json);
    for (bool ignore : {false, true}) {
        Engine e(*me.model, engine_config(64, 4, 32));
        RequestOptions o = greedy(12);
        o.ignore_eos = ignore;
        const RequestId id = e.add_request(prompt, o);
        Drain d;
        drain(e, d);
        EXPECT_EQ(d.results[id].tokens, ignore ? full : upto);
        EXPECT_EQ(d.results[id].reason, ignore ? FinishReason::length : FinishReason::stop);
    }
    // The server's stop-string hook ends a request between steps.
    Engine e(*m.model, engine_config(64, 4, 32));
    const RequestId id = e.add_request(prompt, greedy(12));
    Drain d;
    step_once(e, d);
    EXPECT_TRUE(e.finish(id, FinishReason::stop));
    EXPECT_FALSE(e.has_unfinished());
    EXPECT_EQ(e.kv_pool().n_used(), 0);
    EXPECT_TRUE(e.step().empty());
}

TEST(Engine, InvalidRequestsAreRejectedNamingTheField) {
    Model m = make(kLlama);
    Engine e(*m.model, engine_config(8, 4, 32));  // 32 tokens of KV
    // The message names the field, and so does the error itself (the server's `param`).
    auto message = [&](std::vector<int32_t> p, RequestOptions o) -> std::string {
        try {
            e.add_request(std::move(p), std::move(o));
        } catch (const FieldError& err) {
            const std::string what = err.what();
            EXPECT_NE(what.find(err.field()), std::string::npos) << what;
            return err.field() + "|" + what;
        }
        return "accepted";
    };
    EXPECT_TRUE(message({}, greedy(4)).starts_with("prompt|"));
    EXPECT_TRUE(message({1}, greedy(0)).starts_with("max_tokens|"));
    for (auto [field, set] : std::vector<std::pair<std::string, void (*)(SamplingParams&)>>{
             {"temperature", [](SamplingParams& p) { p.temperature = -1; }},
             {"top_p", [](SamplingParams& p) { p.top_p = 2; }},
             {"min_p", [](SamplingParams& p) { p.min_p = -0.5f; }},
             {"top_k", [](SamplingParams& p) { p.top_k = -3; }},
             {"repetition_penalty", [](SamplingParams& p) { p.repetition_penalty = 0; }},
             {"frequency_penalty", [](SamplingParams& p) { p.frequency_penalty = 3; }},
             {"presence_penalty", [](SamplingParams& p) { p.presence_penalty = -3; }},
             {"top_logprobs", [](SamplingParams& p) { p.top_logprobs = 21; }}}) {
        RequestOptions o = greedy(4);
        set(o.sampling);
        EXPECT_TRUE(message({1}, o).starts_with(field + "|")) << message({1}, o);
    }
    EXPECT_NE(message({1, 64}, greedy(4)).find("outside the vocabulary"), std::string::npos);
    EXPECT_NE(message({1, -1}, greedy(4)).find("outside the vocabulary"), std::string::npos);
    EXPECT_NE(message({1}, greedy(0)).find("max_tokens"), std::string::npos);
    EXPECT_NE(message({1}, greedy(300)).find("context of 256"), std::string::npos);
    EXPECT_NE(message(std::vector<int32_t>(20, 1), greedy(13)).find("KV cache"), std::string::npos);
    RequestOptions bad = greedy(4);
    bad.sampling.temperature = -1.0f;
    EXPECT_NE(message({1}, bad).find("temperature"), std::string::npos);
    EXPECT_FALSE(e.has_unfinished());
    EXPECT_EQ(message(std::vector<int32_t>(20, 1), greedy(12)), "accepted");  // exactly fits
    EngineConfig tiny = engine_config(0, 4, 32);
    tiny.kv_cache_bytes = 100;
    EXPECT_THROW(Engine(*m.model, tiny), ConfigError);
}

}  // namespace
}  // namespace zs::infer
