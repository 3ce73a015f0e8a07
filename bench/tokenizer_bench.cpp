// Tokenizer encode/decode throughput, single thread, on a real corpus (Jane Austen's novels,
// data/corpora/austen.txt, or $ZS_BENCH_CORPUS). Each family is checked first:
// decode(encode(corpus)) must give the corpus back, or the benchmark reports an error.
//
//   build/bench/tokenizer_bench --benchmark_format=json
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <benchmark/benchmark.h>

#include "io/tokenizer.h"

namespace {

std::string corpus() {
    static const std::string text = [] {
        std::string src = ZS_SOURCE_DIR;
        std::vector<std::string> paths;
        if (const char* env = std::getenv("ZS_BENCH_CORPUS")) paths.push_back(env);
        paths.push_back(src + "/data/corpora/austen.txt");
        for (const auto& p : paths) {
            std::ifstream f(p, std::ios::binary);
            if (!f) continue;
            std::stringstream ss;
            ss << f.rdbuf();
            return ss.str();
        }
        return std::string();
    }();
    return text;
}

std::string fixture(const char* rel) {
    return std::string(ZS_SOURCE_DIR) + "/tests/fixtures/tokenizers/" + rel;
}

void run(benchmark::State& state, const char* rel, bool decode) {
    const std::string& text = corpus();
    if (text.empty()) {
        state.SkipWithError("corpus not found (set ZS_BENCH_CORPUS)");
        return;
    }
    zs::io::Tokenizer tok = zs::io::Tokenizer::load(fixture(rel));
    std::vector<int32_t> ids = tok.encode(text);
    if (tok.decode(ids) != text) {
        state.SkipWithError("decode(encode(corpus)) != corpus");
        return;
    }
    for (auto _ : state) {
        if (decode) {
            benchmark::DoNotOptimize(tok.decode(ids));
        } else {
            benchmark::DoNotOptimize(tok.encode(text));
        }
    }
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
    state.counters["tokens"] = static_cast<double>(ids.size());
}

}  // namespace

BENCHMARK_CAPTURE(run, encode_gpt2, "gpt2", false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run, encode_llama3, "llama3", false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run, encode_mistral, "mistral", false)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run, encode_llama2, "llama2/tokenizer.model", false)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run, encode_r50k, "tiktoken/r50k_base.tiktoken", false)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run, encode_cl100k, "tiktoken/cl100k_base.tiktoken", false)
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run, decode_llama3, "llama3", true)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(run, decode_llama2, "llama2/tokenizer.model", true)
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
