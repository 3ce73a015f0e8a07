// The NCCL backend: see nccl.h.
#include "comm/nccl.h"

#include <cstring>

#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <nccl.h>

#include "base/error.h"
#include "core/backend.h"

namespace zs::comm {

namespace {

using core::DType;

// The CUDA backend's device and compute stream (core::Backend::native_stream()).
struct Gpu {
    int device = 0;
    cudaStream_t compute = nullptr;
    void bind() const { cudaSetDevice(device); }
};

void check_nccl(ncclResult_t r, const char* call, const std::string& where) {
    if (r != ncclSuccess && r != ncclInProgress) {
        ZS_THROW(CommError, "{}: {} failed: {}", where, call, ncclGetErrorString(r));
    }
}

void check_cuda(cudaError_t e, const char* call, const std::string& where) {
    if (e != cudaSuccess) {
        ZS_THROW(CommError, "{}: {} failed: {} ({})", where, call, cudaGetErrorName(e),
                 cudaGetErrorString(e));
    }
}

ncclDataType_t nccl_type(DType t, const char* op) {
    switch (t) {
        case DType::f32:
            return ncclFloat32;
        case DType::bf16:
            return ncclBfloat16;
        case DType::f16:
            return ncclFloat16;
        case DType::i8:
            return ncclInt8;
        case DType::i32:
            return ncclInt32;
        case DType::i64:
            return ncclInt64;
    }
    ZS_THROW(CommError, "{}: dtype {} has no NCCL type", op, core::to_string(t));
}

ncclRedOp_t nccl_op(ReduceOp op) {
    switch (op) {
        case ReduceOp::sum:
            return ncclSum;
        case ReduceOp::avg:
            return ncclAvg;
        case ReduceOp::max:
            return ncclMax;
        case ReduceOp::min:
            return ncclMin;
    }
    return ncclSum;
}

void check_cuda_tensor(const char* op, const char* arg, const Tensor& t) {
    check_contiguous(op, arg, t, core::DeviceType::cuda);
}

struct EventDeleter {
    void operator()(CUevent_st* e) const { cudaEventDestroy(e); }
};

class NcclComm final : public Communicator {
public:
    NcclComm(ncclComm_t comm, int rank, int size, std::string name, Gpu gpu, double timeout)
        : comm_(comm), rank_(rank), size_(size), name_(std::move(name)), gpu_(gpu) {
        timeout_s_ = timeout;
        gpu_.bind();
        check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking),
                   "cudaStreamCreateWithFlags", name_);
    }
    ~NcclComm() override {
        gpu_.bind();
        if (failed_) {
            ncclCommAbort(comm_);
        } else {
            cudaStreamSynchronize(stream_);
            ncclCommDestroy(comm_);
        }
        cudaStreamDestroy(stream_);
    }

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    std::string name() const override { return name_; }

