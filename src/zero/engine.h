// zero::Engine: ZeRO stages 0-3 for one data-parallel rank, driven by the model's GroupHooks.
//
// Every parameter group (embed, blocks.i, head; see models/params.h) is one flat buffer of n_g
// elements, padded to P_g = ceil(n_g / W) * W for W ranks; rank r owns the shard
// [r * S_g, (r + 1) * S_g), S_g = P_g / W. What each rank keeps, per stage (Ψ = parameters,
// compute dtype bf16 = 2 bytes; with f32 compute the master weights *are* the compute weights):
//
//   stage 0  compute weights (full)  f32 grads (full)   master+m+v (full)     2Ψ + 4Ψ + 12Ψ
//   stage 1  compute weights (full)  f32 grads (full)   master+m+v (shard)    2Ψ + 4Ψ + 12Ψ/W
//   stage 2  compute weights (full)  f32 grads (shard)  master+m+v (shard)    2Ψ + 16Ψ/W
//   stage 3  compute weights (shard) f32 grads (shard)  master+m+v (shard)    18Ψ/W
// plus transient buffers: stage 2-3 hold the full gradients of the group(s) in backward until
// their reduce-scatter completes; stage 3 holds the gathered weights of the groups in use and
// prefetched.
//
// Communication: stage 0 all-reduces and stage 1 reduce-scatters each group's gradients after its
// last micro-batch's backward; stages 2-3 reduce-scatter each group as soon as its backward ends
// (every micro-batch), overlapping with the backward of the groups before it. Stage 3 all-gathers
// a group's weights before use and prefetches the next groups in the execution order recorded
// during the first step (DeepSpeed's trace), within stage3_max_live_parameters. Collectives are
// issued in the same order on every rank. ZeRO++ (Config::quantized_weights / _gradients)
// replaces stage 3's weight all-gather by an all-gather of int8 codes and scales, and stages
// 2-3's gradient reduce-scatter by an all-to-all of int8 / int4 codes and scales; hpZ
// (Config::hpz_partition_size) runs stage 3's backward gathers over a sub-group of H ranks from a
// secondary partition of P / H compute-dtype elements per group.
//
// Devices: every flat buffer (compute weights, gradients, master weights, optimizer states,
// gather and reduce buffers) lives on Config::device, the model's (RunConfig::device). What the
// host reads (the gradient norm, the finite check, gathered groups for checkpoints and export)
// goes through host copies, which are the buffers themselves on the CPU. The optimizer update
// runs where the buffers are: optim::Optimizer on the CPU, ops::adam_update (AdamW and Adam;
// other optimizers are NotSupported there) on another device.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "comm/communicator.h"
#include "core/half.h"
#include "core/tensor.h"
#include "models/params.h"
#include "optim/optimizer.h"
#include "zero/offload.h"
#include "zero/quantize.h"

