// JsonGrammar: what a response_format constraint compiles to — a small graph of value nodes
// (object, array, string, number, literal set, union) that JsonMatcher (json_constraint.h) runs
// byte by byte. Built once per request, immutable afterwards, shared by every choice of that
// request (std::shared_ptr<const JsonGrammar>).
//
//   json_object():    any JSON value whose top level is an object (OpenAI's {"type":"json_object"})
//   from_schema(s):   documents valid under the JSON Schema `s` (OpenAI's json_schema.schema)
//
// Schema subset (docs/SERVING.md): type (one or an array), properties + required +
// additionalProperties, items, enum, const, anyOf, oneOf (only when its alternatives are provably
// disjoint), allOf of one schema, minItems/maxItems, minLength/maxLength, $ref to any "#/..." JSON
// pointer ($defs, definitions, "#" itself; recursion allowed). Annotations (title, description,
// examples, default, $schema, $id, $comment, deprecated, readOnly, writeOnly) are accepted and
// ignored. Every other keyword changes what is valid, and is refused with ConfigError naming it
// and its location ("#/properties/age/minimum"): nothing is silently dropped.
//
// What is generated is always valid, but is a subset of what is valid (NOTE: llama.cpp's choices):
// objects hold their declared properties only, in schema order (additional properties are never
// generated, whatever additionalProperties allows); an object schema without `properties` takes
// any keys, whose values follow additionalProperties (any value when absent). enum/const values
// are written in their compact serialisation. Integers are written without fraction or exponent.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace zs::infer {

// Limits of what the matcher accepts (documented in docs/SERVING.md). They keep a model from
// looping on padding and keep every number inside double range (so every document nlohmann
// accepts without overflow).
inline constexpr int kJsonMaxWhitespace = 32;  // consecutive whitespace bytes (space, \t, \n, \r)
inline constexpr int kJsonMaxNesting = 32;     // open objects + arrays
inline constexpr int kJsonMaxIntDigits = 200;  // integer part of a number
// A schema "integer": at most 15 digits, so every value is exact in int64 and in a double (2^53
// has 16), which is how clients parse it (llama.cpp's grammar allows 16).
inline constexpr int kJsonMaxIntegerDigits = 15;
inline constexpr int kJsonMaxFracDigits = 200;
inline constexpr int kJsonMaxExpDigits = 2;

// A byte trie: literal serialisations (enum/const) or an object's declared keys. Node 0 is the
// root; a node's out-edges are edges[edge_begin, edge_end), sorted by byte.
struct JsonTrie {
    struct Node {
        uint32_t edge_begin = 0, edge_end = 0;
        int32_t tag = -1;         // >= 0: a complete string ends here (keys: property index)
        uint32_t tags_begin = 0;  // tags of every string in this subtree: subtree_tags[b, e),
        uint32_t tags_end = 0;    // sorted
    };
    struct Edge {
        uint8_t byte;
        uint32_t child;
    };
    std::vector<Node> nodes;
    std::vector<Edge> edges;
    std::vector<uint32_t> subtree_tags;

    // Builds the trie of `strings`; string i gets tag i. Strings must be distinct.
    static JsonTrie build(const std::vector<std::string>& strings);
    // The child of `node` along `byte`, or -1.
    int64_t child(uint32_t node, uint8_t byte) const {
        const Node& n = nodes[node];
        for (uint32_t e = n.edge_begin; e < n.edge_end; ++e) {
            if (edges[e].byte == byte) return edges[e].child;
        }
        return -1;
    }
    // Whether some string below `node` has a tag in [lo, hi].
    bool has_tag_in(uint32_t node, uint32_t lo, uint32_t hi) const;
};

// Value types, as bits (JSON Schema's "integer" is a subset of "number": a number is
// integer | fraction).
enum JsonTypeBit : uint8_t {
    kTypeNull = 1,
    kTypeBoolean = 2,
    kTypeObject = 4,
    kTypeArray = 8,
    kTypeString = 16,
    kTypeInteger = 32,
    kTypeFraction = 64,  // numbers that are not integers
    kTypeAll = 127,
};

enum class JsonNodeKind : uint8_t { any, object, array, string, number, literals, union_, pending };
const char* to_string(JsonNodeKind k);

struct JsonProperty {
    std::string key;  // the key's JSON encoding without its opening quote: `name"`
    uint32_t value;   // node id
    bool required;
};

struct JsonNode {
    JsonNodeKind kind = JsonNodeKind::any;
    uint8_t valid_types = kTypeAll;  // what the source schema accepts (for oneOf disjointness)
    // object: free_keys -> any key, values of node free_value; else exactly `props` (in order,
    // each at most once, required ones present). first_required[i]: the first required property
    // with index >= i (props.size() when none), for i in [0, props.size()].
    bool free_keys = false;
    uint32_t free_value = 0;
    std::vector<JsonProperty> props;
    std::vector<uint32_t> first_required;
    JsonTrie keys;
    // array
    uint32_t items = 0;
    uint32_t min_items = 0, max_items = UINT32_MAX;
    // string: length in code points (an escape or a surrogate pair counts as one)
    uint32_t min_length = 0, max_length = UINT32_MAX;
    // number
    bool integer = false;
    // literals: the serialisations of the allowed values, as a trie (tag = index in values)
    JsonTrie literals;
    std::vector<nlohmann::ordered_json> values;
    // union: any of these (anyOf / oneOf / a type array)
    std::vector<uint32_t> alternatives;
};

class JsonGrammar {
public:
    // Builtin node ids present in every grammar.
    static constexpr uint32_t kAny = 0;         // any JSON value
    static constexpr uint32_t kFreeObject = 1;  // any object
    static constexpr uint32_t kFreeArray = 2;   // any array
    static constexpr uint32_t kFreeString = 3;  // any string
    static constexpr uint32_t kNumber = 4;      // any number
    static constexpr uint32_t kTrueFalseNull = 5;

    // OpenAI's json_object: any JSON value whose top level is an object.
    static std::shared_ptr<const JsonGrammar> json_object();
    // Compiles a JSON Schema (an ordered_json keeps the schema's property order). Throws
    // ConfigError naming the keyword and its location for anything outside the subset, and for
    // schemas no document satisfies.
    static std::shared_ptr<const JsonGrammar> from_schema(const nlohmann::ordered_json& schema);

    uint32_t root() const { return root_; }
    const JsonNode& node(uint32_t id) const { return nodes_[id]; }
    size_t n_nodes() const { return nodes_.size(); }
    // "json_object" or "json_schema".
    const std::string& mode() const { return mode_; }

private:
    friend class SchemaCompiler;
    JsonGrammar();

    std::vector<JsonNode> nodes_;
    uint32_t root_ = kFreeObject;
    std::string mode_ = "json_object";
};

}  // namespace zs::infer
