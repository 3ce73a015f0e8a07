// The "elasticity" block of ds_config.json as DeepSpeed 0.19.6-0.19.7 read it: the train batch,
// micro-batch and gradient accumulation derived for the world size from max_train_batch_size,
// micro_batch_sizes, min_gpus / max_gpus and prefer_larger_batch (versions 0.1 and 0.2), the
// world sizes the batch fits, and the errors DeepSpeed raises (tested against DeepSpeed 0.19.7
// itself: tests/fixtures/deepspeed/elasticity.json).
#pragma once

#include <optional>

#include "train/config_section.h"
#include "train/ds_config.h"

namespace zs::train {

// The batch the elasticity block gives for `world` ranks (nullopt when the block is absent or
// disabled); fills `e`. Errors name the key and the world sizes that would fit.
std::optional<BatchConfig> parse_elasticity(Section& root, int world, ElasticityConfig& e);

}  // namespace zs::train