namespace zs::zero {

using core::DType;
using core::Tensor;

struct Config {
    int stage = 0;
    bool overlap_comm = true;
    int64_t prefetch_numel = 50'000'000;      // stage3_prefetch_bucket_size (elements)
    int64_t max_live_numel = 1'000'000'000;   // stage3_max_live_parameters
    int64_t persistence_threshold = 100'000;  // stage3_param_persistence_threshold: groups this
                                              // small stay gathered
    bool decay_all = true;  // weight decay on every parameter, as DeepSpeed does with
                            // model.parameters(); false exempts biases and norm weights
    core::Device device = core::Device::cpu();  // where every flat buffer lives (the model's)
    // The data-parallel communicator of group g, when it is not the engine's: expert parameters
    // are data-parallel over the ranks holding the same experts (DeepSpeed's expert data
    // parallel group), dense ones over every data-parallel rank. Each such group must be a
    // subgroup of the engine's communicator whose ranks that hold different values for group g
    // (other experts) together cover it once, so sums over the engine's ranks (the gradient
    // norm) count every element once. Unset or null: the engine's communicator. Not with LAMB.
    std::function<comm::Communicator*(int g)> group_comm;
    // ZeRO++ quantized communication (zero/quantize.h; ds_config zero_quantized_weights,
    // zero_quantized_gradients, zero_quantized_gradients_bits), CPU buffers only. Each applies
    // to a group whose data-parallel communicator has more than one rank, and has no effect
    // otherwise (the engine logs which). qwZ, stage 3: each rank quantizes its shard of the
    // compute weights to int8 per block, one all-gather carries every rank's codes and scales,
    // and every rank computes with the dequantized values, its own shard's included, so all hold
    // the same weights; master weights and optimizer states stay f32. qgZ, stages 2-3: each rank
    // quantizes the W shard-sized chunks of its gradients (chunk j for rank j) to int8 or int4
    // per block, one all-to-all exchanges them, and each rank sums the W chunks it receives,
    // dequantized, in f32 in rank order: per element the sum is off the exact one by at most
    // the sum over ranks of half a quantization step, blockmax / (2 * 127) for int8 (7 for int4).
    bool quantized_weights = false;
    bool quantized_gradients = false;
    int quantized_gradients_bits = 8;   // 8 or 4
    int64_t quant_block = kQuantBlock;  // elements per scale (even)
    // ZeRO++ hpZ (ds_config zero_hpz_partition_size), stage 3: H > 1 ranks per secondary
    // partition; 0 or 1: off. H must divide the engine's communicator's size W (ConfigError at
    // any stage otherwise). The engine splits its communicator into W / H sub-groups of H
    // consecutive ranks (color rank / H: one host under parallel/topology.h's rank order) at
    // construction. Besides its primary shard, each rank keeps a secondary one: its 1/H slice,
    // P / H elements of the compute dtype, of each gathered group, within its sub-group. A
    // forward use (before_forward) gathers from the primary shards over all W ranks (with qwZ,
    // int8); the first release of the gathered group after an optimizer step copies the rank's
    // slice into the secondary shard, and a backward use (before_backward) then gathers from the
    // secondary shards over the H ranks of the sub-group, unquantized. step(), load_group() and
    // refresh_compute_weights() invalidate the secondary shards. The gathered weights are the
    // same bits either way (with qwZ too: the secondary holds the forward's dequantized values,
    // which is what re-quantizing the unchanged primary shard gives), so training is bit for bit
    // the run without hpZ. Groups with their own communicator (group_comm) and persistent groups
    // have no secondary partition.
    int64_t hpz_partition_size = 1;
    // Pipeline parallelism: the groups this rank's stage holds (unset: all). A group it does not
    // hold has no storage here (a zero-element shard): its hooks are never called, load_group and
    // set_state_range ignore it, and it adds nothing to the gradient norm or the step.
    std::function<bool(int g)> owns;
    // ZeRO-Offload / ZeRO-Infinity (zero/offload.h; ds_config offload_optimizer, aio), stages
    // 1-3, CPU buffers, not LAMB: with offload.optimizer cpu or nvme, the f32 master weights
    // (when they are not the f32 compute weights) and the optimizer states of this rank's shard
    // live in a SwapStore, cut into sub-groups of at most sub_group_size elements of one group.
    // step() streams them through buffer_count buffers: read sub-group i (and, pipeline_read,
    // the next ones into the buffers whose writes are done), update it, write it back
    // (pipeline_write: in flight while the next one is updated). The update is the in-memory one
    // element for element, so training is bit for bit the same. Gradient offload (stages 2-3,
    // whenever the optimizer is offloaded, as DeepSpeed does): no f32 gradient shard is kept; each
    // group's reduced shard is written to a second store of the same tier, one record per
    // sub-group, as soon as its reduce-scatter completes (micro-batches after the first read it
    // back, add, write), with one group's writes in flight behind the next group's backward; its
    // sum of squares and finiteness are taken then, so the gradient norm reads nothing; step()
    // reads each sub-group's gradients with its optimizer record.
    OffloadConfig offload;
    // DeepSpeed's bf16.bf16_master_weights_and_grads (bf16 compute, stages 1-3, CPU, not LAMB):
    // the master weights are the bf16 compute weights of this rank's shard (no f32 copy: a bf16
    // master equals its bf16 compute copy bit for bit), and the reduced gradient shard holds bf16
    // values (rounded to nearest even after every accumulation; in memory in f32 storage, on the
    // offload tier as bf16). bf16_states (bf16.bf16_optimizer_states): the optimizer states are
    // bf16 too. The update widens master, states and gradients to f32, runs the f32 optimizer
    // and rounds master and states back to bf16, to nearest even (DeepSpeed's CPU Adam with
    // bf16 parameters and states, via c10::BFloat16). Offloaded records then hold only the
    // states: 2 bytes each with bf16_states, 4 without.
    bool bf16_master = false;
    bool bf16_states = false;
};

struct GroupShard {
    int64_t numel = 0;        // n_g
    int64_t padded = 0;       // P_g
    int64_t size = 0;         // S_g
    int64_t begin = 0;        // r * S_g
    int64_t end = 0;          // min(n_g, begin + S_g): elements of the group this rank owns
    int rank = 0, world = 1;  // this rank in the group's data-parallel communicator, its size
};

// Where an offloaded step's time went on the engine's thread (seconds since begin_step): waits
// for the tier and the work between them. The forward/backward side: parameter reads waited for
// (parameters not yet read ahead), gradient writes waited for (one group's in flight behind the
// next group's backward), the gradient records' accumulation, bf16 rounding and norm. The
// optimizer side (step()): parameter reads and write-backs waited for, optimizer and gradient
// record reads waited for, record writes waited for (a buffer's previous write, the end), and the
// update itself (widening, the optimizer, rounding). Bytes: the tiers' counters
// (offload_bytes_read / _written) at begin_step, at the start of step() and now give each side's.
struct OffloadTimes {
    double param_wait_s = 0, grad_write_wait_s = 0, grad_record_s = 0;
    double step_param_wait_s = 0, step_read_wait_s = 0, step_write_wait_s = 0, step_update_s = 0;
    int64_t step_read_bytes = 0, step_write_bytes = 0;  // moved by step() (the optimizer side)
};

class Engine final : public models::GroupHooks {
public:
    // grad_groups(g): the groups whose gradients group g's backward writes
    // (Transformer::grad_groups).
    Engine(const models::ParamLayout& layout, models::ParamBinding& binding, comm::Communicator& dp,
           Config cfg, DType compute_dtype, optim::Options opt,
           std::function<std::vector<int>(int)> grad_groups);
    ~Engine() override;
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // ---- weights ----
    // Initialise every parameter from its Init (models::init_param_values): same values at any
    // world size and stage.
    void init_weights(uint64_t seed);
    // Set group g from full f32 values [n_g] (e.g. loaded from a checkpoint or an HF model).
    void load_group(int g, const Tensor& full);
    // The full f32 master weights of group g (state < 0) or its optimizer state `state`, gathered
    // from all ranks (export, checkpoints), on the host. Collective over the data-parallel group.
    Tensor gather_group(int g, int state = -1);

