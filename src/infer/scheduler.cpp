// Scheduler: the token budget, block reservation, admission and preemption rules.
#include "infer/scheduler.h"

#include <algorithm>
#include <limits>
#include <span>

#include "base/error.h"

namespace zs::infer {

const char* to_string(SchedulePolicy p) {
    switch (p) {
        case SchedulePolicy::split_fuse:
            return "split_fuse";
        case SchedulePolicy::prefill_first:
            return "prefill_first";
    }
    return "?";
}

int64_t shared_kv_window(const models::ModelConfig& model) {
    int64_t w = 0;
    for (int64_t l = 0; l < model.n_layers; ++l) {
        const int64_t wl = model.window(l);
        if (wl == 0) return 0;  // this layer reads every key as long as the sequence lives
        w = std::max(w, wl);
    }
    return w;
}

Scheduler::Scheduler(const SchedulerConfig& cfg, KvBlockPool& pool, int64_t kv_window)
    : cfg_(cfg), pool_(pool), window_(cfg.free_outside_window ? kv_window : 0) {
    ZS_CHECK_T(ConfigError, kv_window >= 0, "kv window must be >= 0 (got {})", kv_window);
    ZS_CHECK_T(ConfigError, cfg.max_batch_tokens > 0, "max_batch_tokens must be > 0 (got {})",
               cfg.max_batch_tokens);
    ZS_CHECK_T(ConfigError, cfg.max_seqs > 0 && cfg.max_seqs <= cfg.max_batch_tokens,
               "max_seqs must be in [1, max_batch_tokens = {}] so every running sequence can "
               "decode each step (got {})",
               cfg.max_batch_tokens, cfg.max_seqs);
    ZS_CHECK_T(ConfigError,
               cfg.admission_reserve_blocks >= 0 && cfg.admission_reserve_blocks < pool.n_blocks(),
               "admission_reserve_blocks must be in [0, {}) (got {})", pool.n_blocks(),
               cfg.admission_reserve_blocks);
}

void Scheduler::add(std::unique_ptr<Sequence> seq) {
    ZS_ASSERT(seq && seq->num_computed == 0 && seq->blocks.empty());
    const RequestId id = seq->id;
    seq->status = SeqStatus::waiting;
    waiting_.push_back(seq.get());
    auto [it, inserted] = seqs_.emplace(id, std::move(seq));
    ZS_ASSERT(inserted, "duplicate request id {}", id);
}

Sequence* Scheduler::find(RequestId id) const {
    auto it = seqs_.find(id);
    return it == seqs_.end() ? nullptr : it->second.get();
}

Batch Scheduler::schedule() {
    Batch b;
    int64_t budget = cfg_.max_batch_tokens;
    switch (cfg_.policy) {
        case SchedulePolicy::split_fuse:
            schedule_decodes(b, budget);
            schedule_running_prefills(b, budget);
            // A step that had to preempt admits nobody: the room is for those already running.
            if (b.n_preempted == 0) admit_waiting(b, budget);
            break;
        case SchedulePolicy::prefill_first:
            schedule_running_prefills(b, budget);
            if (b.n_preempted == 0) admit_waiting(b, budget);
            // Decodes run only in steps without prompt work (including steps where no prompt
            // could get blocks: decoding is what frees them).
            if (b.empty()) schedule_decodes(b, budget);
            break;
    }
    return b;
}

void Scheduler::schedule_decodes(Batch& b, int64_t& budget) {
    for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
        Sequence& s = *running_[i];
        if (!s.is_decode()) continue;
        if (!make_room(s, 1, b, budget)) break;  // s was the most recent: nothing after it
        push(b, s, 1, true);
        --budget;
    }
}

void Scheduler::schedule_running_prefills(Batch& b, int64_t& budget) {
    for (size_t i = 0; i < running_.size() && budget > 0; ++i) {
        Sequence& s = *running_[i];
        if (s.is_decode()) continue;
        // A chunk as large as the budget and the free blocks allow; preempt only when not even
        // one token fits.
        if (fit_tokens(s) <= 0 && !make_room(s, 1, b, budget)) break;
        const int64_t n = std::min({s.n_pending(), budget, fit_tokens(s)});
        const bool reserved = n > 0 && reserve(s, n, 0);
        ZS_ASSERT(reserved, "a chunk of {} tokens that fits could not be reserved", n);
        push(b, s, n, false);
        budget -= n;
    }
}

