// The MPI backend (OpenMPI): one process per rank, launched by mpirun / zerospeed-run.
//
// Threading: MPI is initialised with MPI_THREAD_MULTIPLE; operations are MPI's non-blocking
// collectives (MPI_Iallreduce, MPI_Ireduce_scatter_block, MPI_Iallgather, ...), completed by
// polling MPI_Test from Work::wait(). A progress thread also polls outstanding requests every few
// microseconds so a reduce-scatter launched after a block's backward advances while the next
// block computes (OpenMPI has no asynchronous progress of its own for these).
//
// Timeouts name the missing ranks: every rank keeps "the last collective I entered" in an MPI
// window (MPI_Win_allocate; shared memory on one node); a rank that times out reads everyone's
// counter without their cooperation (passive-target RMA), so a stopped or crashed peer is named.
#pragma once

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
    std::unique_ptr<Communicator> world_;
};

}  // namespace zs::comm
