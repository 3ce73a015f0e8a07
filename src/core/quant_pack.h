// Repacking many quantized matrices at once (quant.h's interleave16 for each), their interleaved
// copies in one buffer.
#pragma once

#include <vector>

#include "core/quant.h"

namespace zs::core {

// Each CPU tensor of `ts` whose type can_interleave is replaced by interleave16 of it, and all
// those copies share one new buffer backed by transparent huge pages (each 4 KiB aligned, in the
// order given; `huge_pages` false: 4 KiB pages). Decode streams every weight once per token: on
// 4 KiB pages each page of that stream is a TLB miss and a page walk, and the model's matrices
// are mostly below the 2 MiB a buffer needs to get huge pages of its own. Undefined tensors and
// the others are left alone. Not thread-safe with other interleave16 calls on this thread.
void interleave16_all(std::vector<QTensor>& ts, bool huge_pages = true);

}  // namespace zs::core
