// safetensors: hand-built fixtures read back, the writer checked byte by byte against the format,
// sharded directories, and malformed headers each rejected with the rule they break.
#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <random>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/alloc_probe_test.h"
#include "io/atomic_file.h"
#include "io/safetensors_model.h"
#include "io/safetensors_writer.h"
#include "io/test_files_test.h"
#include "tests/test_util.h"

namespace zs::io {
namespace {

using core::DType;
using core::Shape;
using core::Tensor;

std::vector<uint8_t> le64(uint64_t v) {
    std::vector<uint8_t> b(8);
    for (int i = 0; i < 8; ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
    return b;
}

// <u64 N = header.size()><header><data>, or with an explicit N.
std::vector<uint8_t> st_bytes(std::string_view header, std::string_view data = {},
                              std::optional<uint64_t> n = std::nullopt) {
    std::vector<uint8_t> b = le64(n.value_or(header.size()));
    b.insert(b.end(), header.begin(), header.end());
    b.insert(b.end(), data.begin(), data.end());
    return b;
}

SafetensorsFile parse(std::vector<uint8_t> bytes) {
    auto owner = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
    return SafetensorsFile::from_memory(std::span<uint8_t>(*owner), owner, "t.safetensors");
}

std::string parse_error(std::vector<uint8_t> bytes) {
    try {
        parse(std::move(bytes));
    } catch (const IoError& e) {
        return e.what();
    }
    return "(accepted)";
}

std::string floats(std::initializer_list<float> v) {
    std::string s(v.size() * 4, '\0');
    std::memcpy(s.data(), std::data(v), s.size());
    return s;
}

TEST(SafetensorsRead, HandBuiltFileGivesItsValues) {
    // The example from safetensors' own documentation: one I32 [2, 2] tensor of zeros.
    std::string doc_header = R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})";
    SafetensorsFile doc = parse(st_bytes(doc_header, std::string(16, '\0')));
    ASSERT_EQ(doc.tensors().size(), 1u);
    EXPECT_EQ(doc.tensor("test").shape(), Shape({2, 2}));
    EXPECT_EQ(doc.tensor("test").item({1, 1}), 0.0);

    std::string header =
        R"({"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},)"
        R"("a":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}})";
    SafetensorsFile f = parse(st_bytes(header, floats({1.5f, -2.0f, 3.25f, 1e-3f})));
    EXPECT_EQ(f.metadata().at("format"), "pt");
    ASSERT_EQ(f.tensors().size(), 2u);
    EXPECT_EQ(f.tensors()[0].name, "a");  // ordered by offset, not by header order
    EXPECT_EQ(f.tensors()[1].dtype, SafetensorsDType::f32);
    Tensor a = f.tensor("a"), b = f.tensor("b");
    EXPECT_EQ(a.shape(), Shape({1, 2}));
    EXPECT_EQ(a.item({0, 0}), 1.5);
    EXPECT_EQ(a.item({0, 1}), -2.0);
    EXPECT_EQ(b.item({0}), 3.25);
    EXPECT_EQ(b.item({1}), static_cast<double>(1e-3f));
    EXPECT_EQ(f.data_offset(), 8 + header.size());
    EXPECT_FALSE(f.contains("c"));
    std::string msg;
    try {
        f.tensor("c");
    } catch (const IoError& e) {
        msg = e.what();
    }
    EXPECT_EQ(msg, "t.safetensors: no tensor named 'c'");
}

