// Run under mpirun: `comm_mpi_check collectives` checks every collective against values each
// rank can compute for itself; `comm_mpi_check hang` has the last rank sleep past the timeout
// instead of joining an allreduce: the others must fail with the op, sequence number, group and
// missing rank named, and the job must end non-zero promptly (tests/mpi/run_mpi.sh checks it);
// `comm_mpi_check kill9 R` has rank R SIGKILL itself in the middle of the collectives.
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <mpi.h>
#include <unistd.h>

#include "base/error.h"
#include "comm/mpi.h"

using namespace zs;
using core::DType;
using core::Tensor;

namespace {

float val(int r, int64_t i) { return static_cast<float>((r + 1) * 1000 + i % 97); }

// v as stored in dtype t (bf16 rounds it).
float in_dtype(float v, DType t) {
    return static_cast<float>(Tensor::wrap(&v, {1}, DType::f32).to(t).to(DType::f32).item());
}

#define CHECK_OR_DIE(cond, ...)                                     \
    do {                                                            \
        if (!(cond)) {                                              \
            std::fprintf(stderr, "rank check failed: %s\n", #cond); \
            comm::MpiRuntime::abort_job(3);                         \
        }                                                           \
    } while (0)

void collectives(comm::Communicator& c) {
    const int n = c.size(), r = c.rank();
    for (int64_t len : {int64_t{1}, int64_t{1000}, int64_t{1 << 20}}) {
        for (DType t : {DType::f32, DType::bf16, DType::i64}) {
            Tensor f = Tensor::empty({len * n}, DType::f32);
            for (int64_t i = 0; i < len * n; ++i) f.data<float>()[i] = val(r, i);
            Tensor a = f.to(t).clone();
            c.allreduce(a, comm::ReduceOp::sum).wait();
            Tensor af = a.to(DType::f32);
            for (int64_t i = 0; i < len * n; i += 997) {
                double want = 0;
                for (int q = 0; q < n; ++q) want += val(q, i);
                CHECK_OR_DIE(std::abs(af.data<float>()[i] - want) <=
                             (t == DType::bf16 ? 0.01 * want : 0));
            }
            Tensor out = Tensor::empty({len}, t);
            c.reduce_scatter(out, f.to(t).clone(), comm::ReduceOp::max).wait();
            Tensor of = out.to(DType::f32);
            for (int64_t i = 0; i < len; i += 991) {
                CHECK_OR_DIE(of.data<float>()[i] == in_dtype(val(n - 1, r * len + i), t));
            }
            Tensor mine = f.slice(0, 0, len).to(t).clone(), all = Tensor::empty({len * n}, t);
            c.allgather(all, mine).wait();
            Tensor gf = all.to(DType::f32);
            for (int q = 0; q < n; ++q)
                CHECK_OR_DIE(gf.data<float>()[q * len + len - 1] == in_dtype(val(q, len - 1), t));
        }
    }
    // A large allreduce (run by the blocking worker) in flight while other collectives are
    // posted and completed first: no deadlock, both right.
    {
        const int64_t len = int64_t{1} << 18;
        Tensor big = Tensor::empty({len * n}, DType::f32),
               in = Tensor::empty({len * n}, DType::f32);
        for (int64_t i = 0; i < len * n; ++i)
            big.data<float>()[i] = in.data<float>()[i] = val(r, i);
        Tensor out = Tensor::empty({len}, DType::f32);
        comm::Work w1 = c.allreduce(big, comm::ReduceOp::avg);
        comm::Work w2 = c.reduce_scatter(out, in, comm::ReduceOp::sum);
        w2.wait();
        w1.wait();
        for (int64_t i = 0; i < len * n; i += 4099) {
            double want = 0;
            for (int q = 0; q < n; ++q) want += val(q, i);
            CHECK_OR_DIE(std::abs(big.data<float>()[i] - want / n) <= 1e-3 * want);
        }
        for (int64_t i = 0; i < len; i += 4099) {
            double want = 0;
            for (int q = 0; q < n; ++q) want += val(q, r * len + i);
            CHECK_OR_DIE(out.data<float>()[i] == static_cast<float>(want));
        }
    }
    // Allreduce over 16 MiB takes the ring (comm/mpi_ring.h): an element count that does not
    // split evenly into blocks, several segments per block, sum/avg/max in f32 and sum in i64.
    for (DType t : {DType::f32, DType::i64}) {
        const int64_t len = (int64_t{5} << 20) * n + 7;  // > 16 MiB on any n >= 1
        for (comm::ReduceOp op : {comm::ReduceOp::sum, comm::ReduceOp::avg, comm::ReduceOp::max}) {
            if (t == DType::i64 && op != comm::ReduceOp::sum) continue;
            Tensor f = Tensor::empty({len}, DType::f32);
            for (int64_t i = 0; i < len; ++i) f.data<float>()[i] = val(r, i);
            Tensor a = f.to(t).clone();
            c.allreduce(a, op).wait();
            Tensor af = a.to(DType::f32);
            for (int64_t i : {int64_t{0}, len / 2 + 1, len - 1, int64_t{12345}}) {
                double want = op == comm::ReduceOp::max ? val(n - 1, i) : 0;
                if (op != comm::ReduceOp::max) {
                    for (int q = 0; q < n; ++q) want += val(q, i);
                    if (op == comm::ReduceOp::avg) want /= n;
                }
                CHECK_OR_DIE(std::abs(af.data<float>()[i] - want) <= 1e-3 * want);
            }
        }
    }
    Tensor b = Tensor::empty({5}, DType::i32);
    b.fill(c.rank() == 1 ? 42 : 0);
    c.broadcast(b, 1).wait();
    CHECK_OR_DIE(b.data<int32_t>()[4] == 42);
    auto sub = c.split(r % 2, r);
    Tensor s = Tensor::empty({1}, DType::f32);
    s.fill(1.0);
    sub->allreduce(s, comm::ReduceOp::sum).wait();
    CHECK_OR_DIE(s.data<float>()[0] == static_cast<float>(sub->size()));
    Tensor x = Tensor::empty({static_cast<int64_t>(n) * 3}, DType::i64),
           y = Tensor::empty({static_cast<int64_t>(n) * 3}, DType::i64);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<int64_t>()[i] = r * 100 + i;
    c.all_to_all(y, x).wait();
    for (int j = 0; j < n; ++j) CHECK_OR_DIE(y.data<int64_t>()[j * 3] == j * 100 + r * 3);
    // all_to_all_v: rank q sends (q * 3 + j * 5) % 7 elements (zeros too; times 1000 to span
    // several shared-memory rounds) to rank j, valued q * 1e6 + j * 1e4 + i.
    {
        auto count = [](int q, int j) { return int64_t{(q * 3 + j * 5) % 7} * 1000; };
        std::vector<int64_t> ic, oc;
        int64_t it = 0, ot = 0;
        for (int j = 0; j < n; ++j) {
            ic.push_back(count(r, j));
            oc.push_back(count(j, r));
            it += ic.back();
            ot += oc.back();
        }
        Tensor vin = Tensor::empty({it}, DType::i64), vout = Tensor::empty({ot}, DType::i64);
        int64_t k = 0;
        for (int j = 0; j < n; ++j) {
            for (int64_t i = 0; i < count(r, j); ++i)
                vin.data<int64_t>()[k++] = r * 1000000 + j * 10000 + i;
        }
        c.all_to_all_v(vout, oc, vin, ic).wait();
        k = 0;
        for (int q = 0; q < n; ++q) {
            for (int64_t i = 0; i < count(q, r); ++i)
                CHECK_OR_DIE(vout.data<int64_t>()[k++] == q * 1000000 + r * 10000 + i);
        }
    }
    c.barrier();
    if (r == 0) std::printf("comm_mpi_check: collectives ok on %d ranks\n", n);
}

// The communicator's results (shared memory on one host) against MPI's own calls on the same
// inputs, bit for bit where the order cannot matter: every op of 2 ranks (a + b == b + a),
// max/min, allgather, broadcast and all_to_all on any number.
void versus_mpi(comm::Communicator& c) {
    const int n = c.size(), r = c.rank();
    const int64_t len = 100'003;  // several chunks, an odd tail
    auto fill = [&](Tensor& t, int salt) {
        float* p = t.data<float>();
        for (int64_t i = 0; i < t.numel(); ++i)
            p[i] = std::sin(static_cast<float>(i * (r + 3) + salt)) * 1000.f;
    };
    auto same = [](const Tensor& a, const void* b) {
        return std::memcmp(a.data_ptr(), b, a.nbytes()) == 0;
    };
    for (comm::ReduceOp op : {comm::ReduceOp::sum, comm::ReduceOp::max, comm::ReduceOp::min}) {
        if (op == comm::ReduceOp::sum && n != 2) continue;
        const MPI_Op mop = op == comm::ReduceOp::sum   ? MPI_SUM
                           : op == comm::ReduceOp::max ? MPI_MAX
                                                       : MPI_MIN;
        Tensor a = Tensor::empty({len * n}, DType::f32);
        fill(a, 1);
        std::vector<float> ref(static_cast<size_t>(len * n));
        MPI_Allreduce(a.data_ptr(), ref.data(), static_cast<int>(len * n), MPI_FLOAT, mop,
                      MPI_COMM_WORLD);
        c.allreduce(a, op).wait();
        CHECK_OR_DIE(same(a, ref.data()));
        Tensor in = Tensor::empty({len * n}, DType::f32), out = Tensor::empty({len}, DType::f32);
        fill(in, 2);
        MPI_Reduce_scatter_block(in.data_ptr(), ref.data(), static_cast<int>(len), MPI_FLOAT, mop,
                                 MPI_COMM_WORLD);
        c.reduce_scatter(out, in, op).wait();
        CHECK_OR_DIE(same(out, ref.data()));
    }
    Tensor mine = Tensor::empty({len}, DType::f32), all = Tensor::empty({len * n}, DType::f32);
    fill(mine, 3);
    std::vector<float> ref(static_cast<size_t>(len * n));
    MPI_Allgather(mine.data_ptr(), static_cast<int>(len), MPI_FLOAT, ref.data(),
                  static_cast<int>(len), MPI_FLOAT, MPI_COMM_WORLD);
    c.allgather(all, mine).wait();
    CHECK_OR_DIE(same(all, ref.data()));
    Tensor x = Tensor::empty({len * n}, DType::f32), y = Tensor::empty({len * n}, DType::f32);
    fill(x, 4);
    MPI_Alltoall(x.data_ptr(), static_cast<int>(len), MPI_FLOAT, ref.data(), static_cast<int>(len),
                 MPI_FLOAT, MPI_COMM_WORLD);
    c.all_to_all(y, x).wait();
    CHECK_OR_DIE(same(y, ref.data()));
    fill(mine, 5);
    std::memcpy(ref.data(), mine.data_ptr(), mine.nbytes());
    MPI_Bcast(ref.data(), static_cast<int>(len), MPI_FLOAT, n - 1, MPI_COMM_WORLD);
    c.broadcast(mine, n - 1).wait();
    CHECK_OR_DIE(same(mine, ref.data()));
    if (r == 0) std::printf("comm_mpi_check: equal to MPI's calls on %d ranks\n", n);
}

int hang(comm::Communicator& c) {
    c.set_timeout(2.0);
    Tensor t = Tensor::zeros({256}, DType::f32);
    c.allreduce(t, comm::ReduceOp::sum).wait();
    if (c.rank() == c.size() - 1) {
        sleep(30);  // never joins; mpirun ends the job when the others abort
        return 0;
    }
    try {
        c.allreduce(t, comm::ReduceOp::sum).wait();
    } catch (const CommError& e) {
        std::fprintf(stderr, "rank %d: %s\n", c.rank(), e.what());
        std::fflush(stderr);
        comm::MpiRuntime::abort_job(7);
    }
    std::fprintf(stderr, "rank %d: expected a timeout\n", c.rank());
    return 1;
}

// Collectives through the shared-memory transport until rank `victim` kills itself (SIGKILL) in
// the middle of them: mpirun must end the job, and no segment may be left in /dev/shm
// (tests/mpi/shm_kill.sh checks both).
int kill9(comm::Communicator& c, int victim) {
    const int64_t len = int64_t{1} << 20;
    Tensor a = Tensor::empty({len * c.size()}, DType::f32), out = Tensor::empty({len}, DType::f32);
    a.fill(1.0);
    for (int i = 0; i < 1000; ++i) {
        if (i == 5 && c.rank() == victim) raise(SIGKILL);
        c.allreduce(a, comm::ReduceOp::avg).wait();
        c.reduce_scatter(out, a, comm::ReduceOp::sum).wait();
    }
    std::fprintf(stderr, "rank %d: the job outlived its killed rank\n", c.rank());
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    comm::MpiRuntime mpi(&argc, &argv);
    std::string mode = argc > 1 ? argv[1] : "collectives";
    try {
        if (mode == "hang") return hang(mpi.world());
        if (mode == "kill9") return kill9(mpi.world(), argc > 2 ? std::atoi(argv[2]) : 0);
        collectives(mpi.world());
        versus_mpi(mpi.world());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        comm::MpiRuntime::abort_job(2);
    }
    return 0;
}
