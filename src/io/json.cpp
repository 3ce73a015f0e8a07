#include "io/json.h"

#include <cmath>
#include <cstring>
#include <unordered_set>

#include "base/error.h"
#include "io/mmap_file.h"

namespace zs::io {

namespace {

using nlohmann::json;

// Tracks the parser's position (key path, depth) through nlohmann's parse callbacks, to enforce
// the depth limit and reject duplicate keys with messages that name the path.
class ParseGuard {
public:
    ParseGuard(std::string_view name, const JsonLimits& limits) : name_(name), limits_(limits) {}

    bool operator()(int depth, json::parse_event_t event, json& parsed) {
        switch (event) {
            case json::parse_event_t::object_start:
            case json::parse_event_t::array_start:
                if (depth >= limits_.max_depth) {
                    ZS_THROW(IoError, "{}: JSON nested deeper than {} levels at '{}'", name_,
                             limits_.max_depth, path());
                }
                stack_.push_back(Frame{event == json::parse_event_t::object_start, {}, 0, {}});
                break;
            case json::parse_event_t::key: {
                Frame& top = stack_.back();
                top.key = parsed.get<std::string>();
                if (limits_.reject_duplicate_keys && !top.seen.insert(top.key).second) {
                    ZS_THROW(IoError, "{}: duplicate key '{}'", name_, path());
                }
                break;
            }
            case json::parse_event_t::object_end:
            case json::parse_event_t::array_end:
                stack_.pop_back();
                element_done();
                break;
            case json::parse_event_t::value:
                element_done();
                break;
        }
        return true;
    }

private:
    struct Frame {
        bool is_object;
        std::string key;  // objects: the current key
        int64_t index;    // arrays: the current element
        std::unordered_set<std::string> seen;
    };

    void element_done() {
        if (!stack_.empty() && !stack_.back().is_object) ++stack_.back().index;
    }

    std::string path() const {
        std::string p;
        for (const Frame& f : stack_) {
            if (f.is_object) {
                if (!p.empty()) p += '.';
                p += f.key;
            } else {
                p += '[' + std::to_string(f.index) + ']';
            }
        }
        return p;
    }

