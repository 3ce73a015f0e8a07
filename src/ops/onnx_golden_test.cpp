// Kernels against golden data nobody here wrote: the ONNX backend test cases shipped by Debian's
// libonnx-testdata (/usr/share/libonnx-testdata/data/node/<case>/): LayerNormalization, Softmax,
// MatMul and Gemm inputs/outputs as TensorProto files, attributes from each case's model.onnx.
// A tiny protobuf reader below decodes just the fields needed.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <gtest/gtest.h>

#include "ops/matmul.h"
#include "ops/norm.h"
#include "ops/softmax.h"
#include "tests/test_util.h"

namespace zs::ops {
namespace {

namespace fs = std::filesystem;
using namespace zs::test;

const char* kRoot = "/usr/share/libonnx-testdata/data/node/";

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Protobuf wire format: calls f(field, wire_type, varint, bytes) for each field of a message.
template <class F>
void walk(std::string_view m, F&& f) {
    size_t i = 0;
    auto varint = [&]() {
        uint64_t v = 0;
        for (int s = 0; i < m.size(); s += 7) {
            auto b = static_cast<uint8_t>(m[i++]);
            v |= static_cast<uint64_t>(b & 0x7f) << s;
            if (!(b & 0x80)) break;
        }
        return v;
    };
    while (i < m.size()) {
        uint64_t key = varint();
        int field = static_cast<int>(key >> 3), wt = static_cast<int>(key & 7);
        if (wt == 0) {
            f(field, wt, varint(), std::string_view());
        } else if (wt == 2) {
            uint64_t len = varint();
            f(field, wt, 0, m.substr(i, len));
            i += len;
        } else if (wt == 5) {
            f(field, wt, 0, m.substr(i, 4));
            i += 4;
        } else if (wt == 1) {
            f(field, wt, 0, m.substr(i, 8));
            i += 8;
        } else {
            ADD_FAILURE() << "unexpected wire type " << wt;
            return;
        }
    }
}

// TensorProto: dims = 1 (int64), data_type = 2 (1 = FLOAT), float_data = 4, raw_data = 9.
Tensor read_tensor(const fs::path& p) {
    std::string bytes = slurp(p);
    std::vector<int64_t> dims;
    std::vector<float> data;
    int dtype = 0;
    walk(bytes, [&](int field, int wt, uint64_t v, std::string_view s) {
        if (field == 1 && wt == 0) dims.push_back(static_cast<int64_t>(v));
        if (field == 1 && wt == 2) {  // packed dims
            uint64_t v2 = 0;
            int sh = 0;
            for (char ch : s) {
                auto u = static_cast<uint8_t>(ch);
                v2 |= static_cast<uint64_t>(u & 0x7f) << sh;
                sh += 7;
                if (!(u & 0x80)) {
                    dims.push_back(static_cast<int64_t>(v2));
                    v2 = 0;
                    sh = 0;
                }
            }
        }
        if (field == 2) dtype = static_cast<int>(v);
        if ((field == 9 || field == 4) && wt == 2) {
            data.resize(s.size() / 4);
            std::memcpy(data.data(), s.data(), data.size() * 4);
        }
    });
    EXPECT_EQ(dtype, 1) << p << ": only FLOAT tensors are used here";
    core::Shape shape;
    for (int64_t d : dims) shape.push_back(d);
    Tensor t = Tensor::empty(shape, DType::f32);
    EXPECT_EQ(static_cast<int64_t>(data.size()), t.numel()) << p;
    std::memcpy(t.data_ptr(), data.data(), std::min(data.size() * 4, t.nbytes()));
    return t;
}

// Node attributes of model.onnx: ModelProto.graph (7) -> GraphProto.node (1) -> NodeProto.attribute
// (5) -> AttributeProto {name 1, f 2 (float), i 3 (int)}.
std::map<std::string, double> attributes(const fs::path& model) {
    std::map<std::string, double> out;
    std::string bytes = slurp(model);
    walk(bytes, [&](int f, int wt, uint64_t, std::string_view graph) {
        if (f != 7 || wt != 2) return;
        walk(graph, [&](int g, int gwt, uint64_t, std::string_view node) {
            if (g != 1 || gwt != 2) return;
            walk(node, [&](int n, int nwt, uint64_t, std::string_view attr) {
                if (n != 5 || nwt != 2) return;
                std::string name;
                double value = 0;
                walk(attr, [&](int a, int, uint64_t v, std::string_view s) {
                    if (a == 1) name = std::string(s);
                    if (a == 2) {
                        float x;
                        std::memcpy(&x, s.data(), 4);
                        value = x;
                    }
                    if (a == 3) value = static_cast<double>(static_cast<int64_t>(v));
                });
                out[name] = value;
            });
        });
    });
    return out;
}

std::vector<std::string> cases(const std::string& prefix) {
    std::vector<std::string> v;
    if (!fs::exists(kRoot)) return v;
    for (const auto& e : fs::directory_iterator(kRoot)) {
        std::string n = e.path().filename().string();
        if (n.rfind(prefix, 0) == 0 && n.find("_expanded") == std::string::npos) v.push_back(n);
    }
    std::sort(v.begin(), v.end());
    return v;
}

fs::path data(const std::string& c, const char* f) {
    return fs::path(kRoot) / c / "test_data_set_0" / f;
}

#define REQUIRE_ONNX_DATA() \
    if (!fs::exists(kRoot)) GTEST_SKIP() << kRoot << " missing (Debian libonnx-testdata)";

TEST(OnnxGolden, LayerNormalization) {
    REQUIRE_ONNX_DATA();
    int n = 0;
    for (const std::string& c : cases("test_layer_normalization")) {
        auto attr = attributes(fs::path(kRoot) / c / "model.onnx");
        Tensor x = read_tensor(data(c, "input_0.pb")), w = read_tensor(data(c, "input_1.pb")),
               b = read_tensor(data(c, "input_2.pb"));
        Tensor y = read_tensor(data(c, "output_0.pb"));
        int axis = attr.count("axis") ? static_cast<int>(attr["axis"]) : -1;
        if (axis < 0) axis += x.dim();
        const auto eps = static_cast<float>(attr.count("epsilon") ? attr["epsilon"] : 1e-5);
        // ONNX normalises over dims [axis, end): flatten them into rows of our last-dim norm.
        int64_t cols = 1;
        for (int d = axis; d < x.dim(); ++d) cols *= x.size(d);
        const int64_t rows = x.numel() / cols;
        Tensor out = Tensor::empty({rows, cols}, DType::f32),
               mean = Tensor::empty({rows}, DType::f32), rstd = Tensor::empty({rows}, DType::f32);
        layernorm_forward(out, mean, rstd, x.view({rows, cols}), w.reshape({cols}),
                          b.reshape({cols}), eps);
        EXPECT_TRUE(
            all_close(out.view(y.shape()), ops::reference::from_tensor(y), {1e-5, 1e-4}, c));
        EXPECT_TRUE(all_close(
            mean, ops::reference::from_tensor(read_tensor(data(c, "output_1.pb")).reshape({rows})),
            {1e-6, 1e-5}, c + " mean"));
        EXPECT_TRUE(all_close(
            rstd, ops::reference::from_tensor(read_tensor(data(c, "output_2.pb")).reshape({rows})),
            {1e-5, 1e-5}, c + " inv std"));
        ++n;
    }
    EXPECT_GE(n, 19);
}

TEST(OnnxGolden, Softmax) {
    REQUIRE_ONNX_DATA();
    int n = 0;
    for (const std::string& c : cases("test_softmax_")) {
        auto attr = attributes(fs::path(kRoot) / c / "model.onnx");
        Tensor x = read_tensor(data(c, "input_0.pb")), y = read_tensor(data(c, "output_0.pb"));
        int axis = attr.count("axis") ? static_cast<int>(attr["axis"]) : -1;
        if (axis < 0) axis += x.dim();
        // Softmax over `axis`: move it last, run, move it back.
        Tensor xt = x.transpose(axis, -1).contiguous();
        Tensor out = Tensor::empty(xt.shape(), DType::f32);
        softmax_forward(out, xt);
        EXPECT_TRUE(
            all_close(out.transpose(axis, -1), ops::reference::from_tensor(y), {1e-6, 1e-5}, c));
        ++n;
    }
    EXPECT_GE(n, 7);
}

TEST(OnnxGolden, MatMulAndGemm) {
    REQUIRE_ONNX_DATA();
    int n = 0;
    for (const std::string& c : cases("test_matmul_")) {
        if (c == "test_matmulinteger") continue;
        Tensor a = read_tensor(data(c, "input_0.pb")), b = read_tensor(data(c, "input_1.pb"));
        Tensor y = read_tensor(data(c, "output_0.pb"));
        Tensor out = Tensor::empty(y.shape(), DType::f32);
        matmul(out, a, b);
        EXPECT_TRUE(all_close(out, ops::reference::from_tensor(y), {1e-5, 1e-5}, c));
        ++n;
    }
    for (const std::string& c : cases("test_gemm_")) {
        auto attr = attributes(fs::path(kRoot) / c / "model.onnx");
        Tensor a = read_tensor(data(c, "input_0.pb")), b = read_tensor(data(c, "input_1.pb"));
        Tensor y = read_tensor(data(c, "output_0.pb"));
        MatmulOptions o;
        o.trans_a = attr.count("transA") && attr["transA"] != 0;
        o.trans_b = attr.count("transB") && attr["transB"] != 0;
        o.alpha = static_cast<float>(attr.count("alpha") ? attr["alpha"] : 1.0);
        const float beta = static_cast<float>(attr.count("beta") ? attr["beta"] : 1.0);
        // Y = alpha A'B' + beta C, C broadcast to [M, N]: start from C, accumulate with beta.
        Tensor out = Tensor::zeros(y.shape(), DType::f32);
        if (fs::exists(data(c, "input_2.pb"))) {
            Tensor cc = read_tensor(data(c, "input_2.pb"));
            const int64_t M = y.size(0), N = y.size(1);
            for (int64_t i = 0; i < M; ++i) {
                for (int64_t j = 0; j < N; ++j) {
                    int64_t ci = cc.numel() == 1 ? 0
                                 : cc.dim() == 1 ? j
                                                 : (cc.size(0) == 1 ? 0 : i) * cc.size(-1) +
                                                       (cc.size(-1) == 1 ? 0 : j);
                    out.data<float>()[i * N + j] = cc.data<float>()[ci];
                }
            }
            o.beta = beta;
        }
        matmul(out, a, b, o);
        EXPECT_TRUE(all_close(out, ops::reference::from_tensor(y), {1e-5, 1e-5}, c));
        ++n;
    }
    EXPECT_GE(n, 12);
}

}  // namespace
}  // namespace zs::ops
