// The MPI backend (OpenMPI): one process per rank, launched by mpirun / zerospeed-run.
//
// Threading: MPI is initialised with MPI_THREAD_MULTIPLE. Each communicator owns one worker
// thread that runs its collectives in posting order as blocking calls and completes their Work;
// the caller returns at once, and a reduce-scatter posted after a block's backward runs while the
// next block computes. Work::wait() blocks on the op's completion until its deadline.
// - When every rank of the communicator is on this host, the collectives run over shared memory
//   instead (shm.h), small ones on the caller's thread; what follows is the path otherwise.
// - allgather, broadcast, all_to_all, barrier, split: MPI's blocking collective.
// - reduce_scatter, and allreduce over 16 MiB: a ring over MPI point-to-point with a bounded
//   scratch kept between calls (mpi_ring.h says why not MPI's own); smaller allreduce:
//   MPI_Allreduce. bf16/f16 reduce through bounded f32 slices with MPI's call (sums in f32).
// - send/recv: non-blocking requests (MPI_Isend/MPI_Irecv, so paired sends and receives cannot
//   deadlock), polled by Work::wait() and a progress thread.
//
// Timeouts name the missing ranks: every rank keeps "the last collective I entered" in an MPI
// window (MPI_Win_allocate; shared memory on one node); a rank that times out reads everyone's
// counter without their cooperation (passive-target RMA), so a stopped or crashed peer is named.
// A timed-out collective stays stuck in its worker thread: the communicator is poisoned, the
// thread is detached rather than joined, and ~MpiRuntime ends the job instead of finalizing.
#pragma once

#include <atomic>
#include <memory>

#include "comm/communicator.h"

namespace zs::comm {

// MPI_Init_thread / MPI_Finalize for the process: construct once in main.
class MpiRuntime {
public:
    MpiRuntime(int* argc, char*** argv);
    ~MpiRuntime();
    MpiRuntime(const MpiRuntime&) = delete;
    MpiRuntime& operator=(const MpiRuntime&) = delete;
    // The world communicator (its lifetime ends with the runtime's).
    Communicator& world();
    // Whether this process was started by mpirun (OMPI_COMM_WORLD_SIZE / PMI_SIZE set).
    static bool launched_by_mpirun();
    // Stop every rank of the job (after an unrecoverable error on this rank).
    [[noreturn]] static void abort_job(int code);

private:
    std::shared_ptr<std::atomic<bool>> any_failed_;  // set when any communicator has failed
    std::unique_ptr<Communicator> world_;
    std::unique_ptr<Communicator> world_flat_;  // MPI_COMM_WORLD's when world_ is hierarchical
};

}  // namespace zs::comm
