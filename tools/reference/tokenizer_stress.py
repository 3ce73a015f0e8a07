#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizers/stress.json: seeded random texts (mixed scripts, emoji and
ZWJ sequences, unusual whitespace, contractions, digits, several lines) with token ids from the
reference implementations, and each reference's decode of those ids where it differs from the
text, for src/io/tokenizer_test.cpp.

  gpt2    tiktoken (r50k_base ranks from the fixtures, GPT-2's pattern, <|endoftext|> allowed)
  cl100k  tiktoken (cl100k_base ranks, tiktoken's own pattern and specials)
  llama3  HF tokenizers (tokenizer.json from the fixtures, no special tokens added)
  mistral HF tokenizers (same)
  llama2  sentencepiece (tokenizer.model from the fixtures)

Needs PyPI tokenizers, tiktoken and sentencepiece (reference tools only; never the build):
  python3 -m venv /tmp/ref && /tmp/ref/bin/pip install tokenizers tiktoken sentencepiece
  /tmp/ref/bin/python tools/reference/tokenizer_stress.py
"""
import json
import os
import random

import sentencepiece
import tiktoken
import tokenizers
from tiktoken.load import load_tiktoken_bpe

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FX = os.path.join(ROOT, "tests", "fixtures", "tokenizers")

POOLS = [
    [chr(c) for c in range(0x20, 0x7F)],
    list("éèàçñöüßøåæœÉÀ"),
    list("日本語のテキスト中文分词测试한국어문장"),
    list("Привет мир ΑΒΓ αβγ"),
    ["🤖", "🚀", "✨", "👨\u200d👩\u200d👧", "🦙", "\u200d", "\ufe0f", "🇫🇷"],
    list("\t  \u00a0\u3000\u2009\u000b\u000c"),
    list("ᚠᚢᚦ𐍈𐌰ꯍ"),
    list("0123456789٣٤"),
    ["'s", "'t", "'re", "'S", "n't", "'LL", " ' "],
    ["<s>", "</s>", "<|endoftext|>", "<|eot_id|>", "<unk>", "<|start_header_id|>", "ello",
     "x y"],
]
SEPARATORS = ["\n", "\r\n", "\n\n", " \n ", "\n\t", "   \n"]

# tokenizer.json variants: a base file with top-level components replaced, to cover the
# pre-tokenizers, split behaviours and decoders the two real files do not use.
VARIANTS = {
    "mistral_metaspace_first": ("mistral", {
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581",
                          "prepend_scheme": "first", "split": False},
    }),
    "mistral_metaspace_split": ("mistral", {
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581",
                          "prepend_scheme": "always", "split": True},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always",
             "split": True},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
    }),
    "llama3_splits": ("llama3", {
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "MergedWithPrevious",
             "invert": False},
            {"type": "Split", "pattern": {"String": "e"}, "behavior": "MergedWithNext",
             "invert": False},
            {"type": "Split", "pattern": {"Regex": "[aeiou]"}, "behavior": "Contiguous",
             "invert": False},
            {"type": "Split", "pattern": {"Regex": "\\p{L}+"}, "behavior": "Isolated",
             "invert": True},
            {"type": "Split", "pattern": {"String": "x"}, "behavior": "Removed",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]},
    }),
    "llama3_prefix": ("llama3", {
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                          "use_regex": True},
    }),
}


def added_token_variants():
    """Added-token flags (lstrip, rstrip, single_word, normalized, special=false) on the real
    added_tokens lists, plus one new normalized token per file."""
    out = {}
    for base, edits, extra in (
        ("llama3", {128009: {"lstrip": True, "rstrip": True},
                    128006: {"single_word": True}},
         {"id": 128256, "content": "ello", "special": False, "normalized": True}),
        ("mistral", {1: {"lstrip": True}, 2: {"rstrip": True, "single_word": True}},
         {"id": 32000, "content": "x y", "special": False, "normalized": True}),
    ):
        with open(os.path.join(FX, base, "tokenizer.json"), encoding="utf-8") as f:
            added = json.load(f)["added_tokens"]
        for tok in added:
            tok.update(edits.get(tok["id"], {}))
        added.append(dict({"single_word": False, "lstrip": False, "rstrip": False}, **extra))
        out[base + "_added_flags"] = (base, {"added_tokens": added})
    return out


VARIANTS.update(added_token_variants())


def random_text(rng):
    lines = []
    for _ in range(rng.randint(1, 4)):
        n = rng.randint(0, 50)
        lines.append("".join(rng.choice(rng.choice(POOLS)) for _ in range(n)))
    text = lines[0]
    for line in lines[1:]:
        text += rng.choice(SEPARATORS) + line
    return text


def main():
    rng = random.Random(301)
    texts = [random_text(rng) for _ in range(200)]

    r50k = tiktoken.Encoding(
        "r50k_base",
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=load_tiktoken_bpe(os.path.join(FX, "tiktoken", "r50k_base.tiktoken")),
        special_tokens={"<|endoftext|>": 50256},
    )
    cl100k = tiktoken.Encoding(
        "cl100k_base",
        pat_str=r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        mergeable_ranks=load_tiktoken_bpe(os.path.join(FX, "tiktoken", "cl100k_base.tiktoken")),
        special_tokens={"<|endoftext|>": 100257, "<|fim_prefix|>": 100258,
                        "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260,
                        "<|endofprompt|>": 100276},
    )
    hf = {name: tokenizers.Tokenizer.from_file(os.path.join(FX, name, "tokenizer.json"))
          for name in ("llama3", "mistral")}
    for name, (base, overrides) in VARIANTS.items():
        with open(os.path.join(FX, base, "tokenizer.json"), encoding="utf-8") as f:
            spec = json.load(f)
        spec.update(overrides)
        hf[name] = tokenizers.Tokenizer.from_str(json.dumps(spec))
    sp = sentencepiece.SentencePieceProcessor(
        model_file=os.path.join(FX, "llama2", "tokenizer.model"))

    cases = []
    for text in texts:
        case = {
            "text": text,
            "gpt2": r50k.encode(text, allowed_special="all"),
            "cl100k": cl100k.encode(text, allowed_special="all"),
            "llama3": hf["llama3"].encode(text, add_special_tokens=False).ids,
            "mistral": hf["mistral"].encode(text, add_special_tokens=False).ids,
            "llama2": sp.encode(text),
        }
        for name in VARIANTS:
            case[name] = hf[name].encode(text, add_special_tokens=False).ids
        # Each reference's own decode of its ids (special tokens shown), where it is not the text
        # (HF's legacy Prepend puts a "▁" after every special token, for one).
        decoded = {
            "gpt2": r50k.decode(case["gpt2"]),
            "cl100k": cl100k.decode(case["cl100k"]),
            "llama3": hf["llama3"].decode(case["llama3"], skip_special_tokens=False),
            "mistral": hf["mistral"].decode(case["mistral"], skip_special_tokens=False),
            "llama2": sp.decode(case["llama2"]),
        }
        for name in VARIANTS:
            decoded[name] = hf[name].decode(case[name], skip_special_tokens=False)
        case["decoded"] = {k: v for k, v in decoded.items() if v != text}
        cases.append(case)
    meta = {
        "generator": "tools/reference/tokenizer_stress.py (seed 301)",
        "references": {"tiktoken": tiktoken.__version__, "tokenizers": tokenizers.__version__,
                       "sentencepiece": sentencepiece.__version__},
    }
    with open(os.path.join(FX, "stress.json"), "w", encoding="utf-8") as f:
        variants = {name: {"base": base, "replace": overrides}
                    for name, (base, overrides) in VARIANTS.items()}
        json.dump({"meta": meta, "variants": variants, "cases": cases}, f, ensure_ascii=False, separators=(",", ":"))


if __name__ == "__main__":
    main()