TEST(SafetensorsRead, ValidEdgeCasesAreAccepted) {
    SafetensorsFile empty = parse(st_bytes("{}"));
    EXPECT_TRUE(empty.tensors().empty());
    EXPECT_TRUE(empty.metadata().empty());
    // Leading whitespace (writers pad for alignment; the reference accepts it) and trailing spaces.
    EXPECT_NO_THROW(parse(st_bytes("   \n\t{}     ")));
    // A rank-0 tensor and zero-size tensors, even between others.
    std::string h = R"({"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},)"
                    R"("z":{"dtype":"BF16","shape":[0,3],"data_offsets":[4,4]},)"
                    R"("y":{"dtype":"I64","shape":[5,0],"data_offsets":[4,4]},)"
                    R"("t":{"dtype":"I8","shape":[2],"data_offsets":[4,6]}})";
    SafetensorsFile f = parse(st_bytes(h, floats({7.0f}) + std::string("\x01\xff", 2)));
    EXPECT_EQ(f.tensor("s").dim(), 0);
    EXPECT_EQ(f.tensor("s").item(), 7.0);
    EXPECT_EQ(f.tensor("z").shape(), Shape({0, 3}));
    EXPECT_EQ(f.tensor("z").numel(), 0);
    EXPECT_EQ(f.tensor("y").numel(), 0);
    EXPECT_EQ(f.tensor("t").item({1}), -1.0);
    // Unknown fields inside a tensor entry are ignored, as serde does, however nested.
    EXPECT_NO_THROW(parse(st_bytes(
        R"({"a":{"dtype":"U8","extra":{"x":[1,[2,{"y":null}]]},"shape":[1],"data_offsets":[0,1]}})",
        "\x05")));
    // Known but unreadable dtypes parse, and fail only when read.
    SafetensorsFile u = parse(
        st_bytes(R"({"u":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", std::string(8, 0)));
    std::string msg;
    try {
        u.tensor("u");
    } catch (const IoError& e) {
        msg = e.what();
    }
    EXPECT_NE(msg.find("t.safetensors: tensor 'u': unsupported dtype F64"), std::string::npos)
        << msg;
    // Sub-byte dtypes are fine when the bits fill whole bytes.
    EXPECT_NO_THROW(parse(
        st_bytes(R"({"f":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}})", std::string(2, 0))));
}

struct BadCase {
    const char* what;
    std::vector<uint8_t> bytes;
    const char* expect;  // substring of the error
};

