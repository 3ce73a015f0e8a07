// Tensor views and copies against index arithmetic done by hand, and memory accounting against
// the bytes the test allocated.
#include "core/tensor.h"

#include <gtest/gtest.h>

#include "core/backend.h"

namespace zs::core {
namespace {

Tensor iota(const Shape& s, DType t = DType::f32) {
    Tensor x = Tensor::empty(s, DType::f32);
    float* p = x.data<float>();
    for (int64_t i = 0; i < x.numel(); ++i) p[i] = static_cast<float>(i);
    return x.to(t);
}

TEST(Tensor, ContiguousBasics) {
    Tensor x = iota({2, 3, 4});
    EXPECT_EQ(x.numel(), 24);
    EXPECT_EQ(x.nbytes(), 96u);
    EXPECT_EQ(x.stride(0), 12);
    EXPECT_EQ(x.stride(-1), 1);
    EXPECT_TRUE(x.is_contiguous());
    EXPECT_EQ(x.item({1, 2, 3}), 23.0);
    EXPECT_EQ(x.str(), "f32[2, 3, 4] cpu");
    EXPECT_EQ(reinterpret_cast<uintptr_t>(x.data_ptr()) % 64, 0u);
}

TEST(Tensor, ZeroClearsLargeViewsExactly) {
    // Past the size where zero() splits the buffer across threads: an odd-sized contiguous view
    // in the middle of a larger tensor is cleared completely and its neighbours are untouched.
    const int64_t rows = 4099, cols = 1031;  // ~16.9 MB of f32
    Tensor t = Tensor::empty({rows, cols}, DType::f32);
    t.fill(1.0);
    Tensor mid = t.slice(0, 3, rows - 2);
    mid.zero();
    const float* p = t.data<float>();
    int64_t zeros = 0, ones = 0;
    for (int64_t i = 0; i < rows * cols; ++i) {
        zeros += p[i] == 0.0f;
        ones += p[i] == 1.0f;
    }
    EXPECT_EQ(zeros, (rows - 5) * cols);
    EXPECT_EQ(ones, 5 * cols);
    EXPECT_EQ(p[3 * cols - 1], 1.0f);
    EXPECT_EQ(p[3 * cols], 0.0f);
    EXPECT_EQ(p[(rows - 2) * cols - 1], 0.0f);
    EXPECT_EQ(p[(rows - 2) * cols], 1.0f);
}

TEST(Tensor, ViewsShareMemory) {
    Tensor x = iota({4, 6});
    Tensor s = x.slice(1, 2, 5);  // [4, 3]
    EXPECT_FALSE(s.is_contiguous());
    EXPECT_EQ(s.item({3, 0}), 3 * 6 + 2);
    s.fill(-1.0);
    EXPECT_EQ(x.item({0, 2}), -1.0);
    EXPECT_EQ(x.item({0, 1}), 1.0);
    EXPECT_EQ(x.item({0, 5}), 5.0);
    Tensor r = x.select(0, 2);  // [6]
    EXPECT_EQ(r.dim(), 1);
    EXPECT_EQ(r.item({5}), 17.0);
    Tensor t = x.transpose(0, 1);  // [6, 4]
    EXPECT_EQ(t.item({5, 3}), 23.0);
    Tensor u = x.unsqueeze(1);
    EXPECT_EQ(u.shape(), (Shape{4, 1, 6}));
    EXPECT_EQ(u.item({3, 0, 5}), 23.0);
}

TEST(Tensor, ContiguousCopyMatchesIndexing) {
    Tensor x = iota({3, 4, 5});
    Tensor t = x.transpose(0, 2).slice(1, 1, 3);  // [5, 2, 3]
    Tensor c = t.contiguous();
    ASSERT_TRUE(c.is_contiguous());
    for (int64_t i = 0; i < 5; ++i) {
        for (int64_t j = 0; j < 2; ++j) {
            for (int64_t k = 0; k < 3; ++k) {
                EXPECT_EQ(c.item({i, j, k}), static_cast<double>(k * 20 + (j + 1) * 5 + i));
            }
        }
    }
}

TEST(Tensor, ViewReshapeAndErrors) {
    Tensor x = iota({2, 6});
    EXPECT_EQ(x.view({3, -1}).shape(), (Shape{3, 4}));
    EXPECT_THROW(x.view({5, -1}), ShapeError);
    EXPECT_THROW(x.view({-1, -1}), ShapeError);
    EXPECT_THROW(x.transpose(0, 1).view({12}), ShapeError);
    Tensor r = x.transpose(0, 1).reshape({12});
    EXPECT_EQ(r.item({1}), 6.0);
    EXPECT_THROW(x.slice(1, 4, 7), ShapeError);
    EXPECT_THROW(x.select(0, 2), ShapeError);
    EXPECT_THROW(x.size(2), ShapeError);
    EXPECT_THROW(x.data<int32_t>(), ShapeError);
    EXPECT_THROW(x.as_strided({2, 7}, {6, 1}), ShapeError);
    try {
        x.view({5, -1});
    } catch (const ShapeError& e) {
        EXPECT_NE(std::string(e.what()).find("[5, -1]"), std::string::npos) << e.what();
    }
}

TEST(Tensor, DtypeConversionRoundTrips) {
    Tensor x = iota({3, 5});
    for (DType t : {DType::bf16, DType::f16, DType::i32, DType::i64, DType::i8}) {
        Tensor y = x.to(t);
        EXPECT_EQ(y.dtype(), t);
        Tensor back = y.to(DType::f32);
        for (int64_t i = 0; i < 15; ++i) {
            EXPECT_EQ(back.view({15}).item({i}), static_cast<double>(i)) << to_string(t);
        }
    }
    Tensor strided = x.transpose(0, 1).to(DType::bf16);
    EXPECT_EQ(strided.item({4, 2}), 14.0);
}

TEST(Tensor, CopyFromConvertsAndChecksShape) {
    Tensor x = iota({2, 3});
    Tensor y = Tensor::zeros({3, 2}, DType::bf16);
    y.copy_from(x.transpose(0, 1));
    EXPECT_EQ(y.item({2, 1}), 5.0);
    EXPECT_THROW(y.copy_from(x), ShapeError);
}

TEST(Tensor, WrapDoesNotOwnOrAccount) {
    float data[6] = {1, 2, 3, 4, 5, 6};
    int64_t before = memory_stats().current_total;
    Tensor w = Tensor::wrap(data, {2, 3}, DType::f32);
    EXPECT_EQ(w.item({1, 2}), 6.0);
    EXPECT_EQ(memory_stats().current_total, before);
    EXPECT_FALSE(w.buffer()->owns_memory());
}

TEST(Memory, AccountsByCategoryWithPeaks) {
    Backend& cpu = backend(Device::cpu());
    cpu.memory().reset_peak();
    MemStats s0 = memory_stats();
    {
        Tensor p = Tensor::empty({1024}, DType::f32, Device::cpu(), MemCategory::params);
        Tensor o = Tensor::empty({512}, DType::bf16, Device::cpu(), MemCategory::optimizer);
        MemStats s1 = memory_stats();
        EXPECT_EQ(s1.current_of(MemCategory::params) - s0.current_of(MemCategory::params), 4096);
        EXPECT_EQ(s1.current_of(MemCategory::optimizer) - s0.current_of(MemCategory::optimizer),
                  1024);
        {
            Tensor view = p.slice(0, 0, 10);  // a view allocates nothing
            EXPECT_EQ(memory_stats().current_total, s1.current_total);
        }
        { Tensor tmp = Tensor::empty({256}, DType::f32, Device::cpu(), MemCategory::activations); }
        MemStats s2 = memory_stats();
        EXPECT_EQ(s2.current_total, s1.current_total);
        EXPECT_EQ(s2.peak_total - s0.current_total, 4096 + 1024 + 1024);
        EXPECT_GE(s2.peak_of(MemCategory::activations) - s0.current_of(MemCategory::activations),
                  1024);
    }
    MemStats s3 = memory_stats();
    EXPECT_EQ(s3.current_total, s0.current_total);
    EXPECT_NE(s3.report().find("optimizer"), std::string::npos);
}

TEST(Memory, HugePagesAndPinnedAllocate) {
    AllocOptions o;
    o.huge_pages = true;
    o.pinned = true;
    Tensor t = Tensor::empty({1 << 20}, DType::f32, Device::cpu(), MemCategory::buffers, o);
    t.fill(2.0);
    EXPECT_EQ(t.item({(1 << 20) - 1}), 2.0);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % (2u << 20), 0u);
}

TEST(Device, CudaAbsentIsANamedError) {
    if (has_backend(DeviceType::cuda)) GTEST_SKIP() << "a CUDA backend is registered";
    try {
        Tensor::empty({4}, DType::f32, Device::cuda(0));
        FAIL() << "expected NotSupported";
    } catch (const NotSupported& e) {
        EXPECT_NE(std::string(e.what()).find("cuda"), std::string::npos);
    }
}

}  // namespace
}  // namespace zs::core
