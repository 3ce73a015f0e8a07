// Shared by the response_format tests (json_constraint_test.cpp, json_schema_test.cpp): the
// nlohmann reference, a matcher-driven completion, a JSON Schema validator for the supported
// subset written from the spec (not from the compiler), random generation under a grammar, and
// the schemas both files exercise.
#pragma once

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "infer/json_constraint.h"

namespace zs::infer::jsontest {

using ojson = nlohmann::ordered_json;

inline bool is_ws_byte(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// Printable form of a document for failure messages.
inline std::string show(const std::string& s) {
    std::string out;
    for (char ch : s) {
        const auto c = static_cast<uint8_t>(ch);
        if (c >= 0x20 && c < 0x7f) {
            out += ch;
        } else {
            out += fmt::format("\\x{:02x}", c);
        }
    }
    return out;
}

// nlohmann's verdict on a whole document, plus the matcher's documented restrictions: nothing
// after the value (not even whitespace), and for json_object a top-level object.
inline bool reference_complete(const std::string& s, bool object_only) {
    if (!s.empty() && is_ws_byte(s.back())) return false;
    try {
        const nlohmann::json j = nlohmann::json::parse(s);
        return !object_only || j.is_object();
    } catch (const std::exception&) {
        return false;
    }
}

// Bytes accepted one at a time before the first refusal.
inline size_t feed(JsonMatcher& m, const std::string& s) {
    size_t k = 0;
    while (k < s.size() && m.accept_bytes(std::string_view(s).substr(k, 1))) ++k;
    return k;
}

// A completion found by the matcher itself: at each step the first byte it accepts in an order
// that closes things soon. nullopt when none is found within the step limit.
inline std::optional<std::string> greedy_completion(JsonMatcher m) {
    static const std::vector<uint8_t> order = [] {
        std::vector<uint8_t> o;
        for (char c : std::string("\"}]0eulsar:,\\dc123456789"))
            o.push_back(static_cast<uint8_t>(c));
        for (int c = 0; c < 256; ++c) {
            const auto b = static_cast<uint8_t>(c);
            if (std::find(o.begin(), o.end(), b) == o.end() && !is_ws_byte(static_cast<char>(b))) {
                o.push_back(b);
            }
        }
        for (char c : std::string(" \t\n\r")) o.push_back(static_cast<uint8_t>(c));
        return o;
    }();
    std::string out;
    for (int step = 0; step < 20000; ++step) {
        if (m.can_end()) return out;
        bool moved = false;
        for (uint8_t b : order) {
            const char c = static_cast<char>(b);
            if (m.accept_bytes(std::string_view(&c, 1))) {
                out += c;
                moved = true;
                break;
            }
        }
        if (!moved) return std::nullopt;
    }
    return std::nullopt;
}

// --- a JSON Schema validator for the supported subset, written from the spec ------------------

inline const ojson* resolve_pointer(const ojson& root, const std::string& ref) {
    if (ref == "#") return &root;
    const ojson* cur = &root;
    size_t pos = 1;
    while (pos < ref.size()) {
        const size_t next = std::min(ref.find('/', pos + 1), ref.size());
        std::string key;
        for (size_t i = pos + 1; i < next; ++i) {
            if (ref[i] == '~' && i + 1 < next) {
                key += ref[i + 1] == '1' ? '/' : '~';
                ++i;
            } else {
                key += ref[i];
            }
        }
        if (!cur->is_object() || !cur->contains(key)) return nullptr;
        cur = &cur->at(key);
        pos = next;
    }
    return cur;
}

inline size_t code_points(const std::string& s) {
    size_t n = 0;
    for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
    return n;
}

inline bool has_type(const ojson& v, const std::string& t) {
    if (t == "null") return v.is_null();
    if (t == "boolean") return v.is_boolean();
    if (t == "object") return v.is_object();
    if (t == "array") return v.is_array();
    if (t == "string") return v.is_string();
    if (t == "number") return v.is_number();
    if (t == "integer") {
        return v.is_number_integer() ||
               (v.is_number_float() && v.get<double>() == std::floor(v.get<double>()));
    }
    return false;
}

inline bool validate(const ojson& v, const ojson& s, const ojson& root) {
    if (s.is_boolean()) return s.get<bool>();
    if (s.contains("$ref")) {
        const ojson* t = resolve_pointer(root, s["$ref"].get<std::string>());
        if (!t || !validate(v, *t, root)) return false;
    }
    if (s.contains("type")) {
        const ojson& t = s["type"];
        bool ok = false;
        if (t.is_string()) ok = has_type(v, t.get<std::string>());
        for (const ojson& x : t.is_array() ? t : ojson::array())
            ok = ok || has_type(v, x.get<std::string>());
        if (!ok) return false;
    }
    if (s.contains("enum") && std::find(s["enum"].begin(), s["enum"].end(), v) == s["enum"].end()) {
        return false;
    }
    if (s.contains("const") && !(s["const"] == v)) return false;
    if (s.contains("anyOf")) {
        bool any = false;
        for (const ojson& a : s["anyOf"]) any = any || validate(v, a, root);
        if (!any) return false;
    }
    if (s.contains("oneOf")) {
        int n = 0;
        for (const ojson& a : s["oneOf"]) n += validate(v, a, root);
        if (n != 1) return false;
    }
    if (s.contains("allOf")) {
        for (const ojson& a : s["allOf"]) {
            if (!validate(v, a, root)) return false;
        }
    }
    if (v.is_object()) {
        for (auto it = v.begin(); it != v.end(); ++it) {
            if (s.contains("properties") && s["properties"].contains(it.key())) {
                if (!validate(it.value(), s["properties"][it.key()], root)) return false;
            } else if (s.contains("additionalProperties")) {
                if (!validate(it.value(), s["additionalProperties"], root)) return false;
            }
        }
        if (s.contains("required")) {
            for (const ojson& r : s["required"]) {
                if (!v.contains(r.get<std::string>())) return false;
            }
        }
    }
    if (v.is_array()) {
        if (s.contains("items")) {
            for (const ojson& x : v) {
                if (!validate(x, s["items"], root)) return false;
            }
        }
        if (s.contains("minItems") && v.size() < s["minItems"].get<size_t>()) return false;
        if (s.contains("maxItems") && v.size() > s["maxItems"].get<size_t>()) return false;
    }
    if (v.is_string()) {
        const size_t n = code_points(v.get<std::string>());
        if (s.contains("minLength") && n < s["minLength"].get<size_t>()) return false;
        if (s.contains("maxLength") && n > s["maxLength"].get<size_t>()) return false;
    }
    return true;
}

// --- generation under a constraint ------------------------------------------------------------

// A byte-level vocabulary: every single byte plus pieces a JSON tokenizer has.
inline std::shared_ptr<const TokenIndex> byte_vocab() {
    std::vector<std::string> v;
    for (int c = 0; c < 256; ++c) v.emplace_back(1, static_cast<char>(c));
    for (const char* t : {"{\"",
                          "\":",
                          "\",",
                          "\"}",
                          "\":\"",
                          "true",
                          "false",
                          "null",
                          "12",
                          "-3.5e+2",
                          "0.25",
                          "\\u00e9",
                          "\\ud83d\\ude00",
                          "\xc3\xa9",
                          "\xf0\x9f\x98\x80",
                          "  ",
                          "\n  ",
                          "},",
                          "],",
                          "[]",
                          "{}",
                          "\"a",
                          "name",
                          "ab",
                          "abc",
                          "\\\"",
                          "\\n",
                          "red",
                          "\"red\"",
                          "green"}) {
        v.emplace_back(t);
    }
    return std::make_shared<const TokenIndex>(std::move(v));
}

// Random tokens among those allowed (uniform), ending when allowed; after `soft_len` bytes the
// greedy completion finishes the document. Fails the test on an empty mask.
inline std::string generate(const std::shared_ptr<const JsonGrammar>& g, const TokenIndex& ix,
                            std::mt19937_64& rng, size_t soft_len = 120) {
    JsonMatcher m(g);
    std::string out;
    std::vector<uint8_t> allowed(static_cast<size_t>(ix.size()));
    std::vector<int32_t> ids;
    while (!m.done()) {
        if (m.can_end() && std::uniform_int_distribution<int>(0, 3)(rng) == 0) break;
        if (out.size() > soft_len) {
            std::optional<std::string> c = greedy_completion(m);
            EXPECT_TRUE(c.has_value()) << "no completion of " << show(out);
            return out + c.value_or("");
        }
        const int64_t n = m.fill_mask(ix, allowed.data());
        if (n == 0) {
            ADD_FAILURE() << "empty mask before done() after " << show(out);
            return out;
        }
        ids.clear();
        for (int64_t i = 0; i < ix.size(); ++i) {
            if (allowed[static_cast<size_t>(i)]) ids.push_back(static_cast<int32_t>(i));
        }
        const int32_t t = ids[std::uniform_int_distribution<size_t>(0, ids.size() - 1)(rng)];
        EXPECT_TRUE(m.accept_bytes(ix.bytes(t)));
        out += ix.bytes(t);
    }
    return out;
}

inline const char* const kSchemas[] = {
    R"({"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer"}, "tags": {"type": "array", "items": {"enum": ["x", "y", "z"]},
        "maxItems": 3}, "ok": {"type": "boolean"}}, "required": ["name", "age", "tags"],
        "additionalProperties": false})",
    R"({"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
        "required": ["x"]})",
    R"({"type": ["string", "integer", "null"], "minLength": 2, "maxLength": 4})",
    R"({"enum": ["a", 1, 2.5, null, true, {"k": [1, 2]}, [1, "x"], 10, 100, "a\"b"]})",
    R"({"const": {"a": "b", "c": [true]}})",
    R"({"$defs": {"node": {"type": "object", "properties": {"value": {"type": "integer"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
        "required": ["value"]}}, "$ref": "#/$defs/node"})",
    R"({"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}},
        "required": ["next"]})",
    R"({"oneOf": [{"type": "object", "properties": {"kind": {"const": "a"}, "x": {"type": "integer"}},
        "required": ["kind", "x"]}, {"type": "object", "properties": {"kind": {"const": "b"},
        "y": {"type": "string", "maxLength": 3}}, "required": ["kind"]}]})",
    R"({"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 4})",
    R"({"type": "string", "minLength": 3, "maxLength": 6})",
    R"({"type": "object", "additionalProperties": {"type": "integer"}})",
    R"({"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a", "b"]})",
    R"({"title": "T", "description": "d", "allOf": [{"type": "integer"}], "examples": [1]})",
    R"({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"},
        "c": {"type": "integer"}, "d": {"type": "integer"}}, "required": ["c"]})",
    R"({"type": "object", "properties": {"ab": {"const": 1}, "abc": {"const": 2},
        "a\"b": {"const": 3}, "\u00e9": {"const": 4}, "": {"const": 5}},
        "required": ["abc", ""]})",
    R"({"type": "array", "items": false})",
    R"(true)",
    R"({"$defs": {"Color": {"enum": ["red", "green"], "title": "Color", "type": "string"}},
        "properties": {"color": {"$ref": "#/$defs/Color"}, "note": {"anyOf": [{"type": "string"},
        {"type": "null"}], "default": null, "title": "Note"}}, "required": ["color"],
        "title": "M", "type": "object", "$schema": "https://json-schema.org/draft/2020-12/schema"})",
    R"({"type": "object", "properties": {"n": {"type": "number"}, "i": {"type": "integer"},
        "s": {"type": "string"}}, "required": ["n", "i", "s"], "additionalProperties": false})",
    R"({"type": "array", "items": {"anyOf": [{"type": "array", "items": {"type": "integer"},
        "maxItems": 2}, {"type": "string", "maxLength": 1}]}, "minItems": 1, "maxItems": 3})",
};

}  // namespace zs::infer::jsontest