void Scheduler::admit_waiting(Batch& b, int64_t& budget) {
    const int64_t bs = pool_.block_size();
    while (!waiting_.empty() && budget > 0 &&
           static_cast<int64_t>(running_.size()) < cfg_.max_seqs) {
        Sequence& s = *waiting_.front();
        ZS_ASSERT(s.blocks.empty() && s.num_computed == 0);
        if (cfg_.prefix_caching && s.opts.prompt_logprobs < 0) {
            // At least the last token is computed, so the last row has logits to sample from
            // (and shared blocks, all below num_computed, are never written).
            s.blocks = pool_.acquire_prefix(s.tokens, (s.num_tokens() - 1) / bs);
            s.num_computed = static_cast<int64_t>(s.blocks.size()) * bs;
            if (window_ > 0) {  // shared blocks already outside the window go at once
                cache_full_blocks(s);
                drop_outside_window(s);
            }
        }
        int64_t n = s.n_pending();
        if (n > budget) {
            // Prefill-first runs whole prompts; only one longer than the budget is chunked.
            if (cfg_.policy == SchedulePolicy::prefill_first && !b.empty()) {
                release_blocks(s);
                break;
            }
            n = budget;
        }
        const int64_t keep = running_.empty() ? 0 : cfg_.admission_reserve_blocks;
        if (!reserve(s, n, keep)) {
            release_blocks(s);  // FCFS: nobody overtakes the head of the queue
            break;
        }
        waiting_.pop_front();
        n_prefix_hit_tokens_ += s.num_computed;
        if (s.n_preemptions == 0) s.n_cached_prompt = std::min(s.num_computed, s.prompt_len);
        s.status = SeqStatus::running;
        s.admit_order = next_admit_++;
        running_.push_back(&s);
        push(b, s, n, false);
        budget -= n;
    }
}

void Scheduler::push(Batch& b, Sequence& s, int64_t n, bool decode) const {
    ScheduledSeq e{&s, s.num_computed, n, decode, s.num_computed + n == s.num_tokens()};
    b.seqs.push_back(e);
    b.n_tokens += n;
    (decode ? b.n_decode_tokens : b.n_prefill_tokens) += n;
}

bool Scheduler::reserve(Sequence& s, int64_t n, int64_t keep_free) {
    const int64_t bs = pool_.block_size();
    const int64_t need = (s.num_computed + n + bs - 1) / bs - static_cast<int64_t>(s.blocks.size());
    if (need <= 0) return true;
    if (pool_.n_free() - need < keep_free) return false;
    auto got = pool_.allocate(need);
    if (!got) return false;
    s.blocks.insert(s.blocks.end(), got->begin(), got->end());
    return true;
}

int64_t Scheduler::fit_tokens(const Sequence& s) const {
    return (static_cast<int64_t>(s.blocks.size()) + pool_.n_free()) * pool_.block_size() -
           s.num_computed;
}

bool Scheduler::make_room(Sequence& s, int64_t n, Batch& b, int64_t& budget) {
    while (!reserve(s, n, 0)) {
        ZS_ASSERT(!running_.empty());
        Sequence& victim = *running_.back();
        preempt(victim, b, budget);
        if (&victim == &s) return false;
    }
    return true;
}

void Scheduler::preempt(Sequence& victim, Batch& b, int64_t& budget) {
    running_.erase(std::find(running_.begin(), running_.end(), &victim));
    auto it = std::find_if(b.seqs.begin(), b.seqs.end(),
                           [&](const ScheduledSeq& e) { return e.seq == &victim; });
    if (it != b.seqs.end()) {  // scheduled earlier in this step: give its tokens back
        budget += it->n_tokens;
        b.n_tokens -= it->n_tokens;
        (it->decode ? b.n_decode_tokens : b.n_prefill_tokens) -= it->n_tokens;
        b.seqs.erase(it);
    }
    release_blocks(victim);
    victim.status = SeqStatus::preempted;
    ++victim.n_preemptions;
    waiting_.push_front(&victim);
    ++n_preemptions_;
    ++b.n_preempted;
}

