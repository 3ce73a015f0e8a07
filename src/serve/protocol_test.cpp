// parse_request's response_format: the accepted shapes put a compiled grammar into
// GenRequest::sampling (checked by running it: it accepts what the schema allows and refuses the
// rest, with the schema's property order), and every bad shape or schema is a 400 naming
// response_format — for a schema, the keyword and where it is.
#include "serve/protocol.h"

#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "infer/json_constraint.h"

namespace zs::serve {
namespace {

using nlohmann::json;

ParseLimits limits() {
    ParseLimits l;
    l.vocab_size = 1000;
    return l;
}

std::string chat_body(const std::string& response_format) {
    return R"({"model": "m", "messages": [{"role": "user", "content": "hi"}],
               "response_format": )" +
           response_format + "}";
}

// The ApiError a body raises (fails the test when it parses).
ApiError error_of(Endpoint ep, const std::string& body) {
    try {
        parse_request(ep, body, limits());
    } catch (const ApiException& e) {
        return e.error();
    }
    ADD_FAILURE() << "accepted: " << body;
    return {};
}

TEST(ProtocolResponseFormat, TextIsFreeOutput) {
    GenRequest r = parse_request(Endpoint::chat, chat_body(R"({"type": "text"})"), limits());
    EXPECT_EQ(r.sampling.grammar, nullptr);
    r = parse_request(Endpoint::chat, chat_body("null"), limits());
    EXPECT_EQ(r.sampling.grammar, nullptr);
}

TEST(ProtocolResponseFormat, JsonObject) {
    for (Endpoint ep : {Endpoint::chat, Endpoint::completions}) {
        const std::string body =
            ep == Endpoint::chat
                ? chat_body(R"({"type": "json_object"})")
                : R"({"model": "m", "prompt": "p", "response_format": {"type": "json_object"}})";
        GenRequest r = parse_request(ep, body, limits());
        ASSERT_NE(r.sampling.grammar, nullptr);
        EXPECT_EQ(r.sampling.grammar->mode(), "json_object");
        infer::JsonMatcher m(r.sampling.grammar);
        EXPECT_FALSE(m.accept_bytes("[1]"));
        EXPECT_TRUE(m.accept_bytes(R"({"a": [1, {"b": null}]})"));
        EXPECT_TRUE(m.done());
    }
}

// The sampler computes each token's log-probability (a pass over the vocabulary) exactly when
// the response reports it: 'logprobs' on either endpoint (an integer on completions, a boolean
// on chat), with top_logprobs alternatives where asked.
TEST(ProtocolSampling, LogprobsOnlyWhenAsked) {
    struct Case {
        Endpoint ep;
        std::string extra;
        bool logprobs;
        int top;
    };
    const Case cases[] = {
        {Endpoint::completions, "", false, 0},
        {Endpoint::completions, R"(, "logprobs": 0)", true, 0},
        {Endpoint::completions, R"(, "logprobs": 3)", true, 3},
        {Endpoint::chat, "", false, 0},
        {Endpoint::chat, R"(, "logprobs": false)", false, 0},
        {Endpoint::chat, R"(, "logprobs": true)", true, 0},
        {Endpoint::chat, R"(, "logprobs": true, "top_logprobs": 2)", true, 2},
    };
    for (const Case& c : cases) {
        const std::string body =
            (c.ep == Endpoint::chat
                 ? std::string(R"({"model": "m", "messages": [{"role": "user", "content": "hi"}])")
                 : std::string(R"({"model": "m", "prompt": "p")")) +
            c.extra + "}";
        const GenRequest r = parse_request(c.ep, body, limits());
        EXPECT_EQ(r.sampling.logprobs, c.logprobs) << body;
        EXPECT_EQ(r.sampling.top_logprobs, c.top) << body;
    }
}

TEST(ProtocolResponseFormat, JsonSchemaKeepsPropertyOrder) {
    const std::string rf = R"({"type": "json_schema", "json_schema": {"name": "person",
        "strict": true, "schema": {"type": "object", "properties": {"zeta": {"type": "integer"},
        "alpha": {"type": "string", "enum": ["x", "y"]}}, "required": ["zeta", "alpha"],
        "additionalProperties": false}}})";
    GenRequest r = parse_request(Endpoint::chat, chat_body(rf), limits());
    ASSERT_NE(r.sampling.grammar, nullptr);
    EXPECT_EQ(r.sampling.grammar->mode(), "json_schema");
    infer::JsonMatcher wrong_order(r.sampling.grammar);
    EXPECT_FALSE(wrong_order.accept_bytes(R"({"alpha")"));
    infer::JsonMatcher m(r.sampling.grammar);
    EXPECT_FALSE(m.accept_bytes(R"({"zeta": 1, "alpha": "z"})"));
    EXPECT_TRUE(m.accept_bytes(R"({"zeta": 1, "alpha": "x"})"));
    EXPECT_TRUE(m.done());
}

TEST(ProtocolResponseFormat, BadShapesAndSchemasAre400sNamingResponseFormat) {
    struct Case {
        const char* rf;
        const char* expect;  // in the message
    };
    const Case cases[] = {
        {R"("json")", "must be an object"},
        {R"({})", "'response_format.type'"},
        {R"({"type": "yaml"})", "yaml"},
        {R"({"type": "json_schema"})", "'response_format.json_schema'"},
        {R"({"type": "json_schema", "json_schema": {"name": "x"}})", "schema' is required"},
        {R"({"type": "json_schema", "json_schema": {"name": 5, "schema": {}}})", ".name"},
        {R"({"type": "json_schema", "json_schema": {"strict": "yes", "schema": {}}})", ".strict"},
        {R"({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object",
            "properties": {"age": {"type": "integer", "minimum": 0}}}}})",
         "keyword 'minimum' is not supported"},
        {R"({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object",
            "properties": {"age": {"type": "integer", "minimum": 0}}}}})",
         "'#/properties/age'"},
        {R"({"type": "json_schema", "json_schema": {"schema": {"$ref": "#/$defs/nope"}}})",
         "does not exist"},
        {R"({"type": "json_schema", "json_schema": {"schema": 7}})", "must be an object"},
    };
    for (const Case& c : cases) {
        for (Endpoint ep : {Endpoint::chat, Endpoint::completions}) {
            const std::string body =
                ep == Endpoint::chat
                    ? chat_body(c.rf)
                    : std::string(R"({"model": "m", "prompt": "p", "response_format": )") + c.rf +
                          "}";
            const ApiError e = error_of(ep, body);
            EXPECT_EQ(e.status, 400) << c.rf;
            EXPECT_EQ(e.param, "response_format") << c.rf;
            EXPECT_NE(e.message.find(c.expect), std::string::npos)
                << c.rf << "\n  message: " << e.message << "\n  lacks: " << c.expect;
        }
    }
}

}  // namespace
}  // namespace zs::serve