    // ---- GroupHooks ----
    void before_forward(int g) override;
    void after_forward(int g) override;
    void before_backward(int g) override;
    void after_backward(int g) override;

    // ---- step ----
    // Before the first micro-batch of a step: zero gradient accumulators. `n_micro` tells the
    // engine which micro-batch is the last (stages 0-1 reduce only then).
    void begin_step(int n_micro);
    void end_micro_batch();
    // Complete every outstanding gradient reduction.
    void finish_grads();
    // Sum of squares of the (reduced) gradients over all ranks, and whether all are finite.
    double grad_sq_norm();
    // The same with each element's square weighted: weight[i] lists ranges of parameter i's flat
    // elements with their weight (tensor parallelism: an element held by c tensor-parallel ranks
    // counts 1 / c on each, so a sum over the tp group counts it once). Elements outside every
    // range count 0.
    struct NormWeight {
        int64_t begin = 0, end = 0;  // flat elements [begin, end) of the parameter
        double weight = 1.0;
    };
    double grad_sq_norm(std::span<const std::vector<NormWeight>> weight);
    bool grads_finite();
    // Optimizer update of this rank's shard at learning rate lr (step is 1-based), gradients
    // multiplied by grad_scale; then (stages 1-2) the updated compute weights are all-gathered.
    // Off the CPU only AdamW and Adam have a device kernel; others throw NotSupported.
    // LAMB's per-tensor trust ratio is exact at every stage: stages 1-3 add the norm sums of the
    // parts of each parameter held by every rank (one small allgather) before the update, so
    // with LAMB the step is collective at stage 3 too.
    void step(float lr, int64_t step, float grad_scale);

