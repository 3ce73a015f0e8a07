#include "cli/hf_export.h"

#include <filesystem>

#include "base/error.h"
#include "base/log.h"
#include "io/atomic_file.h"
#include "io/safetensors_writer.h"
#include "models/sources.h"
#include "models/transformer.h"
#include "models/weights.h"
#include "train/hf_export.h"

namespace zs::cli {

namespace fs = std::filesystem;

int convert_gguf_to_hf(const ConvertOptions& o) {
    ZS_CHECK_T(ConfigError, o.dtype == "f32" || o.dtype == "bf16",
               "convert --to hf: --dtype '{}' is not supported (f32, bf16)", o.dtype);
    const core::DType dt = o.dtype == "bf16" ? core::DType::bf16 : core::DType::f32;
    models::ModelFiles files = models::open_model(o.checkpoint);
    models::ModelConfig mc = files.config;
    mc.torch_dtype = dt;
    models::Transformer model(mc, models::RunConfig{});  // layout only: allocates no weights
    fs::create_directories(o.output);
    const int G = model.layout().n_groups();
    io::SafetensorsShardWriter writer(o.output, static_cast<size_t>(G));
    for (int g = 0; g < G; ++g) {  // one group in memory at a time
        const core::Tensor full = models::load_hf_group(model, g, *files.weights);
        std::vector<io::NamedTensor> tensors;
        for (auto& [name, t] : models::export_hf_group(model, g, full)) {
            tensors.push_back({name, t.to(dt).contiguous()});
        }
        writer.write(static_cast<size_t>(g), tensors, {{"format", "pt"}});
    }
    writer.finish();
    io::write_file_atomic(o.output + "/config.json", models::to_hf_config_json(mc));
    train::write_hf_extras(o.checkpoint, mc, o.output);
    log_info("wrote {} ({} tensors, {}, {}) from {}", o.output, writer.n_tensors(), o.dtype,
             core::format_bytes(static_cast<int64_t>(writer.total_bytes())), o.checkpoint);
    return 0;
}

}  // namespace zs::cli
