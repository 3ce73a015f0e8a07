#include "io/safetensors.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/mmap_file.h"
#include "io/utf8.h"

namespace zs::io {

namespace {

struct DTypeEntry {
    SafetensorsDType type;
    const char* name;
    int bits;
};

constexpr std::array<DTypeEntry, 22> kDTypes = {{
    {SafetensorsDType::boolean, "BOOL", 8},
    {SafetensorsDType::f4, "F4", 4},
    {SafetensorsDType::f6_e2m3, "F6_E2M3", 6},
    {SafetensorsDType::f6_e3m2, "F6_E3M2", 6},
    {SafetensorsDType::u8, "U8", 8},
    {SafetensorsDType::i8, "I8", 8},
    {SafetensorsDType::f8_e5m2, "F8_E5M2", 8},
    {SafetensorsDType::f8_e4m3, "F8_E4M3", 8},
    {SafetensorsDType::f8_e8m0, "F8_E8M0", 8},
    {SafetensorsDType::f8_e4m3fnuz, "F8_E4M3FNUZ", 8},
    {SafetensorsDType::f8_e5m2fnuz, "F8_E5M2FNUZ", 8},
    {SafetensorsDType::i16, "I16", 16},
    {SafetensorsDType::u16, "U16", 16},
    {SafetensorsDType::f16, "F16", 16},
    {SafetensorsDType::bf16, "BF16", 16},
    {SafetensorsDType::i32, "I32", 32},
    {SafetensorsDType::u32, "U32", 32},
    {SafetensorsDType::f32, "F32", 32},
    {SafetensorsDType::c64, "C64", 64},
    {SafetensorsDType::f64, "F64", 64},
    {SafetensorsDType::i64, "I64", 64},
    {SafetensorsDType::u64, "U64", 64},
}};

const DTypeEntry& entry(SafetensorsDType t) { return kDTypes[static_cast<size_t>(t)]; }

// More dimensions than any real tensor has; bounds memory for adversarial headers.
constexpr size_t kMaxRank = 1024;
// Nesting allowed inside values of unknown tensor fields (which are ignored, as serde does).
constexpr int kMaxSkipDepth = 64;

// Streams the header JSON (nlohmann SAX interface) straight into tensor infos, so memory stays
// proportional to the number of tensors and no DOM is built. Every structural error throws.
class HeaderParser {
public:
    explicit HeaderParser(const std::string& file) : file_(file) {}

    std::vector<SafetensorsTensorInfo> tensors;
    std::map<std::string, std::string> metadata;

    bool null() { return scalar("null"); }
    bool boolean(bool) { return scalar("boolean"); }
    bool number_integer(int64_t) { return scalar("negative number"); }
    bool number_unsigned(uint64_t v) {
        switch (state_) {
            case State::shape:
                if (cur_.shape.size() >= kMaxRank) {
                    fail(fmt::format("tensor '{}': shape has more than {} dimensions", cur_.name,
                                     kMaxRank));
                }
                if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
                    fail(fmt::format("tensor '{}': dimension {} does not fit in int64", cur_.name,
                                     v));
                }
                cur_.shape.push_back(static_cast<int64_t>(v));
                return true;
            case State::offsets:
                if (n_offsets_ >= 2) {
                    fail(fmt::format("tensor '{}': data_offsets must have exactly 2 entries",
                                     cur_.name));
                }
                (n_offsets_ == 0 ? cur_.begin : cur_.end) = v;
                ++n_offsets_;
                return true;
            default:
                return scalar("number");
        }
    }
    bool number_float(double, const std::string&) { return scalar("non-integer number"); }
    bool string(std::string& s) {
        switch (state_) {
            case State::metadata_value:
                metadata.emplace(meta_key_, s);
                state_ = State::metadata;
                return true;
            case State::tensor_value:
                if (field_ == Field::dtype) {
                    std::optional<SafetensorsDType> t = safetensors_dtype_from_string(s);
                    if (!t) fail(fmt::format("tensor '{}': unknown dtype '{}'", cur_.name, s));
                    cur_.dtype = *t;
                    state_ = State::tensor;
                    return true;
                }
                return scalar("string");
            default:
                return scalar("string");
        }
    }
    bool binary(nlohmann::json::binary_t&) { return scalar("binary"); }