TEST(SafetensorsRead, MalformedFilesAreRejectedNamingTheRule) {
    const std::string f8 = std::string(8, '\0');
    auto t = [](const std::string& body) { return "{" + body + "}"; };
    const std::string a8 = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
    std::vector<BadCase> cases = {
        {"file shorter than 8 bytes", {1, 0, 0}, "HeaderTooSmall"},
        {"header over 100,000,000 bytes", st_bytes("{}", "", 100'000'001), "HeaderTooLarge"},
        {"header size 2^64-1", st_bytes("{}", "", ~uint64_t{0}), "HeaderTooLarge"},
        {"header runs past the file", st_bytes("{}", "", 100), "InvalidHeaderLength"},
        {"truncated file", st_bytes(t(a8), "1234"), "MetadataIncompleteBuffer"},
        {"trailing bytes", st_bytes(t(a8), f8 + "x"), "MetadataIncompleteBuffer"},
        {"non-UTF-8 header", st_bytes("{\"a\xff\":1}"), "InvalidHeader:"},
        {"overlong UTF-8", st_bytes("{\"\xc0\xaf\":1}"), "InvalidHeader:"},
        {"UTF-16 surrogate bytes", st_bytes("{\"\xed\xa0\x80\":1}"), "InvalidHeader:"},
        {"bad JSON", st_bytes(R"({"a":)"), "InvalidHeaderDeserialization: invalid JSON"},
        {"garbage after JSON", st_bytes("{} x"), "InvalidHeaderDeserialization: invalid JSON"},
        {"NUL padding", st_bytes(std::string("{}\0\0", 4)), "invalid JSON"},
        {"header is an array", st_bytes("[]"), "the header must be a JSON object"},
        {"duplicate tensor names", st_bytes(t(a8 + "," + a8), f8), "duplicate key 'a'"},
        {"duplicate field",
         st_bytes(t(R"("a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]})"), f8),
         "tensor 'a': duplicate key 'dtype'"},
        {"duplicate metadata key", st_bytes(R"({"__metadata__":{"k":"1","k":"2"}})"),
         "duplicate key 'k' in __metadata__"},
        {"two __metadata__", st_bytes(R"({"__metadata__":{},"__metadata__":{}})"),
         "duplicate key '__metadata__'"},
        {"metadata value not a string", st_bytes(R"({"__metadata__":{"k":1}})"),
         "__metadata__ key 'k': value must be a string, got number"},
        {"metadata value an object", st_bytes(R"({"__metadata__":{"k":{}}})"),
         "__metadata__ key 'k': value must be a string, got object"},
        {"metadata not an object", st_bytes(R"({"__metadata__":"pt"})"),
         "__metadata__ must be an object of strings"},
        {"tensor entry not an object", st_bytes(R"({"a":5})"), "tensor 'a': expected an object"},
        {"unknown dtype", st_bytes(t(R"("a":{"dtype":"F128","shape":[],"data_offsets":[0,0]})")),
         "tensor 'a': unknown dtype 'F128'"},
        {"lower-case dtype", st_bytes(t(R"("a":{"dtype":"f32","shape":[],"data_offsets":[0,4]})")),
         "unknown dtype 'f32'"},
        {"dtype not a string", st_bytes(t(R"("a":{"dtype":4,"shape":[],"data_offsets":[0,4]})")),
         "dtype must be a string"},
        {"missing data_offsets", st_bytes(t(R"("a":{"dtype":"F32","shape":[]})")),
         "tensor 'a': missing field 'data_offsets'"},
        {"missing shape", st_bytes(t(R"("a":{"dtype":"F32","data_offsets":[0,4]})")),
         "missing field 'shape'"},
        {"negative dimension",
         st_bytes(t(R"("a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]})")),
         "shape entries must be non-negative integers"},
        {"fractional dimension",
         st_bytes(t(R"("a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,0]})")),
         "shape entries must be non-negative integers"},
        {"dimension above u64",
         st_bytes(t(R"("a":{"dtype":"F32","shape":[1e30],"data_offsets":[0,0]})")),
         "shape entries must be non-negative integers"},
        {"dimension above int64",
         st_bytes(
             t(R"("a":{"dtype":"F32","shape":[18446744073709551615,0],"data_offsets":[0,0]})")),
         "does not fit in int64"},
        {"shape not an array", st_bytes(t(R"("a":{"dtype":"F32","shape":3,"data_offsets":[0,4]})")),
         "shape must be an array"},
        {"three data_offsets",
         st_bytes(t(R"("a":{"dtype":"F32","shape":[],"data_offsets":[0,4,8]})")),
         "data_offsets must have exactly 2 entries"},
        {"one data_offset", st_bytes(t(R"("a":{"dtype":"F32","shape":[],"data_offsets":[0]})")),
         "data_offsets must have exactly 2 entries"},
        {"negative offset", st_bytes(t(R"("a":{"dtype":"F32","shape":[],"data_offsets":[-4,0]})")),
         "data_offsets entries must be non-negative"},
        {"first tensor not at 0",
         st_bytes(t(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]})"), f8 + "1234"),
         "InvalidOffset: tensor 'a'"},
        {"reversed range",
         st_bytes(t(R"("a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]})"), f8),
         "InvalidOffset: tensor 'a'"},
        {"overlapping tensors",
         st_bytes(t(a8 + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]})"), f8 + "1234"),
         "InvalidOffset: tensor 'b'"},
        {"same bytes twice",
         st_bytes(t(a8 + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), f8),
         "InvalidOffset"},
        {"hole between tensors",
         st_bytes(t(a8 + R"(,"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]})"),
                  f8 + f8 + "1234"),
         "InvalidOffset: tensor 'b'"},
        {"wrong byte span",
         st_bytes(t(R"("a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), f8),
         "TensorInvalidInfo: tensor 'a'"},
        {"wrong dtype for span",
         st_bytes(t(R"("a":{"dtype":"F16","shape":[2],"data_offsets":[0,8]})"), f8),
         "TensorInvalidInfo"},
        {"shape product overflow",
         st_bytes(
             t(R"("a":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]})")),
         "ValidationOverflow: tensor 'a'"},
        {"zero-size, but the other dims overflow in reverse order",
         st_bytes(
             t(R"("a":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]})")),
         "ValidationOverflow: tensor 'a'"},
        {"bit size overflow",
         st_bytes(t(R"("a":{"dtype":"F64","shape":[2305843009213693952,4],"data_offsets":[0,0]})")),
         "ValidationOverflow"},
        {"sub-byte remainder",
         st_bytes(t(R"("a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]})"), "12"),
         "MisalignedSlice: tensor 'a'"},
        {"offsets past the file",
         st_bytes(t(R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})"), ""),
         "MetadataIncompleteBuffer"},
    };
    for (BadCase& c : cases) {
        test::AllocProbe probe;
        std::string msg = parse_error(std::move(c.bytes));
        EXPECT_NE(msg.find(c.expect), std::string::npos)
            << c.what << ": got \"" << msg << "\", want \"" << c.expect << "\"";
        EXPECT_EQ(msg.rfind("t.safetensors: ", 0), 0u) << c.what << ": " << msg;
        EXPECT_LT(probe.max_bytes(), size_t{1} << 20) << c.what;
    }
}