    Work allreduce(const Tensor& t, ReduceOp op) override {
        check_cuda_tensor("allreduce", "t", t);
        return run("allreduce", t.nbytes(), [&](cudaStream_t s) {
            return ncclAllReduce(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                 nccl_type(t.dtype(), "allreduce"), nccl_op(op), comm_, s);
        });
    }
    Work reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op) override {
        check_cuda_tensor("reduce_scatter", "out", out);
        check_cuda_tensor("reduce_scatter", "in", in);
        check_whole_part("reduce_scatter", "in", in, "out", out, size_);
        return run("reduce_scatter", in.nbytes(), [&](cudaStream_t s) {
            return ncclReduceScatter(
                in.data_ptr(), out.data_ptr(), static_cast<size_t>(out.numel()),
                nccl_type(in.dtype(), "reduce_scatter"), nccl_op(op), comm_, s);
        });
    }
    Work allgather(const Tensor& out, const Tensor& in) override {
        check_cuda_tensor("allgather", "out", out);
        check_cuda_tensor("allgather", "in", in);
        check_whole_part("allgather", "out", out, "in", in, size_);
        return run("allgather", out.nbytes(), [&](cudaStream_t s) {
            return ncclAllGather(in.data_ptr(), out.data_ptr(), static_cast<size_t>(in.numel()),
                                 nccl_type(in.dtype(), "allgather"), comm_, s);
        });
    }
    Work broadcast(const Tensor& t, int root) override {
        check_cuda_tensor("broadcast", "t", t);
        check_root("broadcast", root, size_);
        return run("broadcast", t.nbytes(), [&](cudaStream_t s) {
            return ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                 nccl_type(t.dtype(), "broadcast"), root, comm_, s);
        });
    }
    Work all_to_all(const Tensor& out, const Tensor& in) override {
        check_cuda_tensor("all_to_all", "out", out);
        check_cuda_tensor("all_to_all", "in", in);
        check_all_to_all(out, in, size_);
        const size_t chunk = static_cast<size_t>(in.numel() / size_);
        const size_t bytes = chunk * core::dtype_size(in.dtype());
        const ncclDataType_t dt = nccl_type(in.dtype(), "all_to_all");
        return run("all_to_all", in.nbytes(), [&](cudaStream_t s) {
            ncclResult_t r = ncclGroupStart();
            for (int p = 0; p < size_ && r == ncclSuccess; ++p) {
                const char* src = static_cast<const char*>(in.data_ptr()) + p * bytes;
                char* dst = static_cast<char*>(out.data_ptr()) + p * bytes;
                r = ncclSend(src, chunk, dt, p, comm_, s);
                if (r == ncclSuccess) r = ncclRecv(dst, chunk, dt, p, comm_, s);
            }
            ncclResult_t e = ncclGroupEnd();
            return r != ncclSuccess ? r : e;
        });
    }
    // The counts are trusted (the base version's host-side check would need host copies of
    // device counts): a mismatched pair is NCCL's error or a hang until the timeout.
    Work all_to_all_v(const Tensor& out, const std::vector<int64_t>& out_counts, const Tensor& in,
                      const std::vector<int64_t>& in_counts) override {
        check_cuda_tensor("all_to_all_v", "out", out);
        check_cuda_tensor("all_to_all_v", "in", in);
        check_all_to_all_v(out, out_counts, in, in_counts, size_);
        const size_t es = core::dtype_size(in.dtype());
        const ncclDataType_t dt = nccl_type(in.dtype(), "all_to_all_v");
        int64_t total = 0;
        for (int64_t c : in_counts) total += c;
        return run("all_to_all_v", static_cast<size_t>(total) * es, [&](cudaStream_t s) {
            ncclResult_t r = ncclGroupStart();
            int64_t so = 0, ro = 0;
            for (int p = 0; p < size_ && r == ncclSuccess; ++p) {
                const auto sc = static_cast<size_t>(in_counts[static_cast<size_t>(p)]);
                const auto rc = static_cast<size_t>(out_counts[static_cast<size_t>(p)]);
                const char* src = static_cast<const char*>(in.data_ptr()) + so * es;
                char* dst = static_cast<char*>(out.data_ptr()) + ro * es;
                if (sc > 0) r = ncclSend(src, sc, dt, p, comm_, s);
                if (r == ncclSuccess && rc > 0) r = ncclRecv(dst, rc, dt, p, comm_, s);
                so += static_cast<int64_t>(sc);
                ro += static_cast<int64_t>(rc);
            }
            ncclResult_t e = ncclGroupEnd();
            return r != ncclSuccess ? r : e;
        });
    }
    // NCCL has no tags: point-to-point messages between two ranks match in posting order.
    Work send(const Tensor& t, int peer, int /*tag*/) override {
        check_cuda_tensor("send", "t", t);
        return run("send", t.nbytes(), [&](cudaStream_t s) {
            return ncclSend(t.data_ptr(), static_cast<size_t>(t.numel()),
                            nccl_type(t.dtype(), "send"), peer, comm_, s);
        });
    }
    Work recv(const Tensor& t, int peer, int /*tag*/) override {
        check_cuda_tensor("recv", "t", t);
        return run("recv", t.nbytes(), [&](cudaStream_t s) {
            return ncclRecv(t.data_ptr(), static_cast<size_t>(t.numel()),
                            nccl_type(t.dtype(), "recv"), peer, comm_, s);
        });
    }
    void barrier() override {
        Tensor one =
            Tensor::zeros({1}, DType::f32, core::Device::cuda(), core::MemCategory::buffers);
        allreduce(one, ReduceOp::sum).wait();
        core::backend(core::DeviceType::cuda).synchronize();
    }
    std::unique_ptr<Communicator> split(int color, int key) override {
        gpu_.bind();
        ncclComm_t sub = nullptr;
        const std::string where = fmt::format("split of group '{}'", name_);
        check_nccl(ncclCommSplit(comm_, color, key, &sub, nullptr), "ncclCommSplit", where);
        int r = 0, n = 0;
        check_nccl(ncclCommUserRank(sub, &r), "ncclCommUserRank", where);
        check_nccl(ncclCommCount(sub, &n), "ncclCommCount", where);
        return std::make_unique<NcclComm>(sub, r, n, fmt::format("{}.split({})", name_, color),
                                          gpu_, timeout_s_);
    }

