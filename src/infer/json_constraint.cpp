// JsonMatcher: the byte-level steps of each frame kind, stack sets, and the token mask walk.
#include "infer/json_constraint.h"

#include <algorithm>
#include <utility>

#include "base/error.h"

namespace zs::infer {

namespace {

constexpr uint32_t kNone = UINT32_MAX;
constexpr size_t kMaxStacks = 64;  // forks beyond this are dropped (each kept one stays valid)

// Plain enums, not enum class: they live in Frame's uint8_t fields and are compared there.
enum FrameKind : uint8_t { kDoc, kObject, kArray, kString, kNumber, kLiteral };
enum DocState : uint8_t { kDocValue, kDocIn, kDocDone };
enum ObjState : uint8_t {
    kObjOpen,     // after '{'
    kObjKey,      // inside a declared key (a: key-trie node)
    kObjColon,    // after a key
    kObjValue,    // after ':'
    kObjInValue,  // a value frame is above
    kObjAfter,    // after a value
    kObjComma,    // after ','
    kObjInKey,    // a free key's string frame is above
};
enum ArrState : uint8_t { kArrOpen, kArrInValue, kArrAfter, kArrComma };
enum StrState : uint8_t { kStrBody, kStrEsc, kStrHex, kStrLowBackslash, kStrLowU, kStrLowHex };
enum NumState : uint8_t {
    kNumMinus,
    kNumZero,
    kNumInt,
    kNumDot,
    kNumFrac,
    kNumE,
    kNumSign,
    kNumExp
};

bool is_ws(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }
int hex_value(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

}  // namespace

JsonMatcher::JsonMatcher(std::shared_ptr<const JsonGrammar> grammar) : g_(std::move(grammar)) {
    ZS_ASSERT(g_ != nullptr);
    Frame doc{};
    doc.parent = kNone;
    doc.kind = kDoc;
    doc.state = kDocValue;
    stacks_.push_back(push(doc));
}

uint32_t JsonMatcher::push(const Frame& f) {
    arena_.push_back(f);
    return static_cast<uint32_t>(arena_.size() - 1);
}

void JsonMatcher::whitespace(uint32_t top, std::vector<uint32_t>& out) {
    Frame f = arena_[top];
    if (f.ws >= kJsonMaxWhitespace) return;
    ++f.ws;
    out.push_back(push(f));
}

void JsonMatcher::step(uint32_t top, uint8_t c, std::vector<uint32_t>& out) {
    switch (arena_[top].kind) {
        case kDoc: {
            Frame f = arena_[top];
            if (f.state != kDocValue) return;
            if (is_ws(c)) return whitespace(top, out);
            f.state = kDocIn;
            f.ws = 0;
            return start(g_->root(), push(f), c, out);
        }
        case kObject:
            return step_object(top, c, out);
        case kArray:
            return step_array(top, c, out);
        case kString:
            return step_string(top, c, out);
        case kNumber:
            return step_number(top, c, out);
        case kLiteral:
            return step_literal(top, c, out);
        default:
            ZS_ASSERT(false, "bad frame kind {}", arena_[top].kind);
    }
}

// A value of `node` begins with byte c under frame `parent` (already in its "in value" state).
void JsonMatcher::start(uint32_t node, uint32_t parent, uint8_t c, std::vector<uint32_t>& out) {
    const JsonNode& n = g_->node(node);
    Frame f{};
    f.parent = parent;
    f.node = node;
    f.depth = arena_[parent].depth;
    switch (n.kind) {
        case JsonNodeKind::any:
            if (c == '{') return start(JsonGrammar::kFreeObject, parent, c, out);
            if (c == '[') return start(JsonGrammar::kFreeArray, parent, c, out);
            if (c == '"') return start(JsonGrammar::kFreeString, parent, c, out);
            if (c == '-' || is_digit(c)) return start(JsonGrammar::kNumber, parent, c, out);
            return start(JsonGrammar::kTrueFalseNull, parent, c, out);
        case JsonNodeKind::object:
            if (c != '{' || f.depth >= kJsonMaxNesting) return;
            f.kind = kObject;
            f.state = kObjOpen;
            ++f.depth;
            out.push_back(push(f));
            return;
        case JsonNodeKind::array:
            if (c != '[' || f.depth >= kJsonMaxNesting) return;
            f.kind = kArray;
            f.state = kArrOpen;
            ++f.depth;
            out.push_back(push(f));
            return;
        case JsonNodeKind::string:
            if (c != '"') return;
            f.kind = kString;
            f.state = kStrBody;
            out.push_back(push(f));
            return;
        case JsonNodeKind::number:
            f.kind = kNumber;
            if (c == '-') {
                f.state = kNumMinus;
            } else if (c == '0') {
                f.state = kNumZero;
            } else if (is_digit(c)) {
                f.state = kNumInt;
                f.a = 1;
            } else {
                return;
            }
            out.push_back(push(f));
            return;
        case JsonNodeKind::literals: {
            const int64_t child = n.literals.child(0, c);
            if (child < 0) return;
            const JsonTrie::Node& tn = n.literals.nodes[static_cast<size_t>(child)];
            if (tn.tag >= 0 && tn.edge_begin == tn.edge_end) return finish_child(parent, -1, out);
            f.kind = kLiteral;
            f.a = static_cast<uint32_t>(child);
            out.push_back(push(f));
            return;
        }
        case JsonNodeKind::union_:
            for (uint32_t alt : n.alternatives) start(alt, parent, c, out);
            return;
        case JsonNodeKind::pending:
            ZS_ASSERT(false, "unresolved grammar node {}", node);
    }
}

// The value above `parent` is complete: the parent moves on; `pass` (a byte, or -1) is the byte
// that ended a number or literal, fed to the parent next.
void JsonMatcher::finish_child(uint32_t parent, int pass, std::vector<uint32_t>& out) {
    Frame f = arena_[parent];
    switch (f.kind) {
        case kDoc:
            f.state = kDocDone;
            break;
        case kObject:
            f.state = f.state == kObjInKey ? kObjColon : kObjAfter;
            break;
        case kArray:
            f.state = kArrAfter;
            ++f.a;
            break;
        default:
            ZS_ASSERT(false, "a value finished inside a scalar frame");
    }
    f.ws = 0;
    const uint32_t q = push(f);
    if (pass >= 0) return step(q, static_cast<uint8_t>(pass), out);
    out.push_back(q);
}

void JsonMatcher::step_object(uint32_t top, uint8_t c, std::vector<uint32_t>& out) {
    Frame f = arena_[top];
    const JsonNode& n = g_->node(f.node);
    const auto np = static_cast<uint32_t>(n.props.size());
    // Declared properties come in schema order: after property b - 1 the next one is any of
    // [b, first_required[b]] (the optional ones up to the next required one).
    auto next_hi = [&](uint32_t b) { return std::min(n.first_required[b], np - 1); };
    const bool more = n.free_keys || f.b < np;
    f.ws = 0;
    switch (f.state) {
        case kObjOpen:
        case kObjComma:
            if (is_ws(c)) return whitespace(top, out);
            if (c == '"' && more) {
                if (n.free_keys) {
                    f.state = kObjInKey;
                    Frame s{};
                    s.parent = push(f);
                    s.node = JsonGrammar::kFreeString;
                    s.depth = f.depth;
                    s.kind = kString;
                    s.state = kStrBody;
                    out.push_back(push(s));
                } else {
                    f.state = kObjKey;
                    f.a = 0;
                    out.push_back(push(f));
                }
                return;
            }
            if (c == '}' && f.state == kObjOpen && (n.free_keys || n.first_required[0] == np)) {
                return finish_child(f.parent, -1, out);
            }
            return;
        case kObjKey: {
            const int64_t child = n.keys.child(f.a, c);
            if (child < 0) return;
            const auto ch = static_cast<uint32_t>(child);
            if (!n.keys.has_tag_in(ch, f.b, next_hi(f.b))) return;
            const int32_t tag = n.keys.nodes[ch].tag;
            if (tag >= 0) {  // the closing quote: keys hold no other raw '"'
                f.state = kObjColon;
                f.b = static_cast<uint32_t>(tag) + 1;
            } else {
                f.a = ch;
            }
            out.push_back(push(f));
            return;
        }
        case kObjColon:
            if (is_ws(c)) return whitespace(top, out);
            if (c != ':') return;
            f.state = kObjValue;
            out.push_back(push(f));
            return;
        case kObjValue: {
            if (is_ws(c)) return whitespace(top, out);
            f.state = kObjInValue;
            const uint32_t value = n.free_keys ? n.free_value : n.props[f.b - 1].value;
            return start(value, push(f), c, out);
        }
        case kObjAfter:
            if (is_ws(c)) return whitespace(top, out);
            if (c == ',' && more) {
                f.state = kObjComma;
                out.push_back(push(f));
                return;
            }
            if (c == '}' && (n.free_keys || n.first_required[f.b] == np)) {
                return finish_child(f.parent, -1, out);
            }
            return;
        default:
            return;
    }
}

void JsonMatcher::step_array(uint32_t top, uint8_t c, std::vector<uint32_t>& out) {
    Frame f = arena_[top];
    const JsonNode& n = g_->node(f.node);
    f.ws = 0;
    switch (f.state) {
        case kArrOpen:
        case kArrComma:
            if (is_ws(c)) return whitespace(top, out);
            if (c == ']') {
                if (f.state == kArrOpen && n.min_items == 0) finish_child(f.parent, -1, out);
                return;
            }
            if (f.a >= n.max_items) return;
            f.state = kArrInValue;
            return start(n.items, push(f), c, out);
        case kArrAfter:
            if (is_ws(c)) return whitespace(top, out);
            if (c == ',' && f.a < n.max_items) {
                f.state = kArrComma;
                out.push_back(push(f));
                return;
            }
            if (c == ']' && f.a >= n.min_items) finish_child(f.parent, -1, out);
            return;
        default:
            return;
    }
}

void JsonMatcher::step_string(uint32_t top, uint8_t c, std::vector<uint32_t>& out) {
    Frame f = arena_[top];
    const JsonNode& n = g_->node(f.node);
    // b: bits 0-3 the UTF-8 state, 4-6 the \u digits read, 8-23 their value.
    const uint32_t digits = (f.b >> 4) & 7;
    switch (f.state) {
        case kStrBody: {
            const auto u = static_cast<uint8_t>(f.b & 15);
            if (u != 0) {
                const uint8_t nu = utf8_step(u, c);
                if (nu == kUtf8Bad) return;
                f.b = nu;
                out.push_back(push(f));
                return;
            }
            if (c == '"') {
                if (f.a >= n.min_length) finish_child(f.parent, -1, out);
                return;
            }
            if (f.a >= n.max_length) return;
            if (c == '\\') {
                f.state = kStrEsc;
                ++f.a;
                out.push_back(push(f));
                return;
            }
            if (c < 0x20) return;
            const uint8_t nu = utf8_step(0, c);
            if (nu == kUtf8Bad) return;
            ++f.a;
            f.b = nu;
            out.push_back(push(f));
            return;
        }
        case kStrEsc:
            if (c == 'u') {
                f.state = kStrHex;
                f.b = 0;
            } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' ||
                       c == 'r' || c == 't') {
                f.state = kStrBody;
            } else {
                return;
            }
            out.push_back(push(f));
            return;
        case kStrHex: {
            const int h = hex_value(c);
            if (h < 0) return;
            const uint32_t v = ((f.b >> 8) << 4) | static_cast<uint32_t>(h);
            // A low surrogate (DC00-DFFF) cannot come first: refuse at its second digit.
            if (digits == 1 && v >= 0xDC && v <= 0xDF) return;
            if (digits == 3) {
                f.state = v >= 0xD800 && v <= 0xDBFF ? kStrLowBackslash : kStrBody;
                f.b = 0;
            } else {
                f.b = (v << 8) | ((digits + 1) << 4);
            }
            out.push_back(push(f));
            return;
        }
        case kStrLowBackslash:
        case kStrLowU:
            if (c != (f.state == kStrLowBackslash ? '\\' : 'u')) return;
            f.state = f.state == kStrLowBackslash ? kStrLowU : kStrLowHex;
            f.b = 0;
            out.push_back(push(f));
            return;
        case kStrLowHex: {
            const int h = hex_value(c);
            // DC00-DFFF: 'd', then 'c'-'f', then any two.
            if (h < 0 || (digits == 0 && h != 0xD) || (digits == 1 && h < 0xC)) return;
            if (digits == 3) {
                f.state = kStrBody;
                f.b = 0;
            } else {
                f.b = (digits + 1) << 4;
            }
            out.push_back(push(f));
            return;
        }
        default:
            return;
    }
}

void JsonMatcher::step_number(uint32_t top, uint8_t c, std::vector<uint32_t>& out) {
    Frame f = arena_[top];
    const bool integer = g_->node(f.node).integer;
    auto go = [&](uint8_t state, uint32_t a) {
        f.state = state;
        f.a = a;
        out.push_back(push(f));
    };
    const bool digit = is_digit(c);
    const bool dot = c == '.' && !integer;
    const bool exp = (c == 'e' || c == 'E') && !integer;
    switch (f.state) {
        case kNumMinus:
            if (c == '0') return go(kNumZero, 0);
            if (digit) return go(kNumInt, 1);
            return;
        case kNumZero:
        case kNumInt:
            if (digit && f.state == kNumInt) {
                if (f.a <
                    static_cast<uint32_t>(integer ? kJsonMaxIntegerDigits : kJsonMaxIntDigits)) {
                    go(kNumInt, f.a + 1);
                }
                return;
            }
            if (dot) return go(kNumDot, 0);
            if (exp) return go(kNumE, 0);
            break;
        case kNumDot:
            if (digit) go(kNumFrac, 1);
            return;
        case kNumFrac:
            if (digit) {
                if (f.a < kJsonMaxFracDigits) go(kNumFrac, f.a + 1);
                return;
            }
            if (exp) return go(kNumE, 0);
            break;
        case kNumE:
            if (c == '+' || c == '-') return go(kNumSign, 0);
            if (digit) go(kNumExp, 1);
            return;
        case kNumSign:
            if (digit) go(kNumExp, 1);
            return;
        case kNumExp:
            if (digit) {
                if (f.a < kJsonMaxExpDigits) go(kNumExp, f.a + 1);
                return;
            }
            break;
        default:
            return;
    }
    // A complete number ends at the first byte that cannot continue it; the parent takes it.
    finish_child(f.parent, c, out);
}

void JsonMatcher::step_literal(uint32_t top, uint8_t c, std::vector<uint32_t>& out) {
    Frame f = arena_[top];
    const JsonTrie& t = g_->node(f.node).literals;
    const int64_t child = t.child(f.a, c);
    if (child >= 0) {
        const JsonTrie::Node& tn = t.nodes[static_cast<size_t>(child)];
        if (tn.tag >= 0 && tn.edge_begin == tn.edge_end) return finish_child(f.parent, -1, out);
        f.a = static_cast<uint32_t>(child);
        out.push_back(push(f));
        return;
    }
    // A literal that is a prefix of a longer one (a number: 1 and 10) ends at the first byte
    // that does not continue it.
    if (t.nodes[f.a].tag >= 0) finish_child(f.parent, c, out);
}

bool JsonMatcher::same_stack(uint32_t x, uint32_t y) const {
    while (x != y) {
        if (x == kNone || y == kNone) return false;
        const Frame& a = arena_[x];
        const Frame& b = arena_[y];
        if (a.node != b.node || a.a != b.a || a.b != b.b || a.depth != b.depth ||
            a.kind != b.kind || a.state != b.state || a.ws != b.ws) {
            return false;
        }
        x = a.parent;
        y = b.parent;
    }
    return true;
}

void JsonMatcher::dedupe(std::vector<uint32_t>& tops) const {
    size_t n = 0;
    for (size_t i = 0; i < tops.size(); ++i) {
        bool dup = false;
        for (size_t j = 0; j < n && !dup; ++j) dup = same_stack(tops[i], tops[j]);
        if (!dup && n < kMaxStacks) tops[n++] = tops[i];
    }
    tops.resize(n);
}

bool JsonMatcher::accept_bytes(std::string_view bytes) {
    const size_t mark = arena_.size();
    std::vector<uint32_t>& cur = scratch_.cur;
    std::vector<uint32_t>& next = scratch_.next;
    cur = stacks_;
    for (char ch : bytes) {
        next.clear();
        for (uint32_t top : cur) step(top, static_cast<uint8_t>(ch), next);
        if (next.size() > 1) dedupe(next);
        if (next.empty()) {
            arena_.resize(mark);
            return false;
        }
        std::swap(cur, next);
    }
    stacks_ = cur;
    compact();
    return true;
}

// Drop the frames no live stack reaches (a parent always precedes its children in the arena).
void JsonMatcher::compact() {
    std::vector<uint32_t> remap(arena_.size(), kNone);
    for (uint32_t top : stacks_) {
        for (uint32_t i = top; i != kNone && remap[i] == kNone; i = arena_[i].parent) remap[i] = 0;
    }
    uint32_t n = 0;
    for (size_t i = 0; i < arena_.size(); ++i) {
        if (remap[i] == kNone) continue;
        Frame f = arena_[i];
        if (f.parent != kNone) f.parent = remap[f.parent];
        remap[i] = n;
        arena_[n++] = f;
    }
    arena_.resize(n);
    for (uint32_t& top : stacks_) top = remap[top];
}

bool JsonMatcher::stack_can_end(uint32_t top) const {
    const Frame& f = arena_[top];
    switch (f.kind) {
        case kDoc:
            return f.state == kDocDone;
        case kNumber:
            if (f.state != kNumZero && f.state != kNumInt && f.state != kNumFrac &&
                f.state != kNumExp) {
                return false;
            }
            return arena_[f.parent].kind == kDoc;
        case kLiteral:
            return g_->node(f.node).literals.nodes[f.a].tag >= 0 && arena_[f.parent].kind == kDoc;
        default:
            return false;
    }
}

bool JsonMatcher::can_end() const {
    return std::any_of(stacks_.begin(), stacks_.end(),
                       [&](uint32_t t) { return stack_can_end(t); });
}

bool JsonMatcher::done() const {
    // Complete with nothing that could follow: the document closed, or a top-level number that
    // can take no more bytes (an integer "0", or digits at their limit).
    return std::all_of(stacks_.begin(), stacks_.end(), [&](uint32_t t) {
        const Frame& f = arena_[t];
        if (f.kind == kDoc) return f.state == kDocDone;
        if (f.kind != kNumber || !stack_can_end(t)) return false;
        const bool integer = g_->node(f.node).integer;
        switch (f.state) {
            case kNumZero:
                return integer;
            case kNumInt:
                return integer && f.a >= static_cast<uint32_t>(kJsonMaxIntegerDigits);
            case kNumExp:
                return f.a >= static_cast<uint32_t>(kJsonMaxExpDigits);
            default:
                return false;
        }
    });
}

// Depth-first over the trie in preorder: scratch_.level[d] holds the stacks after the first d bytes
// of the current path, scratch_.mark[d] the arena size then (truncating to it undoes deeper bytes).
void JsonMatcher::walk(const TokenIndex::Trie& trie, uint32_t top, uint8_t* allowed) {
    const size_t n = trie.n_nodes();
    if (n == 0) return;
    scratch_.level[0].assign(1, top);
    scratch_.mark[0] = arena_.size();
    for (size_t i = 0; i < n;) {
        const TokenIndex::Trie::Node& node = trie.nodes[i];
        const size_t d = node.depth;
        arena_.resize(scratch_.mark[d - 1]);
        std::vector<uint32_t>& here = scratch_.level[d];
        here.clear();
        for (uint32_t s : scratch_.level[d - 1]) step(s, node.byte, here);
        if (here.empty()) {
            i = node.end;
            continue;
        }
        if (here.size() > 1) dedupe(here);
        for (uint32_t k = node.tok_begin; k < trie.nodes[i + 1].tok_begin; ++k) {
            allowed[trie.tokens[k]] = 1;
        }
        scratch_.mark[d] = arena_.size();
        ++i;
    }
    arena_.resize(scratch_.mark[0]);
}

int64_t JsonMatcher::fill_mask(const TokenIndex& index, uint8_t* allowed) {
    std::fill(allowed, allowed + index.size(), uint8_t{0});
    const size_t levels = index.max_token_bytes() + 1;
    if (scratch_.level.size() < levels) scratch_.level.resize(levels);
    if (scratch_.mark.size() < levels) scratch_.mark.resize(levels);
    for (size_t s = 0; s < stacks_.size(); ++s) {  // walk() leaves stacks_ and their frames as is
        const uint32_t top = stacks_[s];
        const Frame f = arena_[top];
        if (f.kind == kString && f.state == kStrBody) {
            // String content: plain tokens by table, the rest through their own trie.
            const JsonNode& n = g_->node(f.node);
            const uint32_t room = n.max_length - f.a;
            const auto u = static_cast<size_t>(f.b & 15);
            const std::vector<int32_t>& plain = index.plain();
            const uint8_t* exit = index.plain_exit().data();
            const uint32_t* chars = index.plain_chars().data();
            // Branch-free: under a maxLength the length test is a coin flip per token.
            for (size_t i = 0; i < plain.size(); ++i) {
                allowed[plain[i]] |= static_cast<uint8_t>((exit[i * kUtf8States + u] != kUtf8Bad) &
                                                          (chars[i] <= room));
            }
            walk(index.not_plain(), top, allowed);
        } else {
            walk(index.all(), top, allowed);
        }
    }
    int64_t count = 0;
    for (int64_t i = 0; i < index.size(); ++i) count += allowed[i];
    return count;
}

}  // namespace zs::infer
