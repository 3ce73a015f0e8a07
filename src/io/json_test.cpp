// JSON loading limits and JsonReader's typed access: every error names the file and key path.
#include "io/json.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <unistd.h>

#include "base/error.h"

namespace zs::io {
namespace {

using nlohmann::json;

// The message of the zs::Error `fn` raises (fails the test when it raises none).
template <class E, class F>
std::string error_of(F&& fn) {
    try {
        fn();
    } catch (const E& e) {
        return e.what();
    }
    ADD_FAILURE() << "no exception";
    return "";
}

TEST(JsonReader, ReadsTypedFields) {
    json j = parse_json(R"({"n": 32, "theta": 10000.5, "name": "llama", "tie": true,
        "big": 5e8, "rope_scaling": {"factor": 8.0, "type": "llama3"},
        "ids": [1, 2, 3], "w": [0.5, 1], "tags": ["a", "b"], "nothing": null,
        "layers": [{"x": 1}, {"x": 2}]})",
                        "config.json");
    JsonReader r(j, "config.json");
    EXPECT_EQ(r.get_int("n"), 32);
    EXPECT_EQ(r.get_int("big"), 500000000);  // DeepSpeed configs write sizes as 5e8
    EXPECT_DOUBLE_EQ(r.get_number("theta"), 10000.5);
    EXPECT_DOUBLE_EQ(r.get_number("n"), 32.0);
    EXPECT_EQ(r.get_string("name"), "llama");
    EXPECT_TRUE(r.get_bool("tie"));
    EXPECT_DOUBLE_EQ(r.get_object("rope_scaling").get_number("factor"), 8.0);
    EXPECT_EQ(r.get_int_array("ids"), (std::vector<int64_t>{1, 2, 3}));
    EXPECT_EQ(r.get_number_array("w"), (std::vector<double>{0.5, 1.0}));
    EXPECT_EQ(r.get_string_array("tags"), (std::vector<std::string>{"a", "b"}));
    std::vector<JsonReader> layers = r.get_object_array("layers");
    ASSERT_EQ(layers.size(), 2u);
    EXPECT_EQ(layers[1].get_int("x"), 2);
    EXPECT_EQ(layers[1].path(), "layers[1]");
    EXPECT_FALSE(r.has("nothing"));  // null counts as absent
    EXPECT_FALSE(r.has("missing"));
    EXPECT_EQ(r.opt_int("missing"), std::nullopt);
    EXPECT_EQ(r.opt_int("nothing"), std::nullopt);
    EXPECT_EQ(r.opt_string("name"), "llama");
    EXPECT_EQ(r.opt_number("theta").value_or(1.0), 10000.5);
    EXPECT_FALSE(r.opt_object("missing").has_value());
    EXPECT_EQ(
        r.unknown_keys({"n", "theta", "name", "tie", "big", "rope_scaling", "ids", "w", "layers"}),
        (std::vector<std::string>{"nothing", "tags"}));
}

TEST(JsonReader, ErrorsNameFileAndKeyPath) {
    json j = parse_json(
        R"({"rope_scaling": {"factor": "8"}, "n": 2.5, "layers": [{"x": 1}, {"x": "a"}],
            "ids": [1, "2"], "neg": -3, "huge": 18446744073709551615, "nothing": null})",
        "config.json");
    JsonReader r(j, "config.json");
    EXPECT_EQ(error_of<ConfigError>([&] { r.get_object("rope_scaling").get_number("factor"); }),
              "config.json: key 'rope_scaling.factor': expected a number, got string");
    EXPECT_EQ(error_of<ConfigError>([&] { r.get_int("n"); }),
              "config.json: key 'n': expected an integer, got number 2.5");
    EXPECT_EQ(error_of<ConfigError>([&] { r.get_int("missing"); }),
              "config.json: key 'missing': required key is missing");
    EXPECT_EQ(error_of<ConfigError>([&] { r.get_string("nothing"); }),
              "config.json: key 'nothing': expected a string, got null");
    EXPECT_EQ(error_of<ConfigError>([&] { r.get_object_array("layers")[1].get_int("x"); }),
              "config.json: key 'layers[1].x': expected an integer, got string");
    EXPECT_EQ(error_of<ConfigError>([&] { r.get_int_array("ids"); }),
              "config.json: key 'ids': element 1: expected an integer, got string");
    EXPECT_EQ(error_of<ConfigError>([&] { r.get_int("neg", 0, 10); }),
              "config.json: key 'neg': expected an integer in [0, 10], got -3");
    EXPECT_EQ(error_of<ConfigError>([&] { r.get_int("huge"); }),
              "config.json: key 'huge': expected an integer, got number 18446744073709551615");
    EXPECT_EQ(error_of<ConfigError>([&] { r.opt_bool("n"); }),
              "config.json: key 'n': expected a boolean, got number 2.5");
    EXPECT_EQ(error_of<ConfigError>([&] { r.get_object("n"); }),
              "config.json: key 'n': expected an object, got number 2.5");
    // Data files raise IoError instead.
    JsonReader io(j, "model.safetensors.index.json", JsonErrorKind::io);
    EXPECT_EQ(error_of<IoError>([&] { io.get_object("weight_map"); }),
              "model.safetensors.index.json: key 'weight_map': required key is missing");
    json arr = json::array();
    EXPECT_EQ(error_of<ConfigError>([&] { JsonReader(arr, "c.json"); }),
              "c.json: expected a JSON object at the top level, got array");
}

