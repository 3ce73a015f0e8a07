// Section: typed, path-naming access to one object of ds_config.json, and the unknown-key check.
#include "train/config_section.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "base/error.h"
#include "base/log.h"
#include "train/ds_config.h"

namespace zs::train {
namespace {

using nlohmann::json;

bool is_auto(const json& v) { return v.is_string() && v.get_ref<const std::string&>() == "auto"; }

// Case-insensitive Levenshtein distance.
size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (size_t j = 1; j <= b.size(); ++j) {
            const bool same = std::tolower(static_cast<unsigned char>(a[i - 1])) ==
                              std::tolower(static_cast<unsigned char>(b[j - 1]));
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (same ? 0 : 1)});
        }
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

}  // namespace

std::string did_you_mean(const std::string& key, const std::vector<std::string>& candidates) {
    const size_t limit = std::max<size_t>(2, key.size() / 3);
    std::string best;
    size_t best_d = limit + 1;
    for (const std::string& c : candidates) {
        const size_t d = edit_distance(key, c);
        if (d < best_d) {
            best_d = d;
            best = c;
        }
    }
    return best;
}

std::string describe_json(const json& v) {
    switch (v.type()) {
        case json::value_t::null:
            return "null";
        case json::value_t::object:
            return "an object";
        case json::value_t::array:
            return "an array";
        case json::value_t::string: {
            std::string s = v.dump();
            if (s.size() > 48) s = s.substr(0, 44) + "...\"";
            return s;
        }
        case json::value_t::boolean:
        case json::value_t::number_integer:
        case json::value_t::number_unsigned:
        case json::value_t::number_float:
            return v.dump();
        case json::value_t::binary:
        case json::value_t::discarded:
            return "an unexpected value";
    }
    return "an unexpected value";
}

Section::Section(const json& value, const std::string& source, std::string path, Diagnostics& diag,
                 bool auto_is_default)
    : value_(&value),
      source_(&source),
      path_(std::move(path)),
      diag_(&diag),
      auto_is_default_(auto_is_default) {
    if (!value.is_object()) {
        if (path_.empty()) {
            ZS_THROW(ConfigError, "{}: expected a JSON object at the top level, got {}", source,
                     describe_json(value));
        }
        ZS_THROW(ConfigError, "{}: {}: expected an object, got {}", source, path_,
                 describe_json(value));
    }
}

std::string Section::path_of(std::string_view key) const {
    return path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
}

void Section::fail(std::string_view key, std::string_view what) const {
    ZS_THROW(ConfigError, "{}: {}: {}", *source_, path_of(key), what);
}

const json* Section::lookup(std::string_view key) {
    known_.emplace(key);
    auto it = value_->find(key);
    if (it == value_->end() || it->is_null()) return nullptr;
    if (is_auto(*it)) {
        if (auto_is_default_) return nullptr;
        fail(key,
             "\"auto\" is a Hugging Face Trainer placeholder that DeepSpeed itself does not "
             "resolve; zerospeed train resolves it from its flags (--micro-batch, --grad-accum, "
             "--lr, --weight-decay, --warmup, --max-grad-norm, --steps); here, write the value");
    }
    return &*it;
}

bool Section::has(std::string_view key) { return lookup(key) != nullptr; }

std::optional<bool> Section::get_bool(std::string_view key) {
    const json* v = lookup(key);
    if (!v) return std::nullopt;
    if (v->is_boolean()) return v->get<bool>();
    // pydantic's lax mode takes 0 and 1 for booleans.
    if (v->is_number_integer() && (v->get<int64_t>() == 0 || v->get<int64_t>() == 1)) {
        return v->get<int64_t>() == 1;
    }
    fail(key, fmt::format("expected true or false, got {}", describe_json(*v)));
}

std::optional<int64_t> Section::get_int(std::string_view key, int64_t lo, int64_t hi) {
    const json* v = lookup(key);
    if (!v) return std::nullopt;
    auto range = [&] {
        constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
        constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
        if (lo == kMin && hi == kMax) return std::string("an integer");
        if (hi == kMax) return fmt::format("an integer >= {}", lo);
        if (hi - lo <= 8) return fmt::format("an integer {}-{}", lo, hi);
        return fmt::format("an integer in [{}, {}]", lo, hi);
    };
    std::optional<int64_t> n;
    if (v->is_number_unsigned()) {
        if (v->get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
            n = static_cast<int64_t>(v->get<uint64_t>());
        }
    } else if (v->is_number_integer()) {
        n = v->get<int64_t>();
    } else if (v->is_number_float()) {
        const double d = v->get<double>();
        // [-2^63, 2^63) holds exactly as doubles.
        if (std::isfinite(d) && d == std::trunc(d) && d >= -9223372036854775808.0 &&
            d < 9223372036854775808.0) {
            n = static_cast<int64_t>(d);
        }
    }
    if (!n || *n < lo || *n > hi) {
        fail(key, fmt::format("expected {}, got {}", range(), describe_json(*v)));
    }
    return n;
}

