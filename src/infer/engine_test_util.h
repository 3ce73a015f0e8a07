// Shared by the engine and scheduler tests: the greedy oracle through the contiguous KV cache,
// random prompts and greedy request options.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "infer/engine.h"
#include "models/kv_cache.h"
#include "models/transformer.h"
#include "tests/test_util.h"

namespace zs::infer {

using core::DType;
using core::Tensor;

struct Solo {
    std::vector<int32_t> tokens;
    std::vector<double> logprobs;  // of each token under the raw logits
};

// Greedy decoding of one sequence through the contiguous cache; argmax keeps the lowest id on
// ties. Stops after max_tokens or at a token in `stop`.
inline Solo solo(models::Transformer& m, const std::vector<int32_t>& prompt, int64_t max_tokens,
                 DType kv_dtype = DType::f32, const std::vector<int32_t>& stop = {}) {
    const auto P = static_cast<int64_t>(prompt.size());
    models::ContiguousKvCache kv(m.config(), P + max_tokens, kv_dtype);
    Tensor ids = Tensor::empty({P}, DType::i32), pos = Tensor::empty({P}, DType::i32);
    for (int64_t i = 0; i < P; ++i) {
        ids.data<int32_t>()[i] = prompt[static_cast<size_t>(i)];
        pos.data<int32_t>()[i] = static_cast<int32_t>(i);
    }
    Tensor logits = m.forward_tokens(ids, pos, kv, {P - 1});
    kv.commit(P);
    Solo out;
    const int64_t V = m.config().vocab_size;
    for (int64_t t = 0; t < max_tokens; ++t) {
        const float* l = logits.data<float>();
        int32_t best = 0;
        double mx = l[0];
        for (int64_t v = 1; v < V; ++v) {
            if (l[v] > mx) {
                mx = l[v];
                best = static_cast<int32_t>(v);
            }
        }
        double z = 0;
        for (int64_t v = 0; v < V; ++v) z += std::exp(static_cast<double>(l[v]) - mx);
        out.tokens.push_back(best);
        out.logprobs.push_back(-std::log(z));
        if (std::find(stop.begin(), stop.end(), best) != stop.end()) break;
        if (t + 1 == max_tokens) break;
        Tensor one = Tensor::empty({1}, DType::i32), p1 = Tensor::empty({1}, DType::i32);
        one.data<int32_t>()[0] = best;
        p1.data<int32_t>()[0] = static_cast<int32_t>(P + t);
        logits = m.forward_tokens(one, p1, kv, {0});
        kv.commit(1);
    }
    return out;
}

inline std::vector<int32_t> random_prompt(zs::test::Rng& rng, int64_t n, int64_t vocab) {
    std::vector<int32_t> p(static_cast<size_t>(n));
    for (int32_t& t : p) t = static_cast<int32_t>(rng.integer(0, vocab - 1));
    return p;
}

inline RequestOptions greedy(int64_t max_tokens) {
    RequestOptions o;
    o.sampling.temperature = 0.0f;
    o.max_tokens = max_tokens;
    o.ignore_eos = true;
    return o;
}

}  // namespace zs::infer