    bool start_object(size_t) {
        switch (state_) {
            case State::begin:
                state_ = State::root;
                return true;
            case State::root_value:
                if (root_key_ == "__metadata__") {
                    state_ = State::metadata;
                } else {
                    cur_ = SafetensorsTensorInfo{};
                    cur_.name = root_key_;
                    seen_dtype_ = seen_shape_ = seen_offsets_ = false;
                    state_ = State::tensor;
                }
                return true;
            case State::skip:
                return skip_open();
            case State::tensor_value:
                if (field_ == Field::other) {
                    state_ = State::skip;
                    skip_depth_ = 0;
                    return skip_open();
                }
                return unexpected("object");
            default:
                return unexpected("object");
        }
    }
    bool start_array(size_t) {
        switch (state_) {
            case State::tensor_value:
                switch (field_) {
                    case Field::shape:
                        state_ = State::shape;
                        return true;
                    case Field::offsets:
                        state_ = State::offsets;
                        n_offsets_ = 0;
                        return true;
                    case Field::other:
                        state_ = State::skip;
                        skip_depth_ = 0;
                        return skip_open();
                    case Field::dtype:
                        return unexpected("array");
                }
                return unexpected("array");
            case State::skip:
                return skip_open();
            default:
                return unexpected("array");
        }
    }
    bool key(std::string& k) {
        switch (state_) {
            case State::root:
                if (!root_keys_.insert(k).second) fail(fmt::format("duplicate key '{}'", k));
                root_key_ = k;
                state_ = State::root_value;
                return true;
            case State::metadata:
                if (metadata.count(k)) {
                    fail(fmt::format("duplicate key '{}' in __metadata__", k));
                }
                meta_key_ = k;
                state_ = State::metadata_value;
                return true;
            case State::tensor: {
                bool* seen = nullptr;
                if (k == "dtype") {
                    field_ = Field::dtype;
                    seen = &seen_dtype_;
                } else if (k == "shape") {
                    field_ = Field::shape;
                    seen = &seen_shape_;
                } else if (k == "data_offsets") {
                    field_ = Field::offsets;
                    seen = &seen_offsets_;
                } else {
                    field_ = Field::other;
                }
                if (seen != nullptr) {
                    if (*seen) fail(fmt::format("tensor '{}': duplicate key '{}'", cur_.name, k));
                    *seen = true;
                }
                state_ = State::tensor_value;
                return true;
            }
            case State::skip:
                return true;
            default:
                return unexpected("key");
        }
    }
    bool end_object() {
        switch (state_) {
            case State::root:
                state_ = State::done;
                return true;
            case State::metadata:
                state_ = State::root;
                return true;
            case State::tensor:
                if (!seen_dtype_ || !seen_shape_ || !seen_offsets_) {
                    const char* missing = !seen_dtype_   ? "dtype"
                                          : !seen_shape_ ? "shape"
                                                         : "data_offsets";
                    fail(fmt::format("tensor '{}': missing field '{}'", cur_.name, missing));
                }
                tensors.push_back(std::move(cur_));
                state_ = State::root;
                return true;
            case State::skip:
                return skip_close();
            default:
                return unexpected("end of object");
        }
    }
    bool end_array() {
        switch (state_) {
            case State::shape:
                state_ = State::tensor;
                return true;
            case State::offsets:
                if (n_offsets_ != 2) {
                    fail(fmt::format("tensor '{}': data_offsets must have exactly 2 entries",
                                     cur_.name));
                }
                state_ = State::tensor;
                return true;
            case State::skip:
                return skip_close();
            default:
                return unexpected("end of array");
        }
    }
    bool parse_error(size_t position, const std::string&, const nlohmann::json::exception& ex) {
        std::string what = ex.what();
        size_t p = what.find("] ");
        if (p != std::string::npos) what = what.substr(p + 2);
        ZS_THROW(IoError, "{}: InvalidHeaderDeserialization: invalid JSON at header byte {}: {}",
                 file_, position, what);
    }

private:
    enum class State {
        begin,
        root,
        root_value,
        metadata,
        metadata_value,
        tensor,
        tensor_value,
        shape,
        offsets,
        skip,
        done
    };
    enum class Field { dtype, shape, offsets, other };

