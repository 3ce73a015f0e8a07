// The NCCL backend (CUDA build only): collectives among GPU ranks, one GPU per process, on CUDA
// tensors. Bootstrapped over another communicator (the MPI world): rank 0 creates the NCCL unique
// id and broadcasts it, every rank then joins with ncclCommInitRank.
//
// Streams: each communicator owns a CUDA stream for its collectives. An op first makes that
// stream wait for everything already queued on the compute stream (the CUDA backend's one
// stream), then runs, then records an event; Work::wait() polls the event until it completes or
// the deadline passes, and makes the compute stream wait for the event, so kernels issued after
// wait() see the result and compute overlaps communication until then. Tensors must stay alive
// until their Work is waited (as with every backend).
//
// Timeouts: a collective not complete by its deadline aborts the NCCL communicator
// (ncclCommAbort) and fails with a CommError naming the op, sequence number, group and bytes;
// NCCL cannot say which ranks never arrived, and the message says so. The communicator is then
// poisoned. Reductions: sum, avg, max, min in the tensor's own type (NCCL accumulates bf16/f16
// in f32 internally for its ring/tree algorithms).
#pragma once

#include <memory>

#include "comm/communicator.h"

namespace zs::comm {

// A communicator over the ranks of `bootstrap` (collective: every rank of it calls this), using
// the GPU of the CUDA backend registered in this process (backends::register_all() first; the
// compute stream comes from core::Backend::native_stream()). Throws CommError when no CUDA
// backend is registered or NCCL fails to initialise, naming the reason.
std::unique_ptr<Communicator> make_nccl(Communicator& bootstrap, const std::string& name = "nccl");

}  // namespace zs::comm
