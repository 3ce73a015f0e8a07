/* A peer for comm_bench: the plain MPI collectives of whatever MPI this is compiled with, so
 * MPICH (Debian's `mpich`) can be measured beside OpenMPI and zerospeed's transport in one run.
 * Not part of the build: tools/run_benchmarks.sh compiles it with `mpicc.mpich` when that exists.
 *
 *   mpiexec.mpich -n 2 ./mpi_coll_bench [--iters 7] [--min-mib 1] [--max-mib 256]
 *   mpiexec.mpich -n 2 ./mpi_coll_bench --latency [--iters 2000]
 *
 * Bus bandwidth as comm_bench and nccl-tests define it (allreduce = bytes/t x 2(n-1)/n;
 * reduce-scatter and allgather = bytes/t x (n-1)/n with bytes the full size), the median of
 * --iters calls of the slowest rank; --latency: mean time of back-to-back 8-64 KiB fp32
 * allreduces, median of 5 rounds, in microseconds. Prints JSON. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

static double median(double* v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp);
    return v[n / 2];
}

/* The slowest rank's time of one call of op (0 allreduce, 1 reduce-scatter, 2 allgather). */
static double time_op(int op, float* a, float* b, long count, int n) {
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime(), dt, mx;
    if (op == 0) MPI_Allreduce(MPI_IN_PLACE, a, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (op == 1) MPI_Reduce_scatter_block(a, b, (int)(count / n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (op == 2) MPI_Allgather(a, (int)(count / n), MPI_FLOAT, b, (int)(count / n), MPI_FLOAT,
                               MPI_COMM_WORLD);
    dt = MPI_Wtime() - t0;
    MPI_Allreduce(&dt, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return mx;
}

int main(int argc, char** argv) {
    int iters = 7, min_mib = 1, max_mib = 256, latency = 0, rank, n, i;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    for (i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--latency") == 0) {
            latency = 1;
            iters = 2000;
        }
    }
    for (i = 1; i + 1 < argc; ++i) {
        if (strcmp(argv[i], "--iters") == 0) iters = atoi(argv[i + 1]);
        if (strcmp(argv[i], "--min-mib") == 0) min_mib = atoi(argv[i + 1]);
        if (strcmp(argv[i], "--max-mib") == 0) max_mib = atoi(argv[i + 1]);
    }
    if (latency) {
        static const int kib[] = {8, 16, 32, 64};
        float* a = malloc(64 * 1024);
        memset(a, 0, 64 * 1024);
        if (rank == 0) printf("{\"ranks\": %d, \"calls\": %d, \"latency\": [\n", n, iters);
        for (int k = 0; k < 4; ++k) {
            const int count = kib[k] * 256;
            double rounds[5];
            for (int r = 0; r < 5; ++r) {
                MPI_Barrier(MPI_COMM_WORLD);
                double t0 = MPI_Wtime(), dt, mx;
                for (int c = 0; c < iters; ++c)
                    MPI_Allreduce(MPI_IN_PLACE, a, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
                dt = (MPI_Wtime() - t0) / iters;
                MPI_Allreduce(&dt, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
                rounds[r] = mx;
            }
            if (rank == 0)
                printf("  {\"op\": \"allreduce\", \"KiB\": %d, \"us\": %.2f}%s\n", kib[k],
                       median(rounds, 5) * 1e6, k == 3 ? "" : ",");
        }
        if (rank == 0) printf("]}\n");
        free(a);
        MPI_Finalize();
        return 0;
    }
    static const char* names[] = {"allreduce", "reduce_scatter", "allgather"};
    double* t = malloc(sizeof(double) * (size_t)iters);
    if (rank == 0) printf("{\"ranks\": %d, \"iters\": %d, \"results\": [\n", n, iters);
    int first = 1;
    for (int mib = min_mib; mib <= max_mib; mib *= 4) {
        const long count = (long)mib * 1024 * 1024 / 4 / n * n;
        const double bytes = (double)count * 4;
        float* a = malloc((size_t)count * 4);
        float* b = malloc((size_t)count * 4);
        for (long e = 0; e < count; ++e) a[e] = b[e] = 1.0f;
        for (int op = 0; op < 3; ++op) {
            time_op(op, a, b, count, n); /* warm up (page faults, connections) */
            for (i = 0; i < iters; ++i) t[i] = time_op(op, a, b, count, n);
            const double s = median(t, iters);
            const double f = op == 0 ? 2.0 * (n - 1) / n : (double)(n - 1) / n;
            if (rank == 0)
                printf("%s  {\"op\": \"%s\", \"MiB\": %d, \"busbw_GBs\": %.3f}", first ? "" : ",\n",
                       names[op], mib, bytes / s * f / 1e9);
            first = 0;
        }
        free(a);
        free(b);
    }
    if (rank == 0) printf("\n]}\n");
    free(t);
    MPI_Finalize();
    return 0;
}