TEST(SafetensorsRead, MisalignedTensorsAreCopiedAndAlignedOnesShareTheFile) {
    // Data starting at a byte offset of 1 (mod 4) leaves the F32 misaligned.
    std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    std::string odd = h;
    while ((8 + odd.size()) % 4 != 1) odd += ' ';
    ASSERT_NE((8 + odd.size()) % 4, 0u);
    SafetensorsFile f = parse(st_bytes(odd, floats({2.5f, -1.0f})));
    Tensor a = f.tensor("a");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data_ptr()) % 4, 0u);
    EXPECT_EQ(a.item({0}), 2.5);
    EXPECT_EQ(a.item({1}), -1.0);

    std::string padded = h + std::string((8 - (8 + h.size()) % 8) % 8, ' ');
    auto owner = std::make_shared<std::vector<uint8_t>>(st_bytes(padded, floats({4.0f, 5.0f})));
    std::weak_ptr<std::vector<uint8_t>> watch = owner;
    Tensor b;
    {
        SafetensorsFile g = SafetensorsFile::from_memory(*owner, owner, "m");
        b = g.tensor("a");
        const uint8_t* p = static_cast<const uint8_t*>(b.data_ptr());
        EXPECT_EQ(p, owner->data() + 8 + padded.size());  // a view, not a copy
        owner.reset();
    }
    EXPECT_FALSE(watch.expired());  // the tensor keeps the bytes alive
    EXPECT_EQ(b.item({1}), 5.0);
    b = Tensor();
    EXPECT_TRUE(watch.expired());
}

// ---- writer ----

std::vector<NamedTensor> sample_tensors(test::Rng& rng) {
    std::vector<NamedTensor> v;
    v.push_back({"model.embed.weight", test::random_tensor(rng, {5, 3}, DType::f32)});
    v.push_back({"model.norm.bf16", test::random_tensor(rng, {7}, DType::bf16)});
    v.push_back({"h", test::random_tensor(rng, {3, 1}, DType::f16)});
    v.push_back({"ids", test::random_ints(rng, {3}, DType::i64, -1000, 1000)});
    v.push_back({"small", test::random_ints(rng, {5}, DType::i8, -128, 127)});
    v.push_back({"counts", test::random_ints(rng, {2, 2}, DType::i32, -5, 5)});
    v.push_back({"scalar", test::random_tensor(rng, {}, DType::f32)});
    v.push_back({"empty", Tensor::empty({0, 4}, DType::bf16)});
    // A transposed (non-contiguous) view: written as its contiguous copy.
    v.push_back({"transposed", test::random_tensor(rng, {4, 6}, DType::f32).transpose(0, 1)});
    return v;
}

