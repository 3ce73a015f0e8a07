// libFuzzer target: arbitrary bytes through both configuration parsers a user hands zerospeed, a
// DeepSpeed ds_config.json (for 1 and 4 data-parallel ranks) and a Hugging Face config.json
// (models::parse_hf_config, whose accepted configs must survive export and re-parsing). Only
// zs::Error may escape: a crash, an abort or any other exception (a std::out_of_range from a JSON
// accessor, say) is a bug.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "base/error.h"
#include "base/log.h"
#include "models/config.h"
#include "train/ds_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const bool quiet = [] {
        zs::set_log_level(zs::LogLevel::error);  // the parsers warn about unknown keys
        return true;
    }();
    (void)quiet;
    const std::string text(reinterpret_cast<const char*>(data), size);
    for (int world : {1, 4}) {
        try {
            (void)zs::train::parse_ds_config(text, "fuzz/ds_config.json", world);
        } catch (const zs::Error&) {
        }
    }
    try {
        zs::models::ModelConfig c = zs::models::parse_hf_config(text, "fuzz/config.json");
        (void)c.n_params();
        // What zerospeed exports from an accepted config must load again.
        const std::string exported = zs::models::to_hf_config_json(c);
        try {
            (void)zs::models::parse_hf_config(exported, "fuzz/exported_config.json");
        } catch (const zs::Error&) {
            std::abort();
        }
    } catch (const zs::Error&) {
    }
    return 0;
}
