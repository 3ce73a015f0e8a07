#include "io/gguf.h"

#include <bit>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "base/error.h"
#include "core/half.h"
#include "io/mmap_file.h"

namespace zs::io {

static_assert(std::endian::native == std::endian::little,
              "GGUF reading assumes a little-endian host");

namespace {

constexpr uint32_t kMaxVersion = 3;
// Lower bounds on the bytes one entry occupies, to reject impossible counts up front.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;      // key length + 1 key byte + type + value
constexpr uint64_t kMinTensorBytes = 8 + 4 + 4 + 8;  // name length + n_dims + type + offset
// Decode chunk for non-f32 outputs: a multiple of every block size.
constexpr int64_t kChunk = 64 * 1024;

// Sequential little-endian reads over [data, data + size), each checked against the bytes left.
class Cursor {
public:
    Cursor(const uint8_t* data, uint64_t size, const std::string& file)
        : data_(data), size_(size), file_(file) {}

    uint64_t pos() const { return pos_; }
    uint64_t remaining() const { return size_ - pos_; }

    template <class T>
    T read(std::string_view what) {
        if (remaining() < sizeof(T)) {
            ZS_THROW(IoError, "{}: truncated: {} needs {} bytes at offset {}, but {} remain", file_,
                     what, sizeof(T), pos_, remaining());
        }
        T v;
        std::memcpy(&v, data_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }

    std::string read_string(std::string_view what) {
        uint64_t len = read<uint64_t>(what);
        if (len > kGgufMaxString) {
            ZS_THROW(IoError, "{}: {}: string length {} exceeds the 1 GiB limit", file_, what, len);
        }
        if (len > remaining()) {
            ZS_THROW(IoError, "{}: {}: string length {} exceeds the {} bytes remaining", file_,
                     what, len, remaining());
        }
        std::string s(reinterpret_cast<const char*>(data_ + pos_), len);
        pos_ += len;
        return s;
    }

    // n elements of T, after checking n * sizeof(T) against the bytes left.
    template <class T>
    std::vector<T> read_array(uint64_t n, std::string_view what) {
        if (n > remaining() / sizeof(T)) {
            ZS_THROW(IoError,
                     "{}: {}: array of {} elements of {} bytes exceeds the {} bytes remaining",
                     file_, what, n, sizeof(T), remaining());
        }
        std::vector<T> v(n);
        if (n > 0) std::memcpy(v.data(), data_ + pos_, n * sizeof(T));
        pos_ += n * sizeof(T);
        return v;
    }

private:
    const uint8_t* data_;
    uint64_t size_;
    uint64_t pos_ = 0;
    const std::string& file_;
};

bool read_bool(Cursor& c, const std::string& file, std::string_view what) {
    uint8_t b = c.read<uint8_t>(what);
    ZS_CHECK_T(IoError, b <= 1, "{}: {}: BOOL value {} is neither 0 nor 1", file, what, b);
    return b == 1;
}

GgufArray read_array_value(Cursor& c, const std::string& file, const std::string& key) {
    const std::string what = "key '" + key + "'";
    uint32_t et = c.read<uint32_t>(what);
    uint64_t n = c.read<uint64_t>(what);
    ZS_CHECK_T(IoError, et <= static_cast<uint32_t>(GgufType::f64),
               "{}: key '{}': array element type {} is out of range [0, 12]", file, key, et);
    switch (static_cast<GgufType>(et)) {
        case GgufType::u8:
            return c.read_array<uint8_t>(n, what);
        case GgufType::i8:
            return c.read_array<int8_t>(n, what);
        case GgufType::u16:
            return c.read_array<uint16_t>(n, what);
        case GgufType::i16:
            return c.read_array<int16_t>(n, what);
        case GgufType::u32:
            return c.read_array<uint32_t>(n, what);
        case GgufType::i32:
            return c.read_array<int32_t>(n, what);
        case GgufType::f32:
            return c.read_array<float>(n, what);
        case GgufType::u64:
            return c.read_array<uint64_t>(n, what);
        case GgufType::i64:
            return c.read_array<int64_t>(n, what);
        case GgufType::f64:
            return c.read_array<double>(n, what);
        case GgufType::boolean: {
            ZS_CHECK_T(IoError, n <= c.remaining(),
                       "{}: key '{}': array of {} BOOLs exceeds the {} bytes remaining", file, key,
                       n, c.remaining());
            std::vector<bool> v(n);
            for (uint64_t i = 0; i < n; ++i) v[i] = read_bool(c, file, what);
            return v;
        }
        case GgufType::string: {
            // Each string takes at least its 8-byte length.
            ZS_CHECK_T(IoError, n <= c.remaining() / 8,
                       "{}: key '{}': array of {} strings exceeds the {} bytes remaining", file,
                       key, n, c.remaining());
            std::vector<std::string> v;
            v.reserve(n);
            for (uint64_t i = 0; i < n; ++i) v.push_back(c.read_string(what));
            return v;
        }
        case GgufType::array:
            ZS_THROW(IoError, "{}: key '{}': arrays of arrays are not allowed", file, key);
    }
    ZS_THROW(IoError, "{}: key '{}': bad array element type {}", file, key, et);
}

GgufValue read_value(Cursor& c, const std::string& file, const std::string& key, uint32_t type) {
    const std::string what = "key '" + key + "'";
    ZS_CHECK_T(IoError, type <= static_cast<uint32_t>(GgufType::f64),
               "{}: key '{}': value type {} is out of range [0, 12]", file, key, type);
    switch (static_cast<GgufType>(type)) {
        case GgufType::u8:
            return c.read<uint8_t>(what);
        case GgufType::i8:
            return c.read<int8_t>(what);
        case GgufType::u16:
            return c.read<uint16_t>(what);
        case GgufType::i16:
            return c.read<int16_t>(what);
        case GgufType::u32:
            return c.read<uint32_t>(what);
        case GgufType::i32:
            return c.read<int32_t>(what);
        case GgufType::f32:
            return c.read<float>(what);
        case GgufType::boolean:
            return read_bool(c, file, what);
        case GgufType::string:
            return c.read_string(what);
        case GgufType::array:
            return read_array_value(c, file, key);
        case GgufType::u64:
            return c.read<uint64_t>(what);
        case GgufType::i64:
            return c.read<int64_t>(what);
        case GgufType::f64:
            return c.read<double>(what);
    }
    ZS_THROW(IoError, "{}: key '{}': bad value type {}", file, key, type);
}

// x rounded up to a multiple of `align` (a power of two); false on overflow.
bool align_up(uint64_t x, uint64_t align, uint64_t* out) {
    if (x > std::numeric_limits<uint64_t>::max() - (align - 1)) return false;
    *out = (x + align - 1) & ~(align - 1);
    return true;
}

GgufTensorInfo read_tensor_info(Cursor& c, const std::string& file, uint64_t i) {
    GgufTensorInfo t;
    t.name = c.read_string(fmt::format("tensor #{} name", i));
    ZS_CHECK_T(IoError, t.name.size() < kGgufMaxName,
               "{}: tensor #{}: name of {} bytes is too long (names must be shorter than {})", file,
               i, t.name.size(), kGgufMaxName);
    const std::string what = "tensor '" + t.name + "'";
    uint32_t n_dims = c.read<uint32_t>(what);
    ZS_CHECK_T(IoError, n_dims <= kGgufMaxDims, "{}: tensor '{}': n_dims {} exceeds {}", file,
               t.name, n_dims, kGgufMaxDims);
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
        int64_t ne = c.read<int64_t>(what);
        ZS_CHECK_T(IoError, ne >= 0, "{}: tensor '{}': ne[{}] = {} is negative", file, t.name, d,
                   ne);
        t.ne.push_back(ne);
    }
    // The product of the non-zero dims must fit, so that no partial product in any order (shape
    // strides, numel) can overflow even when another dim is 0.
    bool has_zero = false;
    for (int64_t ne : t.ne) {
        if (ne == 0) {
            has_zero = true;
            continue;
        }
        ZS_CHECK_T(IoError, numel <= std::numeric_limits<int64_t>::max() / ne,
                   "{}: tensor '{}': the element count overflows int64", file, t.name);
        numel *= ne;
    }
    if (has_zero) numel = 0;
    uint32_t type = c.read<uint32_t>(what);
    std::optional<GgmlType> gt = ggml_type_from_u32(type);
    ZS_CHECK_T(IoError, gt.has_value(), "{}: tensor '{}': GGML type {} is unknown or removed", file,
               t.name, type);
    t.type = *gt;
    const GgmlTypeTraits& tr = traits(t.type);
    const int64_t ne0 = t.ne.empty() ? 1 : t.ne[0];
    ZS_CHECK_T(IoError, ne0 % tr.block_size == 0,
               "{}: tensor '{}': row length ne[0] = {} is not a multiple of the {} block size {}",
               file, t.name, ne0, tr.name, tr.block_size);
    const uint64_t blocks = static_cast<uint64_t>(numel / tr.block_size);
    ZS_CHECK_T(IoError,
               blocks <= std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(tr.type_size),
               "{}: tensor '{}': the size in bytes overflows", file, t.name);
    t.nbytes = blocks * static_cast<uint64_t>(tr.type_size);
    t.offset = c.read<uint64_t>(what);
    return t;
}

}  // namespace

const char* to_string(GgufType t) {
    switch (t) {
        case GgufType::u8:
            return "UINT8";
        case GgufType::i8:
            return "INT8";
        case GgufType::u16:
            return "UINT16";
        case GgufType::i16:
            return "INT16";
        case GgufType::u32:
            return "UINT32";
        case GgufType::i32:
            return "INT32";
        case GgufType::f32:
            return "FLOAT32";
        case GgufType::boolean:
            return "BOOL";
        case GgufType::string:
            return "STRING";
        case GgufType::array:
            return "ARRAY";
        case GgufType::u64:
            return "UINT64";
        case GgufType::i64:
            return "INT64";
        case GgufType::f64:
            return "FLOAT64";
    }
    return "?";
}

GgufType type_of(const GgufValue& v) { return static_cast<GgufType>(v.index()); }

GgufType element_type(const GgufArray& a) {
    size_t k = a.index();
    return static_cast<GgufType>(k < 9 ? k : k + 1);
}

size_t array_size(const GgufArray& a) {
    return std::visit([](const auto& v) { return v.size(); }, a);
}

std::string describe_type(const GgufValue& v) {
    if (const GgufArray* a = std::get_if<GgufArray>(&v)) {
        return std::string("ARRAY[") + to_string(element_type(*a)) + "]";
    }
    return to_string(type_of(v));
}

int64_t GgufTensorInfo::numel() const {
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    return n;
}

core::Shape GgufTensorInfo::shape() const {
    core::Shape s;
    for (auto it = ne.rbegin(); it != ne.rend(); ++it) s.push_back(*it);
    return s;
}

GgufFile GgufFile::open(const std::string& path) {
    std::shared_ptr<MmapFile> f = MmapFile::open(path);
    std::span<uint8_t> bytes(f->cow_data(), f->size());
    return from_memory(bytes, f, path);
}

GgufFile GgufFile::from_memory(std::span<uint8_t> bytes, std::shared_ptr<void> keep_alive,
                               std::string name) {
    GgufFile g;
    g.path_ = std::move(name);
    const std::string& file = g.path_;
    Cursor c(bytes.data(), bytes.size(), file);

    // Header.
    ZS_CHECK_T(IoError, bytes.size() >= 4 && std::memcmp(bytes.data(), "GGUF", 4) == 0,
               "{}: bad magic: not a GGUF file", file);
    c.read<uint32_t>("magic");
    g.version_ = c.read<uint32_t>("version");
    ZS_CHECK_T(IoError, g.version_ != 0, "{}: GGUF version 0 is invalid", file);
    ZS_CHECK_T(IoError, (g.version_ & 0xFFFFu) != 0,
               "{}: GGUF version {:#x} looks byte-swapped (a big-endian file?)", file, g.version_);
    ZS_CHECK_T(IoError, g.version_ != 1, "{}: GGUF version 1 is not supported (2 and 3 are)", file);
    ZS_CHECK_T(IoError, g.version_ <= kMaxVersion,
               "{}: GGUF version {} is newer than the supported {}", file, g.version_, kMaxVersion);
    const uint64_t n_tensors = c.read<uint64_t>("n_tensors");
    const uint64_t n_kv = c.read<uint64_t>("n_kv");
    ZS_CHECK_T(IoError, n_kv <= c.remaining() / kMinKvBytes,
               "{}: n_kv = {} key-value pairs cannot fit in the {} bytes remaining", file, n_kv,
               c.remaining());
    ZS_CHECK_T(IoError, n_tensors <= c.remaining() / kMinTensorBytes,
               "{}: n_tensors = {} tensor infos cannot fit in the {} bytes remaining", file,
               n_tensors, c.remaining());

    // Key-value pairs.
    for (uint64_t i = 0; i < n_kv; ++i) {
        std::string key = c.read_string(fmt::format("key #{}", i));
        ZS_CHECK_T(IoError, !key.empty(), "{}: key #{} is empty", file, i);
        ZS_CHECK_T(IoError, g.kv_index_.find(key) == g.kv_index_.end(), "{}: duplicate key '{}'",
                   file, key);
        uint32_t type = c.read<uint32_t>("key '" + key + "' type");
        GgufValue value = read_value(c, file, key, type);
        g.kv_index_.emplace(key, g.kv_.size());
        g.kv_.push_back(GgufKv{std::move(key), std::move(value)});
    }
    if (const GgufValue* a = g.find("general.alignment")) {
        const uint32_t* v = std::get_if<uint32_t>(a);
        ZS_CHECK_T(IoError, v != nullptr, "{}: key 'general.alignment': must be UINT32, got {}",
                   file, describe_type(*a));
        ZS_CHECK_T(IoError, *v != 0 && (*v & (*v - 1)) == 0,
                   "{}: key 'general.alignment': {} is not a non-zero power of two", file, *v);
        g.alignment_ = *v;
    }

    // Tensor infos.
    for (uint64_t i = 0; i < n_tensors; ++i) {
        GgufTensorInfo t = read_tensor_info(c, file, i);
        ZS_CHECK_T(IoError, g.tensor_index_.find(t.name) == g.tensor_index_.end(),
                   "{}: duplicate tensor name '{}'", file, t.name);
        g.tensor_index_.emplace(t.name, g.tensors_.size());
        g.tensors_.push_back(std::move(t));
    }

    // Data section: aligned start inside the file; offsets are the running padded sum.
    uint64_t start = c.pos();
    if (n_tensors > 0) {
        ZS_CHECK_T(IoError, align_up(c.pos(), g.alignment_, &start) && start <= bytes.size(),
                   "{}: the data section (byte {} aligned to {}) starts beyond the end of the "
                   "{}-byte file",
                   file, c.pos(), g.alignment_, bytes.size());
    }
    g.data_offset_ = start;
    const uint64_t data_bytes = bytes.size() - start;
    uint64_t expected = 0;
    for (const GgufTensorInfo& t : g.tensors_) {
        ZS_CHECK_T(IoError, t.offset == expected,
                   "{}: tensor '{}': offset {} should be {} (tensor data must be contiguous, in "
                   "order, each padded to the alignment of {})",
                   file, t.name, t.offset, expected, g.alignment_);
        ZS_CHECK_T(IoError, t.offset <= data_bytes && t.nbytes <= data_bytes - t.offset,
                   "{}: tensor '{}': data [{}, +{}) extends past the end of the data section "
                   "({} bytes)",
                   file, t.name, t.offset, t.nbytes, data_bytes);
        uint64_t padded = 0;
        ZS_CHECK_T(IoError,
                   align_up(t.nbytes, g.alignment_, &padded) &&
                       padded <= std::numeric_limits<uint64_t>::max() - expected,
                   "{}: tensor '{}': the data section size overflows", file, t.name);
        expected += padded;
    }
    g.buffer_ =
        core::Buffer::wrap(bytes.data(), bytes.size(), core::Device::cpu(), std::move(keep_alive));
    return g;
}

const GgufValue* GgufFile::find(std::string_view key) const {
    auto it = kv_index_.find(key);
    return it == kv_index_.end() ? nullptr : &kv_[it->second].value;
}

const GgufValue& GgufFile::require(std::string_view key) const {
    const GgufValue* v = find(key);
    ZS_CHECK_T(IoError, v != nullptr, "{}: metadata key '{}' is missing", path_, key);
    return *v;
}

void GgufFile::type_mismatch(std::string_view key, const std::string& expected) const {
    ZS_THROW(IoError, "{}: metadata key '{}': expected {}, got {}", path_, key, expected,
             describe_type(require(key)));
}

int64_t GgufFile::get_int(std::string_view key) const {
    const GgufValue& v = require(key);
    switch (type_of(v)) {
        case GgufType::u8:
            return std::get<uint8_t>(v);
        case GgufType::i8:
            return std::get<int8_t>(v);
        case GgufType::u16:
            return std::get<uint16_t>(v);
        case GgufType::i16:
            return std::get<int16_t>(v);
        case GgufType::u32:
            return std::get<uint32_t>(v);
        case GgufType::i32:
            return std::get<int32_t>(v);
        case GgufType::i64:
            return std::get<int64_t>(v);
        case GgufType::u64: {
            uint64_t u = std::get<uint64_t>(v);
            ZS_CHECK_T(IoError, u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                       "{}: metadata key '{}': {} does not fit in int64", path_, key, u);
            return static_cast<int64_t>(u);
        }
        case GgufType::f32:
        case GgufType::boolean:
        case GgufType::string:
        case GgufType::array:
        case GgufType::f64:
            break;
    }
    type_mismatch(key, "an integer");
}

double GgufFile::get_float(std::string_view key) const {
    const GgufValue& v = require(key);
    if (const float* f = std::get_if<float>(&v)) return *f;
    if (const double* d = std::get_if<double>(&v)) return *d;
    type_mismatch(key, "FLOAT32 or FLOAT64");
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::require_tensor(std::string_view name) const {
    const GgufTensorInfo* t = find_tensor(name);
    ZS_CHECK_T(IoError, t != nullptr, "{}: no tensor named '{}'", path_, name);
    return *t;
}

std::span<const uint8_t> GgufFile::raw_bytes(std::string_view name) const {
    const GgufTensorInfo& t = require_tensor(name);
    const auto* base = static_cast<const uint8_t*>(buffer_->data());
    return {base + data_offset_ + t.offset, t.nbytes};
}

namespace {

// The core dtype that stores a GGML type's elements unchanged, if any.
std::optional<core::DType> exact_dtype(GgmlType t) {
    if (t == GgmlType::f32) return core::DType::f32;
    if (t == GgmlType::f16) return core::DType::f16;
    if (t == GgmlType::bf16) return core::DType::bf16;
    if (t == GgmlType::i8) return core::DType::i8;
    if (t == GgmlType::i32) return core::DType::i32;
    if (t == GgmlType::i64) return core::DType::i64;
    return std::nullopt;
}

}  // namespace

core::Tensor GgufFile::tensor(std::string_view name, core::DType out) const {
    const GgufTensorInfo& t = require_tensor(name);
    const core::Shape shape = t.shape();
    const size_t offset = data_offset_ + t.offset;
    const auto* src = static_cast<const uint8_t*>(buffer_->data()) + offset;
    const std::optional<core::DType> exact = exact_dtype(t.type);

    if (exact == out) {
        if (reinterpret_cast<uintptr_t>(src) % core::dtype_size(out) == 0) {
            return core::Tensor::from_buffer(buffer_, offset, shape, out);
        }
        core::Tensor r =
            core::Tensor::empty(shape, out, core::Device::cpu(), core::MemCategory::params);
        if (t.nbytes > 0) std::memcpy(r.data_ptr(), src, t.nbytes);
        return r;
    }
    ZS_CHECK_T(IoError, core::is_floating(out),
               "{}: tensor '{}': cannot load {} data as {} (integer outputs need the matching "
               "integer type)",
               path_, t.name, to_string(t.type), core::to_string(out));
    if (!can_dequantize(t.type)) {
        ZS_THROW(NotSupported, "{}: tensor '{}': GGML type {} cannot be dequantized by zerospeed",
                 path_, t.name, to_string(t.type));
    }
    core::Tensor r =
        core::Tensor::empty(shape, out, core::Device::cpu(), core::MemCategory::params);
    const int64_t n = t.numel();
    if (out == core::DType::f32) {
        dequantize(t.type, src, r.data<float>(), n);
        return r;
    }
    const GgmlTypeTraits& tr = traits(t.type);
    std::vector<float> scratch(static_cast<size_t>(std::min<int64_t>(n, kChunk)));
    auto* dst = static_cast<uint8_t*>(r.data_ptr());
    for (int64_t i = 0; i < n; i += kChunk) {
        const int64_t m = std::min(kChunk, n - i);  // whole blocks: kChunk is a block multiple
        dequantize(t.type, src + i / tr.block_size * tr.type_size, scratch.data(), m);
        core::convert(dst + i * static_cast<int64_t>(core::dtype_size(out)), out, scratch.data(),
                      core::DType::f32, static_cast<size_t>(m));
    }
    return r;
}

// ---- llama.cpp Q/K row permutation ----

core::Tensor unpermute_llama_qk(const core::Tensor& w, int64_t n_heads) {
    ZS_CHECK_T(ShapeError, w.dim() >= 1 && n_heads > 0,
               "unpermute_llama_qk: need a tensor of rank >= 1 and n_heads > 0, got {} and {}",
               w.str(), n_heads);
    const int64_t rows = w.size(0);
    ZS_CHECK_T(ShapeError, rows % n_heads == 0 && (rows / n_heads) % 2 == 0,
               "unpermute_llama_qk: {} rows are not {} heads of an even head size", rows, n_heads);
    const int64_t hs = rows / n_heads, half = hs / 2;
    core::Tensor src =
        w.is_contiguous() && w.device().is_cpu() ? w : w.to(core::Device::cpu()).contiguous();
    core::Tensor dst = core::Tensor::empty(src.shape(), src.dtype(), core::Device::cpu(),
                                           core::MemCategory::params);
    // Nothing to move; also keeps a huge row count over zero columns from looping for ages.
    if (src.numel() == 0) return w.device().is_cpu() ? dst : dst.to(w.device());
    const size_t row_bytes = rows == 0 ? 0 : src.nbytes() / static_cast<size_t>(rows);
    const auto* s = static_cast<const uint8_t*>(src.data_ptr());
    auto* d = static_cast<uint8_t*>(dst.data_ptr());
    for (int64_t h = 0; h < n_heads; ++h) {
        for (int64_t i = 0; i < half; ++i) {
            for (int64_t j = 0; j < 2; ++j) {
                const int64_t hf_row = h * hs + j * half + i;
                const int64_t gguf_row = h * hs + 2 * i + j;
                std::memcpy(d + hf_row * row_bytes, s + gguf_row * row_bytes, row_bytes);
            }
        }
    }
    return w.device().is_cpu() ? dst : dst.to(w.device());
}

}  // namespace zs::io
