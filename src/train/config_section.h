// One JSON object of ds_config.json, read with typed getters whose errors name the key path, and
// which remember the keys they read so finish() can report the rest as unknown, with a "did you
// mean" suggestion drawn from the keys this section knows. Internal to train/ (ds_config.cpp).
//
// "auto" (the Hugging Face Trainer's placeholder): DeepSpeed's pydantic sections (fp16, bf16,
// zero_optimization, offload_*, monitors) drop it, so the default applies; in plain-dict sections
// (batch sizes, optimizer and scheduler params) DeepSpeed cannot use it, and neither do we.
// A Section is a non-owning view: the json and the Diagnostics must outlive it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace zs::train {

struct Diagnostics {
    std::vector<std::string> warnings;     // unknown keys
    std::vector<std::string> unsupported;  // DeepSpeed settings zerospeed does not implement
    std::vector<std::string> notes;  // settings honoured in a form worth stating (offload to cpu)
};

// "\"three\"", "5.5", "true", "an object", ... for messages.
std::string describe_json(const nlohmann::json& v);

class Section {
public:
    // `value` must be an object. `path` is its key path in the document ("" for the root).
    Section(const nlohmann::json& value, const std::string& source, std::string path,
            Diagnostics& diag, bool auto_is_default);

    // Present, not null, and (when auto_is_default) not "auto". Marks the key as known.
    bool has(std::string_view key);
    std::optional<bool> get_bool(std::string_view key);
    // An integer in [lo, hi]; a float with an integral value (5e8) is accepted, as pydantic does.
    std::optional<int64_t> get_int(std::string_view key, int64_t lo, int64_t hi);
    // A finite number in [lo, hi].
    std::optional<double> get_number(std::string_view key, double lo, double hi);
    std::optional<std::string> get_string(std::string_view key);
    // One of `choices` (compared case-insensitively when `any_case`); returns the index.
    std::optional<size_t> get_choice(std::string_view key,
                                     std::initializer_list<std::string_view> choices,
                                     bool any_case);
    // A nested object, or nullopt when absent; raises when present and not an object.
    std::optional<Section> get_section(std::string_view key, bool auto_is_default);
    // The raw value (null when absent, null or a default-meaning "auto"), for arrays.
    const nlohmann::json* get_raw(std::string_view key) { return lookup(key); }
    // Whether the key is written at all, null included (Python's `key in dict`). Does not mark
    // it known.
    bool present(std::string_view key) const { return value_->contains(key); }

    // Keys this section accepts without reading them (for suggestions and the unknown check).
    void known(std::initializer_list<std::string_view> keys);
    // A DeepSpeed key zerospeed does not implement: when present (and, for an object, enabled),
    // record "<path>: <why>" in Diagnostics::unsupported.
    void unsupported(std::string_view key, std::string_view why);
    // Record an unsupported setting for a key that was read (value not the default).
    void note_unsupported(std::string_view key, std::string_view why);
    // A warning about a key: logged and kept in Diagnostics::warnings.
    void warn(std::string_view key, std::string_view what);

    // Warn about every key not read or marked known. Call once, after reading the section.
    void finish();

    std::string path_of(std::string_view key) const;
    [[noreturn]] void fail(std::string_view key, std::string_view what) const;
    const std::string& source() const { return *source_; }

private:
    const nlohmann::json* lookup(std::string_view key);  // null when absent, null or "auto"

    const nlohmann::json* value_;
    const std::string* source_;
    std::string path_;
    Diagnostics* diag_;
    bool auto_is_default_;
    std::set<std::string, std::less<>> known_;
};

}  // namespace zs::train