private:
    // Order after the compute stream, launch, record completion; the Work polls the event.
    template <class Launch>
    Work run(const char* op, size_t bytes, Launch&& launch) {
        const int64_t seq = ++seq_;
        const std::string what =
            fmt::format("{} #{} on group '{}' ({} ranks, {} bytes)", op, seq, name_, size_, bytes);
        if (failed_) {
            return Work::failed(std::make_exception_ptr(
                CommError(fmt::format("{}: the communicator already failed: {}", what, failure_))));
        }
        gpu_.bind();
        cudaStream_t compute = gpu_.compute;
        cudaEvent_t ready = nullptr, done_raw = nullptr;
        check_cuda(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming), "cudaEventCreate",
                   what);
        std::unique_ptr<CUevent_st, EventDeleter> ready_owner(ready);
        check_cuda(cudaEventRecord(ready, compute), "cudaEventRecord", what);
        check_cuda(cudaStreamWaitEvent(stream_, ready, 0), "cudaStreamWaitEvent", what);
        check_nccl(launch(stream_), op, what);
        check_cuda(cudaEventCreateWithFlags(&done_raw, cudaEventDisableTiming), "cudaEventCreate",
                   what);
        std::shared_ptr<CUevent_st> done(done_raw, EventDeleter());
        check_cuda(cudaEventRecord(done.get(), stream_), "cudaEventRecord", what);

        auto st = std::make_shared<Work::State>();
        const Gpu gpu = gpu_;
        ncclComm_t comm = comm_;
        st->poll = [done, gpu, comm, what]() {
            gpu.bind();
            const cudaError_t e = cudaEventQuery(done.get());
            if (e == cudaErrorNotReady) {
                ncclResult_t async = ncclSuccess;
                ncclCommGetAsyncError(comm, &async);
                check_nccl(async, "NCCL (asynchronous error)", what);
                return false;
            }
            check_cuda(e, "cudaEventQuery", what);
            return true;
        };
        // Kernels queued after wait() run after the collective.
        st->finish = [done, gpu, what]() {
            gpu.bind();
            check_cuda(cudaStreamWaitEvent(gpu.compute, done.get(), 0), "cudaStreamWaitEvent",
                       what);
        };
        st->deadline = std::chrono::steady_clock::now() +
                       std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                           std::chrono::duration<double>(timeout_s_));
        st->on_timeout = [this, what]() {
            std::string msg = fmt::format(
                "{}: did not complete within {} s (NCCL cannot tell which ranks never arrived; "
                "the communicator was aborted)",
                what, timeout_s_);
            failed_ = true;
            failure_ = msg;
            ncclCommAbort(comm_);
            return std::make_exception_ptr(CommError(msg));
        };
        return Work(st);
    }

    ncclComm_t comm_;
    int rank_, size_;
    std::string name_;
    Gpu gpu_;
    cudaStream_t stream_ = nullptr;
    int64_t seq_ = 0;
    bool failed_ = false;
    std::string failure_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl(Communicator& bootstrap, const std::string& name) {
    ZS_CHECK_T(CommError, core::has_backend(core::DeviceType::cuda),
               "NCCL communicator '{}': no CUDA backend is registered in this process (a build "
               "without -DZS_CUDA=ON, or no usable GPU: see `zerospeed doctor`)",
               name);
    core::Backend& be = core::backend(core::DeviceType::cuda);
    Gpu gpu{be.device_index(), static_cast<cudaStream_t>(be.native_stream())};
    gpu.bind();
    // Rank 0's unique id reaches every rank over the bootstrap communicator (host memory).
    ncclUniqueId id;
    std::memset(&id, 0, sizeof(id));
    if (bootstrap.rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId", name);
    Tensor idt = Tensor::empty({static_cast<int64_t>(sizeof(id))}, DType::i8);
    std::memcpy(idt.data_ptr(), &id, sizeof(id));
    bootstrap.broadcast(idt, 0).wait();
    std::memcpy(&id, idt.data_ptr(), sizeof(id));
    ncclComm_t comm = nullptr;
    check_nccl(ncclCommInitRank(&comm, bootstrap.size(), id, bootstrap.rank()), "ncclCommInitRank",
               name);
    return std::make_unique<NcclComm>(comm, bootstrap.rank(), bootstrap.size(), name, gpu,
                                      bootstrap.timeout());
}

}  // namespace zs::comm
