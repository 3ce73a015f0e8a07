// LD_PRELOAD shim for bench/quant/region_times.sh: wraps libgomp's GOMP_parallel and, for every
// region run by more than one thread, records which outlined function it ran, how long the
// encountering thread spent in it, and how long that thread ran serially since the previous
// region ended. At exit it prints the last 4096 as "EV <function offset> <us in> <us before>".
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <time.h>

typedef void (*gomp_parallel_fn)(void (*)(void*), void*, unsigned, unsigned);

enum { kEvents = 4096 };
static double t_in[kEvents], t_out[kEvents];
static void* fn_of[kEvents];
static long n_events;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void GOMP_parallel(void (*fn)(void*), void* data, unsigned nthreads, unsigned flags) {
    static gomp_parallel_fn real;
    if (!real) real = (gomp_parallel_fn)dlsym(RTLD_NEXT, "GOMP_parallel");
    const double t0 = now();
    real(fn, data, nthreads, flags);
    const double t1 = now();
    if (nthreads == 1) return;  // an if(false) region: no team to wait for
    const long i = n_events++ % kEvents;
    t_in[i] = t0;
    t_out[i] = t1;
    fn_of[i] = (void*)fn;
}

__attribute__((destructor)) static void report(void) {
    const long first = n_events > kEvents ? n_events - kEvents : 0;
    for (long k = first; k < n_events; ++k) {
        const long i = k % kEvents, prev = (k - 1) % kEvents;
        Dl_info di;
        if (!dladdr(fn_of[i], &di)) continue;
        fprintf(stderr, "EV %p %.2f %.2f\n", (void*)((char*)fn_of[i] - (char*)di.dli_fbase),
                (t_out[i] - t_in[i]) * 1e6, k > first ? (t_in[i] - t_out[prev]) * 1e6 : 0.0);
    }
}
