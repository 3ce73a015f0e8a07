#include "io/gguf_writer.h"

#include <algorithm>
#include <cstring>

#include "base/error.h"
#include "io/atomic_file.h"

namespace zs::io {

namespace {

class Bytes {
public:
    template <class T>
    void put(T v) {
        size_t n = out.size();
        out.resize(n + sizeof(T));
        std::memcpy(out.data() + n, &v, sizeof(T));
    }
    void put_string(const std::string& s) {
        put<uint64_t>(s.size());
        out.insert(out.end(), s.begin(), s.end());
    }
    void pad_to(uint64_t align) {
        while (out.size() % align != 0) out.push_back(0);
    }
    std::vector<uint8_t> out;
};

void put_array(Bytes& b, const GgufArray& a) {
    b.put<uint32_t>(static_cast<uint32_t>(element_type(a)));
    b.put<uint64_t>(array_size(a));
    std::visit(
        [&b](const auto& v) {
            using E = typename std::decay_t<decltype(v)>::value_type;
            for (const auto& e : v) {
                if constexpr (std::is_same_v<E, std::string>) {
                    b.put_string(e);
                } else if constexpr (std::is_same_v<E, bool>) {
                    b.put<uint8_t>(e ? 1 : 0);
                } else {
                    b.put<E>(e);
                }
            }
        },
        a);
}

void put_value(Bytes& b, const GgufValue& v) {
    std::visit(
        [&b](const auto& x) {
            using X = std::decay_t<decltype(x)>;
            if constexpr (std::is_same_v<X, std::string>) {
                b.put_string(x);
            } else if constexpr (std::is_same_v<X, GgufArray>) {
                put_array(b, x);
            } else if constexpr (std::is_same_v<X, bool>) {
                b.put<uint8_t>(x ? 1 : 0);
            } else {
                b.put<X>(x);
            }
        },
        v);
}

GgmlType ggml_type_of(core::DType d) {
    switch (d) {
        case core::DType::f32:
            return GgmlType::f32;
        case core::DType::f16:
            return GgmlType::f16;
        case core::DType::bf16:
            return GgmlType::bf16;
        case core::DType::i8:
            return GgmlType::i8;
        case core::DType::i32:
            return GgmlType::i32;
        case core::DType::i64:
            return GgmlType::i64;
    }
    return GgmlType::f32;
}

}  // namespace

GgufWriter::GgufWriter(uint32_t alignment, uint32_t version)
    : alignment_(alignment), version_(version) {
    ZS_CHECK(alignment != 0 && (alignment & (alignment - 1)) == 0,
             "GgufWriter: alignment {} is not a power of two", alignment);
    if (alignment != kGgufDefaultAlignment) kv_.push_back({"general.alignment", alignment});
}

void GgufWriter::set(std::string key, GgufValue value) {
    ZS_CHECK(key != "general.alignment", "GgufWriter: set the alignment in the constructor");
    for (const GgufKv& kv : kv_) ZS_CHECK(kv.key != key, "GgufWriter: duplicate key '{}'", key);
    kv_.push_back({std::move(key), std::move(value)});
}

void GgufWriter::add_tensor(std::string name, GgmlType type, std::vector<int64_t> ne,
                            std::vector<uint8_t> data) {
    const GgmlTypeTraits& tr = traits(type);
    int64_t numel = 1;
    for (int64_t d : ne) numel *= d;
    const int64_t ne0 = ne.empty() ? 1 : ne[0];
    ZS_CHECK(ne0 % tr.block_size == 0,
             "GgufWriter: tensor '{}': ne[0] = {} is not a multiple of {}", name, ne0,
             tr.block_size);
    ZS_CHECK(static_cast<int64_t>(data.size()) == numel / tr.block_size * tr.type_size,
             "GgufWriter: tensor '{}': {} bytes for {} elements of {}", name, data.size(), numel,
             tr.name);
    tensors_.push_back({std::move(name), type, std::move(ne), std::move(data)});
}

void GgufWriter::add_tensor(std::string name, const core::Tensor& t) {
    core::Tensor c = t.to(core::Device::cpu()).contiguous();
    std::vector<int64_t> ne(c.shape().begin(), c.shape().end());
    std::reverse(ne.begin(), ne.end());
    const auto* p = static_cast<const uint8_t*>(c.data_ptr());
    add_tensor(std::move(name), ggml_type_of(c.dtype()), std::move(ne),
               std::vector<uint8_t>(p, p + c.nbytes()));
}

std::vector<uint8_t> GgufWriter::to_bytes() const {
    Bytes b;
    b.out = {'G', 'G', 'U', 'F'};
    b.put<uint32_t>(version_);
    b.put<uint64_t>(tensors_.size());
    b.put<uint64_t>(kv_.size());
    for (const GgufKv& kv : kv_) {
        b.put_string(kv.key);
        b.put<uint32_t>(static_cast<uint32_t>(type_of(kv.value)));
        put_value(b, kv.value);
    }
    uint64_t offset = 0;
    for (const Pending& t : tensors_) {
        b.put_string(t.name);
        b.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
        for (int64_t d : t.ne) b.put<int64_t>(d);
        b.put<uint32_t>(static_cast<uint32_t>(t.type));
        b.put<uint64_t>(offset);
        offset += (t.data.size() + alignment_ - 1) / alignment_ * alignment_;
    }
    b.pad_to(alignment_);
    for (const Pending& t : tensors_) {
        b.out.insert(b.out.end(), t.data.begin(), t.data.end());
        b.pad_to(alignment_);
    }
    return b.out;
}

void GgufWriter::save(const std::string& path) const {
    std::vector<uint8_t> bytes = to_bytes();
    AtomicFile f(path);
    f.write(bytes.data(), bytes.size());
    f.commit();
}

}  // namespace zs::io
