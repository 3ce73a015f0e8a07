// The JSON Schema compiler: schema → JsonGrammar nodes, then three whole-grammar passes (no
// left recursion through anyOf/$ref, oneOf alternatives provably disjoint, and pruning of what
// can never complete, so every state the matcher reaches can still finish a document).
#include "infer/json_grammar.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

#include "base/error.h"

namespace zs::infer {

using ojson = nlohmann::ordered_json;

const char* to_string(JsonNodeKind k) {
    switch (k) {
        case JsonNodeKind::any:
            return "any";
        case JsonNodeKind::object:
            return "object";
        case JsonNodeKind::array:
            return "array";
        case JsonNodeKind::string:
            return "string";
        case JsonNodeKind::number:
            return "number";
        case JsonNodeKind::literals:
            return "literals";
        case JsonNodeKind::union_:
            return "union";
        case JsonNodeKind::pending:
            return "pending";
    }
    return "?";
}

JsonTrie JsonTrie::build(const std::vector<std::string>& strings) {
    struct Tmp {
        std::map<uint8_t, uint32_t> kids;
        int32_t tag = -1;
    };
    std::vector<Tmp> tmp(1);
    for (size_t i = 0; i < strings.size(); ++i) {
        uint32_t cur = 0;
        for (char ch : strings[i]) {
            const auto c = static_cast<uint8_t>(ch);
            auto it = tmp[cur].kids.find(c);
            if (it == tmp[cur].kids.end()) {
                const auto id = static_cast<uint32_t>(tmp.size());
                tmp.emplace_back();
                tmp[cur].kids.emplace(c, id);
                cur = id;
            } else {
                cur = it->second;
            }
        }
        ZS_ASSERT(tmp[cur].tag < 0, "duplicate trie string '{}'", strings[i]);
        tmp[cur].tag = static_cast<int32_t>(i);
    }
    JsonTrie t;
    t.nodes.resize(tmp.size());
    for (size_t i = 0; i < tmp.size(); ++i) {
        Node& n = t.nodes[i];
        n.edge_begin = static_cast<uint32_t>(t.edges.size());
        for (const auto& [b, c] : tmp[i].kids) t.edges.push_back({b, c});
        n.edge_end = static_cast<uint32_t>(t.edges.size());
        n.tag = tmp[i].tag;
    }
    // A child always has a larger id than its parent: collect subtree tags bottom-up.
    std::vector<std::vector<uint32_t>> below(tmp.size());
    for (size_t i = tmp.size(); i-- > 0;) {
        if (tmp[i].tag >= 0) below[i].push_back(static_cast<uint32_t>(tmp[i].tag));
        for (const auto& kv : tmp[i].kids) {
            below[i].insert(below[i].end(), below[kv.second].begin(), below[kv.second].end());
        }
        std::sort(below[i].begin(), below[i].end());
    }
    for (size_t i = 0; i < tmp.size(); ++i) {
        t.nodes[i].tags_begin = static_cast<uint32_t>(t.subtree_tags.size());
        t.subtree_tags.insert(t.subtree_tags.end(), below[i].begin(), below[i].end());
        t.nodes[i].tags_end = static_cast<uint32_t>(t.subtree_tags.size());
    }
    return t;
}

bool JsonTrie::has_tag_in(uint32_t node, uint32_t lo, uint32_t hi) const {
    const Node& n = nodes[node];
    auto b = subtree_tags.begin() + n.tags_begin, e = subtree_tags.begin() + n.tags_end;
    auto it = std::lower_bound(b, e, lo);
    return it != e && *it <= hi;
}

namespace {

uint8_t type_of_value(const ojson& v) {
    switch (v.type()) {
        case ojson::value_t::null:
            return kTypeNull;
        case ojson::value_t::boolean:
            return kTypeBoolean;
        case ojson::value_t::object:
            return kTypeObject;
        case ojson::value_t::array:
            return kTypeArray;
        case ojson::value_t::string:
            return kTypeString;
        case ojson::value_t::number_integer:
        case ojson::value_t::number_unsigned:
            return kTypeInteger;
        case ojson::value_t::number_float: {
            const double d = v.get<double>();
            return d == static_cast<double>(static_cast<int64_t>(d)) ? kTypeInteger : kTypeFraction;
        }
        case ojson::value_t::binary:
        case ojson::value_t::discarded:
            return 0;
    }
    return 0;
}

const char* json_type_name(const ojson& v) {
    switch (v.type()) {
        case ojson::value_t::null:
            return "null";
        case ojson::value_t::boolean:
            return "boolean";
        case ojson::value_t::object:
            return "object";
        case ojson::value_t::array:
            return "array";
        case ojson::value_t::string:
            return "string";
        case ojson::value_t::number_integer:
        case ojson::value_t::number_unsigned:
            return "integer";
        case ojson::value_t::number_float:
            return "number";
        case ojson::value_t::binary:
        case ojson::value_t::discarded:
            return "?";
    }
    return "?";
}

// Keywords that only describe: accepted, ignored.
bool is_annotation(std::string_view k) {
    static const std::set<std::string_view> kAnnotations = {
        "title",    "description", "examples", "default",   "$schema", "$id",
        "$comment", "deprecated",  "readOnly", "writeOnly", "$defs",   "definitions"};
    return kAnnotations.count(k) > 0;
}

// Keywords that change validity and are implemented.
bool is_supported(std::string_view k) {
    static const std::set<std::string_view> kSupported = {
        "type",      "properties", "required", "additionalProperties",
        "items",     "enum",       "const",    "anyOf",
        "oneOf",     "allOf",      "minItems", "maxItems",
        "minLength", "maxLength",  "$ref",     "uniqueItems"};
    return kSupported.count(k) > 0;
}

std::string pointer_escape(std::string_view key) {
    std::string out;
    for (char c : key) {
        if (c == '~') {
            out += "~0";
        } else if (c == '/') {
            out += "~1";
        } else {
            out += c;
        }
    }
    return out;
}

// Bounds on the work one request's schema may cost.
constexpr size_t kMaxNodes = 10000;
constexpr int kMaxCompileDepth = 64;
constexpr int64_t kMaxDisjointWork = 200000;
constexpr size_t kMaxTrieBytes = size_t{1} << 20;  // enum/const serialisations + property names

}  // namespace

// Schema → nodes. Paths in messages are JSON pointers into the schema ("#/properties/a/items").
class SchemaCompiler {
public:
    SchemaCompiler(const ojson& root, JsonGrammar& g) : root_(root), g_(g) {
        paths_.resize(g.nodes_.size(), "#");
    }

