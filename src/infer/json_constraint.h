// JsonMatcher: an incremental recogniser of JSON documents under a JsonGrammar (json_grammar.h),
// over BYTES, UTF-8 aware — the per-sequence state of response_format constrained decoding.
//
//   auto g = JsonGrammar::from_schema(schema);       // once per request, shared
//   JsonMatcher m(g);                                // one per sequence
//   m.fill_mask(index, allowed);                     // tokens that keep the output valid
//   m.accept_bytes(index.bytes(token));              // after sampling one of them
//   m.can_end(); m.done();                           // EOS allowed / nothing more possible
//
// The recogniser is a pushdown automaton: a stack of frames (the document, each open object,
// array, string, number or literal with its local state and counters). anyOf/oneOf and type
// arrays fork the stack, so the state is a small set of stacks (deduplicated; usually one).
// Stacks are persistent: frames live in an arena and point to their parent, so a fork or a
// saved state costs an index, and the mask walk undoes a byte by truncating the arena.
//
// Invariant: every accepted prefix can still be completed into a valid document (escapes,
// surrogate pairs and UTF-8 are checked at the first byte that breaks them; the grammar has no
// dead ends, see JsonGrammar's pruning), so some byte can always follow until done(). A token
// mask can still be empty if a schema needs more than kJsonMaxNesting levels, or if the
// vocabulary lacks a byte the document needs (byte-level BPE and byte-fallback vocabularies have
// them all); the engine then ends the sequence. What is accepted: JSON text (RFC 8259) with
// no whitespace after the top-level value, at most kJsonMaxWhitespace consecutive whitespace
// bytes elsewhere, at most kJsonMaxNesting open containers, and numbers within the digit limits
// of json_grammar.h (so they stay in double range).
//
// Mask (fill_mask): for each stack, a depth-first walk of the vocabulary trie with the stack's
// state, a rejected byte pruning the subtree; inside string content the plain tokens come from
// per-token UTF-8 tables instead, and only the tokens with '"', '\\' or control bytes are
// walked. Not thread-safe: one matcher per sequence, used by the engine thread. Copyable (a copy
// is an independent state: tests try bytes on copies).
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "infer/json_grammar.h"
#include "infer/token_index.h"

namespace zs::infer {

class JsonMatcher {
public:
    explicit JsonMatcher(std::shared_ptr<const JsonGrammar> grammar);

    // Feeds bytes; true when the output is still a prefix of some valid document. On false the
    // state is unchanged. Empty input is accepted.
    bool accept_bytes(std::string_view bytes);
    // A complete value has been produced (the output may end here; EOS may be allowed).
    bool can_end() const;
    // A complete value has been produced and no byte can follow it.
    bool done() const;

    // allowed[id] = 1 for each token of `index` whose bytes accept_bytes would take now, 0 for
    // the others (ids [0, index.size())). Tokens without bytes are never allowed; EOS is the
    // caller's (allowed when can_end()). Returns the number allowed. The state is unchanged.
    int64_t fill_mask(const TokenIndex& index, uint8_t* allowed);

    const JsonGrammar& grammar() const { return *g_; }
    size_t n_stacks() const { return stacks_.size(); }

private:
    struct Frame {
        uint32_t parent;  // arena index, kNone at the bottom (the document frame)
        uint32_t node;    // grammar node
        uint32_t a;       // object: key-trie node; array: items so far; string: characters;
                          // number: digits in the current part; literal: trie node
        uint32_t b;       // object: last property + 1; string: UTF-8 state | \u escape digits
        uint16_t depth;   // open containers including this one
        uint8_t kind;     // FrameKind
        uint8_t state;
        uint8_t ws;  // consecutive whitespace bytes
    };

    uint32_t push(const Frame& f);
    void step(uint32_t top, uint8_t c, std::vector<uint32_t>& out);
    void start(uint32_t node, uint32_t parent, uint8_t c, std::vector<uint32_t>& out);
    void finish_child(uint32_t parent, int pass, std::vector<uint32_t>& out);
    void whitespace(uint32_t top, std::vector<uint32_t>& out);
    void step_object(uint32_t top, uint8_t c, std::vector<uint32_t>& out);
    void step_array(uint32_t top, uint8_t c, std::vector<uint32_t>& out);
    void step_string(uint32_t top, uint8_t c, std::vector<uint32_t>& out);
    void step_number(uint32_t top, uint8_t c, std::vector<uint32_t>& out);
    void step_literal(uint32_t top, uint8_t c, std::vector<uint32_t>& out);
    bool same_stack(uint32_t x, uint32_t y) const;
    void dedupe(std::vector<uint32_t>& tops) const;
    bool stack_can_end(uint32_t top) const;
    void compact();
    void walk(const TokenIndex::Trie& trie, uint32_t top, uint8_t* allowed);

    // Buffers reused across calls; a copy of the matcher starts with empty ones.
    struct Scratch {
        Scratch() = default;
        Scratch(const Scratch&) {}
        Scratch& operator=(const Scratch&) { return *this; }
        std::vector<uint32_t> next, cur;
        std::vector<std::vector<uint32_t>> level;  // walk: stacks at each trie depth
        std::vector<size_t> mark;                  // walk: arena size at each trie depth
    };

    std::shared_ptr<const JsonGrammar> g_;
    std::vector<Frame> arena_;
    std::vector<uint32_t> stacks_;  // top frame of each live stack
    Scratch scratch_;
};

}  // namespace zs::infer
