// Chat prompts equal what transformers' apply_chat_template renders for the real templates the
// project has (tests/fixtures/chat_templates.json, tools/reference/make_chat_fixture.py):
// SmolLM2-135M-Instruct's ChatML template with its default system turn, and Llama-3's (trimmed
// contents, an assistant header always), over conversations with and without a system message,
// multi-turn, with and without the generation prompt: the same text, and for Llama-3 (whose
// tokenizer is a fixture here) the same token ids.
#include "infer/chat_template.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/json.h"
#include "tests/test_util.h"

namespace zs::infer {
namespace {

TEST(ChatTemplate, RendersAsTransformersDoes) {
    const nlohmann::json fx =
        io::load_json(zs::test::source_path("tests/fixtures/chat_templates.json"));
    const io::Tokenizer llama3 =
        io::Tokenizer::load(zs::test::source_path("tests/fixtures/tokenizers/llama3"));
    int checked = 0;
    for (const auto& t : fx.at("templates")) {
        const std::string name = t.at("name");
        // ChatML needs no bos/eos; Llama-3's are its own tokenizer's.
        const ChatTemplate tpl = detect_chat_template(llama3, t.at("template").get<std::string>());
        for (const auto& c : t.at("cases")) {
            std::vector<ChatMessage> msgs;
            for (const auto& m : c.at("messages")) msgs.push_back({m.at("role"), m.at("content")});
            const bool gen = c.at("add_generation_prompt");
            const std::string text = render_chat(tpl, msgs, gen);
            EXPECT_EQ(text, c.at("text").get<std::string>())
                << name << ", " << msgs.size() << " messages, generation prompt " << gen;
            if (name == "llama3") {
                EXPECT_EQ(llama3.encode(text, false, true), c.at("ids").get<std::vector<int32_t>>())
                    << name << " ids";
            }
            ++checked;
        }
    }
    EXPECT_EQ(checked, 16);
}

TEST(ChatTemplate, ChatMlDefaultSystemWithARealNewline) {
    // SmolLM2's template holds the newline of its default system turn as a real newline inside
    // the Jinja string, not as the escape "\n": both forms are recognised.
    const io::Tokenizer tok =
        io::Tokenizer::load(zs::test::source_path("tests/fixtures/tokenizers/llama3"));
    for (const char* nl : {"\n", "\\n"}) {
        const std::string src = std::string(
                                    "{% if loop.first and messages[0]['role'] != 'system' %}{{ "
                                    "'<|im_start|>system") +
                                nl + "You are Zed.<|im_end|>" + nl +
                                "' }}{% endif %}{{'<|im_start|>' + message['role'] }}"
                                "{% if add_generation_prompt %}{% endif %}";
        EXPECT_EQ(detect_chat_template(tok, src).default_system, "You are Zed.");
    }
}

}  // namespace
}  // namespace zs::infer