    uint32_t compile_root() {
        const uint32_t root = resolve_ref("#", "#");
        check_unions();
        for (const auto& [id, path] : one_ofs_) check_disjoint(id, path);
        prune(root);
        for (JsonNode& n : g_.nodes_) {
            if (n.kind == JsonNodeKind::object) finish_object(n);
        }
        return root;
    }

private:
    [[noreturn]] static void fail(const std::string& path, const std::string& what) {
        ZS_THROW(ConfigError, "JSON schema at '{}': {}", path, what);
    }

    uint32_t add(JsonNode n, const std::string& path) {
        if (g_.nodes_.size() >= kMaxNodes) fail(path, "the schema is too large");
        g_.nodes_.push_back(std::move(n));
        paths_.push_back(path);
        return static_cast<uint32_t>(g_.nodes_.size() - 1);
    }

    void charge(size_t bytes, const std::string& path) {
        trie_bytes_ += bytes;
        if (trie_bytes_ > kMaxTrieBytes) {
            fail(path, "enum/const values and property names exceed 1 MiB in all");
        }
    }

    uint32_t count(const ojson& s, const char* key, const std::string& path) {
        const ojson& v = s.at(key);
        if (v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0)) {
            return static_cast<uint32_t>(std::min<uint64_t>(v.get<uint64_t>(), 1u << 30));
        }
        if (v.is_number_float() && v.get<double>() >= 0 && v.get<double>() < 1e9 &&
            v.get<double>() == static_cast<double>(static_cast<int64_t>(v.get<double>()))) {
            return static_cast<uint32_t>(v.get<double>());
        }
        fail(path, fmt::format("'{}' must be a non-negative integer, got {}", key, v.dump()));
    }

