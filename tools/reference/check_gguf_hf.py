"""Check a directory written by `zerospeed convert --model SmolLM2.gguf --to hf` with Hugging Face
transformers, against independent references:

1. Tokenizer: AutoTokenizer on the directory (our tokenizer.json + tokenizer_config.json) encodes
   the SmolLM2 fixture's Austen text to the fixture's ids (made by transformers from the GGUF),
   and encodes a set of edge-case strings and renders a chat exactly as transformers' own GGUF
   tokenizer (AutoTokenizer with gguf_file=) does.
2. Model: AutoModelForCausalLM on the directory reproduces the fixture's logits (transformers on
   the GGUF, float32) at its sampled positions and its top-1 predictions.

Usage: python check_gguf_hf.py HF_DIR GGUF_FILE FIXTURE.safetensors
Prints one ok/FAIL line per check; exits 1 on any failure.
"""
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

hf_dir, gguf, fixture = sys.argv[1:4]
ref = load_file(fixture)
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


ours = AutoTokenizer.from_pretrained(hf_dir)
theirs = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
text = bytes(ref["text_utf8"].tolist()).decode("utf-8")
ids = ours(text, add_special_tokens=False)["input_ids"]
check(ids == ref["input_ids"].tolist(), f"tokenizer: the 1,024-token Austen slice ({len(ids)} ids)")
samples = ["Hello world", "  two  spaces\tand tab\n\nnew lines", "digits 1234567 and 3.14159",
           "Ünïcödé — “quotes” 日本語 😀", "<|im_start|>user\nhi<|im_end|>", "a" * 50 + "b",
           "it's they're I'd we'll", ""]
for s in samples:
    a = ours(s, add_special_tokens=False)["input_ids"]
    b = theirs(s, add_special_tokens=False)["input_ids"]
    check(a == b, f"tokenizer: {s[:30]!r}: {len(a)} ids")
    check(ours.decode(a) == theirs.decode(b), f"decode: {s[:30]!r}")
chat = [{"role": "user", "content": "What is the capital of France?"}]
a = ours.apply_chat_template(chat, tokenize=True, add_generation_prompt=True)
b = theirs.apply_chat_template(chat, tokenize=True, add_generation_prompt=True)
check(list(a) == list(b), "chat template renders the same ids")

model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, attn_implementation="eager")
model.eval()
with torch.no_grad():
    logits = model(ref["input_ids"].unsqueeze(0)).logits[0]
pos = ref["logits_positions"]
diff = (logits[pos] - ref["logits_sample"]).abs().max().item()
check(diff < 1e-3, f"logits at positions {pos.tolist()}: max |diff| {diff:.2e} (< 1e-3)")
top1 = logits.argmax(-1)
clear = ref["top1_margin"] > 1e-2
agree = (top1[clear] == ref["top1"][clear]).float().mean().item()
check(agree == 1.0, f"top-1 agreement {agree:.4f} over {int(clear.sum())} positions")
sys.exit(1 if failures else 0)