    // ---- state (checkpoints) ----
    int world_size() const { return world_; }
    int rank() const { return rank_; }
    int stage() const { return cfg_.stage; }
    // hpZ: the size of this rank's sub-group (1: hpZ off).
    int hpz_size() const { return hpz_ ? hpz_->size() : 1; }
    const GroupShard& shard(int g) const { return shards_[static_cast<size_t>(g)]; }
    // Whether this rank's stage holds group g (Config::owns).
    bool holds(int g) const { return !cfg_.owns || cfg_.owns(g); }
    // The reduced gradients of group g this rank holds (after finish_grads): the whole group at
    // stage 0, the shard [begin, begin + size) otherwise; a view, so a caller may sum it in place
    // with another rank's (tied weights held by two pipeline stages).
    Tensor reduced_grads(int g) const;
    // This rank's owned elements [begin, end) of group g: master weights and optimizer states,
    // views on Config::device (callers copy them to the host to write them).
    Tensor master_shard(int g) const;
    Tensor state_shard(int g, int i) const;
    int n_states() const { return optimizer_.n_states(); }
    // The dtypes master_shard / state_shard return (bf16 with Config::bf16_master / _states).
    DType master_dtype() const { return bfm_ ? DType::bf16 : DType::f32; }
    DType state_dtype() const { return sdt_; }
    // Optimizer offload: this rank's owned elements [a, b) (shard-local) of group g's state i,
    // read sub-group by sub-group from the tier (memory: one sub-group record at a time + the
    // result); in memory, a view. For streaming checkpoint saves.
    Tensor state_part(int g, int i, int64_t a, int64_t b) const;
    // The elements of group g this rank saves in a checkpoint: its shard (stages 1-3), or the
    // whole group on rank 0 only (stage 0, where every rank holds everything).
    std::pair<int64_t, int64_t> owned_range(int g) const;
    // Restore master weights and optimizer states for the elements [begin, begin + n) of group g
    // (any range: the part this rank stores is taken). Call refresh_compute_weights() after the
    // last one.
    void set_state_range(int g, int64_t begin, const Tensor& master, const Tensor& state0,
                         const Tensor& state1);
    // Rebuild the compute weights from the master weights (collective for stages 1-2).
    void refresh_compute_weights();
    // Optimizer offload: bytes read from / written to the tiers since construction (0 without
    // offload; the sub-groups offload_optimizer.ratio keeps in memory not counted), and the
    // store's directory (nvme; empty otherwise).
    int64_t offload_bytes_read() const {
        return (store_ ? store_->bytes_read() : 0) + (pstore_ ? pstore_->bytes_read() : 0) +
               (gstore_ ? gstore_->bytes_read() : 0);
    }
    int64_t offload_bytes_written() const {
        return (store_ ? store_->bytes_written() : 0) + (pstore_ ? pstore_->bytes_written() : 0) +
               (gstore_ ? gstore_->bytes_written() : 0);
    }
    // Offload: this step's waits and work (OffloadTimes; zeros without offload).
    const OffloadTimes& offload_times() const { return times_; }
    // Stage 3: whether parameters are fetched ahead along the execution order recorded during
    // the first step (false while recording, and after a pass left that order).
    bool prefetching() const { return !recording_ && !trace_.empty(); }
    // Gradient offload (Config::offload): whether the reduced gradient shards live on the tier.
    bool grads_offloaded() const { return offload_grads_; }
    // offload_optimizer.ratio: how many of the optimizer sub-groups stay in memory (the first
    // ones) and how many there are.
    int resident_sub_groups() const { return n_resident_; }
    int sub_groups() const { return static_cast<int>(subs_.size()); }
    std::string offload_dir() const { return store_ ? store_->dir() : std::string(); }
    const models::ParamLayout& layout() const { return layout_; }

private:
    struct Group;
    void acquire(int g, bool backward);
    void release(int g);
    // backward: a backward use, gathered from the secondary shards (hpZ) when they are valid.
    void launch_gather(int g, bool backward);
    void wait_gather(int g);
    void bind(int g);
    void ensure_grads(int g);
    void launch_reduce(int g);
    void complete_reduce(int g);
    void prefetch();
    void write_compute_copy(int g);
    // ZeRO++: whether group g's weight gathers (qwZ) / gradient reductions (qgZ) are quantized.
    bool quantize_weights(int g) const;
    bool quantize_grads(int g) const;
    // Checks the ZeRO++ settings and logs (rank 0) what they do here.
    void check_quantization();
    // hpZ: whether group g has a secondary partition; checks the size and splits the sub-group.
    bool hierarchical(int g) const;
    void setup_hpz();
    // Group g's gradients this rank owns (full at stage 0, its reduced shard otherwise) on the
    // host: the buffer itself on the CPU, else a copy.
    Tensor host_grads(int g) const;
    std::vector<optim::Segment> segments();
    // The segments of group g's shard-local elements [a, b); master / state pointers address
    // element a (compute and gradient pointers are the group's own).
    // grad, when set, holds the gradients of shard-local elements [a, b) (offloaded gradients).
    std::vector<optim::Segment> segments_of(int g, int64_t a, int64_t b, float* master,
                                            float* state0, float* state1,
                                            const float* grad = nullptr);
    // Sum of squares of group g's owned gradients (grad: its shard-local buffer), each element's
    // square weighted as grad_sq_norm's `weight` says (empty: 1); and whether all are finite.
    double grad_part(int g, const float* grad,
                     std::span<const std::vector<NormWeight>> weight) const;
    bool grad_finite_part(int g, const float* grad) const;
    // ---- optimizer offload ----
    struct SubGroup {
        int g = 0;
        int64_t a = 0, b = 0;  // shard-local elements [a, b) of group g
    };
    void setup_offload();
    int offload_fields() const;  // f32 fields per element in a record: master? + states
    size_t record_bytes(const SubGroup& sg) const;
    // Group g's records read into K = offload_fields() tensors [S] / written from them.
    std::vector<Tensor> read_group(int g) const;
    void write_group(int g, const std::vector<Tensor>& fields) const;
    // Swap group g's master (when swapped) and states into gr.master / gr.states, and back out
    // (written back when `write`).
    void page_in(int g) const;
    void page_out(int g, bool write) const;
    void offload_step(float lr, int64_t step, float grad_scale);
    void step_body(float lr, int64_t step, float grad_scale);  // step() less the offload tail
    // Field f (0: the f32 master when swapped, then the states) of group g's shard-local
    // elements [a, b), read record by record.
    Tensor field_part(int g, int f, int64_t a, int64_t b) const;
    // ---- bf16 master weights (Config::bf16_master) ----
    bool bfm_ = false, bfs_ = false;
    DType sdt_ = DType::f32;  // optimizer state dtype
    size_t state_es() const { return core::dtype_size(sdt_); }
    size_t grad_es() const { return bfm_ ? 2 : sizeof(float); }  // offloaded gradient records
    // Group g's bf16 compute weights of this rank's shard [S] (stage 3: fetched by the caller).
    Tensor compute_shard(int g) const;
    // The update of group g's shard-local elements [a, b): master widened from the bf16 compute
    // weights, states (st0/st1 address element a, state_dtype()) widened when bf16, the f32
    // optimizer, master and states rounded back.
    // grad16: bf16 gradients of [a, b) (an offloaded record), widened tile by tile.
    void bf16_update(int g, int64_t a, int64_t b, void* st0, void* st1, const float* grad,
                     const core::bf16* grad16, float lr, int64_t step, float grad_scale);
    // Round f32 values to bf16-representable ones (nearest even).
    static void round_bf16(float* p, int64_t n);
    // ---- gradient offload (stages 2-3 with the optimizer offloaded) ----
    // Accumulate gr.reduce_out into group g's records (read back after the first micro-batch),
    // write them (in flight until the next group's), cache the sum of squares and finiteness.
    void grad_store(int g);
    Tensor grad_load(int g) const;  // group g's reduced shard [S] (zeros when none this step)
    void grad_drain();              // wait for the gradient writes in flight
    bool offload_grads_ = false;
    OffloadTimes times_;
    bool in_step_ = false;  // step() runs (times go to its side)
    std::unique_ptr<SwapStore> gstore_;
    std::vector<io::AlignedBuffer> gbufs_;  // the gradient writes in flight
    std::vector<io::AioWork> gwrites_;
    std::vector<io::AlignedBuffer> gfree_;  // written gradient buffers, reused
    size_t gbuf_bytes_ = 0;                 // their size: the largest gradient record
    // bf16_update's f32 scratch (master, states, widened gradients), reused sub-group after
    // sub-group.
    std::vector<float> upd_master_, upd_s0_, upd_s1_, upd_grad_;
    mutable std::vector<io::AlignedBuffer> gslots_;  // the step's gradient buffers, one per slot
    bool param_offloaded(int g) const { return pstore_ && param_off_[static_cast<size_t>(g)] != 0; }
    size_t param_bytes(int g) const;
    void param_read_ahead(int g);         // issue the read of group g's shard (if not in flight)
    void param_fetch(int g);              // gr.shard_w from the store (waits for the read)
    void param_store(int g, bool write);  // write gr.shard_w back (when `write`), drop it
    // Group g's shard buffer: read into (pending) and then held while gr.shard_w, a view of it,
    // is in use.
    struct ParamRead {
        io::AioWork work;
        io::AlignedBuffer buf;
        bool pending = false;
    };
    // A shard written back (param_store), its buffer busy until the write completes.
    struct ParamWrite {
        int g = 0;
        io::AioWork work;
        io::AlignedBuffer buf;
    };
    io::AlignedBuffer param_buffer(int g);        // a free buffer for group g's shard
    void param_recycle(io::AlignedBuffer&& buf);  // back to the free buffers (bounded)
    void param_hold(int g);        // gr.shard_w: an uninitialized view of a held buffer
    void param_wait_write(int g);  // group g's write in flight (if any) completed
    void param_drain();            // every parameter write completed, the first error rethrown
    // The first param_buffer_count offloaded groups of the recorded order read ahead (the next
    // forward's, issued at the end of step()).
    void param_prefetch_start();
    std::unique_ptr<SwapStore> pstore_;
    std::vector<char> param_off_;
    std::vector<ParamRead> pread_;
    std::deque<ParamWrite> pwrites_;
    std::vector<io::AlignedBuffer> pfree_;
    std::unique_ptr<SwapStore> store_;
    // offload_optimizer.ratio < 1: sub-groups [0, n_resident_) keep their records (and, with
    // gradient offload, their gradients) in host memory instead, in these cpu-tier stores.
    std::unique_ptr<SwapStore> mstore_, mgstore_;
    int n_resident_ = 0;
    SwapStore& opt_store(int id) const { return id < n_resident_ ? *mstore_ : *store_; }
    SwapStore& grad_store_of(int id) const { return id < n_resident_ ? *mgstore_ : *gstore_; }
    std::vector<SubGroup> subs_;
    std::vector<std::vector<int>> subs_of_;  // per group: its sub-group ids
    mutable std::vector<io::AlignedBuffer> slots_;
    bool swap_master_ = false;
    // The AdamW / Adam update of this rank's shard on a device (ops::adam_update per run).
    void device_step(float lr, int64_t step, float grad_scale);
    // LAMB: moments, the trust-ratio norms summed over the ranks sharing each parameter, update.
    void lamb_step(std::span<const optim::Segment> segs, float lr, int64_t step, float grad_scale);