TEST(ParseJson, SyntaxErrorsNameTheByteOffset) {
    std::string msg = error_of<IoError>([] { parse_json(R"({"a": tru})", "bad.json"); });
    EXPECT_NE(msg.find("bad.json: invalid JSON at byte"), std::string::npos) << msg;
    // nlohmann reports the offset of the last byte read: the 'u'/'}' after "tru".
    EXPECT_NE(msg.find("byte 10"), std::string::npos) << msg;
    EXPECT_NE(error_of<IoError>([] {
                  parse_json("{\"a\": \"\xff\"}", "u.json");
              }).find("u.json: invalid JSON"),
              std::string::npos);
    EXPECT_NE(error_of<IoError>([] { parse_json("{} x", "t.json"); }).find("t.json"),
              std::string::npos);
    EXPECT_NE(error_of<IoError>([] { parse_json("[1e999]", "o.json"); }).find("o.json"),
              std::string::npos);
    EXPECT_NE(error_of<IoError>([] { parse_json("", "e.json"); }).find("e.json"),
              std::string::npos);
    // nlohmann alone would stop at a NUL and accept {"a": 1}.
    EXPECT_EQ(error_of<IoError>([] { parse_json(std::string("{\"a\": 1}\0{\"x", 13), "n.json"); }),
              "n.json: invalid JSON at byte 8: NUL byte");
}

TEST(ParseJson, DepthAndSizeLimits) {
    JsonLimits lim;
    lim.max_depth = 8;
    std::string ok = std::string(8, '[') + std::string(8, ']');
    EXPECT_NO_THROW(parse_json(ok, "d.json", lim));
    std::string deep = std::string(9, '[') + std::string(9, ']');
    EXPECT_NE(error_of<IoError>([&] {
                  parse_json(deep, "d.json", lim);
              }).find("d.json: JSON nested deeper than 8 levels at '[0][0][0][0][0][0][0][0]'"),
              std::string::npos);
    // A 1 MB bomb of '[' fails fast on the default limit and never recurses.
    std::string bomb(1 << 20, '[');
    EXPECT_NE(error_of<IoError>([&] { parse_json(bomb, "bomb.json"); }).find("nested deeper"),
              std::string::npos);
    lim.max_bytes = 10;
    EXPECT_EQ(error_of<IoError>([&] { parse_json("[1, 2, 3, 4]", "s.json", lim); }),
              "s.json: 12 bytes exceeds the JSON size limit of 10 bytes");
}

TEST(ParseJson, DuplicateKeysAreRejectedWithTheirPath) {
    EXPECT_EQ(error_of<IoError>([] { parse_json(R"({"a": 1, "a": 2})", "c.json"); }),
              "c.json: duplicate key 'a'");
    EXPECT_EQ(error_of<IoError>([] { parse_json(R"({"x": {"b": 1, "b": 2}})", "c.json"); }),
              "c.json: duplicate key 'x.b'");
    EXPECT_EQ(error_of<IoError>(
                  [] { parse_json(R"({"l": [{"k": 1}, [0, {"k": 1, "k": 2}]]})", "c.json"); }),
              "c.json: duplicate key 'l[1][1].k'");
    // The same key in sibling objects is fine.
    EXPECT_NO_THROW(
        parse_json(R"({"a": {"k": 1}, "b": {"k": 2}, "c": [{"k": 1}, {"k": 2}]})", "c.json"));
    JsonLimits lenient;
    lenient.reject_duplicate_keys = false;
    EXPECT_EQ(parse_json(R"({"a": 1, "a": 2})", "c.json", lenient)["a"], 2);
}

TEST(LoadJson, ReadsFilesAndNamesMissingOnes) {
    std::string path = (std::filesystem::temp_directory_path() /
                        ("zs_json_test_" + std::to_string(::getpid()) + ".json"))
                           .string();
    {
        std::ofstream f(path);
        f << R"({"hidden_size": 64})";
    }
    EXPECT_EQ(JsonReader(load_json(path), path).get_int("hidden_size"), 64);
    std::remove(path.c_str());
    std::string msg = error_of<IoError>([&] { load_json(path); });
    EXPECT_NE(msg.find(path + ": cannot open: No such file or directory"), std::string::npos)
        << msg;
}

}  // namespace
}  // namespace zs::io
