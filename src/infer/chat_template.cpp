#include "infer/chat_template.h"

#include "base/error.h"

namespace zs::infer {

const char* to_string(ChatFormat f) {
    switch (f) {
        case ChatFormat::chatml:
            return "chatml";
        case ChatFormat::llama3:
            return "llama3";
        case ChatFormat::inst:
            return "inst";
        case ChatFormat::zephyr:
            return "zephyr";
        case ChatFormat::plain:
            return "plain";
    }
    return "?";
}

namespace {

std::string token_text(const io::Tokenizer& tok, std::optional<int32_t> id, const char* fallback) {
    return id ? tok.id_to_token(*id) : std::string(fallback);
}

// A ChatML template that writes a system turn literally when the conversation has none:
// '<|im_start|>system\nYou are ...<|im_end|>\n'. The template source may hold the newline as
// the escape "\n" or as a real newline inside the string literal (SmolLM2's does).
std::string chatml_default_system(const std::string& tpl) {
    size_t a = std::string::npos;
    for (const char* marker : {"<|im_start|>system\\n", "<|im_start|>system\n"}) {
        a = tpl.find(marker);
        if (a != std::string::npos) {
            a += std::string_view(marker).size();
            break;
        }
    }
    if (a == std::string::npos) return {};
    auto b = tpl.find("<|im_end|>", a);
    if (b == std::string::npos) return {};
    std::string s = tpl.substr(a, b - a);
    if (s.find("{{") != std::string::npos || s.find("{%") != std::string::npos) return {};
    return s;
}

}  // namespace

ChatTemplate detect_chat_template(const io::Tokenizer& tok,
                                  const std::optional<std::string>& template_text) {
    ChatTemplate t;
    std::string tpl = template_text ? *template_text : tok.chat_template().value_or("");
    t.bos = token_text(tok, tok.bos_id(), "");
    t.eos = token_text(tok, tok.eos_id(), "");
    t.trim_content =
        tpl.find("| trim") != std::string::npos || tpl.find("|trim") != std::string::npos;
    t.always_generation_prompt =
        !tpl.empty() && tpl.find("add_generation_prompt") == std::string::npos;
    if (tpl.find("<|im_start|>") != std::string::npos) {
        t.format = ChatFormat::chatml;
        t.default_system = chatml_default_system(tpl);
    } else if (tpl.find("<|start_header_id|>") != std::string::npos) {
        t.format = ChatFormat::llama3;
    } else if (tpl.find("[INST]") != std::string::npos) {
        t.format = ChatFormat::inst;
    } else if (tpl.find("<|user|>") != std::string::npos) {
        t.format = ChatFormat::zephyr;
    } else if (tok.token_to_id("<|im_start|>")) {
        t.format = ChatFormat::chatml;  // no template, but the vocabulary is ChatML's
    } else {
        t.format = ChatFormat::plain;
    }
    return t;
}

std::string render_chat(const ChatTemplate& t, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt) {
    ZS_CHECK_T(ConfigError, !messages.empty(), "chat: 'messages' must not be empty");
    for (const ChatMessage& m : messages) {
        ZS_CHECK_T(ConfigError, m.role == "system" || m.role == "user" || m.role == "assistant",
                   "chat: role '{}' is not supported (system, user, assistant)", m.role);
    }
    const bool gen = add_generation_prompt || t.always_generation_prompt;
    auto content_of = [&](const ChatMessage& m) {
        if (!t.trim_content) return m.content;
        // Jinja's trim: Python's str.strip(), which removes Unicode whitespace; ASCII here.
        const char* ws = " \t\n\r\f\v";
        const size_t b = m.content.find_first_not_of(ws);
        if (b == std::string::npos) return std::string();
        return m.content.substr(b, m.content.find_last_not_of(ws) - b + 1);
    };
    std::string out;
    switch (t.format) {
        case ChatFormat::chatml:
            if (messages.front().role != "system" && !t.default_system.empty()) {
                out += "<|im_start|>system\n" + t.default_system + "<|im_end|>\n";
            }
            for (const ChatMessage& m : messages) {
                out += "<|im_start|>" + m.role + "\n" + content_of(m) + "<|im_end|>\n";
            }
            if (gen) out += "<|im_start|>assistant\n";
            return out;
        case ChatFormat::llama3:
            out += t.bos;
            for (const ChatMessage& m : messages) {
                out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + content_of(m) +
                       "<|eot_id|>";
            }
            if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
            return out;
        case ChatFormat::inst: {
            // Llama-2 / Mistral: a system prompt is folded into the first user turn.
            std::string system;
            size_t i = 0;
            if (messages[0].role == "system") {
                system = messages[0].content;
                i = 1;
            }
            bool first = true;
            for (; i < messages.size(); ++i) {
                const ChatMessage& m = messages[i];
                if (m.role == "user") {
                    std::string content =
                        first && !system.empty() ? system + "\n\n" + content_of(m) : content_of(m);
                    out += t.bos + "[INST] " + content + " [/INST]";
                    first = false;
                } else if (m.role == "assistant") {
                    out += ' ';  // appended piece by piece (GCC 12 -Wrestrict false positive)
                    out += content_of(m);
                    out += t.eos;
                } else {
                    ZS_THROW(ConfigError, "chat: a system message must come first");
                }
            }
            return out;
        }
        case ChatFormat::zephyr:
            for (const ChatMessage& m : messages)
                out += "<|" + m.role + "|>\n" + content_of(m) + t.eos + "\n";
            if (gen) out += "<|assistant|>\n";
            return out;
        case ChatFormat::plain:
            for (const ChatMessage& m : messages) out += m.role + ": " + content_of(m) + "\n";
            if (gen) out += "assistant:";
            return out;
    }
    return out;
}

}  // namespace zs::infer
