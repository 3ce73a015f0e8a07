"""Load a directory written by `zerospeed convert --to hf` (or `train --export-hf`) with Hugging
Face transformers and print the greedy continuation of the given prompt ids as a JSON array, so
a test can compare it with `zerospeed generate --temperature 0`.
Usage: python check_hf_export.py MODEL_DIR N_NEW ID [ID ...]"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32, attn_implementation="eager")
model.eval()
ids = torch.tensor([[int(x) for x in sys.argv[3:]]])
with torch.no_grad():
    out = model.generate(ids, max_new_tokens=int(sys.argv[2]), do_sample=False, eos_token_id=None,
                         pad_token_id=0)
json.dump(out[0, ids.shape[1]:].tolist(), sys.stdout)