    uint32_t compile(const ojson& s, const std::string& path) {
        if (++depth_ > kMaxCompileDepth) {
            fail(path,
                 fmt::format("schemas and $ref chains nest deeper than {}", kMaxCompileDepth));
        }
        struct Leave {
            int& d;
            ~Leave() { --d; }
        } leave{depth_};
        if (s.is_boolean()) {
            if (s.get<bool>()) return JsonGrammar::kAny;
            fail(path, "the schema 'false' matches no document");
        }
        if (!s.is_object()) {
            fail(path,
                 fmt::format("a schema must be an object or a boolean, got {}", json_type_name(s)));
        }
        std::vector<std::string> validity;
        for (auto it = s.begin(); it != s.end(); ++it) {
            if (is_annotation(it.key())) continue;
            if (!is_supported(it.key())) {
                fail(path, fmt::format("keyword '{}' is not supported (it changes which documents "
                                       "are valid; see docs/SERVING.md for the supported subset)",
                                       it.key()));
            }
            validity.push_back(it.key());
        }
        auto has = [&](const char* k) { return s.contains(k); };
        auto lone = [&](const char* k, std::initializer_list<std::string_view> allowed) {
            for (const std::string& v : validity) {
                if (v == k) continue;
                if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) continue;
                fail(path, fmt::format("'{}' next to '{}' is not supported", k, v));
            }
        };
        if (has("$ref")) {
            lone("$ref", {});
            const ojson& r = s.at("$ref");
            if (!r.is_string()) fail(path, "'$ref' must be a string");
            return resolve_ref(r.get<std::string>(), path);
        }
        for (const char* comb : {"anyOf", "oneOf", "allOf"}) {
            if (!has(comb)) continue;
            lone(comb, {});
            const ojson& arr = s.at(comb);
            if (!arr.is_array() || arr.empty()) {
                fail(path, fmt::format("'{}' must be a non-empty array of schemas", comb));
            }
            const std::string sub = path + "/" + comb + "/";
            if (std::string_view(comb) == "allOf") {
                if (arr.size() != 1) {
                    fail(path, "'allOf' with more than one schema is not supported");
                }
                return compile(arr[0], sub + "0");
            }
            JsonNode u;
            u.kind = JsonNodeKind::union_;
            for (size_t i = 0; i < arr.size(); ++i) {
                u.alternatives.push_back(compile(arr[i], sub + std::to_string(i)));
            }
            if (u.alternatives.size() == 1) return u.alternatives[0];
            const uint32_t id = add(std::move(u), path);
            if (std::string_view(comb) == "oneOf") one_ofs_.emplace_back(id, path + "/oneOf");
            return id;
        }
        uint8_t types = 0;
        bool explicit_type = false;
        if (has("type")) {
            types = parse_types(s.at("type"), path);
            explicit_type = true;
        }
        if (has("enum") || has("const")) {
            if (has("enum") && has("const")) fail(path, "'enum' next to 'const' is not supported");
            const char* k = has("enum") ? "enum" : "const";
            lone(k, {"type"});
            std::vector<ojson> values;
            if (has("enum")) {
                const ojson& e = s.at("enum");
                if (!e.is_array() || e.empty()) fail(path, "'enum' must be a non-empty array");
                values.assign(e.begin(), e.end());
            } else {
                values.push_back(s.at("const"));
            }
            std::vector<ojson> kept;
            for (ojson& v : values) {
                if (explicit_type && (type_of_value(v) & types) == 0) continue;
                if (std::find(kept.begin(), kept.end(), v) == kept.end()) kept.push_back(v);
            }
            if (kept.empty()) fail(path, fmt::format("no '{}' value has the schema's 'type'", k));
            return literal_node(std::move(kept), path);
        }
        if (!explicit_type) {
            for (const char* k : {"properties", "required", "additionalProperties"}) {
                if (has(k)) types |= kTypeObject;
            }
            for (const char* k : {"items", "minItems", "maxItems", "uniqueItems"}) {
                if (has(k)) types |= kTypeArray;
            }
            for (const char* k : {"minLength", "maxLength"}) {
                if (has(k)) types |= kTypeString;
            }
            if (types == 0) return JsonGrammar::kAny;
        }
        std::vector<uint32_t> branches;
        if (types & kTypeObject) branches.push_back(object_node(s, path));
        if (types & kTypeArray) branches.push_back(array_node(s, path));
        if (types & kTypeString) branches.push_back(string_node(s, path));
        if (types & (kTypeInteger | kTypeFraction)) {
            JsonNode n;
            n.kind = JsonNodeKind::number;
            n.integer = (types & kTypeFraction) == 0;
            n.valid_types = types & (kTypeInteger | kTypeFraction);
            branches.push_back(add(std::move(n), path));
        }
        if (types & kTypeBoolean) {
            branches.push_back(literal_node({ojson(true), ojson(false)}, path));
        }
        if (types & kTypeNull) branches.push_back(literal_node({ojson(nullptr)}, path));
        for (uint32_t b : branches) {
            if (!explicit_type) g_.nodes_[b].valid_types = kTypeAll;
        }
        if (branches.size() == 1) return branches[0];
        JsonNode u;
        u.kind = JsonNodeKind::union_;
        u.alternatives = std::move(branches);
        return add(std::move(u), path);
    }

    uint8_t parse_types(const ojson& t, const std::string& path) {
        static const std::map<std::string, uint8_t, std::less<>> kNames = {
            {"null", kTypeNull},
            {"boolean", kTypeBoolean},
            {"object", kTypeObject},
            {"array", kTypeArray},
            {"string", kTypeString},
            {"integer", kTypeInteger},
            {"number", kTypeInteger | kTypeFraction}};
        std::vector<ojson> names;
        if (t.is_array()) {
            names.assign(t.begin(), t.end());
        } else {
            names.push_back(t);
        }
        if (names.empty()) fail(path, "'type' must not be an empty array");
        uint8_t bits = 0;
        for (const ojson& n : names) {
            auto it = n.is_string() ? kNames.find(n.get<std::string>()) : kNames.end();
            if (it == kNames.end()) {
                fail(path,
                     fmt::format("'type' {} is not a JSON Schema type (null, boolean, object, "
                                 "array, string, integer, number)",
                                 n.dump()));
            }
            bits |= it->second;
        }
        return bits;
    }

    uint32_t literal_node(const std::vector<ojson>& values, const std::string& path) {
        JsonNode n;
        n.kind = JsonNodeKind::literals;
        n.valid_types = 0;
        std::vector<std::string> text;
        for (const ojson& v : values) {
            std::string t;
            try {
                t = v.dump();
            } catch (const std::exception& e) {
                fail(path, fmt::format("an enum/const value cannot be serialised: {}", e.what()));
            }
            if (std::find(text.begin(), text.end(), t) != text.end()) continue;
            charge(t.size(), path);
            n.valid_types |= type_of_value(v);
            text.push_back(std::move(t));
            n.values.push_back(v);
        }
        n.literals = JsonTrie::build(text);
        return add(std::move(n), path);
    }

    uint32_t object_node(const ojson& s, const std::string& path) {
        JsonNode n;
        n.kind = JsonNodeKind::object;
        n.valid_types = kTypeObject;
        const ojson* props = nullptr;
        if (s.contains("properties")) {
            props = &s.at("properties");
            if (!props->is_object()) fail(path, "'properties' must be an object");
        }
        std::vector<std::string> required;
        if (s.contains("required")) {
            const ojson& r = s.at("required");
            if (!r.is_array()) fail(path, "'required' must be an array of strings");
            for (const ojson& k : r) {
                if (!k.is_string()) fail(path, "'required' must be an array of strings");
                if (std::find(required.begin(), required.end(), k.get<std::string>()) ==
                    required.end()) {
                    required.push_back(k.get<std::string>());
                }
            }
        }
        // additionalProperties: absent/true -> any value; false -> none; a schema.
        bool extra_allowed = true;
        std::optional<uint32_t> extra_value;
        if (s.contains("additionalProperties")) {
            const ojson& ap = s.at("additionalProperties");
            if (ap.is_boolean()) {
                extra_allowed = ap.get<bool>();
            } else if (ap.is_object()) {
                extra_value = compile(ap, path + "/additionalProperties");
            } else {
                fail(path, "'additionalProperties' must be a boolean or a schema");
            }
        }
        if (!props && required.empty() && extra_allowed) {
            n.free_keys = true;
            n.free_value = extra_value.value_or(JsonGrammar::kAny);
            return add(std::move(n), path);
        }
        auto encode = [&](const std::string& key) {
            std::string e;
            try {
                e = ojson(key).dump();
            } catch (const std::exception& ex) {
                fail(path, fmt::format("a property name cannot be serialised: {}", ex.what()));
            }
            charge(e.size(), path);
            return e.substr(1);  // without the opening quote
        };
        if (props) {
            for (auto it = props->begin(); it != props->end(); ++it) {
                const bool req =
                    std::find(required.begin(), required.end(), it.key()) != required.end();
                const uint32_t v =
                    compile(it.value(), path + "/properties/" + pointer_escape(it.key()));
                n.props.push_back({encode(it.key()), v, req});
            }
        }
        for (const std::string& r : required) {
            if (props && props->contains(r)) continue;
            if (!extra_allowed) {
                fail(path, fmt::format("'required' names '{}', which 'properties' lacks and "
                                       "'additionalProperties': false forbids",
                                       r));
            }
            n.props.push_back({encode(r), extra_value.value_or(JsonGrammar::kAny), true});
        }
        return add(std::move(n), path);
    }

    uint32_t array_node(const ojson& s, const std::string& path) {
        JsonNode n;
        n.kind = JsonNodeKind::array;
        n.valid_types = kTypeArray;
        n.items = JsonGrammar::kAny;
        if (s.contains("items")) {
            const ojson& it = s.at("items");
            if (it.is_array()) {
                fail(path, "'items' as an array (tuple validation) is not supported");
            }
            if (it.is_boolean() && !it.get<bool>()) {
                n.max_items = 0;
            } else {
                n.items = compile(it, path + "/items");
            }
        }
        if (s.contains("minItems")) n.min_items = count(s, "minItems", path);
        if (s.contains("maxItems")) n.max_items = std::min(n.max_items, count(s, "maxItems", path));
        if (s.contains("uniqueItems")) {
            const ojson& u = s.at("uniqueItems");
            if (!u.is_boolean()) fail(path, "'uniqueItems' must be a boolean");
            if (u.get<bool>()) fail(path, "keyword 'uniqueItems': true is not supported");
        }
        if (n.min_items > n.max_items) {
            fail(path, fmt::format("minItems {} > maxItems {}: no array satisfies it", n.min_items,
                                   n.max_items));
        }
        return add(std::move(n), path);
    }

    uint32_t string_node(const ojson& s, const std::string& path) {
        JsonNode n;
        n.kind = JsonNodeKind::string;
        n.valid_types = kTypeString;
        if (s.contains("minLength")) n.min_length = count(s, "minLength", path);
        if (s.contains("maxLength")) n.max_length = count(s, "maxLength", path);
        if (n.min_length > n.max_length) {
            fail(path, fmt::format("minLength {} > maxLength {}: no string satisfies it",
                                   n.min_length, n.max_length));
        }
        return add(std::move(n), path);
    }

    // "#" or a JSON pointer "#/a/b" into the root document; compiled once, recursion allowed.
    uint32_t resolve_ref(const std::string& ref, const std::string& path) {
        auto cached = refs_.find(ref);
        if (cached != refs_.end()) return cached->second;
        if (ref.empty() || ref[0] != '#' || (ref.size() > 1 && ref[1] != '/')) {
            fail(path, fmt::format("'$ref' '{}' is not supported (only local references such as "
                                   "'#/$defs/Name')",
                                   ref));
        }
        const ojson* target = &root_;
        size_t pos = 1;
        while (pos < ref.size()) {
            const size_t next = std::min(ref.find('/', pos + 1), ref.size());
            std::string tok = ref.substr(pos + 1, next - pos - 1);
            std::string key;
            for (size_t i = 0; i < tok.size(); ++i) {
                if (tok[i] == '~' && i + 1 < tok.size() &&
                    (tok[i + 1] == '0' || tok[i + 1] == '1')) {
                    key += tok[i + 1] == '0' ? '~' : '/';
                    ++i;
                } else {
                    key += tok[i];
                }
            }
            const ojson* next_target = nullptr;
            if (target->is_object() && target->contains(key)) {
                next_target = &target->at(key);
            } else if (target->is_array() && !key.empty() &&
                       key.find_first_not_of("0123456789") == std::string::npos && key.size() < 9 &&
                       std::stoul(key) < target->size()) {
                next_target = &(*target)[std::stoul(key)];
            }
            if (!next_target) fail(path, fmt::format("'$ref' target '{}' does not exist", ref));
            target = next_target;
            pos = next;
        }
        JsonNode placeholder;
        placeholder.kind = JsonNodeKind::pending;
        const uint32_t id = add(std::move(placeholder), ref);
        refs_.emplace(ref, id);
        const uint32_t t = compile(*target, ref);
        if (g_.nodes_[t].kind == JsonNodeKind::pending) {
            fail(path, fmt::format("'$ref' '{}' only refers to itself", ref));
        }
        g_.nodes_[id] = g_.nodes_[t];  // a copy of a oneOf union is checked through the original
        return id;
    }

    // A union may not reach itself without consuming input (anyOf: [{"$ref": "#"}, ...]).
    // A union may not reach itself without consuming input (anyOf: [{"$ref": "#"}, ...]). Also
    // sets each union's valid_types (the union of its alternatives'). Iterative: the union
    // chains of a large schema can be long.
    void check_unions() {
        std::vector<uint8_t> color(g_.nodes_.size(), 0);  // 1: on the path, 2: done
        std::vector<std::pair<uint32_t, size_t>> path;    // (node, next alternative)
        for (uint32_t root = 0; root < g_.nodes_.size(); ++root) {
            if (g_.nodes_[root].kind != JsonNodeKind::union_ || color[root]) continue;
            color[root] = 1;
            path.emplace_back(root, 0);
            while (!path.empty()) {
                auto& [n, next] = path.back();
                JsonNode& node = g_.nodes_[n];
                if (next == node.alternatives.size()) {
                    uint8_t t = 0;
                    for (uint32_t a : node.alternatives) t |= g_.nodes_[a].valid_types;
                    node.valid_types = t;
                    color[n] = 2;
                    path.pop_back();
                    continue;
                }
                const uint32_t a = node.alternatives[next++];
                if (g_.nodes_[a].kind != JsonNodeKind::union_ || color[a] == 2) continue;
                if (color[a] == 1) {
                    fail(paths_[a],
                         "the schema refers to itself through anyOf/oneOf/$ref without an "
                         "object or array in between (it would never produce a byte)");
                }
                color[a] = 1;
                path.emplace_back(a, 0);
            }
        }
    }

    // Sound, not complete: true only when no document can match both a and b.
    bool disjoint(uint32_t a, uint32_t b, int depth) const {
        if (++disjoint_work_ > kMaxDisjointWork) {
            fail("#", "the oneOf alternatives are too many to check (use anyOf)");
        }
        const JsonNode& A = g_.nodes_[a];
        const JsonNode& B = g_.nodes_[b];
        if ((A.valid_types & B.valid_types) == 0) return true;
        if (depth > 8) return false;
        if (A.kind == JsonNodeKind::literals && B.kind == JsonNodeKind::literals) {
            for (const ojson& va : A.values) {
                for (const ojson& vb : B.values) {
                    if (va == vb) return false;
                }
            }
            return true;
        }
        if (A.kind == JsonNodeKind::object && B.kind == JsonNodeKind::object &&
            A.valid_types == kTypeObject && B.valid_types == kTypeObject) {
            for (const JsonProperty& pa : A.props) {
                if (!pa.required) continue;
                for (const JsonProperty& pb : B.props) {
                    if (pb.required && pb.key == pa.key &&
                        disjoint(pa.value, pb.value, depth + 1)) {
                        return true;
                    }
                }
            }
        }
        return false;
    }

    void check_disjoint(uint32_t id, const std::string& path) {
        const std::vector<uint32_t>& alts = g_.nodes_[id].alternatives;
        for (size_t i = 0; i < alts.size(); ++i) {
            for (size_t j = i + 1; j < alts.size(); ++j) {
                if (!disjoint(alts[i], alts[j], 0)) {
                    fail(path, fmt::format(
                                   "alternatives {} and {} may both match one document, and oneOf "
                                   "needs exactly one to match; only alternatives of different "
                                   "types, different const/enum values, or with a required "
                                   "property whose values differ so are supported (or use anyOf)",
                                   i, j));
                }
            }
        }
    }

    // Keep only what can complete: a state the matcher reaches must be able to finish a document.
    void prune(uint32_t root) {
        std::vector<JsonNode>& nodes = g_.nodes_;
        std::vector<uint8_t> ok(nodes.size(), 0);
        for (bool changed = true; changed;) {
            changed = false;
            for (size_t i = 0; i < nodes.size(); ++i) {
                if (ok[i]) continue;
                const JsonNode& n = nodes[i];
                bool v = false;
                switch (n.kind) {
                    case JsonNodeKind::any:
                    case JsonNodeKind::string:
                    case JsonNodeKind::number:
                        v = true;
                        break;
                    case JsonNodeKind::literals:
                        v = !n.values.empty();
                        break;
                    case JsonNodeKind::array:
                        v = n.min_items == 0 || ok[n.items];
                        break;
                    case JsonNodeKind::object:
                        v = true;
                        for (const JsonProperty& p : n.props) v = v && (!p.required || ok[p.value]);
                        break;
                    case JsonNodeKind::union_:
                        for (uint32_t a : n.alternatives) v = v || ok[a];
                        break;
                    case JsonNodeKind::pending:
                        break;
                }
                if (v) {
                    ok[i] = 1;
                    changed = true;
                }
            }
        }
        if (!ok[root]) {
            fail("#",
                 "no finite document satisfies the schema (a required property or a minItems "
                 "> 0 array recurses without end)");
        }
        for (size_t i = 0; i < nodes.size(); ++i) {
            JsonNode& n = nodes[i];
            switch (n.kind) {
                case JsonNodeKind::array:
                    if (!ok[n.items]) n.max_items = 0;
                    break;
                case JsonNodeKind::object: {
                    if (n.free_keys && !ok[n.free_value]) n.free_keys = false;
                    std::vector<JsonProperty> kept;
                    for (JsonProperty& p : n.props) {
                        if (ok[p.value]) kept.push_back(std::move(p));
                    }
                    n.props = std::move(kept);
                    break;
                }
                case JsonNodeKind::union_: {
                    std::vector<uint32_t> kept;
                    for (uint32_t a : n.alternatives) {
                        if (ok[a]) kept.push_back(a);
                    }
                    n.alternatives = std::move(kept);
                    break;
                }
                case JsonNodeKind::any:
                case JsonNodeKind::string:
                case JsonNodeKind::number:
                case JsonNodeKind::literals:
                case JsonNodeKind::pending:
                    break;
            }
        }
    }

    static void finish_object(JsonNode& n) {
        std::vector<std::string> keys;
        for (const JsonProperty& p : n.props) keys.push_back(p.key);
        n.keys = JsonTrie::build(keys);
        const auto np = static_cast<uint32_t>(n.props.size());
        n.first_required.assign(np + 1, np);
        for (uint32_t i = np; i-- > 0;) {
            n.first_required[i] = n.props[i].required ? i : n.first_required[i + 1];
        }
    }

    const ojson& root_;
    JsonGrammar& g_;
    std::vector<std::string> paths_;  // per node: where in the schema it came from
    std::map<std::string, uint32_t> refs_;
    std::vector<std::pair<uint32_t, std::string>> one_ofs_;
    int depth_ = 0;                      // compile() calls in progress
    size_t trie_bytes_ = 0;              // charged by charge()
    mutable int64_t disjoint_work_ = 0;  // disjoint() calls so far (bounded: a request pays it)
};

