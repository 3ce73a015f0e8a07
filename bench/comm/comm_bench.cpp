// Collective bus bandwidth through zerospeed's MPI communicator next to the plain blocking MPI
// call on the same buffers in the same run (MPI_Allreduce, MPI_Reduce_scatter_block,
// MPI_Allgather), 4 MiB to 256 MiB of fp32, plus the memory the call made the process grow by
// (resident set high-water mark before and after: temporary buffers inside the MPI library).
// Bus bandwidth follows nccl-tests: allreduce = bytes/t x 2(n-1)/n; reduce-scatter and
// allgather = bytes/t x (n-1)/n, with bytes the full (unreduced / gathered) size.
//
//   mpirun -np 2 build/bench/comm_bench [--iters 10] [--max-mib 256]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <mpi.h>
#include <sys/resource.h>

#include "backends/register.h"
#include "comm/mpi.h"
#include "core/tensor.h"

namespace {

using zs::core::DType;
using zs::core::Tensor;

double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

double max_rss_mib() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

// Median over iters of the slowest rank's time.
template <class F>
double time_it(int iters, F&& f) {
    f();  // warm-up
    std::vector<double> t;
    for (int i = 0; i < iters; ++i) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = now();
        f();
        double dt = now() - t0, mx = 0;
        MPI_Allreduce(&dt, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        t.push_back(mx);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    zs::backends::register_all();
    zs::comm::MpiRuntime rt(&argc, &argv);
    auto& world = rt.world();
    int iters = 10, max_mib = 256;
    for (int i = 1; i + 1 < argc; ++i) {
        if (std::strcmp(argv[i], "--iters") == 0) iters = std::atoi(argv[i + 1]);
        if (std::strcmp(argv[i], "--max-mib") == 0) max_mib = std::atoi(argv[i + 1]);
    }
    const int n = world.size(), rank = world.rank();
    if (rank == 0) {
        std::printf("{\"ranks\": %d, \"iters\": %d, \"results\": [\n", n, iters);
    }
    bool first = true;
    for (int mib = 4; mib <= max_mib; mib *= 4) {
        const int64_t count = static_cast<int64_t>(mib) * (1 << 20) / 4 / n * n;
        const double bytes = static_cast<double>(count) * 4;
        Tensor full = Tensor::empty({count}, DType::f32),
               part = Tensor::empty({count / n}, DType::f32);
        std::fill_n(full.data<float>(), count, 1.0f);
        std::fill_n(part.data<float>(), count / n, 1.0f);
        struct Case {
            const char* name;
            double factor;
        };
        for (const Case c :
             {Case{"allreduce", 2.0 * (n - 1) / n}, Case{"reduce_scatter", 1.0 * (n - 1) / n},
              Case{"allgather", 1.0 * (n - 1) / n}}) {
            std::string name = c.name;
            double rss0 = max_rss_mib();
            double ours = time_it(iters, [&] {
                if (name == "allreduce") world.allreduce(full, zs::comm::ReduceOp::sum).wait();
                if (name == "reduce_scatter") world.reduce_scatter(part, full).wait();
                if (name == "allgather") world.allgather(full, part).wait();
            });
            double rss1 = max_rss_mib();
            double mpi = time_it(iters, [&] {
                if (name == "allreduce")
                    MPI_Allreduce(MPI_IN_PLACE, full.data_ptr(), static_cast<int>(count), MPI_FLOAT,
                                  MPI_SUM, MPI_COMM_WORLD);
                if (name == "reduce_scatter")
                    MPI_Reduce_scatter_block(full.data_ptr(), part.data_ptr(),
                                             static_cast<int>(count / n), MPI_FLOAT, MPI_SUM,
                                             MPI_COMM_WORLD);
                if (name == "allgather")
                    MPI_Allgather(part.data_ptr(), static_cast<int>(count / n), MPI_FLOAT,
                                  full.data_ptr(), static_cast<int>(count / n), MPI_FLOAT,
                                  MPI_COMM_WORLD);
            });
            double rss2 = max_rss_mib();
            // Values grow without bound under repeated sums: reset between cases.
            std::fill_n(full.data<float>(), count, 1.0f);
            if (rank == 0) {
                std::printf(
                    "%s  {\"op\": \"%s\", \"MiB\": %d, \"zerospeed_busbw_GBs\": %.3f, "
                    "\"mpi_busbw_GBs\": %.3f, \"ratio\": %.3f, \"zerospeed_rss_growth_MiB\": %.1f, "
                    "\"mpi_rss_growth_MiB\": %.1f}",
                    first ? "" : ",\n", c.name, mib, bytes / ours * c.factor / 1e9,
                    bytes / mpi * c.factor / 1e9, mpi / ours, rss1 - rss0, rss2 - rss1);
                std::fflush(stdout);
            }
            first = false;
        }
    }
    if (rank == 0) std::printf("\n]}\n");
    return 0;
}
