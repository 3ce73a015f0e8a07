// NCCL communicator tests (CUDA build). Without a GPU the device tests skip, naming the reason,
// and the error test checks that make_nccl says why it cannot start. With one GPU the group has
// one rank (NCCL allows one rank per GPU): every collective must then return its input exactly
// (the single-rank semantics, checked against the host copy), in f32, bf16 and i64, through the
// communicator's own stream and events, including all_to_all's grouped send/recv and split.
// Several GPUs are exercised by the same code under mpirun (one process per GPU).
#include "comm/nccl.h"

#include <cstring>

#include <gtest/gtest.h>

#include "backends/register.h"
#include "base/error.h"
#include "tests/test_util.h"

namespace zs::comm {
namespace {

using core::Device;
using core::DType;

bool has_gpu(std::string* reason) {
    backends::register_all();
    *reason = backends::cuda_unavailable_reason();
    return reason->empty();
}

Tensor host_random(test::Rng& rng, int64_t n, DType t) {
    return test::random_tensor(rng, {n}, t == DType::i64 ? DType::f32 : t, -4, 4).to(t);
}

void expect_equal(const Tensor& got_device, const Tensor& want_host, const std::string& what) {
    Tensor got = got_device.to(Device::cpu());
    ASSERT_EQ(got.nbytes(), want_host.nbytes()) << what;
    EXPECT_EQ(std::memcmp(got.data_ptr(), want_host.data_ptr(), got.nbytes()), 0) << what;
}

TEST(Nccl, WithoutGpuTheErrorSaysWhy) {
    std::string reason;
    if (has_gpu(&reason)) GTEST_SKIP() << "a GPU is present: the error path is not reachable";
    auto self = make_self();
    try {
        make_nccl(*self, "t");
        FAIL() << "make_nccl succeeded without a GPU";
    } catch (const CommError& e) {
        EXPECT_NE(std::string(e.what()).find("no CUDA backend is registered"), std::string::npos)
            << e.what();
    }
}

TEST(Nccl, SingleRankCollectivesReturnTheirInput) {
    std::string reason;
    if (!has_gpu(&reason)) GTEST_SKIP() << "CUDA unavailable: " << reason;
    auto self = make_self();
    auto nc = make_nccl(*self, "nccl-test");
    ASSERT_EQ(nc->size(), 1);
    ASSERT_EQ(nc->rank(), 0);
    test::Rng rng(5);
    for (DType t : {DType::f32, DType::bf16, DType::i64}) {
        const std::string ts = core::to_string(t);
        Tensor h = host_random(rng, 4099, t);
        for (ReduceOp op : {ReduceOp::sum, ReduceOp::avg, ReduceOp::max, ReduceOp::min}) {
            if (t == DType::i64 && op == ReduceOp::avg) continue;
            Tensor d = h.to(Device::cuda()).clone();
            nc->allreduce(d, op).wait();
            expect_equal(d, h, "allreduce " + ts + " " + to_string(op));
        }
        Tensor out = Tensor::empty({4099}, t, Device::cuda());
        nc->reduce_scatter(out, h.to(Device::cuda())).wait();
        expect_equal(out, h, "reduce_scatter " + ts);
        nc->allgather(out, h.to(Device::cuda())).wait();
        expect_equal(out, h, "allgather " + ts);
        Tensor b = h.to(Device::cuda()).clone();
        nc->broadcast(b, 0).wait();
        expect_equal(b, h, "broadcast " + ts);
        nc->all_to_all(out, h.to(Device::cuda())).wait();
        expect_equal(out, h, "all_to_all " + ts);
    }
    nc->barrier();
    auto sub = nc->split(0, 0);
    Tensor h = host_random(rng, 33, DType::f32);
    Tensor d = h.to(Device::cuda()).clone();
    sub->allreduce(d, ReduceOp::sum).wait();
    expect_equal(d, h, "allreduce on a split");
}

TEST(Nccl, HostTensorsAreRefusedByName) {
    std::string reason;
    if (!has_gpu(&reason)) GTEST_SKIP() << "CUDA unavailable: " << reason;
    auto self = make_self();
    auto nc = make_nccl(*self, "nccl-test");
    Tensor h = Tensor::zeros({8}, DType::f32);
    try {
        nc->allreduce(h, ReduceOp::sum).wait();
        FAIL() << "a host tensor was accepted";
    } catch (const ShapeError& e) {
        EXPECT_NE(std::string(e.what()).find("allreduce: argument 't'"), std::string::npos)
            << e.what();
        EXPECT_NE(std::string(e.what()).find("must be a contiguous CUDA tensor"), std::string::npos)
            << e.what();
    }
}

}  // namespace
}  // namespace zs::comm
