// GGUF: files built byte by byte in the test (independently of GgufWriter) read back; writer
// round trips; typed metadata getters; a table of malformed files, one checklist rule broken each
// (including the CVE replays of RELIABILITY.md), rejected without large allocations; and the
// llama Q/K un-permutation against a naive implementation of the forward permutation.
#include "io/gguf.h"

#include <cstring>

#include <gtest/gtest.h>

#include "base/error.h"
#include "core/half.h"
#include "io/alloc_probe_test.h"
#include "io/gguf_writer.h"
#include "io/test_files_test.h"
#include "tests/test_util.h"

namespace zs::io {
namespace {

using core::DType;
using core::Shape;
using core::Tensor;

// Little-endian byte builder for hand-made GGUF files.
struct B {
    std::vector<uint8_t> b;
    B& u8(uint8_t v) { return raw(&v, 1); }
    B& u32(uint32_t v) { return raw(&v, 4); }
    B& u64(uint64_t v) { return raw(&v, 8); }
    B& i64(int64_t v) { return raw(&v, 8); }
    B& f32(float v) { return raw(&v, 4); }
    B& str(const std::string& s) {
        u64(s.size());
        return raw(s.data(), s.size());
    }
    B& raw(const void* p, size_t n) {
        const auto* c = static_cast<const uint8_t*>(p);
        b.insert(b.end(), c, c + n);
        return *this;
    }
    B& add(const B& o) {
        b.insert(b.end(), o.b.begin(), o.b.end());
        return *this;
    }
    B& pad(size_t align) {
        while (b.size() % align) b.push_back(0);
        return *this;
    }
};

constexpr uint32_t T_U8 = 0, T_U32 = 4, T_F32 = 6, T_BOOL = 7, T_STR = 8, T_ARR = 9, T_U64 = 10;

B kv_u32(const std::string& k, uint32_t v) { return B().str(k).u32(T_U32).u32(v); }
B kv_str(const std::string& k, const std::string& v) { return B().str(k).u32(T_STR).str(v); }
B tinfo(const std::string& name, std::vector<int64_t> ne, uint32_t type, uint64_t offset) {
    B t;
    t.str(name).u32(static_cast<uint32_t>(ne.size()));
    for (int64_t d : ne) t.i64(d);
    return t.u32(type).u64(offset);
}

// magic | version | n_tensors | n_kv | kvs | infos | pad(align) | data
std::vector<uint8_t> gguf(uint32_t version, uint64_t n_tensors, uint64_t n_kv, const B& kvs,
                          const B& infos, const B& data, size_t align = 32) {
    B f;
    f.raw("GGUF", 4).u32(version).u64(n_tensors).u64(n_kv).add(kvs).add(infos);
    if (n_tensors > 0) f.pad(align);
    return f.add(data).b;
}

GgufFile parse(std::vector<uint8_t> bytes) {
    auto owner = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
    return GgufFile::from_memory(std::span<uint8_t>(*owner), owner, "m.gguf");
}

std::string parse_error(std::vector<uint8_t> bytes) {
    try {
        parse(std::move(bytes));
    } catch (const IoError& e) {
        return e.what();
    }
    return "(accepted)";
}

template <class F>
std::string error_of(F&& fn) {
    try {
        fn();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

TEST(GgufRead, HandBuiltFile) {
    // Two KVs and two tensors: F32 ne = [3, 2] (a row-major [2, 3]) and F16 ne = [4].
    B kvs;
    kvs.add(kv_str("general.architecture", "llama")).add(kv_u32("llama.block_count", 2));
    B infos;
    infos.add(tinfo("w", {3, 2}, 0, 0)).add(tinfo("h", {4}, 1, 32));
    B data;
    for (float v : {1.f, 2.f, 3.f, 4.f, 5.f, 6.f}) data.f32(v);
    data.pad(32);
    for (float v : {0.5f, -1.f, 2.f, 65504.f}) {
        uint16_t h = core::f32_to_f16(v).bits;
        data.raw(&h, 2);
    }
    for (uint32_t version : {2u, 3u}) {
        GgufFile g = parse(gguf(version, 2, 2, kvs, infos, data));
        EXPECT_EQ(g.version(), version);
        EXPECT_EQ(g.get_string("general.architecture"), "llama");
        EXPECT_EQ(g.get_u32("llama.block_count"), 2u);
        EXPECT_EQ(g.get_int("llama.block_count"), 2);
        ASSERT_EQ(g.tensors().size(), 2u);
        EXPECT_EQ(g.tensors()[0].ne, (std::vector<int64_t>{3, 2}));
        Tensor w = g.tensor("w");
        EXPECT_EQ(w.shape(), Shape({2, 3}));
        EXPECT_EQ(w.item({0, 2}), 3.0);
        EXPECT_EQ(w.item({1, 0}), 4.0);
        Tensor h = g.tensor("h");
        EXPECT_EQ(h.dtype(), DType::f32);
        EXPECT_EQ(h.item({3}), 65504.0);
        Tensor hb = g.tensor("h", DType::bf16);
        EXPECT_EQ(hb.item({1}), -1.0);
        Tensor h16 = g.tensor("h", DType::f16);  // same type: a view of the file
        EXPECT_EQ(static_cast<const uint8_t*>(h16.data_ptr()), g.raw_bytes("h").data());
        EXPECT_EQ(h16.item({0}), 0.5);
    }
}

TEST(GgufRead, EmptyAndAlignedFiles) {
    GgufFile e = parse(gguf(3, 0, 0, B(), B(), B()));
    EXPECT_TRUE(e.tensors().empty());
    EXPECT_TRUE(e.metadata().empty());
    EXPECT_EQ(e.data_offset(), 24u);
    // Alignment 1 and 64.
    for (uint32_t align : {1u, 64u}) {
        B kvs = kv_u32("general.alignment", align);
        B infos;
        infos.add(tinfo("a", {1}, 0, 0)).add(tinfo("b", {2}, 0, align == 1 ? 4 : 64));
        B data;
        data.f32(9.f).pad(align).f32(1.f).f32(2.f);
        GgufFile g = parse(gguf(3, 2, 1, kvs, infos, data, align));
        EXPECT_EQ(g.alignment(), align);
        EXPECT_EQ(g.data_offset() % align, 0u);
        EXPECT_EQ(g.tensor("a").item({0}), 9.0);
        EXPECT_EQ(g.tensor("b").item({1}), 2.0);
    }
}

TEST(GgufRoundTrip, WriterMetadataAndTensors) {
    test::Rng rng(11);
    GgufWriter w;
    w.set("u8", uint8_t{200});
    w.set("i8", int8_t{-100});
    w.set("u16", uint16_t{60000});
    w.set("i16", int16_t{-30000});
    w.set("u32", uint32_t{4000000000u});
    w.set("i32", int32_t{-2000000000});
    w.set("f32", 1.25f);
    w.set("bool", true);
    w.set("str", std::string("héllo"));
    w.set("u64", uint64_t{1} << 60);
    w.set("i64", int64_t{-1} << 60);
    w.set("f64", 0.1);
    w.set("arr.f32", GgufArray(std::vector<float>{0.5f, -0.25f}));
    w.set("arr.str", GgufArray(std::vector<std::string>{"a", "", "<0x0A>"}));
    w.set("arr.bool", GgufArray(std::vector<bool>{true, false, true}));
    w.set("arr.i32", GgufArray(std::vector<int32_t>{}));
    w.set("arr.u64", GgufArray(std::vector<uint64_t>{7, 8}));
    Tensor a = test::random_tensor(rng, {3, 5}, DType::f32);
    Tensor b = test::random_tensor(rng, {2, 2, 3}, DType::bf16);
    Tensor c = test::random_tensor(rng, {7}, DType::f16);
    Tensor d = test::random_ints(rng, {4}, DType::i32, -9, 9);
    w.add_tensor("a", a);
    w.add_tensor("b", b);
    w.add_tensor("c", c);
    w.add_tensor("d", d);

    test::TempDir dir;
    w.save(dir.file("x.gguf"));
    GgufFile g = GgufFile::open(dir.file("x.gguf"));
    EXPECT_EQ(g.get<uint8_t>("u8"), 200);
    EXPECT_EQ(g.get<int8_t>("i8"), -100);
    EXPECT_EQ(g.get<uint16_t>("u16"), 60000);
    EXPECT_EQ(g.get<int16_t>("i16"), -30000);
    EXPECT_EQ(g.get<uint32_t>("u32"), 4000000000u);
    EXPECT_EQ(g.get<int32_t>("i32"), -2000000000);
    EXPECT_EQ(g.get_f32("f32"), 1.25f);
    EXPECT_TRUE(g.get_bool("bool"));
    EXPECT_EQ(g.get_string("str"), "héllo");
    EXPECT_EQ(g.get<uint64_t>("u64"), uint64_t{1} << 60);
    EXPECT_EQ(g.get_int("i64"), int64_t{-1} << 60);
    EXPECT_EQ(g.get_float("f64"), 0.1);
    EXPECT_EQ(g.get_float("f32"), 1.25);
    EXPECT_EQ(g.get<std::vector<float>>("arr.f32"), (std::vector<float>{0.5f, -0.25f}));
    EXPECT_EQ(g.get<std::vector<std::string>>("arr.str"),
              (std::vector<std::string>{"a", "", "<0x0A>"}));
    EXPECT_EQ(g.get<std::vector<bool>>("arr.bool"), (std::vector<bool>{true, false, true}));
    EXPECT_TRUE(g.get<std::vector<int32_t>>("arr.i32").empty());
    EXPECT_EQ(g.get<std::vector<uint64_t>>("arr.u64"), (std::vector<uint64_t>{7, 8}));
    EXPECT_EQ(g.get_or<uint32_t>("missing", 5u), 5u);
    EXPECT_EQ(describe_type(*g.find("arr.str")), "ARRAY[STRING]");
    ASSERT_EQ(g.metadata().size(), 17u);
    EXPECT_EQ(g.metadata()[3].key, "i16");  // file order

    for (const auto& [name, t] :
         std::vector<std::pair<std::string, Tensor>>{{"a", a}, {"b", b}, {"c", c}, {"d", d}}) {
        Tensor r = g.tensor(name, t.dtype());
        EXPECT_EQ(r.shape(), t.shape()) << name;
        EXPECT_EQ(std::memcmp(r.data_ptr(), t.data_ptr(), t.nbytes()), 0) << name;
    }
    // bf16 data read as f32 is exact; f32 read as bf16 rounds like core's conversion.
    Tensor b32 = g.tensor("b");
    for (int64_t i = 0; i < 12; ++i) {
        EXPECT_EQ(b32.item({i / 6, (i / 3) % 2, i % 3}), b.item({i / 6, (i / 3) % 2, i % 3}));
    }
    EXPECT_EQ(g.tensor("a", DType::bf16).item({2, 4}), a.to(DType::bf16).item({2, 4}));
    EXPECT_EQ(g.tensor("d", DType::f32).item({3}), d.item({3}));
    // Same bytes through to_bytes().
    EXPECT_EQ(test::read_bytes(dir.file("x.gguf")), w.to_bytes());
}

TEST(GgufMetadata, TypedGettersNameTheKey) {
    B kvs;
    kvs.add(kv_u32("n", 3))
        .add(B().str("scores").u32(T_ARR).u32(T_U8).u64(2).u8(1).u8(2))  // UINT8-typed scores
        .add(B().str("big").u32(T_U64).u64(~uint64_t{0}));
    GgufFile g = parse(gguf(3, 0, 3, kvs, B(), B()));
    EXPECT_EQ(error_of([&] { g.get_string("n"); }),
              "m.gguf: metadata key 'n': expected STRING, got UINT32");
    EXPECT_EQ(error_of([&] { g.get<std::vector<float>>("tokenizer.ggml.scores"); }),
              "m.gguf: metadata key 'tokenizer.ggml.scores' is missing");
    EXPECT_EQ(error_of([&] { g.get<std::vector<float>>("scores"); }),
              "m.gguf: metadata key 'scores': expected ARRAY[FLOAT32], got ARRAY[UINT8]");
    EXPECT_EQ(error_of([&] { g.get_int("scores"); }),
              "m.gguf: metadata key 'scores': expected an integer, got ARRAY[UINT8]");
    EXPECT_EQ(error_of([&] { g.get_int("big"); }),
              "m.gguf: metadata key 'big': 18446744073709551615 does not fit in int64");
    EXPECT_EQ(error_of([&] { g.get_float("n"); }),
              "m.gguf: metadata key 'n': expected FLOAT32 or FLOAT64, got UINT32");
    EXPECT_EQ(error_of([&] { g.tensor("nope"); }), "m.gguf: no tensor named 'nope'");
}

TEST(GgufRead, UnsupportedTypesAndConversions) {
    // A Q2_K tensor (84 bytes per 256 elements): valid, but not dequantizable here.
    B data;
    data.raw(std::vector<uint8_t>(84).data(), 84);
    GgufFile g = parse(gguf(3, 1, 0, B(), tinfo("q", {256}, 10, 0), data));
    EXPECT_EQ(g.tensors()[0].nbytes, 84u);
    EXPECT_THROW(g.tensor("q"), NotSupported);
    GgufFile h = parse(gguf(3, 1, 0, B(), tinfo("f", {2}, 0, 0), B().f32(1).f32(2)));
    EXPECT_NE(error_of([&] { h.tensor("f", DType::i32); }).find("cannot load F32 data as i32"),
              std::string::npos);
}

struct BadCase {
    const char* what;
    std::vector<uint8_t> bytes;
    const char* expect;
};

TEST(GgufRead, MalformedFilesAreRejectedNamingTheRule) {
    const B one_f32 = B().f32(1.f);
    const B no;
    auto arr = [](uint32_t et, uint64_t n) { return B().str("a").u32(T_ARR).u32(et).u64(n); };
    B long_name_info = tinfo(std::string(64, 'x'), {1}, 0, 0);
    std::vector<BadCase> cases = {
        {"bad magic",
         [] {
             auto v = gguf(3, 0, 0, B(), B(), B());
             v[3] = 'X';
             return v;
         }(),
         "bad magic"},
        {"shorter than the magic", {'G', 'G'}, "bad magic"},
        {"version 0", gguf(0, 0, 0, no, no, no), "version 0 is invalid"},
        {"version 1", gguf(1, 0, 0, no, no, no), "version 1 is not supported"},
        {"future version", gguf(4, 0, 0, no, no, no), "newer than the supported 3"},
        {"big-endian file", gguf(0x03000000, 0, 0, no, no, no), "byte-swapped"},
        {"truncated header", B().raw("GGUF", 4).u32(3).u64(0).b, "truncated: n_kv"},
        {"n_kv larger than the file", gguf(3, 0, uint64_t{1} << 62, no, no, no), "n_kv ="},
        {"n_tensors larger than the file", gguf(3, uint64_t{1} << 62, 0, no, no, no),
         "n_tensors ="},
        {"fewer kvs than n_kv",
         gguf(3, 0, 2, B().add(kv_u32("a", 1)).u64(1).raw("k", 1).u8(0).u8(0), no, no),
         "truncated: key 'k' type"},
        {"empty key", gguf(3, 0, 1, kv_u32("", 1), no, no), "key #0 is empty"},
        {"duplicate key", gguf(3, 0, 2, B().add(kv_u32("a", 1)).add(kv_u32("a", 2)), no, no),
         "duplicate key 'a'"},
        {"value type out of range", gguf(3, 0, 1, B().str("a").u32(13).u32(0), no, no),
         "key 'a': value type 13 is out of range"},
        {"array element type out of range", gguf(3, 0, 1, arr(99, 0), no, no),
         "array element type 99 is out of range"},
        {"array of arrays", gguf(3, 0, 1, arr(T_ARR, 1).u32(T_U8).u64(0), no, no),
         "arrays of arrays are not allowed"},
        {"array length 2^63 (UINT8)", gguf(3, 0, 1, arr(T_U8, uint64_t{1} << 63), no, no),
         "array of 9223372036854775808 elements of 1 bytes exceeds"},
        {"array length 2^63 (UINT64: n * 8 wraps)",
         gguf(3, 0, 1, arr(T_U64, uint64_t{1} << 63), no, no), "exceeds the 0 bytes remaining"},
        {"array of 2^63 strings", gguf(3, 0, 1, arr(T_STR, uint64_t{1} << 63), no, no),
         "array of 9223372036854775808 strings exceeds"},
        {"array of 2^63 bools", gguf(3, 0, 1, arr(T_BOOL, uint64_t{1} << 63), no, no),
         "BOOLs exceeds"},
        {"string length 1 GiB in a 200-byte file",
         gguf(3, 0, 1,
              B().str("k").u32(T_STR).u64(uint64_t{1} << 30).raw(std::string(140, 'a').data(), 140),
              no, no),
         "string length 1073741824 exceeds the 140 bytes remaining"},
        {"string length over 1 GiB",
         gguf(3, 0, 1, B().str("k").u32(T_STR).u64((uint64_t{1} << 30) + 1), no, no),
         "exceeds the 1 GiB limit"},
        {"key length 2^64-1", gguf(3, 0, 1, B().u64(~uint64_t{0}).u64(0), no, no), "1 GiB limit"},
        {"bool value 2", gguf(3, 0, 1, B().str("b").u32(T_BOOL).u8(2), no, no),
         "BOOL value 2 is neither 0 nor 1"},
        {"alignment not UINT32",
         gguf(3, 0, 1, B().str("general.alignment").u32(T_U64).u64(32), no, no),
         "key 'general.alignment': must be UINT32, got UINT64"},
        {"alignment 0", gguf(3, 0, 1, kv_u32("general.alignment", 0), no, no),
         "0 is not a non-zero power of two"},
        {"alignment 3", gguf(3, 0, 1, kv_u32("general.alignment", 3), no, no),
         "3 is not a non-zero power of two"},
        {"alignment 2^31",
         gguf(3, 1, 1, kv_u32("general.alignment", 1u << 31), tinfo("t", {1}, 0, 0), no, 1),
         "starts beyond the end"},
        {"tensor name of 64 bytes", gguf(3, 1, 0, no, long_name_info, one_f32),
         "name of 64 bytes is too long"},
        {"duplicate tensor names",
         gguf(3, 2, 0, no, B().add(tinfo("t", {1}, 0, 0)).add(tinfo("t", {1}, 0, 32)),
              B().f32(1).pad(32).f32(2)),
         "duplicate tensor name 't'"},
        {"n_dims 5", gguf(3, 1, 0, no, tinfo("t", {1, 1, 1, 1, 1}, 0, 0), one_f32),
         "n_dims 5 exceeds 4"},
        {"n_dims 2^32-1", gguf(3, 1, 0, no, B().str("t").u32(~0u).u64(0).u64(0), no),
         "n_dims 4294967295 exceeds 4"},
        {"negative ne", gguf(3, 1, 0, no, tinfo("t", {-1}, 0, 0), no), "ne[0] = -1 is negative"},
        {"ne of 2^42+1 squared",
         gguf(3, 1, 0, no, tinfo("t", {(int64_t{1} << 42) + 1, (int64_t{1} << 42) + 1}, 0, 0), no),
         "element count overflows"},
        {"ne [0, 2^42, 2^42]: empty, but shape strides overflow (gguf_fuzz UBSan regression)",
         gguf(3, 1, 0, no, tinfo("t", {0, int64_t{1} << 42, int64_t{1} << 42}, 0, 0), no),
         "element count overflows"},
        {"ne of 2^42+1 with no data",
         gguf(3, 1, 0, no, tinfo("t", {(int64_t{1} << 42) + 1}, 0, 0), one_f32),
         "extends past the end"},
        {"size in bytes overflows", gguf(3, 1, 0, no, tinfo("t", {int64_t{1} << 62}, 28, 0), no),
         "size in bytes overflows"},
        {"GGML_PAD wrap: nbytes near 2^64",
         gguf(3, 1, 0, no, tinfo("t", {(int64_t{1} << 61) - 1}, 28, 0), one_f32),
         "extends past the end"},
        {"removed type 4", gguf(3, 1, 0, no, tinfo("t", {32}, 4, 0), no),
         "GGML type 4 is unknown or removed"},
        {"type out of range", gguf(3, 1, 0, no, tinfo("t", {32}, 1000, 0), no), "GGML type 1000"},
        {"row not whole blocks",
         gguf(3, 1, 0, no, tinfo("t", {31}, 2, 0), B().raw(std::string(18, 0).data(), 18)),
         "ne[0] = 31 is not a multiple of the Q4_0 block size 32"},
        {"offsets out of order",
         gguf(3, 2, 0, no, B().add(tinfo("a", {1}, 0, 32)).add(tinfo("b", {1}, 0, 0)),
              B().f32(1).pad(32).f32(2)),
         "tensor 'a': offset 32 should be 0"},
        {"gap between tensors",
         gguf(3, 2, 0, no, B().add(tinfo("a", {1}, 0, 0)).add(tinfo("b", {1}, 0, 64)),
              B().f32(1).pad(32).f32(2)),
         "tensor 'b': offset 64 should be 32"},
        {"overlapping tensors",
         gguf(3, 2, 0, no, B().add(tinfo("a", {16}, 0, 0)).add(tinfo("b", {1}, 0, 32)),
              B().raw(std::string(64, 0).data(), 64).f32(2)),
         "tensor 'b': offset 32 should be 64"},
        {"data shorter than the tensor", gguf(3, 1, 0, no, tinfo("t", {4}, 0, 0), one_f32),
         "extends past the end of the data section"},
        {"truncated tensor info", gguf(3, 1, 0, no, B().str("t").u32(2).i64(4).u32(0), no),
         "truncated: tensor 't'"},
    };
    for (BadCase& c : cases) {
        test::AllocProbe probe;
        std::string msg = parse_error(std::move(c.bytes));
        EXPECT_NE(msg.find(c.expect), std::string::npos)
            << c.what << ": got \"" << msg << "\", want \"" << c.expect << "\"";
        EXPECT_EQ(msg.rfind("m.gguf: ", 0), 0u) << c.what << ": " << msg;
        EXPECT_LT(probe.max_bytes(), size_t{1} << 20) << c.what;
    }
}

// ---- llama Q/K permutation ----

// convert_hf_to_gguf.py's permute, written the way numpy does it: view rows as
// [n_heads][2][HS/2], swap the last two axes, flatten back.
Tensor naive_permute(const Tensor& w, int64_t n_heads) {
    const int64_t rows = w.size(0), hs = rows / n_heads, half = hs / 2;
    const int64_t cols = w.numel() / std::max<int64_t>(rows, 1);
    Tensor out = Tensor::empty(w.shape(), DType::f32);
    Tensor src = w.contiguous();
    const float* s = src.data<float>();
    float* d = out.data<float>();
    for (int64_t h = 0; h < n_heads; ++h) {
        for (int64_t a = 0; a < 2; ++a) {                     // axis 1 of the view
            for (int64_t b = 0; b < half; ++b) {              // axis 2 of the view
                const int64_t from = (h * 2 + a) * half + b;  // index in [n_heads, 2, half]
                const int64_t to = (h * half + b) * 2 + a;    // index in [n_heads, half, 2]
                for (int64_t c = 0; c < cols; ++c) d[to * cols + c] = s[from * cols + c];
            }
        }
    }
    return out;
}

TEST(UnpermuteLlamaQk, InvertsTheConvertScriptPermutation) {
    test::Rng rng(5);
    for (auto [n_heads, hs, cols] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {1, 4, 3}, {4, 8, 16}, {2, 2, 1}, {8, 16, 5}}) {
        Tensor w = test::random_tensor(rng, {n_heads * hs, cols}, DType::f32);
        Tensor g = naive_permute(w, n_heads);
        Tensor back = unpermute_llama_qk(g, n_heads);
        ASSERT_EQ(back.shape(), w.shape());
        EXPECT_EQ(std::memcmp(back.data_ptr(), w.data_ptr(), w.nbytes()), 0)
            << n_heads << " heads of " << hs;
        // A bias (rank 1) and a bf16 weight take the same path.
        Tensor bias = test::random_tensor(rng, {n_heads * hs}, DType::f32);
        Tensor bias_back = unpermute_llama_qk(naive_permute(bias, n_heads), n_heads);
        EXPECT_EQ(std::memcmp(bias_back.data_ptr(), bias.data_ptr(), bias.nbytes()), 0);
    }
    // The worked example: one head of size 4, HF rows [r0 r1 r2 r3] are stored [r0 r2 r1 r3].
    Tensor g = Tensor::empty({4, 1}, DType::bf16);
    for (int64_t i = 0; i < 4; ++i) g.select(0, i).fill(static_cast<double>(i));
    Tensor hf = unpermute_llama_qk(g, 1);
    EXPECT_EQ(hf.dtype(), DType::bf16);
    const double want[] = {0, 2, 1, 3};
    for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(hf.item({i, 0}), want[i]);
    // Regression (gguf_fuzz timeout): 2^40 rows of zero columns return at once.
    EXPECT_EQ(unpermute_llama_qk(Tensor::empty({int64_t{1} << 40, 0}, DType::f32), 2).shape(),
              Shape({int64_t{1} << 40, 0}));
    EXPECT_THROW(unpermute_llama_qk(Tensor::empty({6, 2}, DType::f32), 2), ShapeError);
    EXPECT_THROW(unpermute_llama_qk(Tensor::empty({8, 2}, DType::f32), 3), ShapeError);
}

}  // namespace
}  // namespace zs::io