void Scheduler::release_blocks(Sequence& s) {
    // Only the slots past the dropped ones hold references.
    pool_.free(std::span<const BlockId>(s.blocks).subspan(static_cast<size_t>(s.n_dropped_blocks)));
    s.blocks.clear();
    s.n_dropped_blocks = 0;
    s.block_hashes.clear();
    s.num_computed = 0;
}

int64_t Scheduler::max_seq_blocks(int64_t n_tokens) const {
    const int64_t bs = pool_.block_size();
    const int64_t all = (n_tokens + bs - 1) / bs;
    if (window_ == 0) return all;
    // During a step: the blocks of keys [q - W + 1, q) for its first query q, then its chunk's.
    return std::min(all, (window_ + cfg_.max_batch_tokens + bs - 1) / bs + 1);
}

int64_t Scheduler::max_seq_tokens() const {
    constexpr int64_t kUnlimited = std::numeric_limits<int64_t>::max();
    if (window_ > 0 && max_seq_blocks(kUnlimited / 2) <= pool_.n_blocks()) return kUnlimited;
    return pool_.n_blocks() * pool_.block_size();
}

void Scheduler::cache_full_blocks(Sequence& s) {
    const int64_t bs = pool_.block_size();
    const std::span<const int32_t> toks(s.tokens);
    for (auto k = static_cast<int64_t>(s.block_hashes.size()); (k + 1) * bs <= s.num_computed;
         ++k) {
        const BlockId blk = s.blocks[static_cast<size_t>(k)];
        // Blocks are hashed before any is dropped (commit, admission), so never a freed slot.
        ZS_ASSERT(blk != kNoBlock, "hashing dropped block slot {}", k);
        const BlockHash parent = k == 0 ? kRootBlockHash : s.block_hashes.back();
        s.block_hashes.push_back(pool_.cache_block(
            blk, parent, toks.subspan(static_cast<size_t>(k * bs), static_cast<size_t>(bs))));
    }
}

void Scheduler::drop_outside_window(Sequence& s) {
    if (window_ == 0) return;
    const int64_t bs = pool_.block_size();
    // Every future query is at num_computed or later and reads keys from its position - W + 1 on
    // (paged_attention.cpp starts each tile at its first query's window), so block k is never
    // read again once (k + 1) * bs <= num_computed - W + 1.
    const int64_t n_dead = std::max<int64_t>(0, s.num_computed - window_ + 1) / bs;
    if (n_dead <= s.n_dropped_blocks) return;
    ZS_ASSERT(n_dead <= static_cast<int64_t>(s.blocks.size()));
    // A dropped block can no longer be hashed: with prefix caching, all of them already are.
    ZS_ASSERT(!cfg_.prefix_caching || n_dead <= static_cast<int64_t>(s.block_hashes.size()),
              "dropping {} blocks, {} hashed", n_dead, s.block_hashes.size());
    const auto first = static_cast<size_t>(s.n_dropped_blocks);
    const auto dead =
        std::span<BlockId>(s.blocks).subspan(first, static_cast<size_t>(n_dead) - first);
    pool_.free(dead);  // one call: a cached chain's tail is evicted before its head
    std::fill(dead.begin(), dead.end(), kNoBlock);
    s.n_dropped_blocks = n_dead;
}

void Scheduler::commit(const Batch& b) {
    for (const ScheduledSeq& e : b.seqs) {
        Sequence& s = *e.seq;
        ZS_ASSERT(s.num_computed == e.pos);
        s.num_computed += e.n_tokens;
        if (cfg_.prefix_caching) cache_full_blocks(s);
        drop_outside_window(s);
    }
}

std::unique_ptr<Sequence> Scheduler::finish(RequestId id, FinishReason reason) {
    auto it = seqs_.find(id);
    if (it == seqs_.end()) return nullptr;
    std::unique_ptr<Sequence> s = std::move(it->second);
    seqs_.erase(it);
    if (auto r = std::find(running_.begin(), running_.end(), s.get()); r != running_.end()) {
        running_.erase(r);
    }
    if (auto w = std::find(waiting_.begin(), waiting_.end(), s.get()); w != waiting_.end()) {
        waiting_.erase(w);
    }
    release_blocks(*s);
    s->status = SeqStatus::finished;
    s->finish_reason = reason;
    return s;
}

}  // namespace zs::infer
