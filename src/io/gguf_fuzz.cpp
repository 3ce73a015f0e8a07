// libFuzzer target: parse arbitrary bytes as a GGUF file, read every metadata value through the
// typed getters, dequantize every tensor to f32 and bf16, and un-permute the 2-D ones. Only
// zs::Error may escape; anything else is a bug.
#include <cstdint>
#include <memory>
#include <vector>

#include "base/error.h"
#include "io/gguf.h"

using zs::io::GgufFile;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto owner = std::make_shared<std::vector<uint8_t>>(data, data + size);
    try {
        GgufFile g = GgufFile::from_memory(*owner, owner, "fuzz.gguf");
        for (const zs::io::GgufKv& kv : g.metadata()) {
            volatile size_t n = zs::io::describe_type(kv.value).size();
            (void)n;
            try {
                g.get_int(kv.key);
            } catch (const zs::Error&) {
            }
            try {
                g.get_float(kv.key);
            } catch (const zs::Error&) {
            }
            try {
                g.get<std::vector<std::string>>(kv.key);
            } catch (const zs::Error&) {
            }
        }
        for (const zs::io::GgufTensorInfo& t : g.tensors()) {
            std::span<const uint8_t> raw = g.raw_bytes(t.name);
            ZS_ASSERT(raw.data() >= owner->data() &&
                          raw.data() + raw.size() <= owner->data() + owner->size(),
                      "tensor bytes outside the file");
            for (zs::core::DType out : {zs::core::DType::f32, zs::core::DType::bf16}) {
                try {
                    zs::core::Tensor x = g.tensor(t.name, out);
                    ZS_ASSERT(x.numel() == t.numel(), "element count changed");
                    if (x.dim() == 2 && x.size(0) % 2 == 0) {
                        zs::io::unpermute_llama_qk(x, 1);
                    }
                } catch (const zs::Error&) {
                }
            }
        }
    } catch (const zs::Error&) {
    }
    return 0;
}
