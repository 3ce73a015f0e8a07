// Topology: the process grid dp x tp x pp x sp (with ep carved out of dp), each rank's
// coordinates, and one communicator per group. Built once from the world communicator; everything
// that communicates takes the group it needs from here and nothing re-derives ranks.
//
// Rank order (Megatron-LM / DeepSpeed): tp fastest, then sp, then dp, then pp:
//
//     rank = tp_rank + tp * (sp_rank + sp * (dp_rank + dp * pp_rank))
//
// Why: the tensor-parallel group all-reduces twice per layer on the critical path, so its ranks
// are adjacent (the same node, the same NUMA domain, NVLink on GPUs); sequence parallelism
// all-to-alls twice per layer and comes next; data parallelism reduces once per step and tolerates
// the slower links; pipeline stages exchange one activation per micro-batch and are outermost.
//
// Expert parallelism is carved out of data parallelism as DeepSpeed-MoE does: ep divides dp; an
// expert-parallel group is ep consecutive data-parallel ranks (same tp, sp, pp) and experts are
// data-parallel ("expert data parallel", dp / ep ranks) over the ranks holding the same experts.
// USP (Ulysses x ring): the sp ranks split further into sp = ulysses x ring, Ulysses fastest
//
//     sp_rank = ulysses_rank + ulysses * ring_rank
//
// since its all-to-alls move more bytes per step than the ring's point-to-point hops and want the
// nearer links; a Ulysses group holds the same ring rank, a ring group the same Ulysses rank. Sizes
// give sp (the whole sequence-parallel degree) and ring (which divides it).
//
// Dense parameters are replicated over dp x sp ranks (sequence-parallel ranks hold the same
// weights: DeepSpeed's seq_data_parallel group), which is the group ZeRO partitions them over.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace zs::parallel {

struct Sizes {
    int dp = 0;  // 0: whatever the world leaves (world / (tp * sp * pp))
    int tp = 1, pp = 1, ep = 1, sp = 1;
    int ring = 1;  // ring attention's degree inside sp (divides sp); the rest is Ulysses'
    int ulysses() const { return ring >= 1 && sp % ring == 0 ? sp / ring : 1; }
    std::string str() const;  // "dp=2 tp=2 pp=1 ep=1 sp=1", then " (ulysses=2 x ring=2)" if ring
};

struct Coords {
    int dp = 0, tp = 0, pp = 0, ep = 0, sp = 0;
    int edp = 0;                // rank among the ranks holding the same experts
    int ulysses = 0, ring = 0;  // sp = ulysses + Sizes::ulysses() * ring
};

enum class Group {
    tp,        // same sp, dp, pp
    sp,        // same tp, dp, pp
    dp,        // same tp, sp, pp
    pp,        // same tp, sp, dp
    ep,        // same tp, sp, pp and dp / ep block
    edp,       // expert data parallel: same tp, sp, pp and dp % ep
    dense_dp,  // ZeRO's group for dense parameters: same tp, pp (dp x sp ranks)
    ulysses,   // USP: the Ulysses part of sp: same tp, dp, pp and ring rank
    ring       // USP: the ring part of sp: same tp, dp, pp and Ulysses rank
};
const char* to_string(Group g);

// The sizes resolved against a world size, or ConfigError naming the sizes and the world.
Sizes resolve(Sizes s, int world);
// The world rank of the given coordinates (the order above); coordinates of a world rank.
int rank_of(const Sizes& s, const Coords& c);
Coords coords_of(const Sizes& s, int rank);
// World ranks of rank's group `g`, in group-rank order (the reference the tests compare with).
std::vector<int> members(const Sizes& s, int rank, Group g);

// The model dimensions the sizes must divide (parallel/ sits below models/: the caller fills
// this from its ModelConfig).
struct ModelDims {
    std::string name;  // for messages: "llama", a file name
    int64_t heads = 0, kv_heads = 0, experts = 0, layers = 0;
};
// Refuse sizes that do not divide the model: tp | attention heads (and KV heads, or KV heads |
// tp: replicated), tp x ulysses | heads (ring attention has no head constraint), ep | experts, pp
// <= layers. The error names the size and the model dimension.
void check_model(const Sizes& s, const ModelDims& m);

class Topology {
public:
    // Collective over `world` (every rank calls it, same sizes): resolves and checks the sizes
    // and splits one communicator per group. `world` must outlive the topology.
    Topology(comm::Communicator& world, Sizes sizes);

    const Sizes& sizes() const { return s_; }
    const Coords& coords() const { return c_; }
    int world_rank() const { return world_.rank(); }
    int world_size() const { return world_.size(); }
    comm::Communicator& world() const { return world_; }
    // The communicator of this rank's group `g` (a size-1 group when that dimension is 1).
    comm::Communicator& group(Group g) const;
    std::string describe() const;  // "rank 5 of 8: dp 1/2 tp 1/2 pp 1/2 ..."

private:
    comm::Communicator& world_;
    Sizes s_;
    Coords c_;
    std::vector<std::unique_ptr<comm::Communicator>> groups_;  // by Group; null: the world
};

}  // namespace zs::parallel