    const models::ParamLayout& layout_;
    models::ParamBinding& binding_;
    comm::Communicator& dp_;
    std::vector<comm::Communicator*> comms_;  // per group: its data-parallel communicator
    bool group_comms_ = false;                // some group has its own (Config::group_comm)
    comm::Communicator& comm(int g) const { return *comms_[static_cast<size_t>(g)]; }
    Config cfg_;
    DType ct_;
    optim::Optimizer optimizer_;
    std::function<std::vector<int>(int)> grad_groups_;
    int rank_ = 0, world_ = 1;
    std::vector<GroupShard> shards_;
    std::vector<std::unique_ptr<Group>> groups_;
    // hpZ: this rank's sub-group of H consecutive ranks of dp_ (null: hpZ off).
    std::unique_ptr<comm::Communicator> hpz_;
    // Execution trace (stage 3 prefetch): groups in acquire order, recorded during step 1, and
    // whether each use is a backward one (hpZ gathers those from the secondary shards).
    struct Use {
        int g = 0;
        bool backward = false;
    };
    std::vector<Use> trace_;
    std::deque<int> in_flight_;  // groups with a reduce-scatter in flight (stages 2-3)
    bool recording_ = true;
    size_t cursor_ = 0;
    int micro_ = 0, n_micro_ = 1;
    int64_t live_numel_ = 0;
};

}  // namespace zs::zero
