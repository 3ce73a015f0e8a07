// JsonGrammar's schema compiler: random generation under each schema (and under random edits
// of them) always parses and validates against the validator of json_test_util.h, which is
// written from the JSON Schema spec; what the subset lacks is refused with the keyword and its
// location; property order, pruning of what cannot complete, and json_object mode.
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "infer/json_grammar.h"
#include "infer/json_test_util.h"
#include "tests/test_util.h"

namespace zs::infer {
namespace {

using namespace jsontest;  // the shared test helpers
using zs::test::Rng;

TEST(JsonSchema, RandomGenerationAlwaysParsesAndValidates) {
    auto ix = byte_vocab();
    Rng rng(11);
    for (const char* text : kSchemas) {
        const ojson schema = ojson::parse(text);
        std::shared_ptr<const JsonGrammar> g;
        ASSERT_NO_THROW(g = JsonGrammar::from_schema(schema)) << text;
        for (int i = 0; i < 150; ++i) {
            const std::string doc = generate(g, *ix, rng.gen());
            if (HasFailure()) return;
            ojson v;
            try {
                v = ojson::parse(doc);
            } catch (const std::exception& e) {
                FAIL() << "schema " << text << "\ngenerated " << show(doc)
                       << " does not parse: " << e.what();
            }
            ASSERT_TRUE(validate(v, schema, schema))
                << "schema " << text << "\ngenerated " << show(doc) << " is not valid";
        }
    }
}

// Every object-valued subschema of s (pointers into s).
void subschemas(ojson& s, std::vector<ojson*>& out) {
    if (s.is_object()) out.push_back(&s);
    if (s.is_object() || s.is_array()) {
        for (auto& v : s) subschemas(v, out);
    }
}

// One random edit of a random subschema: a keyword set, removed, or the subschema wrapped.
void mutate_schema(ojson& schema, Rng& rng) {
    std::vector<ojson*> subs;
    subschemas(schema, subs);
    if (subs.empty()) return;
    ojson& s = *subs[static_cast<size_t>(rng.integer(0, static_cast<int64_t>(subs.size()) - 1))];
    const std::vector<ojson> values = {
        1, "a", nullptr, true, 2.5, ojson{{"k", 1}}, ojson::array({1}), "name", 0};
    auto pick = [&](const std::vector<ojson>& v) {
        return v[static_cast<size_t>(rng.integer(0, static_cast<int64_t>(v.size()) - 1))];
    };
    switch (rng.integer(0, 10)) {
        case 0:
            s["type"] =
                pick({"string", "integer", "number", "boolean", "null", "object", "array",
                      ojson::array({"string", "null"}), ojson::array({"integer", "object"})});
            break;
        case 1:
            s[rng.integer(0, 1) ? "minLength" : "maxLength"] = rng.integer(0, 4);
            break;
        case 2:
            s[rng.integer(0, 1) ? "minItems" : "maxItems"] = rng.integer(0, 3);
            break;
        case 3: {
            ojson e = ojson::array();
            for (int64_t n = rng.integer(1, 3); n > 0; --n) e.push_back(pick(values));
            s["enum"] = e;
            break;
        }
        case 4:
            s["const"] = pick(values);
            break;
        case 5:
            if (!s.empty()) {
                auto it = s.begin();
                std::advance(it, rng.integer(0, static_cast<int64_t>(s.size()) - 1));
                s.erase(it.key());
            }
            break;
        case 6:
            s["additionalProperties"] = pick({false, true, ojson{{"type", "integer"}}});
            break;
        case 7: {
            ojson r = ojson::array();
            for (const char* k : {"a", "b", "name", "x", "kind"}) {
                if (rng.integer(0, 2) == 0) r.push_back(k);
            }
            s["required"] = r;
            break;
        }
        case 8:
            s = ojson{{"anyOf", ojson::array({s, {{"type", "null"}}})}};
            break;
        case 9:
            s["items"] = pick({false, ojson{{"type", "string"}, {"maxLength", 2}}});
            break;
        default:
            s["properties"] = ojson{{"a", {{"type", "integer"}}}, {"x", {{"enum", {"p", "q"}}}}};
            break;
    }
}

// Random edits of the schemas above: each compiles or is refused with ConfigError (never a crash
// or another exception), and what compiles generates only valid documents, without dead ends.
TEST(JsonSchema, MutatedSchemasCompileOrAreRefusedAndGenerateValidDocuments) {
    auto ix = byte_vocab();
    Rng rng(31);
    int n_ok = 0, n_refused = 0;
    for (int i = 0; i < 1500; ++i) {
        ojson schema = ojson::parse(kSchemas[static_cast<size_t>(
            rng.integer(0, static_cast<int64_t>(std::size(kSchemas)) - 1))]);
        for (int64_t n = rng.integer(1, 3); n > 0; --n) mutate_schema(schema, rng);
        std::shared_ptr<const JsonGrammar> g;
        try {
            g = JsonGrammar::from_schema(schema);
        } catch (const ConfigError&) {
            ++n_refused;
            continue;
        }
        ++n_ok;
        for (int k = 0; k < 4; ++k) {
            const std::string doc = generate(g, *ix, rng.gen());
            ASSERT_FALSE(HasFailure()) << "schema " << schema.dump();
            ojson v;
            try {
                v = ojson::parse(doc);
            } catch (const std::exception& e) {
                FAIL() << "schema " << schema.dump() << "\ngenerated " << show(doc)
                       << " does not parse: " << e.what();
            }
            ASSERT_TRUE(validate(v, schema, schema))
                << "schema " << schema.dump() << "\ngenerated " << show(doc) << " is not valid";
        }
    }
    printf("mutated schemas: %d compiled, %d refused\n", n_ok, n_refused);
    EXPECT_GT(n_ok, 500);
    EXPECT_GT(n_refused, 100);
}

TEST(JsonSchema, ObjectModeGenerationParses) {
    auto ix = byte_vocab();
    Rng rng(12);
    for (int i = 0; i < 300; ++i) {
        const std::string doc = generate(JsonGrammar::json_object(), *ix, rng.gen());
        ASSERT_TRUE(reference_complete(doc, true)) << show(doc);
    }
}

TEST(JsonSchema, PropertiesComeInSchemaOrder) {
    const ojson schema = ojson::parse(
        R"({"type": "object", "properties": {"z": {"type": "integer"}, "a": {"type": "integer"}},
            "required": ["z", "a"], "additionalProperties": false})");
    auto g = JsonGrammar::from_schema(schema);
    JsonMatcher m(g);
    EXPECT_FALSE(m.accept_bytes("{\"a\":1"));
    EXPECT_TRUE(m.accept_bytes("{\"z\":1, \"a\":2}"));
    EXPECT_TRUE(m.done());
    JsonMatcher missing(g);
    EXPECT_TRUE(missing.accept_bytes("{\"z\":1"));
    EXPECT_FALSE(missing.accept_bytes("}"));  // "a" is required
}

// What can never complete (a required property that recurses without end) is cut out of the
// grammar, so the matcher never starts down a path it cannot finish.
TEST(JsonSchema, BranchesThatCannotCompleteArePruned) {
    const char* defs =
        R"("$defs": {"L": {"type": "object", "properties": {"l": {"$ref": "#/$defs/L"}},
        "required": ["l"]}})";
    auto compile = [&](const std::string& body) {
        return JsonGrammar::from_schema(ojson::parse("{" + body + ", " + defs + "}"));
    };
    JsonMatcher any_of(compile(R"("anyOf": [{"$ref": "#/$defs/L"}, {"type": "integer"}])"));
    EXPECT_FALSE(any_of.accept_bytes("{"));
    EXPECT_TRUE(any_of.accept_bytes("42"));
    JsonMatcher optional(compile(R"("type": "object", "properties": {"loop": {"$ref": "#/$defs/L"},
        "v": {"type": "integer"}})"));
    EXPECT_FALSE(optional.accept_bytes("{\"l"));
    EXPECT_TRUE(optional.accept_bytes("{\"v\": 1}"));
    JsonMatcher items(compile(R"("type": "array", "items": {"$ref": "#/$defs/L"})"));
    EXPECT_FALSE(items.accept_bytes("[{"));
    EXPECT_TRUE(items.accept_bytes("[]"));
    JsonMatcher values(
        compile(R"("type": "object", "additionalProperties": {"$ref": "#/$defs/L"})"));
    EXPECT_FALSE(values.accept_bytes("{\""));
    EXPECT_TRUE(values.accept_bytes("{}"));
}

TEST(JsonSchema, UnsupportedKeywordsAreRefusedWithTheirPath) {
    struct Case {
        const char* schema;
        std::vector<std::string> expect;  // substrings of the message
    };
    const std::vector<Case> cases = {
        {R"({"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}})",
         {"'minimum'", "#/properties/age"}},
        {R"({"type": "string", "pattern": "^a"})", {"'pattern'", "'#'"}},
        {R"({"type": "string", "format": "date-time"})", {"'format'"}},
        {R"({"type": "array", "prefixItems": [{"type": "integer"}]})", {"'prefixItems'"}},
        {R"({"not": {"type": "string"}})", {"'not'"}},
        {R"({"if": {}, "then": {}})", {"'if'"}},
        {R"({"type": "object", "patternProperties": {"^a": {}}})", {"'patternProperties'"}},
        {R"({"type": "object", "minProperties": 1})", {"'minProperties'"}},
        {R"({"type": "number", "multipleOf": 2})", {"'multipleOf'"}},
        {R"({"$defs": {"a": {"type": "array", "items": [{"type": "integer"}]}},
             "$ref": "#/$defs/a"})",
         {"#/$defs/a", "tuple"}},
        {R"({"$ref": "https://example.com/s.json"})", {"only local"}},
        {R"({"$ref": "#/$defs/missing"})", {"does not exist"}},
        {R"({"oneOf": [{"type": "integer"}, {"type": "number"}]})", {"oneOf", "anyOf"}},
        {R"({"allOf": [{"type": "integer"}, {"minimum": 1}]})", {"allOf"}},
        {R"({"type": "array", "uniqueItems": true})", {"uniqueItems"}},
        {R"({"type": "array", "minItems": 3, "maxItems": 2})", {"minItems"}},
        {R"({"type": "object", "properties": {"a": false}, "required": ["a"]})",
         {"#/properties/a", "false"}},
        {R"({"type": "strnig"})", {"strnig"}},
        {R"({"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]})",
         {"no finite document"}},
        {R"({"anyOf": [{"$ref": "#"}, {"type": "null"}]})", {"refers to itself"}},
        {R"({"type": "object", "$ref": "#/$defs/a", "$defs": {"a": {}}})", {"'$ref' next to"}},
        {R"({"anyOf": [{"type": "integer"}], "type": "string"})", {"'anyOf' next to 'type'"}},
        {R"({"enum": [1, 2], "type": "string"})", {"no 'enum' value"}},
        {R"({"type": "object", "properties": {"a": {}}, "required": ["b"],
             "additionalProperties": false})",
         {"'b'"}},
        {R"({"x-custom": 1})", {"'x-custom'"}},
    };
    for (const Case& c : cases) {
        try {
            JsonGrammar::from_schema(ojson::parse(c.schema));
            ADD_FAILURE() << "accepted " << c.schema;
        } catch (const ConfigError& e) {
            for (const std::string& s : c.expect) {
                EXPECT_NE(std::string(e.what()).find(s), std::string::npos)
                    << c.schema << "\n  message: " << e.what() << "\n  lacks: " << s;
            }
        }
    }
    // Annotations are accepted.
    EXPECT_NO_THROW(JsonGrammar::from_schema(ojson::parse(
        R"({"title": "t", "description": "d", "examples": [1], "default": 1, "$comment": "c",
            "deprecated": false, "readOnly": true, "writeOnly": false, "type": "integer",
            "$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "urn:x"})")));
}

}  // namespace
}  // namespace zs::infer