std::vector<uint8_t> contiguous_bytes(const Tensor& t) {
    Tensor c = t.contiguous();
    const auto* p = static_cast<const uint8_t*>(c.data_ptr());
    return {p, p + c.nbytes()};
}

std::vector<uint8_t> tensor_bytes(const Tensor& t) {
    const auto* p = static_cast<const uint8_t*>(t.data_ptr());
    return {p, p + t.nbytes()};
}

TEST(SafetensorsWrite, FileFollowsTheFormatByteForByte) {
    test::TempDir dir;
    test::Rng rng(301);
    std::vector<NamedTensor> tensors = sample_tensors(rng);
    const std::string path = dir.file("w.safetensors");
    save_safetensors(path, tensors, {{"format", "pt"}});
    std::vector<uint8_t> file = test::read_bytes(path);
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));

    // Parse the layout directly (nlohmann's DOM, not our reader).
    ASSERT_GE(file.size(), 8u);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | file[i];
    EXPECT_EQ(n % 8, 0u);
    std::string header(file.begin() + 8, file.begin() + 8 + static_cast<ptrdiff_t>(n));
    nlohmann::json j = nlohmann::json::parse(header);
    EXPECT_EQ(j["__metadata__"]["format"], "pt");
    EXPECT_EQ(j.size(), tensors.size() + 1);
    const char* names[] = {"F32", "BF16", "F16", "I64", "I8", "I32", "F32", "BF16", "F32"};
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    for (size_t i = 0; i < tensors.size(); ++i) {
        const auto& e = j[tensors[i].name];
        EXPECT_EQ(e["dtype"], names[i]) << tensors[i].name;
        std::vector<int64_t> shape(tensors[i].tensor.shape().begin(),
                                   tensors[i].tensor.shape().end());
        EXPECT_EQ(e["shape"].get<std::vector<int64_t>>(), shape);
        uint64_t b = e["data_offsets"][0], en = e["data_offsets"][1];
        EXPECT_EQ(b % tensors[i].tensor.element_size(), 0u) << "aligned";
        std::vector<uint8_t> got(file.begin() + 8 + n + b, file.begin() + 8 + n + en);
        EXPECT_EQ(got, contiguous_bytes(tensors[i].tensor)) << tensors[i].name;
        spans.push_back({b, en});
    }
    std::sort(spans.begin(), spans.end());
    uint64_t at = 0;
    for (auto [b, e] : spans) {
        EXPECT_EQ(b, at);
        at = e;
    }
    EXPECT_EQ(8 + n + at, file.size());  // no holes, nothing after the data

    // And the reader gives back every tensor bit for bit.
    SafetensorsFile f = SafetensorsFile::open(path);
    for (const NamedTensor& nt : tensors) {
        Tensor t = f.tensor(nt.name);
        EXPECT_EQ(t.shape(), nt.tensor.shape());
        EXPECT_EQ(t.dtype(), nt.tensor.dtype());
        EXPECT_EQ(tensor_bytes(t), contiguous_bytes(nt.tensor)) << nt.name;
    }
}

TEST(SafetensorsWrite, ViewsOfAnOpenFileAreCopyOnWrite) {
    test::TempDir dir;
    const std::string path = dir.file("cow.safetensors");
    Tensor x = Tensor::empty({4}, DType::f32);
    x.fill(1.0);
    std::vector<NamedTensor> v{{"x", x}};
    save_safetensors(path, v);
    std::vector<uint8_t> before = test::read_bytes(path);
    Tensor y = SafetensorsFile::open(path).tensor("x");
    y.fill(-3.0);
    EXPECT_EQ(y.item({2}), -3.0);
    EXPECT_EQ(test::read_bytes(path), before);
    EXPECT_EQ(SafetensorsFile::open(path).tensor("x").item({2}), 1.0);
}

