// libFuzzer target (RELIABILITY.md fuzz_tokenizer_json): arbitrary bytes as a tokenizer.json,
// parsed into a spec, built into a Tokenizer, then used: encode fixed texts and the input's own
// first bytes (with and without specials), decode the ids back (with and without skipping
// specials), and stream-decode them (which must equal decoding them whole). Only zs::Error may
// escape; a crash, an abort, a hang (a pre-tokenizer regex that backtracks without bound) or any
// other exception is a bug.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "base/error.h"
#include "io/tokenizer.h"
#include "io/tokenizer_impl.h"
#include "io/tokenizer_stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    try {
        zs::io::Tokenizer tok = zs::io::Tokenizer::from_spec(
            zs::io::parse_hf_tokenizer_json(text, "fuzz/tokenizer.json"));
        const std::string samples[] = {"Hello world, the 123 cats!\n", std::string(30, 'a') + "b",
                                       " \t\r\n  x", "\xc3\xa9t\xe9\xf0\x9f\x98\x80 <s></s>",
                                       text.substr(0, 200)};
        for (const std::string& s : samples) {
            for (bool special : {false, true}) {
                std::vector<int32_t> ids = tok.encode(s, special, special);
                const std::string whole = tok.decode(ids, false);
                (void)tok.decode(ids, true);
                // Streaming must give exactly what decoding the whole sequence gives.
                zs::io::StreamDecoder dec(tok);
                std::string streamed;
                for (int32_t id : ids) streamed += dec.push(id);
                streamed += dec.flush();
                if (streamed != whole) std::abort();
            }
        }
    } catch (const zs::Error&) {
    }
    return 0;
}
