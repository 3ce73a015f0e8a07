// Collective bus bandwidth through zerospeed's MPI communicator next to the plain blocking MPI
// call on the same buffers in the same run (MPI_Allreduce, MPI_Reduce_scatter_block,
// MPI_Allgather, MPI_Bcast), 1 MiB to 256 MiB of fp32, plus the memory the call made the process
// grow by (resident set high-water mark before and after: temporary buffers inside the MPI
// library). Bus bandwidth follows nccl-tests: allreduce = bytes/t x 2(n-1)/n; reduce-scatter and
// allgather = bytes/t x (n-1)/n, with bytes the full (unreduced / gathered) size; broadcast =
// bytes/t. The two run alternately: median of --iters calls each (the slowest rank's time).
//
//   mpirun -np 2 build/bench/comm_bench [--iters 10] [--min-mib 1] [--max-mib 256]
//       [--mpi-first]
//
// --latency: instead, the time per allreduce of 8-64 KiB of fp32 (tensor-parallel decode sizes),
// ours and MPI_Allreduce alternately, each the slowest rank's mean over `--iters` back-to-back
// calls (default 2000), median of 5 such rounds, in microseconds.
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

// The slowest rank's time for one call.
template <class F>
double time_once(F&& f) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = now();
    f();
    double dt = now() - t0, mx = 0;
    MPI_Allreduce(&dt, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return mx;
}

double median(std::vector<double> t) {
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    zs::backends::register_all();
    zs::comm::MpiRuntime rt(&argc, &argv);
    auto& world = rt.world();
    int iters = 10, min_mib = 1, max_mib = 256;
    bool mpi_first = false;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--mpi-first") == 0) mpi_first = true;
        if (i + 1 == argc) break;
        if (std::strcmp(argv[i], "--iters") == 0) iters = std::atoi(argv[i + 1]);
        if (std::strcmp(argv[i], "--min-mib") == 0) min_mib = std::atoi(argv[i + 1]);
        if (std::strcmp(argv[i], "--max-mib") == 0) max_mib = std::atoi(argv[i + 1]);
    }
    const int n = world.size(), rank = world.rank();
    bool latency = false;
    for (int i = 1; i < argc; ++i) latency = latency || std::strcmp(argv[i], "--latency") == 0;
    if (latency) {
        const bool iters_given = std::any_of(
            argv + 1, argv + argc, [](const char* a) { return std::strcmp(a, "--iters") == 0; });
        const int calls = iters_given ? iters : 2000;
        if (rank == 0) std::printf("{\"ranks\": %d, \"calls\": %d, \"latency\": [\n", n, calls);
        for (int kib = 8; kib <= 64; kib *= 2) {
            const int64_t count = int64_t{kib} * 1024 / 4;
            Tensor t = Tensor::empty({count}, DType::f32);
            std::fill_n(t.data<float>(), count, 0.0f);  // sums of zeros stay finite
            auto mean_us = [&](auto&& op) {
                op();  // warm-up
                return time_once([&] {
                           for (int i = 0; i < calls; ++i) op();
                       }) /
                       calls * 1e6;
            };
            auto ours = [&] { world.allreduce(t, zs::comm::ReduceOp::sum).wait(); };
            auto mpi = [&] {
                MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(count), MPI_FLOAT,
                              MPI_SUM, MPI_COMM_WORLD);
            };
            std::vector<double> a, b;
            for (int round = 0; round < 5; ++round) {
                a.push_back(mean_us(ours));
                b.push_back(mean_us(mpi));
            }
            if (rank == 0) {
                std::printf(
                    "%s  {\"op\": \"allreduce\", \"KiB\": %d, \"zerospeed_us\": %.2f, "
                    "\"mpi_us\": %.2f}",
                    kib == 8 ? "" : ",\n", kib, median(a), median(b));
                std::fflush(stdout);
            }
        }
        if (rank == 0) std::printf("\n]}\n");
        return 0;
    }
    if (rank == 0) {
        std::printf("{\"ranks\": %d, \"iters\": %d, \"results\": [\n", n, iters);
    }
    bool first = true;
    for (int mib = min_mib; mib <= max_mib; mib *= 4) {
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
              Case{"allgather", 1.0 * (n - 1) / n}, Case{"broadcast", 1.0}}) {
            std::string name = c.name;
            auto run_ours = [&] {
                if (name == "allreduce") world.allreduce(full, zs::comm::ReduceOp::sum).wait();
                if (name == "reduce_scatter") world.reduce_scatter(part, full).wait();
                if (name == "allgather") world.allgather(full, part).wait();
                if (name == "broadcast") world.broadcast(full, 0).wait();
            };
            auto run_mpi = [&] {
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
                if (name == "broadcast")
                    MPI_Bcast(full.data_ptr(), static_cast<int>(count), MPI_FLOAT, 0,
                              MPI_COMM_WORLD);
            };
            // Warm-up, one after the other: the RSS high-water mark charges a temporary to
            // whichever runs first (--mpi-first swaps the order to attribute it the other way).
            // Then the timed calls alternate, so both see the same machine load.
            double rss0 = max_rss_mib(), rss_ours = 0, rss_mpi = 0;
            if (mpi_first) {
                run_mpi();
                rss_mpi = max_rss_mib() - rss0;
                run_ours();
                rss_ours = max_rss_mib() - rss0 - rss_mpi;
            } else {
                run_ours();
                rss_ours = max_rss_mib() - rss0;
                run_mpi();
                rss_mpi = max_rss_mib() - rss0 - rss_ours;
            }
            std::vector<double> t_ours, t_mpi;
            for (int i = 0; i < iters; ++i) {
                if ((i % 2 == 0) != mpi_first) {
                    t_ours.push_back(time_once(run_ours));
                    t_mpi.push_back(time_once(run_mpi));
                } else {
                    t_mpi.push_back(time_once(run_mpi));
                    t_ours.push_back(time_once(run_ours));
                }
            }
            const double ours = median(t_ours), mpi = median(t_mpi);
            // Values grow without bound under repeated sums: reset between cases.
            std::fill_n(full.data<float>(), count, 1.0f);
            if (rank == 0) {
                std::printf(
                    "%s  {\"op\": \"%s\", \"MiB\": %d, \"zerospeed_busbw_GBs\": %.3f, "
                    "\"mpi_busbw_GBs\": %.3f, \"ratio\": %.3f, \"zerospeed_rss_growth_MiB\": %.1f, "
                    "\"mpi_rss_growth_MiB\": %.1f}",
                    first ? "" : ",\n", c.name, mib, bytes / ours * c.factor / 1e9,
                    bytes / mpi * c.factor / 1e9, mpi / ours, rss_ours, rss_mpi);
                std::fflush(stdout);
            }
            first = false;
        }
    }
    if (rank == 0) std::printf("\n]}\n");
    return 0;
}
