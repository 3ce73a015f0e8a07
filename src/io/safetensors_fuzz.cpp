// libFuzzer target: parse arbitrary bytes as a .safetensors file, then read every tensor and
// touch every byte. Only zs::Error may escape the parser; anything else (a crash, an ASan/UBSan
// report, a std:: exception, a broken invariant below) is a bug.
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "base/error.h"
#include "io/safetensors.h"

using zs::io::SafetensorsFile;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    // An exact-size heap copy, so ASan sees any read past the end.
    auto owner = std::make_shared<std::vector<uint8_t>>(data, data + size);
    try {
        SafetensorsFile f = SafetensorsFile::from_memory(*owner, owner, "fuzz.safetensors");
        uint64_t at = 0;
        for (const auto& info : f.tensors()) {
            ZS_ASSERT(info.begin == at && info.end >= info.begin, "offsets not contiguous");
            at = info.end;
            std::span<const uint8_t> raw = f.raw_bytes(info.name);
            ZS_ASSERT(raw.data() >= owner->data() &&
                          raw.data() + raw.size() <= owner->data() + owner->size(),
                      "tensor bytes outside the file");
            unsigned sum = 0;
            for (uint8_t b : raw) sum += b;
            try {
                zs::core::Tensor t = f.tensor(info.name);
                ZS_ASSERT(t.nbytes() == raw.size(), "tensor size differs from its span");
                ZS_ASSERT(reinterpret_cast<uintptr_t>(t.data_ptr()) % t.element_size() == 0,
                          "misaligned tensor");
                if (t.nbytes() > 0) {
                    ZS_ASSERT(std::memcmp(t.data_ptr(), raw.data(), t.nbytes()) == 0,
                              "tensor bytes differ from the file");
                }
            } catch (const zs::Error&) {
            }
            volatile unsigned sink = sum;
            (void)sink;
        }
        ZS_ASSERT(f.data_offset() + at == size, "data buffer not covered");
        for (const auto& [k, v] : f.metadata()) {
            volatile size_t n = k.size() + v.size();
            (void)n;
        }
    } catch (const zs::Error&) {
    }
    return 0;
}