JsonGrammar::JsonGrammar() {
    nodes_.resize(6);
    nodes_[kAny].kind = JsonNodeKind::any;
    JsonNode& obj = nodes_[kFreeObject];
    obj.kind = JsonNodeKind::object;
    obj.valid_types = kTypeObject;
    obj.free_keys = true;
    obj.free_value = kAny;
    obj.first_required = {0};
    obj.keys = JsonTrie::build({});
    JsonNode& arr = nodes_[kFreeArray];
    arr.kind = JsonNodeKind::array;
    arr.valid_types = kTypeArray;
    arr.items = kAny;
    nodes_[kFreeString].kind = JsonNodeKind::string;
    nodes_[kFreeString].valid_types = kTypeString;
    nodes_[kNumber].kind = JsonNodeKind::number;
    nodes_[kNumber].valid_types = kTypeInteger | kTypeFraction;
    JsonNode& lit = nodes_[kTrueFalseNull];
    lit.kind = JsonNodeKind::literals;
    lit.valid_types = kTypeBoolean | kTypeNull;
    lit.values = {ojson(true), ojson(false), ojson(nullptr)};
    lit.literals = JsonTrie::build({"true", "false", "null"});
}

std::shared_ptr<const JsonGrammar> JsonGrammar::json_object() {
    static const std::shared_ptr<const JsonGrammar> kGrammar(new JsonGrammar());
    return kGrammar;
}

std::shared_ptr<const JsonGrammar> JsonGrammar::from_schema(const ojson& schema) {
    std::shared_ptr<JsonGrammar> g(new JsonGrammar());
    g->mode_ = "json_schema";
    SchemaCompiler c(schema, *g);
    g->root_ = c.compile_root();
    return g;
}

}  // namespace zs::infer