TEST(SafetensorsWrite, RejectsBadInputAndLeavesNoTemporaryFile) {
    test::TempDir dir;
    Tensor x = Tensor::zeros({2}, DType::f32);
    auto error = [&](std::vector<NamedTensor> v, const std::string& path) -> std::string {
        try {
            save_safetensors(path, v);
        } catch (const IoError& e) {
            return e.what();
        }
        return "(written)";
    };
    const std::string p = dir.file("x.safetensors");
    EXPECT_EQ(error({{"a", x}, {"a", x}}, p), p + ": duplicate tensor name 'a'");
    EXPECT_EQ(error({{"__metadata__", x}}, p),
              p + ": '__metadata__' is reserved and cannot name a tensor");
    EXPECT_EQ(error({{"a", Tensor()}}, p), p + ": tensor 'a' is undefined");
    std::string missing = dir.file("no/such/dir/x.safetensors");
    EXPECT_NE(error({{"a", x}}, missing).find(missing + ".tmp: cannot create"), std::string::npos);
    EXPECT_FALSE(std::filesystem::exists(p));
    EXPECT_FALSE(std::filesystem::exists(p + ".tmp"));
}

TEST(AtomicFile, UncommittedWritesLeaveTheOldFile) {
    test::TempDir dir;
    const std::string p = dir.file("f.txt");
    write_file_atomic(p, "old");
    {
        AtomicFile f(p);
        f.write("new contents");
        EXPECT_TRUE(std::filesystem::exists(p + ".tmp"));
    }  // destroyed without commit
    EXPECT_FALSE(std::filesystem::exists(p + ".tmp"));
    std::vector<uint8_t> b = test::read_bytes(p);
    EXPECT_EQ(std::string(b.begin(), b.end()), "old");
    write_file_atomic(p, "new");
    b = test::read_bytes(p);
    EXPECT_EQ(std::string(b.begin(), b.end()), "new");
}

// ---- sharded directories ----

TEST(SafetensorsModel, ShardedRoundTrip) {
    test::TempDir dir;
    test::Rng rng(7);
    std::vector<NamedTensor> tensors = sample_tensors(rng);
    // 64-byte shards: the 60-byte embedding alone, then greedy packing.
    std::vector<std::string> files = save_safetensors_sharded(dir.path(), tensors, 64);
    ASSERT_GE(files.size(), 3u);
    const size_t n_shards = files.size() - 1;
    for (size_t s = 0; s < n_shards; ++s) {
        EXPECT_EQ(files[s],
                  dir.file(fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, n_shards)));
    }
    EXPECT_EQ(files.back(), dir.file("model.safetensors.index.json"));

    // The index, read independently: weight_map names the shard of every tensor; total_size is
    // the sum of tensor bytes; every shard respects the limit unless it holds one tensor.
    std::vector<uint8_t> ib = test::read_bytes(files.back());
    nlohmann::json index = nlohmann::json::parse(ib.begin(), ib.end());
    uint64_t total = 0;
    for (const NamedTensor& nt : tensors) total += nt.tensor.nbytes();
    EXPECT_EQ(index["metadata"]["total_size"], total);
    EXPECT_EQ(index["weight_map"].size(), tensors.size());

    SafetensorsModel m = SafetensorsModel::open_dir(dir.path());
    EXPECT_EQ(m.size(), tensors.size());
    EXPECT_EQ(m.shards().size(), n_shards);
    for (const NamedTensor& nt : tensors) {
        EXPECT_EQ(std::filesystem::path(m.shard_of(nt.name).path()).filename().string(),
                  index["weight_map"][nt.name].get<std::string>());
        Tensor t = m.tensor(nt.name);
        EXPECT_EQ(t.shape(), nt.tensor.shape());
        EXPECT_EQ(tensor_bytes(t), contiguous_bytes(nt.tensor)) << nt.name;
    }
    for (const SafetensorsFile& s : m.shards()) {
        uint64_t bytes = 0;
        for (const auto& t : s.tensors()) bytes += t.nbytes();
        EXPECT_TRUE(bytes <= 64 || s.tensors().size() == 1) << s.path();
    }
    std::vector<std::string> names = m.names();
    EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
}