    [[noreturn]] void fail(const std::string& msg) const {
        ZS_THROW(IoError, "{}: InvalidHeaderDeserialization: {}", file_, msg);
    }

    // A scalar value (`what` describes it) arrived.
    bool scalar(const char* what) {
        if (state_ == State::skip) return skip_depth_ == 0 ? skip_close() : true;
        if (state_ == State::tensor_value && field_ == Field::other) return back_to_tensor();
        return unexpected(what);
    }

    bool back_to_tensor() {
        state_ = State::tensor;
        return true;
    }

    bool skip_open() {
        if (++skip_depth_ > kMaxSkipDepth) {
            fail(fmt::format("tensor '{}': value nested deeper than {} levels", cur_.name,
                             kMaxSkipDepth));
        }
        return true;
    }
    bool skip_close() {
        if (skip_depth_ > 0) --skip_depth_;
        if (skip_depth_ == 0) state_ = State::tensor;
        return true;
    }

    [[noreturn]] bool unexpected(const char* what) const {
        switch (state_) {
            case State::begin:
                fail(fmt::format("the header must be a JSON object, got {}", what));
            case State::root_value:
                if (root_key_ == "__metadata__") {
                    fail(fmt::format("__metadata__ must be an object of strings, got {}", what));
                }
                fail(fmt::format("tensor '{}': expected an object, got {}", root_key_, what));
            case State::metadata_value:
                fail(fmt::format("__metadata__ key '{}': value must be a string, got {}", meta_key_,
                                 what));
            case State::tensor_value:
                switch (field_) {
                    case Field::dtype:
                        fail(fmt::format("tensor '{}': dtype must be a string, got {}", cur_.name,
                                         what));
                    case Field::shape:
                        fail(fmt::format(
                            "tensor '{}': shape must be an array of non-negative integers, got {}",
                            cur_.name, what));
                    case Field::offsets:
                        fail(
                            fmt::format("tensor '{}': data_offsets must be an array of two "
                                        "non-negative integers, got {}",
                                        cur_.name, what));
                    case Field::other:
                        break;
                }
                break;
            case State::shape:
                fail(fmt::format("tensor '{}': shape entries must be non-negative integers, got {}",
                                 cur_.name, what));
            case State::offsets:
                fail(fmt::format(
                    "tensor '{}': data_offsets entries must be non-negative integers, got {}",
                    cur_.name, what));
            case State::root:
            case State::metadata:
            case State::tensor:
            case State::skip:
            case State::done:
                break;
        }
        fail(fmt::format("unexpected {}", what));
    }

    const std::string& file_;
    State state_ = State::begin;
    Field field_ = Field::other;
    std::unordered_set<std::string> root_keys_;
    std::string root_key_;
    std::string meta_key_;
    SafetensorsTensorInfo cur_;
    bool seen_dtype_ = false, seen_shape_ = false, seen_offsets_ = false;
    int n_offsets_ = 0;
    int skip_depth_ = 0;
};

uint64_t read_le64(const uint8_t* p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

// The rules after parsing: offsets contiguous from 0, sizes consistent, buffer fully covered.
// Returns the end of the data buffer.
uint64_t validate_offsets(const std::string& file, std::vector<SafetensorsTensorInfo>& tensors) {
    std::sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) {
        if (a.begin != b.begin) return a.begin < b.begin;
        if (a.end != b.end) return a.end < b.end;
        return a.name < b.name;
    });
    uint64_t start = 0;
    for (const SafetensorsTensorInfo& t : tensors) {
        if (t.begin != start || t.end < t.begin) {
            ZS_THROW(IoError,
                     "{}: InvalidOffset: tensor '{}': data_offsets [{}, {}], but the tensor must "
                     "start at byte {} (offsets must be contiguous from 0, with no holes, "
                     "overlaps or reversed ranges)",
                     file, t.name, t.begin, t.end, start);
        }
        start = t.end;
        // Element count. NOTE(io): stricter than the reference's checked fold: the product of
        // the non-zero dims must fit in int64, so no partial product in any order (core::Shape's
        // numel and strides) can overflow, even for a zero-size tensor.
        uint64_t n = 1;
        bool has_zero = false;
        for (int64_t d : t.shape) {
            uint64_t ud = static_cast<uint64_t>(d);
            if (ud == 0) {
                has_zero = true;
                continue;
            }
            if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / ud) {
                ZS_THROW(IoError,
                         "{}: ValidationOverflow: tensor '{}': the element count of its shape "
                         "overflows",
                         file, t.name);
            }
            n *= ud;
        }
        if (has_zero) n = 0;
        uint64_t bits = static_cast<uint64_t>(bit_size(t.dtype));
        if (n > std::numeric_limits<uint64_t>::max() / bits) {
            ZS_THROW(IoError, "{}: ValidationOverflow: tensor '{}': its size in bits overflows",
                     file, t.name);
        }
        uint64_t nbits = n * bits;
        if (nbits % 8 != 0) {
            ZS_THROW(IoError,
                     "{}: MisalignedSlice: tensor '{}': {} elements of {} do not fill whole bytes",
                     file, t.name, n, to_string(t.dtype));
        }
        if (t.end - t.begin != nbits / 8) {
            ZS_THROW(IoError,
                     "{}: TensorInvalidInfo: tensor '{}': data_offsets span {} bytes, but {} of "
                     "{} take {} bytes",
                     file, t.name, t.end - t.begin, n, to_string(t.dtype), nbits / 8);
        }
    }
    return start;
}

}  // namespace

