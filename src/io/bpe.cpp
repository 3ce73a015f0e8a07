// The BPE merge loop and its pair table (see bpe.h).
#include "io/bpe.h"

#include <algorithm>

namespace zs::io {

namespace {

uint64_t mix(uint64_t k) {  // splitmix64 finaliser: spreads the two packed ids over the table
    k ^= k >> 30;
    k *= 0xbf58476d1ce4e5b9ULL;
    k ^= k >> 27;
    k *= 0x94d049bb133111ebULL;
    k ^= k >> 31;
    return k;
}

// Heap order: the smallest (rank, left) on top.
bool later(const BpeWork::Candidate& a, const BpeWork::Candidate& b) {
    if (a.rank != b.rank) return a.rank > b.rank;
    return a.left > b.left;
}

}  // namespace

void PairTable::grow() {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(old.empty() ? 1024 : old.size() * 2, Slot{0, {0, 0}, false});
    size_ = 0;
    for (const Slot& s : old) {
        if (!s.used) continue;
        size_t mask = slots_.size() - 1;
        size_t i = mix(s.key) & mask;
        while (slots_[i].used) i = (i + 1) & mask;
        slots_[i] = s;
        ++size_;
    }
}

void PairTable::insert(int32_t left, int32_t right, Rule rule) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    uint64_t k = key(left, right);
    size_t mask = slots_.size() - 1;
    size_t i = mix(k) & mask;
    while (slots_[i].used) {
        if (slots_[i].key == k) {
            slots_[i].rule = rule;
            return;
        }
        i = (i + 1) & mask;
    }
    slots_[i] = Slot{k, rule, true};
    ++size_;
}

const PairTable::Rule* PairTable::find(int32_t left, int32_t right) const {
    if (slots_.empty()) return nullptr;
    uint64_t k = key(left, right);
    size_t mask = slots_.size() - 1;
    size_t i = mix(k) & mask;
    while (slots_[i].used) {
        if (slots_[i].key == k) return &slots_[i].rule;
        i = (i + 1) & mask;
    }
    return nullptr;
}

void Bpe::merge(std::vector<BpeSymbol>& syms, BpeWork& work,
                std::unordered_map<int32_t, std::pair<int32_t, int32_t>>* rev) const {
    const size_t n = syms.size();
    if (n < 2) return;
    auto& prev = work.prev;
    auto& next = work.next;
    auto& heap = work.heap;
    prev.resize(n);
    next.resize(n);
    heap.clear();
    for (size_t i = 0; i < n; ++i) {
        prev[i] = static_cast<int32_t>(i) - 1;
        next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
    }
    auto consider = [&](int32_t l, int32_t r) {
        const BpeSymbol& a = syms[static_cast<size_t>(l)];
        const BpeSymbol& b = syms[static_cast<size_t>(r)];
        if (a.frozen || b.frozen) return;
        const PairTable::Rule* rule = pairs_.find(a.id, b.id);
        if (!rule) return;
        heap.push_back({rule->rank, static_cast<uint32_t>(l), static_cast<uint32_t>(r),
                        a.len + b.len, rule->merged});
        std::push_heap(heap.begin(), heap.end(), later);
    };
    for (size_t i = 0; i + 1 < n; ++i)
        consider(static_cast<int32_t>(i), static_cast<int32_t>(i + 1));

    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), later);
        BpeWork::Candidate c = heap.back();
        heap.pop_back();
        BpeSymbol& l = syms[c.left];
        if (l.len == 0 || next[c.left] != static_cast<int32_t>(c.right)) continue;
        BpeSymbol& r = syms[c.right];
        if (l.len + r.len != c.size) continue;
        if (rev && static_cast<size_t>(c.merged) < unused_.size() && unused_[c.merged]) {
            (*rev)[c.merged] = {l.id, r.id};
        }
        l.id = c.merged;
        l.len += r.len;
        r.len = 0;
        int32_t after = next[c.right];
        next[c.left] = after;
        if (after >= 0) prev[static_cast<size_t>(after)] = static_cast<int32_t>(c.left);
        if (prev[c.left] >= 0) consider(prev[c.left], static_cast<int32_t>(c.left));
        if (after >= 0) consider(static_cast<int32_t>(c.left), after);
    }
    size_t out = 0;
    for (size_t i = 0; i < n; ++i) {
        if (syms[i].len > 0) syms[out++] = syms[i];
    }
    syms.resize(out);
}

}  // namespace zs::io
