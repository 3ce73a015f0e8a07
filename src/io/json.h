// JSON files with limits, and JsonReader: typed access whose errors name the file and key path.
//
//   nlohmann::json j = io::load_json(dir + "/config.json");
//   io::JsonReader r(j, "config.json");                 // the root must be an object
//   int64_t n_layers = r.get_int("num_hidden_layers");  // required
//   double theta = r.opt_number("rope_theta").value_or(10000.0);
//   if (r.has("rope_scaling")) factor = r.get_object("rope_scaling").get_number("factor");
//   // error: "config.json: key 'rope_scaling.factor': expected a number, got string"
//
// Parsing is bounded (size, nesting depth) and rejects duplicate keys by default, which Python's
// json module would silently resolve to the last one. Syntax errors raise IoError naming the file
// and the byte offset. JsonReader raises ConfigError (configs) or IoError (data files such as a
// safetensors index), as the caller chooses. A JsonReader is a non-owning view: the json it reads
// must outlive it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace zs::io {

struct JsonLimits {
    size_t max_bytes = size_t{128} << 20;  // whole document
    int max_depth = 64;                    // nested objects/arrays
    bool reject_duplicate_keys = true;
};

// Parse `text`; `name` (usually the file's path) starts every error message.
nlohmann::json parse_json(std::string_view text, std::string_view name,
                          const JsonLimits& limits = {});
// Read and parse the file at `path` (IoError when it cannot be read or exceeds the size limit).
nlohmann::json load_json(const std::string& path, const JsonLimits& limits = {});

enum class JsonErrorKind { config, io };

class JsonReader {
public:
    // `value` must be an object (else an error naming `file` and `path`). `path` is the key path
    // of `value` inside its document ("" for the root).
    JsonReader(const nlohmann::json& value, std::string file,
               JsonErrorKind kind = JsonErrorKind::config, std::string path = {});

    // Present and not null.
    bool has(std::string_view key) const;
    std::vector<std::string> keys() const;
    // Keys not in `known`, in document order (for "unknown key" errors or warnings).
    std::vector<std::string> unknown_keys(std::initializer_list<std::string_view> known) const;

    // Required fields: raise when missing, null, or of the wrong type.
    std::string get_string(std::string_view key) const;
    // An integer (a float with an exact integral value, like 5e8, is accepted) in [lo, hi].
    int64_t get_int(std::string_view key, int64_t lo = std::numeric_limits<int64_t>::min(),
                    int64_t hi = std::numeric_limits<int64_t>::max()) const;
    double get_number(std::string_view key) const;
    bool get_bool(std::string_view key) const;
    JsonReader get_object(std::string_view key) const;
    std::vector<std::string> get_string_array(std::string_view key) const;
    std::vector<int64_t> get_int_array(std::string_view key) const;
    std::vector<double> get_number_array(std::string_view key) const;
    std::vector<JsonReader> get_object_array(std::string_view key) const;

    // Optional fields: nullopt when missing or null; raise when present with the wrong type.
    std::optional<std::string> opt_string(std::string_view key) const;
    std::optional<int64_t> opt_int(std::string_view key,
                                   int64_t lo = std::numeric_limits<int64_t>::min(),
                                   int64_t hi = std::numeric_limits<int64_t>::max()) const;
    std::optional<double> opt_number(std::string_view key) const;
    std::optional<bool> opt_bool(std::string_view key) const;
    std::optional<JsonReader> opt_object(std::string_view key) const;

    // "rope_scaling.factor" for key "factor" of the object at "rope_scaling".
    std::string path_of(std::string_view key) const;
    // Raise this reader's error type: "<file>: key '<path.key>': <what>".
    [[noreturn]] void fail(std::string_view key, std::string_view what) const;

    const nlohmann::json& raw() const { return *value_; }
    const std::string& file() const { return file_; }
    const std::string& path() const { return path_; }

private:
    const nlohmann::json* find(std::string_view key) const;  // null when missing or null
    const nlohmann::json& require(std::string_view key) const;

    const nlohmann::json* value_;
    std::string file_;
    JsonErrorKind kind_;
    std::string path_;
};

}  // namespace zs::io
