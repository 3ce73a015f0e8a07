// zero_optimization of ds_config.json (DeepSpeed's zero/config.py and zero/offload_config.py).
// Internal to train/: called by parse_ds_config.
#pragma once

#include "train/config_section.h"
#include "train/ds_config.h"

namespace zs::train {

// Reads "zero_optimization" (and the deprecated boolean form with "allgather_size") from the root.
ZeroConfig parse_zero(Section& root);

}  // namespace zs::train
