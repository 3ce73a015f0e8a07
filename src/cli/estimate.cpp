// `zerospeed estimate`: per-rank memory and communication of a training configuration before a
// run (zero/estimate.h), for every ZeRO stage, over dp x sp x ring x tp ranks (--ranks, --tp; the
// ds_config's sequence_parallel_size and ring_parallel_size), what each rank
// sends per step by group and collective, optionally a sweep over 1-1024 ranks, and the largest
// model whose states fit a per-rank memory budget at each stage.
#include "zero/estimate.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include <sys/sysinfo.h>

#include "backends/cpu/cpu_kernels.h"
#include "base/error.h"
#include "base/timer.h"
#include "cli/commands.h"
#include "cli/model_loader.h"
#include "core/memory.h"
#include "io/aio.h"
#include "models/sources.h"
#include "ops/matmul.h"
#include "parallel/topology.h"
#include "train/ds_config.h"
#include "zero/tiers.h"

namespace zs::cli {

namespace {

std::string bytes(int64_t v) { return core::format_bytes(v); }

// The ds_config for `ranks` ranks at tensor parallelism `tp` (0: the file's
// tensor_parallel.autotp_size): the batch triple is per data-parallel rank (ranks / tp).
train::TrainConfig load_config(const EstimateOptions& o) {
    if (o.tp <= 0) return train::load_ds_config(o.ds_config, o.ranks);
    ZS_CHECK_T(ConfigError, o.ranks % o.tp == 0, "estimate: --tp {} does not divide --ranks {}",
               o.tp, o.ranks);
    train::AutoValues tp_only;
    tp_only.tp = o.tp;
    train::TrainConfig tc = train::load_ds_config(o.ds_config, o.ranks, &tp_only);
    // AutoValues carries --tp into the parse; with nothing else set it fills "auto" with the
    // Trainer's defaults, which estimate has no flags to choose: refused, as without --tp.
    std::string keys;
    for (const std::string& r : tc.resolved_auto) {
        keys += (keys.empty() ? "" : ", ") + r.substr(0, r.find(" = "));
    }
    ZS_CHECK_T(ConfigError, keys.empty(),
               "{}: \"auto\" in {}: zerospeed train resolves it from its flags; here, write the "
               "values",
               o.ds_config, keys);
    return tc;
}

// Optimizer states per parameter, as optim::Optimizer::n_states counts them.
int n_optimizer_states(const train::TrainConfig& tc) {
    switch (tc.optimizer.kind) {
        case optim::Kind::adamw:
        case optim::Kind::adam:
        case optim::Kind::lamb:
            return 2;
        case optim::Kind::lion:
        case optim::Kind::adagrad:
            return 1;
        case optim::Kind::sgd:
            return tc.optimizer.momentum != 0.0 ? 1 : 0;
    }
    return 0;
}

// Direct-I/O bandwidth of the disk holding `dir`: 256 MiB written then read as one tensor file
// through io::AsyncIo (O_DIRECT, the offload path's own I/O), bytes/s of the two together.
double measure_disk_bw(const std::string& dir) {
    ZS_CHECK_T(ConfigError, !dir.empty(),
               "estimate --memory-cap: give --disk-bw (bytes/s) or --offload-path (a directory "
               "on the offload disk, to measure it)");
    const size_t n = size_t{256} << 20;
    io::AlignedBuffer buf(n, false);
    std::memset(buf.data(), 0x5a, n);
    io::AsyncIo aio(io::AioConfig{});
    const std::string path = dir + "/zerospeed_bw_probe.swp";
    Timer t;
    aio.write(path, buf, n).wait();
    aio.read(path, buf, n).wait();
    const double s = t.seconds();
    std::filesystem::remove(path);
    return 2.0 * static_cast<double>(n) / s;
}

// The matmul rate of this machine in the compute dtype, FLOP/s: a 1024^3 product, best of 3.
double measure_flops(core::DType ct) {
    const int64_t n = 1024;
    Tensor a = Tensor::zeros({n, n}, ct), b = Tensor::zeros({n, n}, ct),
           c = Tensor::zeros({n, n}, DType::f32);
    ops::matmul(c, a, b);
    double best = 1e30;
    for (int i = 0; i < 3; ++i) {
        Timer t;
        ops::matmul(c, a, b);
        best = std::min(best, t.seconds());
    }
    return 2.0 * static_cast<double>(n * n * n) / best;
}

}  // namespace

int run_estimate(const EstimateOptions& o) {
    ZS_CHECK_T(ConfigError, !o.model.empty() || !o.model_config.empty(),
               "estimate: give --model (HF directory / GGUF) or --model-config (config.json)");
    models::ModelConfig mc = !o.model.empty() ? models::open_model(o.model).config
                                              : models::load_hf_config(o.model_config);
    train::TrainConfig tc = load_config(o);
    const int tp = tc.tensor_parallel_size, dp = tc.world_size;
    // Sequence parallelism: Ulysses (sequence_parallel_size) x ring (ring_parallel_size) ranks
    // share each sequence; ZeRO runs over dp x sp.
    const int uly = tc.sequence_parallel_size, ring = tc.ring_parallel_size, sp = uly * ring;
    models::RunConfig rc;
    rc.compute_dtype =
        tc.precision == train::Precision::bf16 ? core::DType::bf16 : core::DType::f32;
    rc.activation_checkpointing = tc.activation_checkpointing.given;
    const zero::RankModel rank(mc, rc, tp, uly, ring);
    const int n_states = n_optimizer_states(tc);
    const int64_t micro = tc.batch.train_micro_batch_size_per_gpu;
    const int64_t accum = tc.batch.gradient_accumulation_steps;
    int64_t budget = o.memory_per_rank;
    if (budget <= 0) {
        struct sysinfo si {};
        sysinfo(&si);
        budget = static_cast<int64_t>(si.totalram) * si.mem_unit / std::max(1, o.ranks_per_node);
    }
    auto input = [&](int world, int stage) {
        zero::EstimateInput in;
        in.world = world;
        in.sizes.tp = tp;
        in.sizes.sp = sp;
        in.sizes.ring = ring;
        in.stage = stage;
        in.n_states = n_states;
        in.bf16_master = tc.bf16.bf16_master_weights_and_grads;
        in.bf16_states = tc.bf16.bf16_optimizer_states;
        in.widened_16bit_matmul = !backends::cpu::matmul_routes().native_bf16;
        in.micro_batch = micro;
        in.seq_len = o.seq_len;
        in.grad_accum = accum;
        in.prefetch_numel = tc.zero.stage3_prefetch_bucket_size;
        in.max_live_numel = tc.zero.stage3_max_live_parameters;
        in.persistence_threshold = tc.zero.stage3_param_persistence_threshold;
        in.quantized_weights = tc.zero.zero_quantized_weights;
        in.quantized_gradient_bits =
            tc.zero.zero_quantized_gradients ? tc.zero.zero_quantized_gradients_bits : 0;
        in.hpz_partition_size = tc.zero.zero_hpz_partition_size;
        return in;
    };
    std::string split;
    if (tp > 1 || sp > 1) {
        split = fmt::format(" = {} dp", dp);
        if (uly > 1) split += fmt::format(" x {} sp (Ulysses)", uly);
        if (ring > 1) split += fmt::format(" x {} ring", ring);
        if (tp > 1) split += fmt::format(" x {} tp", tp);
    }
    std::printf(
        "model: %s, %.2f M parameters; %d rank(s)%s; micro-batch %lld x %lld tokens, %lld "
        "accumulation; %s%s\n",
        models::to_string(mc.arch), static_cast<double>(mc.n_params()) / 1e6, o.ranks,
        split.c_str(), static_cast<long long>(micro), static_cast<long long>(o.seq_len),
        static_cast<long long>(accum), train::to_string(tc.precision),
        tc.activation_checkpointing.given ? ", activation checkpointing" : "");
    if (tp > 1) {
        const models::ModelConfig& lc = rank.model().local_config();
        const auto [v0, v1] = rank.model().vocab_range();
        int64_t n = 0;
        for (const models::ParamInfo& p : rank.model().layout().params()) n += p.numel();
        const bool moe = mc.mlp == models::MlpKind::moe;
        const std::string kv =
            mc.n_kv_heads < tp ? fmt::format(" (each on {} ranks)", tp / mc.n_kv_heads) : "";
        const std::string experts =
            moe ? fmt::format(" of each of {} experts", mc.moe.n_experts) : "";
        std::printf(
            "per tensor-parallel rank (rank 0): %.2f M parameters: %lld of %lld heads,\n"
            "  %lld of %lld KV heads%s, %lld of %lld MLP columns%s,\n"
            "  vocabulary rows [%lld, %lld) of %lld; norms, positions%s output biases replicated\n",
            static_cast<double>(n) / 1e6, static_cast<long long>(lc.n_heads),
            static_cast<long long>(mc.n_heads), static_cast<long long>(lc.n_kv_heads),
            static_cast<long long>(mc.n_kv_heads), kv.c_str(),
            static_cast<long long>(lc.intermediate), static_cast<long long>(mc.intermediate),
            experts.c_str(), static_cast<long long>(v0), static_cast<long long>(v1),
            static_cast<long long>(mc.vocab_size), moe ? ", the router and" : " and");
    }
    if (sp > 1) {
        ZS_CHECK_T(ConfigError,
                   o.seq_len % sp == 0 && (ring == 1 || o.seq_len % (2 * int64_t{sp}) == 0),
                   "estimate: --seq-len {} is not divisible by {} (sequence parallelism: {} "
                   "Ulysses x {} ring ranks{})",
                   o.seq_len, ring > 1 ? 2 * sp : sp, uly, ring,
                   ring > 1 ? ", each sequence cut into 2 x ring zig-zag chunks" : "");
        const models::ActivationBytes a =
            rank.local_model().activation_bytes(micro, o.seq_len / sp);
        std::printf(
            "sequence parallelism: %d ranks per sequence (%d Ulysses x %d ring), %lld tokens per "
            "rank;\n  activations per rank %s saved + %s transient (the model's own, at %lld "
            "tokens, with the attention cores' buffers)\n",
            sp, uly, ring, static_cast<long long>(o.seq_len / sp), bytes(a.saved).c_str(),
            bytes(a.transient).c_str(), static_cast<long long>(o.seq_len / sp));
    }
    std::printf("\n%-6s %12s %12s %12s %12s %12s %12s %14s\n", "stage", "params", "grads",
                "optimizer", "activations", "transient", "peak/rank", "comm/step");
    for (int stage = 0; stage <= 3; ++stage) {
        zero::MemoryEstimate e = zero::estimate(rank, input(o.ranks, stage));
        std::printf("%-6s %12s %12s %12s %12s %12s %12s %14s\n",
                    (std::to_string(stage) + (stage == tc.zero.stage ? "*" : "")).c_str(),
                    bytes(e.params).c_str(), bytes(e.grads).c_str(),
                    bytes(e.master + e.optimizer).c_str(), bytes(e.activations).c_str(),
                    bytes(e.transient).c_str(), bytes(e.peak).c_str(),
                    bytes(e.comm.total()).c_str());
    }
    // The configured stage in detail: the model states apart, and the traffic by group.
    const zero::MemoryEstimate e = zero::estimate(rank, input(o.ranks, tc.zero.stage));
    std::printf(
        "\n(* = the stage in %s; optimizer = master weights + optimizer states)\n\n"
        "Per rank at stage %d: compute weights %s, f32 gradients %s, master weights %s,\n"
        "  optimizer states %s (%d per parameter), activations %s, transient %s,\n  peak %s\n",
        o.ds_config.c_str(), tc.zero.stage, bytes(e.params).c_str(), bytes(e.grads).c_str(),
        bytes(e.master).c_str(), bytes(e.optimizer).c_str(), n_states, bytes(e.activations).c_str(),
        bytes(e.transient).c_str(), bytes(e.peak).c_str());
    if (e.secondary > 0) {
        std::printf(
            "  hpZ secondary weight partition %s (in the compute weights: 1/%d of each gathered "
            "group per rank)\n",
            bytes(e.secondary).c_str(), e.comm.hpz);
    }
    std::printf("\nSent per rank per step at stage %d (ring algorithms, %lld micro-batch(es)):\n",
                tc.zero.stage, static_cast<long long>(accum));
    auto line = [](const char* group, int n, const char* what, int64_t v) {
        std::printf("  %-5s %4d ranks  %-66s %12s\n", group, n, what, bytes(v).c_str());
    };
    if (e.comm.dp_allreduce > 0)
        line("dp", e.dp, "all-reduce of f32 gradients (ZeRO 0)", e.comm.dp_allreduce);
    // ZeRO++ (zero/engine.h): qgZ at stages 2-3, qwZ at stage 3, over more than one rank.
    const bool qg = tc.zero.zero_quantized_gradients && tc.zero.stage >= 2 && e.dp > 1;
    const bool qw = tc.zero.zero_quantized_weights && tc.zero.stage == 3 && e.dp > 1;
    const std::string qg_what = fmt::format("all-to-all of int{} gradient codes + scales (qgZ)",
                                            tc.zero.zero_quantized_gradients_bits);
    if (e.comm.dp_reduce_scatter > 0)
        line("dp", e.dp, qg ? qg_what.c_str() : "reduce-scatter of f32 gradients",
             e.comm.dp_reduce_scatter);
    // hpZ (stage 3): the backward gathers run over the sub-groups, from the secondary partition.
    const bool hpz = e.comm.hpz_allgather > 0;
    if (e.comm.dp_allgather > 0)
        line("dp", e.dp,
             qw && hpz ? "all-gather of int8 weight codes + scales before forward uses (qwZ)"
             : qw      ? "all-gather of int8 weight codes + scales before each use (qwZ)"
             : hpz     ? "all-gather of weights before forward uses"
             : tc.zero.stage == 3 ? "all-gather of weights before each use"
                                  : "all-gather of updated weights",
             e.comm.dp_allgather);
    if (hpz)
        line("hpz", e.comm.hpz, "all-gather of secondary weight shards before backward uses (hpZ)",
             e.comm.hpz_allgather);
    if (e.comm.tp_allreduce > 0) {
        const std::string what =
            fmt::format("{} x {} all-reduces of activations and their gradients{}", accum,
                        e.comm.tp_allreduce_calls / accum,
                        mc.mlp == models::MlpKind::moe ? ", gate grads" : "");
        line("tp", tp, what.c_str(), e.comm.tp_allreduce);
    }
    if (e.comm.tp_kv_allreduce > 0) {
        const std::string what =
            fmt::format("{} x {} all-reduces of replicated KV heads' gradient rows", accum,
                        e.comm.tp_kv_allreduce_calls / accum);
        line("tp-kv", e.comm.kv_ranks, what.c_str(), e.comm.tp_kv_allreduce);
    }
    if (e.comm.sp_all_to_all > 0) {
        const std::string what =
            fmt::format("{} x {} layers x 4 all-to-alls of q, k, v, outputs (and dout) (Ulysses)",
                        accum, mc.n_layers);
        line("sp", uly, what.c_str(), e.comm.sp_all_to_all);
    }
    if (e.comm.ring_send > 0) {
        const std::string what = fmt::format(
            "{} x {} layers of K/V blocks round the ring, and dK/dV back", accum, mc.n_layers);
        line("ring", ring, what.c_str(), e.comm.ring_send);
    }
    std::printf("  %-84s %12s\n", "total", bytes(e.comm.total()).c_str());

    if (o.sweep) {
        std::printf(
            "\nStage %d at tp %d over 1-1024 ranks; per data-parallel rank micro-batch %lld x "
            "%lld tokens,\n%lld accumulation (the global batch grows with dp):\n",
            tc.zero.stage, tp, static_cast<long long>(micro), static_cast<long long>(o.seq_len),
            static_cast<long long>(accum));
        std::printf("%5s %5s %3s %11s %11s %11s %11s %11s %11s %11s\n", "ranks", "dp", "tp",
                    "params", "grads", "optimizer", "activations", "peak/rank", "comm dp",
                    "comm tp");
        for (int world = 1; world <= 1024; world *= 2) {
            if (world % (tp * sp) != 0) continue;
            const int64_t hpz_size = tc.zero.zero_hpz_partition_size;
            if (hpz_size > 1 && (world / tp) % hpz_size != 0) continue;  // hpZ needs hpz | dp
            zero::MemoryEstimate s = zero::estimate(rank, input(world, tc.zero.stage));
            std::printf("%5d %5d %3d %11s %11s %11s %11s %11s %11s %11s\n", world, s.dp, s.tp,
                        bytes(s.params).c_str(), bytes(s.grads).c_str(),
                        bytes(s.master + s.optimizer).c_str(), bytes(s.activations).c_str(),
                        bytes(s.peak).c_str(),
                        bytes(s.comm.dp_allreduce + s.comm.dp_reduce_scatter + s.comm.dp_allgather +
                              s.comm.hpz_allgather)
                            .c_str(),
                        bytes(s.comm.tp_allreduce + s.comm.tp_kv_allreduce).c_str());
        }
    }

    const int ct = rc.compute_dtype == core::DType::bf16 ? 2 : 4;
    std::printf(
        "\nLargest model whose states (params, grads, optimizer) fit %s per rank on %d rank(s)%s,\n"
        "before activations%s:\n",
        bytes(budget).c_str(), o.ranks, split.c_str(),
        tp > 1 ? " (a tensor-parallel rank holds 1/tp of it, replicated norms aside)" : "");
    for (int stage = 0; stage <= 3; ++stage) {
        const bool bm = stage >= 1 && tc.bf16.bf16_master_weights_and_grads;
        double bpp = zero::model_state_bytes_per_param(stage, dp * sp, ct, n_states,
                                                       tc.zero.zero_hpz_partition_size, bm,
                                                       bm && tc.bf16.bf16_optimizer_states);
        std::printf("  stage %d: %.2f B parameters (%.2f bytes per parameter per rank)\n", stage,
                    static_cast<double>(budget) / bpp * tp / 1e9, bpp / tp);
    }
    if (!o.memory_cap.empty()) {
        // Offload tier advice at the configured stage (zero/tiers.h).
        zero::TierInput ti;
        ti.memory_cap = parse_memory_size(o.memory_cap, "--memory-cap");
        ti.stage = tc.zero.stage;
        ti.micro_batches = accum;
        const int64_t zdp = static_cast<int64_t>(dp) * sp;
        for (int g = 0; g < rank.model().layout().n_groups(); ++g) {
            const int64_t shard = (rank.model().layout().group(g).numel + zdp - 1) / zdp;
            ti.shard_elems += shard;
            ti.largest_group_shard = std::max(ti.largest_group_shard, shard);
        }
        ti.ct = ct;
        ti.n_states = n_states;
        ti.bf16_master = tc.bf16.bf16_master_weights_and_grads;
        ti.bf16_states = tc.bf16.bf16_optimizer_states;
        ti.sub_group_size = tc.zero.sub_group_size;
        ti.buffer_count = tc.zero.offload_optimizer.buffer_count;
        ti.param_buffer_count = tc.zero.offload_param.buffer_count;
        ti.ratio = tc.zero.offload_optimizer.ratio;
        ti.cpu_device = true;
        ti.disk_bw = o.disk_bw.empty()
                         ? measure_disk_bw(o.offload_path)
                         : static_cast<double>(parse_memory_size(o.disk_bw, "--disk-bw"));
        const double flops = o.tflops > 0 ? o.tflops * 1e12 : measure_flops(rc.compute_dtype);
        // 6 flops per parameter per token (forward 2, backward 4), + 2 more under activation
        // checkpointing (the forward re-run), over this rank's tokens of the step.
        const double tokens = static_cast<double>(micro * accum * (o.seq_len / sp));
        const double per_param = rc.activation_checkpointing ? 8.0 : 6.0;
        ti.compute_s =
            per_param * static_cast<double>(rank.model().config().n_params()) / tp * tokens / flops;
        const zero::TierAdvice adv = zero::advise_tiers(e, ti);  // e: the configured stage
        std::printf(
            "\nOffload tiers for %s per rank at stage %d (disk %.2f GB/s direct I/O%s, compute "
            "%.2f TFLOP/s%s -> %.2f s per step):\n",
            bytes(ti.memory_cap).c_str(), ti.stage, ti.disk_bw / 1e9,
            o.disk_bw.empty() ? " measured" : "", flops / 1e12, o.tflops > 0 ? "" : " measured",
            ti.compute_s);
        std::printf("  %-27s %12s %12s %12s %14s %14s\n", "tiers", "memory", "disk read",
                    "disk write", "step (overlap)", "step (serial)");
        for (size_t i = 0; i < adv.options.size(); ++i) {
            const zero::TierOption& t = adv.options[i];
            std::printf("  %-27s %12s %12s %12s %12.2f s %12.2f s %s\n", t.name.c_str(),
                        bytes(t.memory).c_str(), bytes(t.disk_read).c_str(),
                        bytes(t.disk_write).c_str(), t.step_overlapped, t.step_serial,
                        static_cast<int>(i) == adv.advice ? "<- advice"
                        : t.fits                          ? ""
                                                          : "(does not fit)");
        }
        if (adv.advice < 0) {
            std::printf(
                "  nothing fits %s: fewer parameters per rank (more ranks, tp) or a "
                "larger cap\n",
                bytes(ti.memory_cap).c_str());
        }
        std::printf(
            "  (the cpu tier is the rank's own memory on a CPU rank; step (overlap) = max(compute, "
            "disk / bandwidth), the engine's pipelined reads and writes)\n");
    }
    return 0;
}

}  // namespace zs::cli
