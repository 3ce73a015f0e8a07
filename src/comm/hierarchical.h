// Hierarchical collectives for a group spanning several hosts: a Communicator composed of
// three others over the same ranks — `intra` (the ranks of my host), `inter` (the ranks with my
// local index on every host) and `flat` (the whole group) — so that the bulk of a reduction
// crosses the fast links inside a host and only 1/L of it crosses hosts (DeepSpeed's
// hierarchical all-reduce; NCCL's tree-of-rings idea).
//
// Invariants: every host holds the same L ranks (N = H x L); the hierarchical ops run in posting
// order on one worker thread owned by the communicator, each waiting for a stage before posting
// the next, so the sub-ops of different ops never interleave differently on different ranks.
//
//   allreduce       intra reduce_scatter -> inter allreduce (my 1/L shard) -> intra allgather
//   reduce_scatter  intra reduce_scatter -> inter reduce_scatter  (inter moves H·m, not N·m)
//   allgather       inter allgather -> intra allgather            (the dual: inter moves H·m)
//   broadcast       inter broadcast among the root's local-index peers -> intra broadcast
//   all_to_all, barrier, split (a flat sub-communicator), send, recv: the flat communicator.
//
// Layout. Host h's ranks, in group-rank order, are its local ranks 0..L-1 (intra must be
// ordered so: split(host, group_rank)); the inter communicator of local index l holds those
// ranks of every host in group-rank order (split(local, group_rank)). After the intra stage of a
// reduce_scatter (and before the intra stage of an allgather) the N blocks sit in the
// "hierarchical order": local index major, inter rank minor. Blocks are permuted into / out of
// it when it differs from group order. Worked example, N = 4 as 2 hosts x 2:
//   host_of_rank {0,1,0,1} (interleaved): host 0 = {0,2}, host 1 = {1,3}; inter l=0 {0,1},
//     l=1 {2,3}; hierarchical order = 0 1 2 3 = group order: no copy.
//   host_of_rank {0,0,1,1} (host-major): host 0 = {0,1}, host 1 = {2,3}; inter l=0 {0,2},
//     l=1 {1,3}; hierarchical order = 0 2 1 3: reduce_scatter packs `in` as [B0 B2 | B1 B3],
//     allgather unpacks the same way.
// allreduce needs no permutation; a count not divisible by L is zero-padded to L·ceil(n/L) in a
// copy (pass multiples of L to reduce in place).
//
// Reduction order (element i of allreduce lies in shard l = i / ceil(n/L); block g of
// reduce_scatter in shard l = local index of g): each host folds its ranks in local order, then
// the inter communicator of l folds the host partials in its rank order — each stage in the
// order its backend uses (rank order on local). So f32 sums differ from a flat reduction in the
// last bits. bf16/f16: every stage accumulates in f32 and rounds its result to the dtype, so
// there is one extra rounding per stage beyond the flat backends' one (2 instead of 1).
// avg: floats average at each stage (intra over L, then inter over H: the global mean because
// hosts are equal; 16-bit partial sums cannot overflow); integers travel as i64 sums and are
// divided by N once at the end (truncating, exactly as the local backend). max/min are exact.
//
// Errors: a failed stage (a sub-communicator's timeout naming its missing ranks) fails the op
// with a CommError naming the hierarchical op, its sequence number, the group and the stage; the
// communicator is then poisoned (later ops fail at once). set_timeout() applies to each stage of
// the hierarchical ops (the worker sets it on intra and inter); the flat communicator's ops keep
// the flat communicator's own timeout. Thread-safety: one caller thread, as every Communicator.
#pragma once

#include <memory>
#include <vector>

#include "comm/communicator.h"

namespace zs::comm {

// Where the ranks of a group live, checked for the hierarchical algorithms.
struct HostLayout {
    int n_hosts = 0;
    int ranks_per_host = 0;
    std::vector<int> host_of_rank;   // [N] host id of group rank g (any non-negative ids)
    std::vector<int> local_of_rank;  // [N] g's index among its host's ranks, in group-rank order

    // Throws NotSupported naming every host's size when hosts hold different numbers of ranks
    // (keep the flat communicator then), ConfigError for an empty list or a negative host id.
    static HostLayout from(std::vector<int> host_of_rank);
};

// Compose a hierarchical communicator over the group of `flat` (rank g = flat->rank()). Takes
// ownership of all three; they must not be used by anyone else afterwards. `intra` and `inter`
// must be ordered as the header says (checked against their rank() and size(): ConfigError).
// Throws what HostLayout::from throws, after which the arguments are gone: check the layout
// first to keep `flat` when hosts are uneven.
std::unique_ptr<Communicator> make_hierarchical(std::unique_ptr<Communicator> flat,
                                                std::unique_ptr<Communicator> intra,
                                                std::unique_ptr<Communicator> inter,
                                                std::vector<int> host_of_rank);

// The same, building flat, intra and inter as three splits of `parent` (collective on parent,
// from the caller's thread). The layout is checked before any split, so on uneven hosts every
// rank throws the same error and `parent` stays usable.
std::unique_ptr<Communicator> split_hierarchical(Communicator& parent,
                                                 std::vector<int> host_of_rank);

}  // namespace zs::comm
