// libFuzzer target (RELIABILITY.md fuzz_http_json): arbitrary bytes as the body of
// /v1/completions and of /v1/chat/completions. parse_request may only answer with an ApiException
// carrying a 4xx status and OpenAI's error JSON; anything else escaping (or a crash, a hang, a
// 5xx) is a bug. Accepted requests are rendered back through the response builders.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "serve/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string body(reinterpret_cast<const char*>(data), size);
    zs::serve::ParseLimits lim;
    lim.vocab_size = 50257;
    for (auto ep : {zs::serve::Endpoint::completions, zs::serve::Endpoint::chat}) {
        try {
            zs::serve::GenRequest r = zs::serve::parse_request(ep, body, lim);
            zs::serve::ChoiceResult c;
            c.text = r.prompt_texts.empty() ? std::string() : r.prompt_texts[0];
            c.finish_reason = "stop";
            (void)zs::serve::dump(zs::serve::completion_response("id", 0, r.model, {c}, {}, false));
        } catch (const zs::serve::ApiException& e) {
            const zs::serve::ApiError& err = e.error();
            if (err.status < 400 || err.status >= 500 || err.message.empty()) std::abort();
            (void)zs::serve::dump(err.to_json());
        }
    }
    return 0;
}
