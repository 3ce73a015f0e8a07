// StreamDecoder: detokenizes one id at a time for streaming output.
//
// push(id) returns the text that became complete with this id: never half a UTF-8 character (an
// incomplete byte sequence is held until its remaining bytes arrive, or repaired to U+FFFD once it
// cannot complete), with the tokenizer's leading-space rule applied exactly once at the start, as
// HF's streamers produce by re-decoding the whole sequence. The concatenation of every push() and
// the final flush() equals Tokenizer::decode of the same ids.
//
//   StreamDecoder sd(tok, /*skip_special=*/true);
//   for (int32_t id : generated) send(sd.push(id));
//   send(sd.flush());
//
// When decoding continues a sequence whose start was already shown (the generated part after a
// prompt), pass at_sequence_start = false so the first token keeps its leading space.
// Not thread-safe; one per stream. The Tokenizer must outlive it and stay where it is (not
// moved from) while the decoder is in use.
#pragma once

#include <cstdint>
#include <string>

#include "io/tokenizer.h"

namespace zs::io {

class StreamDecoder {
public:
    explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false,
                           bool at_sequence_start = true);

    // Text completed by `id` (possibly empty). Throws zs::Error on an id outside the vocabulary.
    std::string push(int32_t id);
    // Whatever is still held (an incomplete sequence becomes U+FFFD); the stream may continue.
    std::string flush();
    // The end of a generation cut short (max_tokens) in the middle of a character: the
    // incomplete bytes are dropped, not shown as U+FFFD, as a stream that stopped there would
    // have shown nothing of them. Returns how many bytes were dropped.
    size_t drop_incomplete();

private:
    const Tokenizer& tok_;
    bool skip_special_;
    Tokenizer::DecodeState state_;
    std::string pending_;  // bytes not yet returned: at most an incomplete UTF-8 sequence
};

}  // namespace zs::io