const char* to_string(SafetensorsDType t) { return entry(t).name; }

int bit_size(SafetensorsDType t) { return entry(t).bits; }

std::optional<SafetensorsDType> safetensors_dtype_from_string(std::string_view s) {
    for (const DTypeEntry& e : kDTypes) {
        if (s == e.name) return e.type;
    }
    return std::nullopt;
}

std::optional<core::DType> to_core_dtype(SafetensorsDType t) {
    switch (t) {
        case SafetensorsDType::f32:
            return core::DType::f32;
        case SafetensorsDType::f16:
            return core::DType::f16;
        case SafetensorsDType::bf16:
            return core::DType::bf16;
        case SafetensorsDType::i8:
            return core::DType::i8;
        case SafetensorsDType::i32:
            return core::DType::i32;
        case SafetensorsDType::i64:
            return core::DType::i64;
        case SafetensorsDType::boolean:
        case SafetensorsDType::f4:
        case SafetensorsDType::f6_e2m3:
        case SafetensorsDType::f6_e3m2:
        case SafetensorsDType::u8:
        case SafetensorsDType::f8_e5m2:
        case SafetensorsDType::f8_e4m3:
        case SafetensorsDType::f8_e8m0:
        case SafetensorsDType::f8_e4m3fnuz:
        case SafetensorsDType::f8_e5m2fnuz:
        case SafetensorsDType::i16:
        case SafetensorsDType::u16:
        case SafetensorsDType::u32:
        case SafetensorsDType::c64:
        case SafetensorsDType::f64:
        case SafetensorsDType::u64:
            return std::nullopt;
    }
    return std::nullopt;
}

SafetensorsDType to_safetensors_dtype(core::DType t) {
    switch (t) {
        case core::DType::f32:
            return SafetensorsDType::f32;
        case core::DType::bf16:
            return SafetensorsDType::bf16;
        case core::DType::f16:
            return SafetensorsDType::f16;
        case core::DType::i8:
            return SafetensorsDType::i8;
        case core::DType::i32:
            return SafetensorsDType::i32;
        case core::DType::i64:
            return SafetensorsDType::i64;
    }
    return SafetensorsDType::f32;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
    std::shared_ptr<MmapFile> f = MmapFile::open(path);
    std::span<uint8_t> bytes(f->cow_data(), f->size());
    return from_memory(bytes, f, path);
}

