// Tensor-parallel layers over threads-as-ranks (tp = 1, 2, 3, 4) against the same computation on
// whole tensors with the plain ops (and, for the loss, ops::cross_entropy): outputs and every
// gradient, each rank's shard against the matching slice of the whole.
#include "parallel/tensor_parallel.h"

#include <cmath>

#include <gtest/gtest.h>

#include "ops/embedding.h"
#include "ops/loss.h"
#include "ops/matmul.h"
#include "tests/test_util.h"

namespace zs::parallel {
namespace {

using core::DType;
using zs::test::Rng;

void expect_close(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
    ASSERT_EQ(got.numel(), want.numel()) << what;
    const Tensor g = got.contiguous().to(DType::f32), w = want.contiguous().to(DType::f32);
    double worst = 0;
    for (int64_t i = 0; i < g.numel(); ++i) {
        const double d = std::fabs(static_cast<double>(g.data<float>()[i]) - w.data<float>()[i]);
        worst = std::max(worst, d / (1.0 + std::fabs(static_cast<double>(w.data<float>()[i]))));
    }
    EXPECT_LE(worst, tol) << what;
}

// x -> column-parallel up (W1, b1) -> row-parallel down (W2, b2): one all-reduce each way.
TEST(TensorParallel, ColumnThenRowLinearEqualsTheWholeLayer) {
    const int64_t N = 7, C = 12, F = 24;
    for (int tp : {1, 2, 3, 4}) {
        comm::run_local(tp, [&](int rank, comm::Communicator& g) {
            Rng rng(11);
            const Tensor x = zs::test::random_tensor(rng, {N, C}, DType::f32);
            const Tensor w1 = zs::test::random_tensor(rng, {F, C}, DType::f32);
            const Tensor b1 = zs::test::random_tensor(rng, {F}, DType::f32);
            const Tensor w2 = zs::test::random_tensor(rng, {C, F}, DType::f32);
            const Tensor b2 = zs::test::random_tensor(rng, {C}, DType::f32);
            const Tensor dy = zs::test::random_tensor(rng, {N, C}, DType::f32);
            // Whole.
            Tensor h = Tensor::empty({N, F}, DType::f32), y = Tensor::empty({N, C}, DType::f32);
            ops::linear_forward(h, x, w1, b1);
            ops::linear_forward(y, h, w2, b2);
            Tensor dh = Tensor::empty({N, F}, DType::f32), dx = Tensor::empty({N, C}, DType::f32);
            Tensor dw1 = Tensor::zeros({F, C}, DType::f32), db1 = Tensor::zeros({F}, DType::f32);
            Tensor dw2 = Tensor::zeros({C, F}, DType::f32), db2 = Tensor::zeros({C}, DType::f32);
            ops::linear_backward(dh, dw2, db2, dy, h, w2);
            ops::linear_backward(dx, dw1, db1, dh, x, w1);
            // Tensor-parallel.
            const Tensor w1r = shard(w1, 0, rank, tp), b1r = shard(b1, 0, rank, tp);
            const Tensor w2r = shard(w2, 1, rank, tp);
            const int64_t Fr = w1r.size(0);
            Tensor hr = Tensor::empty({N, Fr}, DType::f32), yr = Tensor::empty({N, C}, DType::f32);
            column_linear_forward(hr, x, w1r, b1r);
            row_linear_forward(yr, hr, w2r, b2, g);
            Tensor dhr = Tensor::empty({N, Fr}, DType::f32),
                   dxr = Tensor::empty({N, C}, DType::f32);
            Tensor dw1r = Tensor::zeros({Fr, C}, DType::f32),
                   db1r = Tensor::zeros({Fr}, DType::f32);
            Tensor dw2r = Tensor::zeros({C, Fr}, DType::f32), db2r = Tensor::zeros({C}, DType::f32);
            row_linear_backward(dhr, dw2r, db2r, dy, hr, w2r);
            column_linear_backward(dxr, dw1r, db1r, dhr, x, w1r, g);
            const std::string at = "tp " + std::to_string(tp) + " rank " + std::to_string(rank);
            expect_close(yr, y, 1e-5, "y " + at);
            expect_close(hr, shard(h, 1, rank, tp), 1e-5, "h " + at);
            expect_close(dxr, dx, 1e-5, "dx " + at);
            expect_close(dw1r, shard(dw1, 0, rank, tp), 1e-5, "dW1 " + at);
            expect_close(db1r, shard(db1, 0, rank, tp), 1e-5, "db1 " + at);
            expect_close(dw2r, shard(dw2, 1, rank, tp), 1e-5, "dW2 " + at);
            expect_close(db2r, db2, 1e-5, "db2 " + at);
        });
    }
}

TEST(TensorParallel, VocabularyParallelEmbeddingAndLossEqualTheWhole) {
    const int64_t V = 37, C = 8, N = 11;  // 37 is prime: uneven shards
    for (int tp : {1, 2, 3, 4}) {
        comm::run_local(tp, [&](int rank, comm::Communicator& g) {
            Rng rng(5);
            const Tensor table = zs::test::random_tensor(rng, {V, C}, DType::f32);
            const Tensor ids = zs::test::random_ints(rng, {N}, DType::i32, 0, V - 1);
            const Tensor dout = zs::test::random_tensor(rng, {N, C}, DType::f32);
            const Tensor logits = zs::test::random_tensor(rng, {N, V}, DType::f32, -4, 4);
            Tensor targets = zs::test::random_ints(rng, {N}, DType::i32, 0, V - 1);
            targets.data<int32_t>()[3] = -100;
            const auto [v0, v1] = shard_range(V, rank, tp);
            const std::string at = "tp " + std::to_string(tp) + " rank " + std::to_string(rank);
            // Embedding.
            Tensor e = Tensor::empty({N, C}, DType::f32), er = Tensor::empty({N, C}, DType::f32);
            ops::embedding_forward(e, ids, table);
            vocab_embedding_forward(er, ids, shard(table, 0, rank, tp), v0, g);
            expect_close(er, e, 0, "embedding " + at);
            Tensor dt = Tensor::zeros({V, C}, DType::f32);
            Tensor dtr = Tensor::zeros({v1 - v0, C}, DType::f32);
            ops::embedding_backward(dt, dout, ids);
            vocab_embedding_backward(dtr, dout, ids, v0);
            expect_close(dtr, dt.slice(0, v0, v1), 0, "embedding grad " + at);
            // Loss.
            Tensor l = Tensor::empty({N}, DType::f32), lr = Tensor::empty({N}, DType::f32);
            Tensor dl = Tensor::empty({N, V}, DType::f32);
            const int64_t n = ops::cross_entropy(l, dl, logits, targets, {-100, 0.25f});
            Tensor mine = shard(logits, 1, rank, tp);
            Tensor dlr = Tensor::empty({N, v1 - v0}, DType::f32);
            EXPECT_EQ(vocab_cross_entropy(lr, dlr, mine, targets, v0, V, g, -100, 0.25f), n);
            expect_close(lr, l, 1e-6, "loss " + at);
            expect_close(dlr, dl.slice(1, v0, v1), 1e-6, "dlogits " + at);
            // In place (dlogits aliasing the logits), as training does.
            vocab_cross_entropy(lr, mine, mine, targets, v0, V, g, -100, 0.25f);
            expect_close(mine, dl.slice(1, v0, v1), 1e-6, "dlogits in place " + at);
        });
    }
}

}  // namespace
}  // namespace zs::parallel
