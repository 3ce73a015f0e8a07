// Storage tiers for ZeRO-Offload / ZeRO-Infinity: fixed-size records (one per optimizer
// sub-group: its f32 master weights and optimizer states side by side) kept off the engine's
// working memory, on NVMe (io::AsyncIo swap files under nvme_path) or in host buffers (the cpu
// tier: the same machinery, which matters once the step runs on a GPU).
//
//   SwapStore store(cfg, rank);                  // nvme: <nvme_path>/zerospeed_swap/<unique>/
//   io::AioWork w = store.write(id, buf, n);     // async on nvme, done at once on cpu
//   store.read(id, buf, n).wait();               // IoError naming the file when it is bad
//
// The directory is removed by the destructor; a killed process leaves it behind (the next run
// uses a fresh one; nothing reads another run's files).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/aio.h"

namespace zs::zero {

enum class Tier { memory, cpu, nvme };
const char* to_string(Tier t);

struct OffloadConfig {
    Tier optimizer = Tier::memory;  // zero_optimization.offload_optimizer.device
    std::string nvme_path;
    int64_t sub_group_size = 1'000'000'000;  // elements per optimizer sub-group
    int64_t buffer_count = 4;                // in-memory sub-group buffers of the step
    bool pin_memory = true;
    bool pipeline_read = false;   // read sub-groups i+1.. (free buffers) while i is updated
    bool pipeline_write = false;  // write sub-group i while i+1 is updated
    // offload_optimizer.ratio (stage 3, DeepSpeed's partial offload): the share of the
    // sub-groups on the tier. The first floor((1 - ratio) x n) sub-groups stay in the compute
    // device's memory (on a CPU rank: host records, the cpu tier's machinery), as stage3.py
    // assigns them; 1 offloads all.
    double optimizer_ratio = 1.0;
    io::AioConfig aio;
    // zero_optimization.offload_param (stage 3, 16-bit compute): each group's compute-weight
    // shard lives on the tier, fetched before its gather (read ahead along the recorded
    // execution order, up to param_buffer_count groups) and dropped after it; nvme keeps the
    // first groups whose shards add up to at most param_max_in_cpu elements in memory.
    Tier param = Tier::memory;
    std::string param_nvme_path;
    int64_t param_buffer_count = 5;
    int64_t param_buffer_size = 100'000'000;  // elements: the largest group shard allowed
    int64_t param_max_in_cpu = 1'000'000'000;
    bool param_pin_memory = true;
};

class SwapStore {
public:
    // `nvme_path`, `pin` and the aio settings come from cfg; `what` names the store in errors
    // and in its directory ("optimizer", "param").
    SwapStore(Tier tier, const OffloadConfig& cfg, int rank, const std::string& nvme_path, bool pin,
              const std::string& what);
    ~SwapStore();
    SwapStore(const SwapStore&) = delete;
    SwapStore& operator=(const SwapStore&) = delete;

    io::AioWork write(int id, io::AlignedBuffer& buf, size_t n);
    io::AioWork read(int id, io::AlignedBuffer& buf, size_t n);
    Tier tier() const { return tier_; }
    const std::string& dir() const { return dir_; }
    int64_t bytes_written() const;
    int64_t bytes_read() const;

private:
    std::string path(int id) const;
    Tier tier_;
    bool pin_;
    std::string dir_;
    std::unique_ptr<io::AsyncIo> aio_;
    std::vector<io::AlignedBuffer> host_;  // cpu tier: one buffer per record
    int64_t host_written_ = 0, host_read_ = 0;
};

}  // namespace zs::zero