TEST(SafetensorsModel, SingleShardIsModelSafetensors) {
    test::TempDir dir;
    test::Rng rng(8);
    std::vector<NamedTensor> tensors = sample_tensors(rng);
    std::vector<std::string> files = save_safetensors_sharded(dir.path(), tensors, 1 << 20);
    ASSERT_EQ(files, std::vector<std::string>{dir.file("model.safetensors")});
    EXPECT_FALSE(std::filesystem::exists(dir.file("model.safetensors.index.json")));
    SafetensorsModel m = SafetensorsModel::open_dir(dir.path());
    EXPECT_EQ(m.size(), tensors.size());
    EXPECT_EQ(tensor_bytes(m.tensor("ids")), contiguous_bytes(tensors[3].tensor));
}

TEST(SafetensorsModel, InconsistentIndexesAreRejected) {
    Tensor x = Tensor::zeros({2}, DType::f32);
    auto open_error = [](const std::string& d) -> std::string {
        try {
            SafetensorsModel::open_dir(d);
        } catch (const IoError& e) {
            return e.what();
        }
        return "(opened)";
    };
    auto setup = [&](const test::TempDir& dir, const std::string& index) {
        std::vector<NamedTensor> s1{{"a", x}, {"b", x}}, s2{{"c", x}};
        save_safetensors(dir.file("s1.safetensors"), s1);
        save_safetensors(dir.file("s2.safetensors"), s2);
        write_file_atomic(dir.file("model.safetensors.index.json"), index);
    };
    struct Case {
        const char* index;
        const char* expect;
    };
    const Case cases[] = {
        {R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s2.safetensors"}})",
         "(opened)"},
        {R"({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors", "c": "s2.safetensors"}})",
         "tensor 'b' is listed in shard 's2.safetensors', which does not contain it"},
        {R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors", "c": "s3.safetensors"}})",
         "shard 's3.safetensors' does not exist"},
        {R"({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}})",
         "(opened)"},  // s2 is never opened, so its 'c' is simply not part of the model
        {R"({"weight_map": {"a": "s1.safetensors", "c": "s2.safetensors"}})",
         "tensor 'b' in shard"},
        {R"({"weight_map": {"a": "../s1.safetensors"}})", "is not a plain file name"},
        {R"({"weight_map": {"a": 3}})", "key 'weight_map.a': expected a string, got number 3"},
        {R"({"metadata": {}})", "key 'weight_map': required key is missing"},
        {R"({"weight_map": {"a": "s1.safetensors", "a": "s1.safetensors"}})", "duplicate key"},
    };
    for (const Case& c : cases) {
        test::TempDir dir;
        setup(dir, c.index);
        std::string msg = open_error(dir.path());
        EXPECT_NE(msg.find(c.expect), std::string::npos) << c.index << " -> " << msg;
    }
    // A tensor stored in two shards.
    test::TempDir dup;
    std::vector<NamedTensor> s1{{"a", x}}, s2{{"a", x}, {"c", x}};
    save_safetensors(dup.file("s1.safetensors"), s1);
    save_safetensors(dup.file("s2.safetensors"), s2);
    write_file_atomic(dup.file("model.safetensors.index.json"),
                      R"({"weight_map": {"a": "s1.safetensors", "c": "s2.safetensors"}})");
    EXPECT_NE(open_error(dup.path()).find("tensor 'a' is in two shards"), std::string::npos);
    test::TempDir none;
    EXPECT_NE(open_error(none.path()).find("no model weights"), std::string::npos);
}

// ---- generated files, one rule broken each ----

struct GenTensor {
    std::string name;
    std::string dtype;
    int bytes_per;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;
};

