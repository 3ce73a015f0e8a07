// Bpe: the byte-pair merge loop every tokenizer here shares.
//
// A pair table maps (left id, right id) -> (rank, merged id); lower rank merges first, and among
// equal ranks the leftmost pair does (Hugging Face BPE's (rank, pos) order, tiktoken's strict-less
// scan and SentencePiece's (score, left) agenda all agree on this). Merge rules from a merges list
// get rank = line number, tiktoken's get the merged token's rank, SentencePiece's get the dense
// rank of the merged piece's score (higher score = lower rank).
//
// The loop is a linked list over the symbols plus a binary heap of candidate pairs; a popped pair
// is stale when its left symbol died, its neighbour changed or their combined length differs
// (lengths only grow, so this identifies the pair exactly). O(n log n) per word.
#pragma once

#include <cstdint>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace zs::io {

struct BpeSymbol {
    int32_t id;    // token id; ids >= vocab size stand for characters with no token
    uint32_t len;  // bytes of input this symbol covers (0 = merged away)
    bool frozen;   // never merges (SentencePiece user-defined symbols)
};

// Open-addressing hash map from a pair of ids to its merge rule.
class PairTable {
public:
    struct Rule {
        int32_t rank;
        int32_t merged;
    };
    // Later insertions of the same pair replace earlier ones (as a merges list read into a map).
    void insert(int32_t left, int32_t right, Rule rule);
    const Rule* find(int32_t left, int32_t right) const;
    size_t size() const { return size_; }

private:
    static uint64_t key(int32_t l, int32_t r) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
    }
    void grow();
    struct Slot {
        uint64_t key;
        Rule rule;
        bool used;
    };
    std::vector<Slot> slots_;
    size_t size_ = 0;
};

// Reusable buffers for one thread's merges.
struct BpeWork {
    struct Candidate {
        int32_t rank;
        uint32_t left, right, size;
        int32_t merged;
    };
    std::vector<int32_t> prev, next;
    std::vector<Candidate> heap;
};

class Bpe {
public:
    PairTable& pairs() { return pairs_; }
    const PairTable& pairs() const { return pairs_; }
    // Ids whose merges must be recorded for SentencePiece's resegmentation of unused pieces.
    void set_unused(std::vector<bool> unused) { unused_ = std::move(unused); }

    // Merges `syms` in place; on return it holds the surviving symbols in order. When `rev` is
    // given, every merge producing an unused id records its two parts there.
    void merge(std::vector<BpeSymbol>& syms, BpeWork& work,
               std::unordered_map<int32_t, std::pair<int32_t, int32_t>>* rev = nullptr) const;

private:
    PairTable pairs_;
    std::vector<bool> unused_;
};

}  // namespace zs::io
