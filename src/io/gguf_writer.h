// GgufWriter: builds GGUF files (version 3 by default) from metadata and tensors.
//
// Used by tests and fuzz seeds today, and meant for `zerospeed convert` later. Tensors are given
// either as core::Tensors (F32, F16, BF16, I8, I32, I64; ne = reverse(shape)) or as already
// encoded bytes of any GGML type. Data is laid out in insertion order, each tensor padded to the
// alignment, exactly as GgufFile expects. general.alignment is written (as UINT32) when the
// alignment is not the default 32.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/gguf.h"

namespace zs::io {

class GgufWriter {
public:
    explicit GgufWriter(uint32_t alignment = kGgufDefaultAlignment, uint32_t version = 3);

    // Append a key (the key must be new; use the constructor for general.alignment).
    void set(std::string key, GgufValue value);
    // Encoded bytes of `type` for a tensor with dims `ne` (innermost first).
    void add_tensor(std::string name, GgmlType type, std::vector<int64_t> ne,
                    std::vector<uint8_t> data);
    void add_tensor(std::string name, const core::Tensor& t);

    std::vector<uint8_t> to_bytes() const;
    void save(const std::string& path) const;  // atomically (AtomicFile)

private:
    struct Pending {
        std::string name;
        GgmlType type;
        std::vector<int64_t> ne;
        std::vector<uint8_t> data;
    };
    uint32_t alignment_;
    uint32_t version_;
    std::vector<GgufKv> kv_;
    std::vector<Pending> tensors_;
};

}  // namespace zs::io