SafetensorsFile SafetensorsFile::from_memory(std::span<uint8_t> bytes,
                                             std::shared_ptr<void> keep_alive, std::string name) {
    const uint64_t len = bytes.size();
    ZS_CHECK_T(IoError, len >= 8,
               "{}: HeaderTooSmall: the file has {} bytes; a safetensors file starts with an "
               "8-byte header size",
               name, len);
    const uint64_t n = read_le64(bytes.data());
    ZS_CHECK_T(IoError, n <= kSafetensorsMaxHeaderSize,
               "{}: HeaderTooLarge: header size {} exceeds the limit of {} bytes", name, n,
               kSafetensorsMaxHeaderSize);
    // n <= 1e8, so n + 8 cannot overflow; it must lie inside the file.
    ZS_CHECK_T(IoError, n + 8 <= len,
               "{}: InvalidHeaderLength: header size {} runs past the end of the {}-byte file",
               name, n, len);
    std::string_view header(reinterpret_cast<const char*>(bytes.data()) + 8, n);
    if (std::optional<size_t> bad = find_invalid_utf8(header)) {
        ZS_THROW(IoError, "{}: InvalidHeader: the header is not valid UTF-8 (at header byte {})",
                 name, *bad);
    }

    // nlohmann treats a NUL byte as the end of input and would ignore what follows; JSON never
    // allows a raw NUL, so reject it here.
    if (const void* nul = std::memchr(header.data(), 0, header.size())) {
        ZS_THROW(IoError,
                 "{}: InvalidHeaderDeserialization: invalid JSON at header byte {}: NUL byte", name,
                 static_cast<const char*>(nul) - header.data());
    }
    HeaderParser parser(name);
    nlohmann::json::sax_parse(header.begin(), header.end(), &parser,
                              nlohmann::json::input_format_t::json, /*strict=*/true,
                              /*ignore_comments=*/false);

    SafetensorsFile sf;
    sf.path_ = std::move(name);
    sf.header_size_ = n;
    sf.metadata_ = std::move(parser.metadata);
    sf.tensors_ = std::move(parser.tensors);
    const uint64_t buffer_end = validate_offsets(sf.path_, sf.tensors_);
    ZS_CHECK_T(IoError, buffer_end == len - 8 - n,
               "{}: MetadataIncompleteBuffer: the tensors cover {} data bytes, but the file holds "
               "{} bytes after the header (the data buffer must be exactly covered)",
               sf.path_, buffer_end, len - 8 - n);
    for (size_t i = 0; i < sf.tensors_.size(); ++i) sf.index_.emplace(sf.tensors_[i].name, i);
    sf.buffer_ =
        core::Buffer::wrap(bytes.data(), bytes.size(), core::Device::cpu(), std::move(keep_alive));
    return sf;
}

const SafetensorsTensorInfo* SafetensorsFile::find(std::string_view name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
}

const SafetensorsTensorInfo& SafetensorsFile::require(std::string_view name) const {
    const SafetensorsTensorInfo* info = find(name);
    ZS_CHECK_T(IoError, info != nullptr, "{}: no tensor named '{}'", path_, name);
    return *info;
}

std::span<const uint8_t> SafetensorsFile::raw_bytes(std::string_view name) const {
    const SafetensorsTensorInfo& info = require(name);
    const auto* base = static_cast<const uint8_t*>(buffer_->data());
    return {base + data_offset() + info.begin, info.nbytes()};
}

core::Tensor SafetensorsFile::tensor(std::string_view name) const {
    const SafetensorsTensorInfo& info = require(name);
    std::optional<core::DType> dtype = to_core_dtype(info.dtype);
    ZS_CHECK_T(IoError, dtype.has_value(),
               "{}: tensor '{}': unsupported dtype {} (zerospeed reads F32, F16, BF16, I8, I32 "
               "and I64)",
               path_, info.name, to_string(info.dtype));
    ZS_CHECK_T(IoError, info.shape.size() <= static_cast<size_t>(core::kMaxDims),
               "{}: tensor '{}': rank {} exceeds the supported {} dimensions", path_, info.name,
               info.shape.size(), core::kMaxDims);
    const core::Shape shape = core::Shape(std::span<const int64_t>(info.shape));
    const size_t offset = data_offset() + info.begin;
    const auto* src = static_cast<const uint8_t*>(buffer_->data()) + offset;
    if (reinterpret_cast<uintptr_t>(src) % core::dtype_size(*dtype) == 0) {
        return core::Tensor::from_buffer(buffer_, offset, shape, *dtype);
    }
    // NOTE(io): writers pad the header to 8 bytes so this is rare; a misaligned typed pointer
    // would be undefined behaviour in every kernel, so such tensors are copied.
    core::Tensor t =
        core::Tensor::empty(shape, *dtype, core::Device::cpu(), core::MemCategory::params);
    if (info.nbytes() > 0) std::memcpy(t.data_ptr(), src, info.nbytes());
    return t;
}

}  // namespace zs::io
