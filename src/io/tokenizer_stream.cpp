// StreamDecoder (see tokenizer_stream.h).
#include "io/tokenizer_stream.h"

#include "io/tokenizer_utf8.h"

namespace zs::io {

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special, bool at_sequence_start)
    : tok_(tokenizer), skip_special_(skip_special) {
    state_.at_start = at_sequence_start;
}

std::string StreamDecoder::push(int32_t id) {
    tok_.append_bytes(id, skip_special_, state_, pending_);
    // Everything up to an incomplete trailing sequence is final: a lead byte always starts a
    // new maximal subpart, so repairing the prefix alone gives the same text as repairing all.
    size_t ready = pending_.size() - utf8_incomplete_tail(pending_);
    std::string out;
    append_utf8_lossy(out, std::string_view(pending_).substr(0, ready));
    pending_.erase(0, ready);
    return out;
}

size_t StreamDecoder::drop_incomplete() {
    const size_t n = pending_.size();
    pending_.clear();
    return n;
}

std::string StreamDecoder::flush() {
    std::string out;
    append_utf8_lossy(out, pending_);
    pending_.clear();
    return out;
}

}  // namespace zs::io
