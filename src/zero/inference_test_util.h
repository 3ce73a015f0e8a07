// What the ZeRO-Inference tests share: a tiny HF fixture opened as the in-memory reference
// (weights loaded) or bare for a WeightStream to feed, a stream's settings, and the bytes one
// read of a block takes on its tier.
#pragma once

#include <memory>
#include <string>

#include "io/aio.h"
#include "models/params.h"
#include "models/sources.h"
#include "models/transformer.h"
#include "models/weights.h"
#include "tests/test_util.h"
#include "zero/inference.h"

namespace zs::zero {

struct FixtureModel {
    models::ModelFiles files;
    std::unique_ptr<models::Transformer> model;
    std::unique_ptr<models::DenseParams> params;  // null unless opened dense
};

// tests/fixtures/hf/<name> computing in `ct`; `dense`: its weights loaded and bound (the
// reference), else no weights bound (a WeightStream binds them block by block).
inline FixtureModel open_fixture(const std::string& name, core::DType ct, bool dense) {
    FixtureModel m{models::open_model(zs::test::source_path("tests/fixtures/hf/" + name)), nullptr,
                   nullptr};
    m.model = std::make_unique<models::Transformer>(m.files.config, models::RunConfig{ct});
    if (dense) {
        m.params = std::make_unique<models::DenseParams>(m.model->layout(), ct, false);
        models::load_hf_weights(*m.model, *m.params, *m.files.weights);
        m.params->bind(m.model->binding());
    }
    return m;
}

inline StreamConfig stream_config(Tier tier, const std::string& path, int64_t prefetch) {
    StreamConfig sc;
    sc.tier = tier;
    sc.path = path;
    sc.prefetch = prefetch;
    return sc;
}

// The bytes one read of block l takes on the tier (data, then on NVMe the O_DIRECT padding and
// the checksum footer), from the layout.
inline int64_t block_read_bytes(const models::Transformer& m, int l, Tier tier) {
    const auto b =
        static_cast<size_t>(m.layout().group(m.block_group(l)).numel *
                            static_cast<int64_t>(core::dtype_size(m.run_config().compute_dtype)));
    return tier == Tier::nvme ? static_cast<int64_t>(io::aio_padded(b) + io::kAioAlign)
                              : static_cast<int64_t>(b);
}

}  // namespace zs::zero
