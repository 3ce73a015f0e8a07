// Chat formatting without a template engine: the chat_template a model ships (tokenizer_config.json
// or GGUF tokenizer.chat_template) is recognised by its markers and rendered by fixed code, so no
// template from a file or a request is ever executed (RELIABILITY.md chat_template_sandbox: there
// is nothing to escape from).
//
// Recognised formats (docs/GENERATION.md): ChatML (<|im_start|>: Qwen2, SmolLM2 — including a
// default system prompt written literally in the template), Llama-3 (<|start_header_id|>),
// Llama-2 / Mistral ([INST] ... [/INST]), Zephyr/TinyLlama (<|user|>). A model without a template,
// or with one not recognised, uses "role: content" lines and says so once.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "io/tokenizer.h"

namespace zs::infer {

struct ChatMessage {
    std::string role;  // system, user, assistant
    std::string content;
};

enum class ChatFormat { chatml, llama3, inst, zephyr, plain };
const char* to_string(ChatFormat f);

struct ChatTemplate {
    ChatFormat format = ChatFormat::plain;
    std::string default_system;  // ChatML templates that inject a system prompt when none is given
    std::string bos, eos;        // token texts used by the format
    // Read off the template text: contents pass through Jinja's `| trim` (Llama-3), and the
    // assistant header is written whether or not a generation prompt is asked for (templates
    // that never test add_generation_prompt).
    bool trim_content = false;
    bool always_generation_prompt = false;
};

// Recognise the tokenizer's template (or `template_text` when given, e.g. from tokenizer_config).
ChatTemplate detect_chat_template(const io::Tokenizer& tok,
                                  const std::optional<std::string>& template_text = std::nullopt);

// The prompt text for `messages`; add_generation_prompt appends the assistant header. Throws
// ConfigError for an unknown role or an empty conversation.
std::string render_chat(const ChatTemplate& t, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt = true);

}  // namespace zs::infer