std::optional<double> Section::get_number(std::string_view key, double lo, double hi) {
    const json* v = lookup(key);
    if (!v) return std::nullopt;
    auto range = [&] {
        if (std::isinf(hi)) return fmt::format("a number >= {}", lo);
        return fmt::format("a number in [{}, {}]", lo, hi);
    };
    if (!v->is_number() || !std::isfinite(v->get<double>()) || v->get<double>() < lo ||
        v->get<double>() > hi) {
        fail(key, fmt::format("expected {}, got {}", range(), describe_json(*v)));
    }
    return v->get<double>();
}

std::optional<std::string> Section::get_string(std::string_view key) {
    const json* v = lookup(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) fail(key, fmt::format("expected a string, got {}", describe_json(*v)));
    return v->get<std::string>();
}

std::optional<size_t> Section::get_choice(std::string_view key,
                                          std::initializer_list<std::string_view> choices,
                                          bool any_case) {
    const json* v = lookup(key);
    if (!v) return std::nullopt;
    if (v->is_string()) {
        const std::string& s = v->get_ref<const std::string&>();
        size_t i = 0;
        for (std::string_view c : choices) {
            const bool eq = s.size() == c.size() &&
                            std::equal(s.begin(), s.end(), c.begin(), [&](char a, char b) {
                                return any_case ? std::tolower(static_cast<unsigned char>(a)) ==
                                                      std::tolower(static_cast<unsigned char>(b))
                                                : a == b;
                            });
            if (eq) return i;
            ++i;
        }
    }
    std::string allowed;
    for (std::string_view c : choices) {
        allowed += fmt::format("{}\"{}\"", allowed.empty() ? "" : ", ", c);
    }
    fail(key, fmt::format("expected one of {}, got {}", allowed, describe_json(*v)));
}

std::optional<Section> Section::get_section(std::string_view key, bool auto_is_default) {
    const json* v = lookup(key);
    if (!v) return std::nullopt;
    if (!v->is_object()) fail(key, fmt::format("expected an object, got {}", describe_json(*v)));
    return Section(*v, *source_, path_of(key), *diag_, auto_is_default);
}

void Section::known(std::initializer_list<std::string_view> keys) {
    for (std::string_view k : keys) known_.emplace(k);
}

void Section::unsupported(std::string_view key, std::string_view why) {
    known_.emplace(key);
    auto it = value_->find(key);
    if (it == value_->end() || it->is_null()) return;
    // A section that says "enabled": false asks for nothing.
    if (it->is_object() && it->contains("enabled") && (*it)["enabled"] == false) return;
    if (it->is_boolean() && !it->get<bool>()) return;
    note_unsupported(key, why);
}

void Section::note_unsupported(std::string_view key, std::string_view why) {
    diag_->unsupported.push_back(fmt::format("{}: {}: {}", *source_, path_of(key), why));
}

void Section::warn(std::string_view key, std::string_view what) {
    known_.emplace(key);
    std::string msg = fmt::format("{}: {}: {}", *source_, path_of(key), what);
    log_write(LogLevel::warn, msg, /*rank0_only=*/true);
    diag_->warnings.push_back(std::move(msg));
}

void Section::finish() {
    std::vector<std::string> candidates(known_.begin(), known_.end());
    for (auto it = value_->begin(); it != value_->end(); ++it) {
        if (known_.count(it.key())) continue;
        const std::string s = did_you_mean(it.key(), candidates);
        std::string msg =
            fmt::format("{}: unknown key '{}' (ignored){}", *source_, path_of(it.key()),
                        s.empty() ? "" : fmt::format("; did you mean '{}'?", s));
        log_write(LogLevel::warn, msg, /*rank0_only=*/true);
        diag_->warnings.push_back(std::move(msg));
    }
}

}  // namespace zs::train