    std::string_view name_;
    const JsonLimits& limits_;
    std::vector<Frame> stack_;
};

// nlohmann's messages start with "[json.exception.parse_error.101] "; keep what follows.
std::string strip_prefix(const char* what) {
    std::string s(what);
    size_t p = s.find("] ");
    return p == std::string::npos ? s : s.substr(p + 2);
}

// "string", "number 2.5", "array", ...
std::string describe(const json& j) {
    if (j.is_number()) return "number " + j.dump();
    return j.type_name();
}

}  // namespace

json parse_json(std::string_view text, std::string_view name, const JsonLimits& limits) {
    ZS_CHECK_T(IoError, text.size() <= limits.max_bytes,
               "{}: {} bytes exceeds the JSON size limit of {} bytes", name, text.size(),
               limits.max_bytes);
    // nlohmann treats a NUL byte as the end of input and would ignore what follows; JSON never
    // allows a raw NUL, so reject it here.
    if (const void* nul = std::memchr(text.data(), 0, text.size())) {
        ZS_THROW(IoError, "{}: invalid JSON at byte {}: NUL byte", name,
                 static_cast<const char*>(nul) - text.data());
    }
    ParseGuard guard(name, limits);
    try {
        return json::parse(
            text.begin(), text.end(),
            [&guard](int depth, json::parse_event_t event, json& parsed) {
                return guard(depth, event, parsed);
            },
            /*allow_exceptions=*/true, /*ignore_comments=*/false);
    } catch (const json::parse_error& e) {
        ZS_THROW(IoError, "{}: invalid JSON at byte {}: {}", name, e.byte, strip_prefix(e.what()));
    } catch (const json::exception& e) {
        ZS_THROW(IoError, "{}: invalid JSON: {}", name, strip_prefix(e.what()));
    }
}

json load_json(const std::string& path, const JsonLimits& limits) {
    std::shared_ptr<MmapFile> f = MmapFile::open(path);
    ZS_CHECK_T(IoError, f->size() <= limits.max_bytes,
               "{}: {} bytes exceeds the JSON size limit of {} bytes", path, f->size(),
               limits.max_bytes);
    std::string_view text(reinterpret_cast<const char*>(f->data()), f->size());
    return parse_json(text, path, limits);
}

// ---- JsonReader ----

JsonReader::JsonReader(const json& value, std::string file, JsonErrorKind kind, std::string path)
    : value_(&value), file_(std::move(file)), kind_(kind), path_(std::move(path)) {
    if (!value.is_object()) {
        std::string msg = path_.empty()
                              ? fmt::format("{}: expected a JSON object at the top level, got {}",
                                            file_, describe(value))
                              : fmt::format("{}: key '{}': expected an object, got {}", file_,
                                            path_, describe(value));
        if (kind_ == JsonErrorKind::config) ZS_THROW(ConfigError, "{}", msg);
        ZS_THROW(IoError, "{}", msg);
    }
}

std::string JsonReader::path_of(std::string_view key) const {
    if (path_.empty()) return std::string(key);
    return path_ + "." + std::string(key);
}

void JsonReader::fail(std::string_view key, std::string_view what) const {
    switch (kind_) {
        case JsonErrorKind::config:
            ZS_THROW(ConfigError, "{}: key '{}': {}", file_, path_of(key), what);
        case JsonErrorKind::io:
            ZS_THROW(IoError, "{}: key '{}': {}", file_, path_of(key), what);
    }
    ZS_THROW(IoError, "{}: key '{}': {}", file_, path_of(key), what);
}

const json* JsonReader::find(std::string_view key) const {
    auto it = value_->find(key);
    if (it == value_->end() || it->is_null()) return nullptr;
    return &*it;
}

const json& JsonReader::require(std::string_view key) const {
    auto it = value_->find(key);
    if (it == value_->end()) fail(key, "required key is missing");
    return *it;
}

bool JsonReader::has(std::string_view key) const { return find(key) != nullptr; }

std::vector<std::string> JsonReader::keys() const {
    std::vector<std::string> out;
    for (auto it = value_->begin(); it != value_->end(); ++it) out.push_back(it.key());
    return out;
}

std::vector<std::string> JsonReader::unknown_keys(
    std::initializer_list<std::string_view> known) const {
    std::vector<std::string> out;
    for (auto it = value_->begin(); it != value_->end(); ++it) {
        bool ok = false;
        for (std::string_view k : known) ok = ok || k == it.key();
        if (!ok) out.push_back(it.key());
    }
    return out;
}

namespace {

// An integer value of j, when j is an integer or a float with an exact int64 value.
std::optional<int64_t> as_int64(const json& j) {
    if (j.is_number_unsigned()) {
        uint64_t u = j.get<uint64_t>();
        if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
        return static_cast<int64_t>(u);
    }
    if (j.is_number_integer()) return j.get<int64_t>();
    if (j.is_number_float()) {
        double d = j.get<double>();
        // [-2^63, 2^63): both bounds are exact doubles.
        if (std::isfinite(d) && d == std::trunc(d) && d >= -9223372036854775808.0 &&
            d < 9223372036854775808.0) {
            return static_cast<int64_t>(d);
        }
    }
    return std::nullopt;
}

}  // namespace

std::string JsonReader::get_string(std::string_view key) const {
    const json& j = require(key);
    if (!j.is_string()) fail(key, "expected a string, got " + describe(j));
    return j.get<std::string>();
}

int64_t JsonReader::get_int(std::string_view key, int64_t lo, int64_t hi) const {
    const json& j = require(key);
    if (!j.is_number()) fail(key, "expected an integer, got " + describe(j));
    std::optional<int64_t> v = as_int64(j);
    if (!v) fail(key, "expected an integer, got " + describe(j));
    if (*v < lo || *v > hi) {
        fail(key, fmt::format("expected an integer in [{}, {}], got {}", lo, hi, *v));
    }
    return *v;
}

double JsonReader::get_number(std::string_view key) const {
    const json& j = require(key);
    if (!j.is_number()) fail(key, "expected a number, got " + describe(j));
    return j.get<double>();
}

bool JsonReader::get_bool(std::string_view key) const {
    const json& j = require(key);
    if (!j.is_boolean()) fail(key, "expected a boolean, got " + describe(j));
    return j.get<bool>();
}

JsonReader JsonReader::get_object(std::string_view key) const {
    const json& j = require(key);
    if (!j.is_object()) fail(key, "expected an object, got " + describe(j));
    return JsonReader(j, file_, kind_, path_of(key));
}

std::vector<std::string> JsonReader::get_string_array(std::string_view key) const {
    const json& j = require(key);
    if (!j.is_array()) fail(key, "expected an array of strings, got " + describe(j));
    std::vector<std::string> out;
    out.reserve(j.size());
    for (size_t i = 0; i < j.size(); ++i) {
        if (!j[i].is_string()) {
            fail(key, fmt::format("element {}: expected a string, got {}", i, describe(j[i])));
        }
        out.push_back(j[i].get<std::string>());
    }
    return out;
}

std::vector<int64_t> JsonReader::get_int_array(std::string_view key) const {
    const json& j = require(key);
    if (!j.is_array()) fail(key, "expected an array of integers, got " + describe(j));
    std::vector<int64_t> out;
    out.reserve(j.size());
    for (size_t i = 0; i < j.size(); ++i) {
        std::optional<int64_t> v = j[i].is_number() ? as_int64(j[i]) : std::nullopt;
        if (!v) {
            fail(key, fmt::format("element {}: expected an integer, got {}", i, describe(j[i])));
        }
        out.push_back(*v);
    }
    return out;
}

std::vector<double> JsonReader::get_number_array(std::string_view key) const {
    const json& j = require(key);
    if (!j.is_array()) fail(key, "expected an array of numbers, got " + describe(j));
    std::vector<double> out;
    out.reserve(j.size());
    for (size_t i = 0; i < j.size(); ++i) {
        if (!j[i].is_number()) {
            fail(key, fmt::format("element {}: expected a number, got {}", i, describe(j[i])));
        }
        out.push_back(j[i].get<double>());
    }
    return out;
}

std::vector<JsonReader> JsonReader::get_object_array(std::string_view key) const {
    const json& j = require(key);
    if (!j.is_array()) fail(key, "expected an array of objects, got " + describe(j));
    std::vector<JsonReader> out;
    out.reserve(j.size());
    for (size_t i = 0; i < j.size(); ++i) {
        if (!j[i].is_object()) {
            fail(key, fmt::format("element {}: expected an object, got {}", i, describe(j[i])));
        }
        out.emplace_back(j[i], file_, kind_, fmt::format("{}[{}]", path_of(key), i));
    }
    return out;
}

std::optional<std::string> JsonReader::opt_string(std::string_view key) const {
    if (!has(key)) return std::nullopt;
    return get_string(key);
}

std::optional<int64_t> JsonReader::opt_int(std::string_view key, int64_t lo, int64_t hi) const {
    if (!has(key)) return std::nullopt;
    return get_int(key, lo, hi);
}

std::optional<double> JsonReader::opt_number(std::string_view key) const {
    if (!has(key)) return std::nullopt;
    return get_number(key);
}

std::optional<bool> JsonReader::opt_bool(std::string_view key) const {
    if (!has(key)) return std::nullopt;
    return get_bool(key);
}

std::optional<JsonReader> JsonReader::opt_object(std::string_view key) const {
    if (!has(key)) return std::nullopt;
    return get_object(key);
}

}  // namespace zs::io
