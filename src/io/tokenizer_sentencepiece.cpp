// SentencePiece tokenizer.model (a ModelProto protobuf) -> TokenizerSpec, with a small wire-format
// reader of our own. Read: pieces (piece = 1, score = 2, type = 3), trainer_spec (model_type = 3,
// treat_whitespace_as_suffix = 24, byte_fallback = 35, unk/bos/eos/pad_id = 40-43) and
// normalizer_spec (name = 1, precompiled_charsmap = 2, add_dummy_prefix = 3,
// remove_extra_whitespaces = 4, escape_whitespaces = 5). Every length is checked against the bytes
// left before use; a truncated or malformed file raises IoError naming the field and offset.
#include <cstring>
#include <limits>

#include "base/error.h"
#include "io/tokenizer_impl.h"

namespace zs::io {

namespace {

// Protobuf wire format: (field << 3 | wire type) tags, varints, fixed 32/64-bit values and
// length-delimited bytes.
class WireReader {
public:
    WireReader(std::string_view data, const std::string& path, std::string what, size_t base)
        : data_(data), path_(path), what_(std::move(what)), base_(base) {}

    bool done() const { return pos_ >= data_.size(); }
    size_t offset() const { return base_ + pos_; }

    // Reads the next tag.
    void tag(uint32_t& field, uint32_t& wire) {
        uint64_t t = varint();
        field = static_cast<uint32_t>(t >> 3);
        wire = static_cast<uint32_t>(t & 7);
        ZS_CHECK_T(IoError, field != 0 && t <= std::numeric_limits<uint32_t>::max(),
                   "{}: malformed protobuf in {} at byte {}: bad tag {}", path_, what_, offset(),
                   t);
    }
    uint64_t varint() {
        uint64_t v = 0;
        for (int shift = 0; shift < 64; shift += 7) {
            need(1, "varint");
            auto b = static_cast<uint8_t>(data_[pos_++]);
            v |= static_cast<uint64_t>(b & 0x7F) << shift;
            if (b < 0x80) return v;
        }
        ZS_THROW(IoError, "{}: malformed protobuf in {} at byte {}: varint longer than 10 bytes",
                 path_, what_, offset());
    }
    float fixed32_float() {
        need(4, "fixed32");
        uint32_t u = 0;
        for (int i = 0; i < 4; ++i)
            u |= static_cast<uint32_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
        pos_ += 4;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
    std::string_view bytes() {
        uint64_t n = varint();
        ZS_CHECK_T(IoError, n <= data_.size() - pos_,
                   "{}: truncated protobuf in {} at byte {}: a {}-byte field with {} bytes left",
                   path_, what_, offset(), n, data_.size() - pos_);
        std::string_view v = data_.substr(pos_, n);
        pos_ += n;
        return v;
    }
    void skip(uint32_t wire) {
        switch (wire) {
            case 0:
                varint();
                return;
            case 1:
                need(8, "fixed64");
                pos_ += 8;
                return;
            case 2:
                bytes();
                return;
            case 5:
                need(4, "fixed32");
                pos_ += 4;
                return;
            default:
                ZS_THROW(IoError, "{}: malformed protobuf in {} at byte {}: wire type {}", path_,
                         what_, offset(), wire);
        }
    }
    void expect(uint32_t wire, uint32_t want, uint32_t field) const {
        ZS_CHECK_T(IoError, wire == want,
                   "{}: malformed protobuf in {}: field {} has wire type {}, expected {}", path_,
                   what_, field, wire, want);
    }
    size_t position() const { return pos_; }

private:
    void need(size_t n, const char* kind) const {
        ZS_CHECK_T(IoError, n <= data_.size() - pos_,
                   "{}: truncated protobuf in {} at byte {}: {} needs {} bytes, {} left", path_,
                   what_, offset(), kind, n, data_.size() - pos_);
    }
    std::string_view data_;
    const std::string& path_;
    std::string what_;
    size_t base_;
    size_t pos_ = 0;
};

struct Trainer {
    int64_t model_type = 1;  // proto default UNIGRAM
    bool byte_fallback = false;
    bool whitespace_suffix = false;
    int32_t unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
};

struct Normalizer {
    std::string name;
    size_t charsmap_bytes = 0;
    bool add_dummy_prefix = true;
    bool remove_extra_whitespaces = true;
    bool escape_whitespaces = true;
};

int32_t as_int32(uint64_t v) { return static_cast<int32_t>(static_cast<int64_t>(v)); }

Trainer read_trainer(WireReader w) {
    Trainer t;
    while (!w.done()) {
        uint32_t f, wire;
        w.tag(f, wire);
        switch (f) {
            case 3:
                w.expect(wire, 0, f);
                t.model_type = static_cast<int64_t>(w.varint());
                break;
            case 24:
                w.expect(wire, 0, f);
                t.whitespace_suffix = w.varint() != 0;
                break;
            case 35:
                w.expect(wire, 0, f);
                t.byte_fallback = w.varint() != 0;
                break;
            case 40:
            case 41:
            case 42:
            case 43: {
                w.expect(wire, 0, f);
                int32_t v = as_int32(w.varint());
                (f == 40 ? t.unk_id : f == 41 ? t.bos_id : f == 42 ? t.eos_id : t.pad_id) = v;
                break;
            }
            default:
                w.skip(wire);
        }
    }
    return t;
}

Normalizer read_normalizer(WireReader w) {
    Normalizer n;
    while (!w.done()) {
        uint32_t f, wire;
        w.tag(f, wire);
        if (f == 1 || f == 2) {
            w.expect(wire, 2, f);
            std::string_view v = w.bytes();
            if (f == 1) n.name = std::string(v);
            if (f == 2) n.charsmap_bytes = v.size();
        } else if (f >= 3 && f <= 5) {
            w.expect(wire, 0, f);
            bool v = w.varint() != 0;
            (f == 3   ? n.add_dummy_prefix
             : f == 4 ? n.remove_extra_whitespaces
                      : n.escape_whitespaces) = v;
        } else {
            w.skip(wire);
        }
    }
    return n;
}

TokenType piece_type(uint64_t t, const std::string& path, size_t index) {
    switch (t) {
        case 1:
            return TokenType::kNormal;
        case 2:
            return TokenType::kUnknown;
        case 3:
            return TokenType::kControl;
        case 4:
            return TokenType::kUserDefined;
        case 5:
            return TokenType::kUnused;
        case 6:
            return TokenType::kByte;
        default:
            ZS_THROW(IoError, "{}: pieces[{}].type is {}, expected 1-6", path, index, t);
    }
}

}  // namespace

TokenizerSpec load_sentencepiece_model(const std::string& path) {
    std::string data = read_tokenizer_file(path);
    TokenizerSpec spec;
    spec.name = path;
    spec.model = TokenizerModel::kSentencePieceBpe;
    Trainer trainer;
    Normalizer norm;
    bool has_trainer = false, has_normalizer = false;
    WireReader top(data, path, "ModelProto", 0);
    while (!top.done()) {
        uint32_t f, wire;
        top.tag(f, wire);
        if (f < 1 || f > 3) {
            top.skip(wire);
            continue;
        }
        top.expect(wire, 2, f);
        std::string_view msg = top.bytes();
        size_t at = top.offset() - msg.size();
        if (f == 2) {
            trainer = read_trainer(WireReader(msg, path, "trainer_spec", at));
            has_trainer = true;
        } else if (f == 3) {
            norm = read_normalizer(WireReader(msg, path, "normalizer_spec", at));
            has_normalizer = true;
        } else {
            size_t index = spec.tokens.size();
            WireReader p(msg, path, fmt::format("pieces[{}]", index), at);
            std::string piece;
            float score = 0.0f;
            TokenType type = TokenType::kNormal;
            while (!p.done()) {
                uint32_t pf, pw;
                p.tag(pf, pw);
                if (pf == 1) {
                    p.expect(pw, 2, pf);
                    piece = std::string(p.bytes());
                } else if (pf == 2) {
                    p.expect(pw, 5, pf);
                    score = p.fixed32_float();
                } else if (pf == 3) {
                    p.expect(pw, 0, pf);
                    type = piece_type(p.varint(), path, index);
                } else {
                    p.skip(pw);
                }
            }
            ZS_CHECK_T(IoError, !piece.empty(), "{}: pieces[{}] has an empty piece", path, index);
            spec.tokens.push_back(std::move(piece));
            spec.scores.push_back(score);
            spec.types.push_back(type);
        }
    }
    ZS_CHECK_T(IoError, !spec.tokens.empty(), "{}: no pieces (not a SentencePiece model?)", path);
    ZS_CHECK_T(IoError, has_trainer, "{}: trainer_spec is missing (truncated file?)", path);
    ZS_CHECK_T(NotSupported, trainer.model_type == 2,
               "{}: trainer_spec.model_type is {} ({}); only BPE (2) is supported", path,
               trainer.model_type,
               trainer.model_type == 1   ? "unigram"
               : trainer.model_type == 3 ? "word"
               : trainer.model_type == 4 ? "char"
                                         : "unknown");
    ZS_CHECK_T(NotSupported, !trainer.whitespace_suffix,
               "{}: trainer_spec.treat_whitespace_as_suffix is not supported", path);
    (void)has_normalizer;  // absent: the proto defaults (dummy prefix, whitespace removal) apply
    ZS_CHECK_T(NotSupported, norm.charsmap_bytes == 0,
               "{}: normalizer_spec '{}' has a {}-byte precompiled_charsmap (NFKC-style "
               "normalization is not supported; 'identity' is)",
               path, norm.name, norm.charsmap_bytes);
    ZS_CHECK_T(NotSupported, norm.escape_whitespaces,
               "{}: normalizer_spec.escape_whitespaces = false is not supported", path);

    auto n = static_cast<int32_t>(spec.tokens.size());
    auto id_of = [&](int32_t id, TokenType want) -> std::optional<int32_t> {
        if (id < 0 || id >= n || spec.types[static_cast<size_t>(id)] != want) return std::nullopt;
        return id;
    };
    spec.unk_id = id_of(trainer.unk_id, TokenType::kUnknown);
    spec.bos_id = id_of(trainer.bos_id, TokenType::kControl);
    spec.eos_id = id_of(trainer.eos_id, TokenType::kControl);
    spec.pad_id = id_of(trainer.pad_id, TokenType::kControl);
    spec.add_bos = spec.bos_id.has_value();  // Llama convention (HF LlamaTokenizer)
    spec.byte_fallback = trainer.byte_fallback;
    spec.add_prefix_space = norm.add_dummy_prefix;
    spec.remove_extra_whitespaces = norm.remove_extra_whitespaces;
    spec.leading_space = norm.add_dummy_prefix || norm.remove_extra_whitespaces
                             ? LeadingSpace::kStripFirstPiece
                             : LeadingSpace::kKeep;
    // Control and unknown pieces are matched literally in text, as HF's converted Llama
    // tokenizers do (sentencepiece itself never produces them from text).
    for (int32_t id = 0; id < n; ++id) {
        TokenType t = spec.types[static_cast<size_t>(id)];
        if (t == TokenType::kControl || t == TokenType::kUnknown) {
            spec.added_tokens.push_back({id, spec.tokens[static_cast<size_t>(id)]});
        }
    }
    return spec;
}

}  // namespace zs::io
