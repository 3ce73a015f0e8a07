// Tensor-parallel serving over threads: rank 0 runs the Engine on its shard and every forward's
// inputs reach rank 1 (follow_forwards), which runs the same forward on its shard. Concurrent
// requests with chunked prompts, prefix reuse and KV preemption give the tokens of the
// unsharded engine (the whole model, same weights) token for token.
#include "infer/tp_forward.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "comm/communicator.h"
#include "infer/engine_test_util.h"
#include "ops/activation.h"

namespace zs::infer {
namespace {

using models::Transformer;
using zs::test::Rng;

const char* kLlama = R"({"model_type": "llama", "vocab_size": 67, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 48, "max_position_embeddings": 256, "rms_norm_eps": 1e-6})";

std::map<RequestId, std::vector<int32_t>> run(Engine& e,
                                              const std::vector<std::vector<int32_t>>& prompts) {
    std::map<RequestId, std::vector<int32_t>> out;
    for (size_t i = 0; i < prompts.size(); ++i) {
        RequestOptions o = greedy(12 + static_cast<int64_t>(i) % 5);
        e.add_request(prompts[i], o);
    }
    for (int steps = 0; e.has_unfinished() && steps < 5000; ++steps) {
        for (const RequestOutput& r : e.step()) {
            out[r.id].insert(out[r.id].end(), r.new_tokens.begin(), r.new_tokens.end());
        }
    }
    EXPECT_FALSE(e.has_unfinished());
    return out;
}

TEST(TensorParallelServing, EngineOverTwoRanksEqualsTheWholeModel) {
    const models::ModelConfig cfg = models::parse_hf_config(kLlama, "test");
    Transformer whole(cfg, models::RunConfig{});
    models::DenseParams wp(whole.layout(), DType::f32, false);
    wp.init(5);
    for (int g = 0; g < whole.layout().n_groups(); ++g) {
        const Tensor& w = wp.group_weights(g);
        ops::scale(w, w, 12.0f);  // attention over the context decides the next token
    }
    wp.bind(whole.binding());
    Rng rng(21);
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 7; ++i) prompts.push_back(random_prompt(rng, 5 + 9 * i, cfg.vocab_size));
    prompts.push_back(prompts[3]);  // prefix reuse
    EngineConfig ec;
    ec.kv_blocks = 24;  // 96 tokens: the batch preempts
    ec.block_size = 4;
    ec.kv_dtype = DType::f32;
    ec.scheduler.max_batch_tokens = 16;  // prompts in chunks, decodes beside them
    ec.scheduler.max_seqs = 8;
    std::map<RequestId, std::vector<int32_t>> want;
    {
        Engine e(whole, ec);
        want = run(e, prompts);
    }
    ASSERT_EQ(want.size(), prompts.size());
    // The unsharded engine itself against one sequence through the contiguous cache.
    EXPECT_EQ(want.begin()->second, solo(whole, prompts[0], 12).tokens);
    comm::run_local(2, [&](int rank, comm::Communicator& g) {
        models::RunConfig rc;
        rc.tp = &g;
        Transformer m(cfg, rc);
        models::DenseParams p(m.layout(), DType::f32, false);
        for (size_t i = 0; i < m.layout().params().size(); ++i) {
            const auto id = static_cast<models::ParamId>(i);
            p.weight(id).copy_from(m.tp_slice(id, wp.weight(id)));
        }
        p.bind(m.binding());
        if (rank != 0) {
            EXPECT_GT(follow_forwards(m, ec, g), 0);
            return;
        }
        EngineConfig tec = ec;
        tec.tp = &g;
        Engine e(m, tec);
        EXPECT_EQ(e.kv_pool().n_blocks(), ec.kv_blocks);
        const std::map<RequestId, std::vector<int32_t>> got = run(e, prompts);
        EXPECT_GT(e.counters().n_preemptions, 0) << "the test means to preempt";
        for (const auto& [id, toks] : want) {
            auto it = got.find(id);
            ASSERT_NE(it, got.end()) << "request " << id;
            EXPECT_EQ(it->second, toks) << "request " << id;
        }
    });
}

// Expert-parallel serving (serve --ep): rank 0's engine and follow_forwards on the other ranks,
// each holding E / ep experts of every layer, give the tokens of the unsharded engine, with the
// same concurrency, chunking, prefix reuse and preemption as above. The batches (prompt chunks,
// decode steps of 1..8 rows, the last sequence decoding alone) split unevenly over the ranks,
// some of which get no rows, and each rank's experts run exactly the rows the unsharded model
// routes to them: every routed row once over the group, not once per rank.
const char* kMixtral = R"({"model_type": "mixtral", "vocab_size": 67, "hidden_size": 32,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 24, "num_local_experts": 4, "num_experts_per_tok": 2,
    "max_position_embeddings": 256, "rms_norm_eps": 1e-6})";

