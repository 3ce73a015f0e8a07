// Peak activation bytes per rank against sequence length under sequence parallelism, measured
// with the tracked allocator, against `zerospeed estimate`'s formula (zero::estimate). One rank
// of each layout runs on this process over zero::MirrorGroup stand-ins, so it allocates exactly
// as a real sp or ring rank does (the values are not a real run's; the bytes are): two
// micro-batches of one sequence, the second's peak above the model states. Llama-shaped GQA
// model (hidden 128, 8 layers, 4 heads, 2 KV heads), f32, activation checkpointing, logits in
// chunks of 256 rows. Prints a table, writes it as CSV and draws docs/sp_memory.svg.
//
// Usage: sp_memory_bench [OUT.svg=sp_memory.svg] [OUT.csv=sp_memory.csv] [MAX_T=2048]
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backends/register.h"
#include "cli/svg.h"
#include "core/backend.h"
#include "io/atomic_file.h"
#include "models/params.h"
#include "models/transformer.h"
#include "zero/estimate.h"

using namespace zs;

namespace {

struct Layout {
    const char* name;
    int ulysses, ring;
    const char* color;
};

// Peak bytes above the model states of the second of two micro-batches of one T-token sequence.
int64_t measure(const models::ModelConfig& mc, const models::RunConfig& base, const Layout& l,
                int64_t T) {
    zero::MirrorGroup sp(l.ulysses), rg(l.ring);
    models::RunConfig run = base;
    run.sp = l.ulysses > 1 ? &sp : nullptr;
    run.ring = l.ring > 1 ? &rg : nullptr;
    models::Transformer m(mc, run);
    models::DenseParams p(m.layout(), run.compute_dtype, true);
    p.init(1);
    p.bind(m.binding());
    const int64_t Tl = T / (l.ulysses * l.ring);
    core::Tensor ids = core::Tensor::empty({1, Tl}, core::DType::i32);
    for (int64_t i = 0; i < Tl; ++i) ids.data<int32_t>()[i] = static_cast<int32_t>(i * 7 % 64);
    const models::TrainBatch bt{ids, ids};
    const int64_t before = core::memory_stats().current_total;
    m.forward_backward(bt, 1.0f);
    core::backend(core::Device::cpu()).memory().reset_peak();
    m.forward_backward(bt, 1.0f);
    return core::memory_stats().peak_total - before;
}

int64_t estimated(const models::ModelConfig& mc, const models::RunConfig& run, const Layout& l,
                  int64_t T) {
    const zero::RankModel rank(mc, run, 1, l.ulysses, l.ring);
    zero::EstimateInput in;
    in.world = l.ulysses * l.ring;
    in.sizes.sp = l.ulysses * l.ring;
    in.sizes.ring = l.ring;
    in.micro_batch = 1;
    in.seq_len = T;
    const zero::MemoryEstimate e = zero::estimate(rank, in);
    return e.activations + e.transient;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string svg_path = argc > 1 ? argv[1] : "sp_memory.svg";
    const std::string csv_path = argc > 2 ? argv[2] : "sp_memory.csv";
    const int64_t max_t = argc > 3 ? std::atoll(argv[3]) : 2048;
    backends::register_all();
    const models::ModelConfig mc = models::parse_hf_config(
        R"({"model_type": "llama", "vocab_size": 64, "hidden_size": 128, "num_hidden_layers": 8,
        "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 352,
        "max_position_embeddings": 65536})",
        "sp_memory");
    const models::RunConfig run{
        .compute_dtype = core::DType::f32, .activation_checkpointing = true, .logits_chunk = 256};
    const Layout layouts[] = {{"sp 1", 1, 1, "#1f77b4"},
                              {"ring 2", 1, 2, "#ff7f0e"},
                              {"ring 4", 1, 4, "#2ca02c"},
                              {"ulysses 4", 4, 1, "#9467bd"},
                              {"ulysses 2 x ring 2", 2, 2, "#d62728"}};
    std::vector<cli::SvgSeries> series;
    std::string csv = "layout,ulysses,ring,seq_len,tokens_per_rank,measured_bytes,estimate_bytes\n";
    std::printf("%-20s %8s %8s %14s %14s %8s\n", "layout", "T", "T/rank", "measured", "estimate",
                "est/meas");
    for (const Layout& l : layouts) {
        cli::SvgSeries meas{fmt::format("{} measured", l.name), l.color, {}};
        cli::SvgSeries est{fmt::format("{} estimate", l.name), l.color, {}};
        for (int64_t T = 256; T <= max_t; T *= 2) {
            const int64_t m = measure(mc, run, l, T), e = estimated(mc, run, l, T);
            const int64_t tl = T / (l.ulysses * l.ring);
            std::printf("%-20s %8lld %8lld %14lld %14lld %8.4f\n", l.name,
                        static_cast<long long>(T), static_cast<long long>(tl),
                        static_cast<long long>(m), static_cast<long long>(e),
                        static_cast<double>(e) / static_cast<double>(m));
            csv += fmt::format("{},{},{},{},{},{},{}\n", l.name, l.ulysses, l.ring, T, tl, m, e);
            meas.pts.emplace_back(static_cast<double>(T), static_cast<double>(m) / (1 << 20));
            est.pts.emplace_back(static_cast<double>(T), static_cast<double>(e) / (1 << 20));
        }
        series.push_back(meas);
        est.color = std::string(l.color) + "80";  // the same hue, half transparent
        series.push_back(est);
    }
    const double W = 760, H = 420;
    std::string svg = fmt::format(
        R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}">)", W + 20, H + 40);
    svg += R"(<rect width="100%" height="100%" fill="#fafafa"/>)";
    svg += cli::svg_panel(series,
                          "peak activation MiB per rank vs sequence length (measured; estimate)",
                          "sequence length (tokens)", 10, 30, W, H, false);
    svg += "</svg>\n";
    io::write_file_atomic(svg_path, svg);
    io::write_file_atomic(csv_path, csv);
    std::printf("wrote %s and %s\n", svg_path.c_str(), csv_path.c_str());
    return 0;
}
