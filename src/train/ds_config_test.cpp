// train/ against DeepSpeed itself: tests/fixtures/deepspeed/reference.json, recorded by
// tools/reference/make_ds_fixtures.py from the PyPI deepspeed package (version in the file). It
// holds the lr (and OneCycle betas) of every step of DeepSpeed's scheduler objects, the scale and
// skip decision of DeepSpeed's fp16 loss scaler over scripted overflow sequences, the batch
// triple DeepSpeedConfig resolves (or rejects), and DeepSpeedConfig's view of four realistic
// ds_config.json files (tests/fixtures/deepspeed/configs/), defaults included. Elasticity, which
// DeepSpeed 0.19.8 removed, is checked against 0.19.7 (tests/fixtures/deepspeed/elasticity.json).
#include "train/ds_config.h"

#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/atomic_file.h"
#include "tests/test_util.h"
#include "train/loss_scaler.h"
#include "train/lr_schedule.h"

namespace zs::train {
namespace {

using nlohmann::json;

const json& fixture() {
    static const json f = json::parse(
        io::read_file(zs::test::source_path("tests/fixtures/deepspeed/reference.json")));
    return f;
}

::testing::AssertionResult close_rel(double got, double want, double rel) {
    if (std::fabs(got - want) <= rel * std::fabs(want) + 1e-300) {
        return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << "got " << got << ", DeepSpeed " << want;
}

TEST(DeepSpeedFixture, RecordsItsProvenance) {
    EXPECT_FALSE(fixture().at("deepspeed_version").get<std::string>().empty());
    EXPECT_GE(fixture().at("schedules").size(), 15u);
    EXPECT_GE(fixture().at("loss_scaler").size(), 6u);
    EXPECT_GE(fixture().at("batch").size(), 20u);
    EXPECT_EQ(fixture().at("configs").size(), 4u);
}

// Each schedule goes through parse_ds_config (so the schedulers' defaults are DeepSpeed's too).
TEST(DeepSpeedSchedules, LrAndBetasMatchStepForStep) {
    for (const json& s : fixture().at("schedules")) {
        json cfg = {{"train_batch_size", 1},
                    {"optimizer",
                     {{"type", s.at("optimizer")}, {"params", {{"lr", s.at("optimizer_lr")}}}}},
                    {"scheduler", {{"type", s.at("type")}, {"params", s.at("params")}}}};
        TrainConfig c = parse_ds_config(cfg.dump(), "fixture", 1);
        EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
        LrSchedule sched(c.scheduler, c.optimizer);
        const std::string what = s.at("type").get<std::string>() + " " + s.at("params").dump();
        const json& lrs = s.at("lr");
        for (size_t n = 0; n < lrs.size(); ++n) {
            EXPECT_TRUE(close_rel(sched.lr(static_cast<int64_t>(n)), lrs[n].get<double>(), 1e-12))
                << what << " after " << n << " applied steps";
            const json& want = s.at("betas")[n];
            std::optional<Betas> b = sched.betas(static_cast<int64_t>(n));
            if (want.is_null()) {  // SGD: no betas
                EXPECT_FALSE(b.has_value()) << what;
            } else if (b) {
                EXPECT_TRUE(close_rel(b->beta1, want[0].get<double>(), 1e-12)) << what << " " << n;
                EXPECT_EQ(b->beta2, want[1].get<double>()) << what << " " << n;
            } else {  // the schedule leaves the optimizer's betas alone
                EXPECT_EQ(c.optimizer.beta1, want[0].get<double>()) << what << " " << n;
                EXPECT_EQ(c.optimizer.beta2, want[1].get<double>()) << what << " " << n;
            }
        }
    }
}

TEST(DeepSpeedLossScaler, ScaleAndSkipMatchEveryStep) {
    for (const json& t : fixture().at("loss_scaler")) {
        TrainConfig c = parse_ds_config(
            json({{"train_batch_size", 1}, {"fp16", t.at("fp16")}}).dump(), "fixture", 1);
        LossScaler s(c.fp16);
        const json& ev = t.at("overflow");
        const json& raised = t.at("raised_at");
        for (size_t i = 0; i < ev.size(); ++i) {
            const bool overflow = ev[i].get<int>() != 0;
            if (!raised.is_null() && i == raised.get<size_t>()) {
                EXPECT_THROW(s.update(overflow), zs::Error) << t.at("fp16").dump();
                break;
            }
            EXPECT_EQ(s.scale(), t.at("scale_before")[i].get<double>())
                << "event " << i << " of " << t.at("fp16").dump();
            EXPECT_EQ(s.update(overflow), t.at("skip")[i].get<bool>());
            EXPECT_EQ(s.scale(), t.at("scale_after")[i].get<double>())
                << "event " << i << " of " << t.at("fp16").dump();
        }
    }
}

TEST(DeepSpeedBatch, TripleResolvedOrRejectedAsDeepSpeed) {
    for (const json& b : fixture().at("batch")) {
        const json& in = b.at("in");
        json cfg = json::object();
        const char* keys[] = {"train_batch_size", "train_micro_batch_size_per_gpu",
                              "gradient_accumulation_steps"};
        for (int k = 0; k < 3; ++k) {
            if (!in[k].is_null()) cfg[keys[k]] = in[k];
        }
        const int world = in[3].get<int>();
        if (b.at("ok").get<bool>()) {
            TrainConfig c = parse_ds_config(cfg.dump(), "batch", world);
            EXPECT_EQ(c.batch.train_batch_size, b.at("out")[0].get<double>()) << in.dump();
            EXPECT_EQ(c.batch.train_micro_batch_size_per_gpu, b.at("out")[1].get<double>())
                << in.dump();
            EXPECT_EQ(c.batch.gradient_accumulation_steps, b.at("out")[2].get<double>())
                << in.dump();
        } else {
            EXPECT_THROW(parse_ds_config(cfg.dump(), "batch", world), ConfigError)
                << in.dump() << " (DeepSpeed: " << b.at("error").get<std::string>() << ")";
        }
    }
}

double num(const json& j) { return j.is_null() ? -1.0 : j.get<double>(); }

// DeepSpeedConfig's resolved values (and defaults) for each example file.
TEST(DeepSpeedConfigs, ExampleFilesResolveAsDeepSpeed) {
    for (const json& want : fixture().at("configs")) {
        const std::string file = want.at("file").get<std::string>();
        TrainConfig c =
            load_ds_config(zs::test::source_path("tests/fixtures/deepspeed/configs/" + file),
                           want.at("world_size").get<int>());
        SCOPED_TRACE(file);
        EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
        EXPECT_EQ(c.batch.train_batch_size, want.at("train_batch_size").get<int64_t>());
        EXPECT_EQ(c.batch.train_micro_batch_size_per_gpu,
                  want.at("train_micro_batch_size_per_gpu").get<int64_t>());
        EXPECT_EQ(c.batch.gradient_accumulation_steps,
                  want.at("gradient_accumulation_steps").get<int64_t>());
        EXPECT_EQ(c.gradient_clipping, want.at("gradient_clipping").get<double>());
        // optimizer_name is lower-cased by DeepSpeed; params pass through.
        std::string type = c.optimizer.type;
        for (char& ch : type) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        EXPECT_EQ(type, want.at("optimizer_name").get<std::string>());
        const json& op = want.at("optimizer_params");
        EXPECT_EQ(c.optimizer.lr, op.at("lr").get<double>());
        EXPECT_EQ(c.optimizer.weight_decay, op.at("weight_decay").get<double>());
        if (op.contains("betas")) {
            EXPECT_EQ(c.optimizer.beta1, op.at("betas")[0].get<double>());
            EXPECT_EQ(c.optimizer.beta2, op.at("betas")[1].get<double>());
        }
        EXPECT_STREQ(to_string(c.scheduler.kind),
                     want.at("scheduler_name").get<std::string>().c_str());

        const json& f = want.at("fp16");
        EXPECT_EQ(c.fp16.enabled, f.at("enabled").get<bool>());
        EXPECT_EQ(c.fp16.auto_cast, f.at("auto_cast").get<bool>());
        EXPECT_EQ(c.fp16.loss_scale, f.at("loss_scale").get<double>());
        EXPECT_EQ(c.fp16.initial_scale_power, f.at("initial_scale_power").get<int>());
        EXPECT_EQ(c.fp16.loss_scale_window, f.at("loss_scale_window").get<int64_t>());
        EXPECT_EQ(c.fp16.hysteresis, f.at("hysteresis").get<int>());
        EXPECT_EQ(c.fp16.consecutive_hysteresis, f.at("consecutive_hysteresis").get<bool>());
        EXPECT_EQ(c.fp16.min_loss_scale, f.at("min_loss_scale").get<int64_t>());
        const json& b = want.at("bf16");
        EXPECT_EQ(c.bf16.enabled, b.at("enabled").get<bool>());
        EXPECT_EQ(c.bf16.immediate_grad_update, b.at("immediate_grad_update").get<bool>());
        EXPECT_EQ(c.bf16.check_grad_overflow, b.at("check_grad_overflow").get<bool>());

        const json& z = want.at("zero");
        const ZeroConfig& zc = c.zero;
        EXPECT_EQ(zc.stage, z.at("stage").get<int>());
        EXPECT_EQ(zc.contiguous_gradients, z.at("contiguous_gradients").get<bool>());
        EXPECT_EQ(zc.reduce_scatter, z.at("reduce_scatter").get<bool>());
        EXPECT_EQ(zc.reduce_bucket_size, z.at("reduce_bucket_size").get<int64_t>());
        EXPECT_EQ(zc.use_multi_rank_bucket_allreduce,
                  z.at("use_multi_rank_bucket_allreduce").get<bool>());
        EXPECT_EQ(zc.allgather_partitions, z.at("allgather_partitions").get<bool>());
        EXPECT_EQ(zc.allgather_bucket_size, z.at("allgather_bucket_size").get<int64_t>());
        EXPECT_EQ(zc.overlap_comm, z.at("overlap_comm").get<bool>());
        EXPECT_EQ(zc.load_from_fp32_weights, z.at("load_from_fp32_weights").get<bool>());
        EXPECT_EQ(zc.elastic_checkpoint, z.at("elastic_checkpoint").get<bool>());
        EXPECT_EQ(zc.sub_group_size, z.at("sub_group_size").get<int64_t>());
        EXPECT_EQ(zc.stage3_prefetch_bucket_size, z.at("prefetch_bucket_size").get<int64_t>());
        EXPECT_EQ(zc.stage3_param_persistence_threshold,
                  z.at("param_persistence_threshold").get<int64_t>());
        EXPECT_EQ(zc.stage3_model_persistence_threshold,
                  z.at("model_persistence_threshold").get<int64_t>());
        EXPECT_EQ(zc.stage3_max_live_parameters, z.at("max_live_parameters").get<int64_t>());
        EXPECT_EQ(zc.stage3_max_reuse_distance, z.at("max_reuse_distance").get<int64_t>());
        EXPECT_EQ(zc.stage3_gather_16bit_weights_on_model_save,
                  z.at("gather_16bit_weights_on_model_save").get<bool>());
        EXPECT_EQ(zc.ignore_unused_parameters, z.at("ignore_unused_parameters").get<bool>());
        EXPECT_EQ(zc.round_robin_gradients, z.at("round_robin_gradients").get<bool>());
        EXPECT_EQ(zc.zero_hpz_partition_size, z.at("zero_hpz_partition_size").get<int64_t>());
        EXPECT_EQ(zc.zero_quantized_weights, z.at("zero_quantized_weights").get<bool>());
        EXPECT_EQ(zc.zero_quantized_gradients, z.at("zero_quantized_gradients").get<bool>());
        EXPECT_EQ(zc.memory_efficient_linear, z.at("memory_efficient_linear").get<bool>());
        EXPECT_EQ(zc.override_module_apply, z.at("override_module_apply").get<bool>());
        const json& oo = z.at("offload_optimizer");
        if (oo.is_null()) {
            EXPECT_EQ(zc.offload_optimizer.device, OffloadDevice::none);
        } else {
            EXPECT_STREQ(to_string(zc.offload_optimizer.device),
                         oo.at("device").get<std::string>().c_str());
            EXPECT_EQ(zc.offload_optimizer.pin_memory, oo.at("pin_memory").get<bool>());
            EXPECT_EQ(zc.offload_optimizer.buffer_count, oo.at("buffer_count").get<int64_t>());
            EXPECT_EQ(zc.offload_optimizer.fast_init, oo.at("fast_init").get<bool>());
            EXPECT_EQ(zc.offload_optimizer.ratio, oo.at("ratio").get<double>());
            EXPECT_EQ(zc.offload_optimizer.nvme_path,
                      oo.at("nvme_path").is_null() ? "" : oo.at("nvme_path").get<std::string>());
        }
        const json& opar = z.at("offload_param");
        if (opar.is_null()) {
            EXPECT_EQ(zc.offload_param.device, OffloadDevice::none);
        } else {
            EXPECT_STREQ(to_string(zc.offload_param.device),
                         opar.at("device").get<std::string>().c_str());
            EXPECT_EQ(zc.offload_param.pin_memory, opar.at("pin_memory").get<bool>());
            EXPECT_EQ(zc.offload_param.buffer_count, opar.at("buffer_count").get<int64_t>());
            EXPECT_EQ(zc.offload_param.buffer_size, opar.at("buffer_size").get<int64_t>());
            EXPECT_EQ(zc.offload_param.max_in_cpu, opar.at("max_in_cpu").get<int64_t>());
        }

        const json& ac = want.at("activation_checkpointing");
        EXPECT_EQ(c.activation_checkpointing.partition_activations,
                  ac.at("partition_activations").get<bool>());
        EXPECT_EQ(c.activation_checkpointing.cpu_checkpointing,
                  ac.at("cpu_checkpointing").get<bool>());
        EXPECT_EQ(c.activation_checkpointing.contiguous_memory_optimization,
                  ac.at("contiguous_memory_optimization").get<bool>());
        EXPECT_EQ(num(ac.at("number_checkpoints")),
                  c.activation_checkpointing.number_checkpoints
                      ? static_cast<double>(*c.activation_checkpointing.number_checkpoints)
                      : -1.0);
        EXPECT_EQ(c.activation_checkpointing.profile, ac.at("profile").get<bool>());

        EXPECT_EQ(num(want.at("steps_per_print")),
                  c.steps_per_print ? static_cast<double>(*c.steps_per_print) : -1.0);
        EXPECT_EQ(c.wall_clock_breakdown, want.at("wall_clock_breakdown").get<bool>());
        EXPECT_EQ(c.dump_state, want.at("dump_state").get<bool>());
        EXPECT_EQ(c.prescale_gradients, want.at("prescale_gradients").get<bool>());
        EXPECT_EQ(c.gradient_predivide_factor, want.at("gradient_predivide_factor").get<double>());
        const json& cdt = want.at("communication_data_type");
        EXPECT_EQ(
            cdt.is_null() ? std::string("none") : cdt.get<std::string>(),
            c.communication_data_type
                ? std::string(c.communication_data_type == DataType::fp32   ? "torch.float32"
                              : c.communication_data_type == DataType::fp16 ? "torch.float16"
                                                                            : "torch.bfloat16")
                : std::string("none"));
        EXPECT_EQ(c.checkpoint.tag_validation != TagValidation::ignore,
                  want.at("checkpoint_tag_validation_enabled").get<bool>());
        EXPECT_EQ(c.checkpoint.tag_validation == TagValidation::fail,
                  want.at("checkpoint_tag_validation_fail").get<bool>());
        EXPECT_EQ(c.checkpoint.load_universal, want.at("load_universal_checkpoint").get<bool>());
        EXPECT_EQ(c.checkpoint.use_node_local_storage,
                  want.at("use_node_local_storage").get<bool>());
        const json& gad = want.at("grad_accum_dtype");
        EXPECT_EQ(gad.is_null() ? "none" : gad.get<std::string>(),
                  c.grad_accum_dtype ? to_string(*c.grad_accum_dtype) : "none");
        for (const char* m : {"csv_monitor", "tensorboard"}) {
            const MonitorConfig& mc =
                std::string(m) == "csv_monitor" ? c.csv_monitor : c.tensorboard;
            EXPECT_EQ(mc.enabled, want.at(m).at("enabled").get<bool>()) << m;
            EXPECT_EQ(mc.output_path, want.at(m).at("output_path").get<std::string>()) << m;
            EXPECT_EQ(mc.job_name, want.at(m).at("job_name").get<std::string>()) << m;
        }
    }
}

// Elasticity against DeepSpeed 0.19.7, the last release that has it:
// tests/fixtures/deepspeed/elasticity.json, recorded by tools/reference/make_elastic_fixture.py
// through DeepSpeedConfig (with a fake mpu for the world size) and compute_elastic_config, for
// hand-picked and sampled configs (versions 0.1 and 0.2, node shapes, batch keys next to the
// block, every error ElasticityConfig raises) at 17 world sizes each.
TEST(DeepSpeedElasticity, BatchAndValidWorldSizesMatchDeepSpeed) {
    const json f = json::parse(
        io::read_file(zs::test::source_path("tests/fixtures/deepspeed/elasticity.json")));
    EXPECT_EQ(f.at("meta").at("deepspeed_version").get<std::string>(), "0.19.7");
    const json& worlds = f.at("worlds");
    size_t resolved = 0, refused = 0;
    for (const json& c : f.at("cases")) {
        const std::string name = c.at("name").get<std::string>();
        const std::string text = c.at("config").dump();
        for (size_t i = 0; i < worlds.size(); ++i) {
            const int world = worlds[i].get<int>();
            const json& want = c.at("results")[i];
            SCOPED_TRACE(name + " " + text + ", world size " + std::to_string(world));
            if (want.is_string()) {  // DeepSpeed raised
                EXPECT_THROW(parse_ds_config(text, "elastic.json", world), ConfigError)
                    << "DeepSpeed: " << want.get<std::string>();
                ++refused;
                continue;
            }
            TrainConfig t = parse_ds_config(text, "elastic.json", world);
            EXPECT_EQ(t.batch.train_batch_size, want[0].get<int64_t>());
            EXPECT_EQ(t.batch.train_micro_batch_size_per_gpu, want[1].get<int64_t>());
            EXPECT_EQ(t.batch.gradient_accumulation_steps, want[2].get<int64_t>());
            const int v = want[3].get<int>();
            EXPECT_EQ(t.elasticity.enabled, v >= 0);
            if (v >= 0) {
                EXPECT_EQ(t.elasticity.valid_world_sizes,
                          c.at("valid")[static_cast<size_t>(v)].get<std::vector<int64_t>>());
            }
            ++resolved;
        }
    }
    EXPECT_GE(resolved, 1000u);  // both outcomes are well covered
    EXPECT_GE(refused, 1000u);
}

}  // namespace
}  // namespace zs::train