void expect_ep_serving_equals_whole(int ep, int tp = 1) {
    const models::ModelConfig cfg = models::parse_hf_config(kMixtral, "test");
    Transformer whole(cfg, models::RunConfig{});
    models::DenseParams wp(whole.layout(), DType::f32, false);
    wp.init(7);
    for (int g = 0; g < whole.layout().n_groups(); ++g) {
        const Tensor& w = wp.group_weights(g);
        ops::scale(w, w, 12.0f);
    }
    wp.bind(whole.binding());
    std::map<std::string, models::ParamId> by_name;
    for (size_t i = 0; i < whole.layout().params().size(); ++i)
        by_name[whole.layout().params()[i].name] = static_cast<models::ParamId>(i);
    Rng rng(33);
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 7; ++i) prompts.push_back(random_prompt(rng, 5 + 9 * i, cfg.vocab_size));
    prompts.push_back(prompts[3]);
    EngineConfig ec;
    ec.kv_blocks = 24;
    ec.block_size = 4;
    ec.kv_dtype = DType::f32;
    ec.scheduler.max_batch_tokens = 16;
    ec.scheduler.max_seqs = 8;
    std::map<RequestId, std::vector<int32_t>> want;
    // The whole model's routing, counted per expert over every layer and forward (no capacity:
    // every top-k choice is a row some expert runs).
    std::vector<int64_t> routed(static_cast<size_t>(cfg.moe.n_experts), 0);
    whole.set_routing_observer([&](int64_t, const Tensor& indices) {
        for (int64_t i = 0; i < indices.numel(); ++i) ++routed[indices.data<int32_t>()[i]];
    });
    {
        Engine e(whole, ec);
        want = run(e, prompts);
    }
    whole.set_routing_observer({});
    ASSERT_EQ(want.size(), prompts.size());
    // tp x ep ranks (tp > 1: DeepSpeed-TED, tp groups of consecutive ranks and the ep group the
    // same tp rank's peers, every rank following rank 0's forwards over the whole group).
    std::vector<int64_t> ran(static_cast<size_t>(tp * ep), 0);
    comm::run_local(tp * ep, [&](int rank, comm::Communicator& world) {
        std::unique_ptr<comm::Communicator> tpg, epg;
        if (tp > 1) {
            tpg = world.split(rank / tp, rank);
            epg = world.split(rank % tp, rank);
        }
        comm::Communicator& g = tp > 1 ? *epg : world;
        models::RunConfig rc;
        rc.ep = &g;
        rc.tp = tpg.get();
        Transformer m(cfg, rc);
        ASSERT_EQ(m.ep_size(), ep);
        models::DenseParams p(m.layout(), DType::f32, false);
        for (size_t i = 0; i < m.layout().params().size(); ++i) {
            auto it = by_name.find(m.layout().params()[i].name);
            ASSERT_NE(it, by_name.end()) << m.layout().params()[i].name;
            const auto id = static_cast<models::ParamId>(i);
            p.weight(id).copy_from(m.tp_slice(id, wp.weight(it->second)));
        }
        p.bind(m.binding());
        // Every ep rank runs the same batch, but its experts (or their tp shards) run only the
        // rows the whole model routes to them, each once (not once per rank).
        const int64_t El = cfg.moe.n_experts / ep, r = g.rank();
        int64_t mine = 0;
        for (int64_t e = r * El; e < (r + 1) * El; ++e) mine += routed[e];
        const std::string at = fmt::format("tp {} ep {} rank {}", tp, ep, rank);
        if (rank != 0) {
            EXPECT_GT(follow_forwards(m, ec, world), 0);
            ran[static_cast<size_t>(rank)] = m.take_expert_rows();
            EXPECT_EQ(ran[static_cast<size_t>(rank)], mine) << at;
            return;
        }
        EngineConfig eec = ec;
        eec.ep = &g;
        eec.tp = tpg.get();
        eec.tp_ep = tp > 1 ? &world : nullptr;
        Engine e(m, eec);
        const std::map<RequestId, std::vector<int32_t>> got = run(e, prompts);
        ran[0] = m.take_expert_rows();
        EXPECT_EQ(ran[0], mine) << at;
        EXPECT_GT(e.counters().n_preemptions, 0) << "the test means to preempt";
        for (const auto& [id, toks] : want) {
            auto it = got.find(id);
            ASSERT_NE(it, got.end()) << "request " << id;
            EXPECT_EQ(it->second, toks) << at << " request " << id;
        }
    });
    int64_t total = 0, all = 0;
    for (int64_t r : ran) total += r;
    for (int64_t r : routed) all += r;
    EXPECT_EQ(total, tp * all) << "tp " << tp << " ep " << ep
                               << ": each expert shard ran every routed row once";
}

TEST(ExpertParallelServing, EngineOverTwoRanksEqualsTheWholeModel) {
    expect_ep_serving_equals_whole(2);
}

TEST(ExpertParallelServing, EngineOverFourRanksEqualsTheWholeModel) {
    expect_ep_serving_equals_whole(4);
}

TEST(ExpertParallelServing, TensorAndExpertParallelEngineEqualsTheWholeModel) {
    expect_ep_serving_equals_whole(2, 2);
}

TEST(ExpertParallelServing, RefusesAModelShardedOverAnotherGroup) {
    const models::ModelConfig cfg = models::parse_hf_config(kMixtral, "test");
    Transformer whole(cfg, models::RunConfig{});
    comm::run_local(2, [&](int rank, comm::Communicator& g) {
        if (rank != 0) return;
        EngineConfig ec;
        ec.kv_blocks = 8;
        ec.ep = &g;  // the model holds every expert: ep 1
        EXPECT_THROW(Engine(whole, ec), ConfigError);
    });
}

}  // namespace
}  // namespace zs::infer