std::string header_json(const std::vector<GenTensor>& ts, std::mt19937_64& g) {
    std::vector<size_t> order(ts.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), g);
    std::string h = std::string(g() % 3, ' ') + "{";
    if (g() % 2) h += R"("__metadata__":{"format":"pt","k":"v"},)";
    for (size_t k = 0; k < order.size(); ++k) {
        const GenTensor& t = ts[order[k]];
        h += fmt::format(R"("{}":{{"dtype":"{}","shape":[{}],"data_offsets":[{},{}]}})", t.name,
                         t.dtype, fmt::join(t.shape, ","), t.begin, t.end);
        if (k + 1 < order.size()) h += ",";
    }
    return h + "}" + std::string(g() % 9, ' ');
}

void lay_out(std::vector<GenTensor>& ts) {
    uint64_t at = 0;
    for (GenTensor& t : ts) {
        uint64_t n = 1;
        for (int64_t d : t.shape) n *= static_cast<uint64_t>(d);
        t.begin = at;
        t.end = at + n * static_cast<uint64_t>(t.bytes_per);
        at = t.end;
    }
}

TEST(SafetensorsRules, ThousandGeneratedFilesEachBreakingOneRule) {
    std::mt19937_64 g(301);
    const struct {
        const char* name;
        int bytes;
    } dtypes[] = {{"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I8", 1}, {"I64", 8}, {"U8", 1}};
    int checked = 0;
    for (int iter = 0; iter < 1000; ++iter) {
        std::vector<GenTensor> ts(1 + g() % 5);
        for (size_t i = 0; i < ts.size(); ++i) {
            const auto& d = dtypes[g() % 6];
            ts[i].name = fmt::format("t{}", i);
            ts[i].dtype = d.name;
            ts[i].bytes_per = d.bytes;
            for (size_t r = g() % 4; r > 0; --r)
                ts[i].shape.push_back(static_cast<int64_t>(g() % 4));
        }
        lay_out(ts);
        const uint64_t data_len = ts.back().end;
        std::string data(data_len, '\0');
        for (char& c : data) c = static_cast<char>(g());
        ASSERT_EQ(parse_error(st_bytes(header_json(ts, g), data)), "(accepted)");

        std::string expect;
        std::string bad_data = data;
        std::vector<GenTensor> bad = ts;
        size_t i = g() % ts.size();
        std::string header;
        switch (g() % 7) {
            case 0:  // extra bytes at the end
                bad_data += std::string(1 + g() % 7, 'x');
                expect = "MetadataIncompleteBuffer";
                break;
            case 1:  // a hole before tensor i (i >= 1)
                if (i == 0) continue;
                for (size_t k = i; k < bad.size(); ++k) bad[k].begin += 3, bad[k].end += 3;
                bad_data += "abc";
                expect = "InvalidOffset";
                break;
            case 2: {  // one dimension of a non-empty tensor grows
                uint64_t n = 1;
                for (int64_t d : bad[i].shape) n *= static_cast<uint64_t>(d);
                if (bad[i].shape.empty() || n == 0) continue;
                bad[i].shape[g() % bad[i].shape.size()] += 1;
                expect = "TensorInvalidInfo";
                break;
            }
            case 3: {  // a dtype of another size on a non-empty tensor
                if (bad[i].end == bad[i].begin) continue;
                bad[i].dtype = bad[i].bytes_per == 4 ? "I64" : "F32";
                expect = "TensorInvalidInfo";
                break;
            }
            case 4:  // tensor i shares its first byte with its predecessor
                if (i == 0 || bad[i - 1].end == bad[i - 1].begin) continue;
                bad[i].begin -= 1;
                expect = "InvalidOffset";
                break;
            case 5:  // a duplicated entry
                bad.push_back(bad[i]);
                expect = "duplicate key";
                break;
            case 6:  // data cut short
                if (data.empty()) continue;
                bad_data.pop_back();
                expect = "MetadataIncompleteBuffer";
                break;
        }
        header = header_json(bad, g);
        std::string msg = parse_error(st_bytes(header, bad_data));
        EXPECT_NE(msg.find(expect), std::string::npos)
            << "iteration " << iter << ": want " << expect << ", got " << msg << "\n"
            << header;
        ++checked;
    }
    EXPECT_GT(checked, 600);
}

}  // namespace
}  // namespace zs::io
