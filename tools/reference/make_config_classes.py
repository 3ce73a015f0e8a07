#!/usr/bin/env python3
"""Writes tests/fixtures/hf/config_classes.json: every key (with its default) of the transformers
config classes zerospeed reads (GPT2Config, LlamaConfig, MistralConfig, Qwen2Config,
MixtralConfig), as `Config().to_dict()` gives them. src/models/config_keys_test.cpp checks that
zerospeed's config parser classifies each of them (used / irrelevant / unsupported unless
neutral) and that each class's default config parses with no unknown key.
Usage: python tools/reference/make_config_classes.py
"""
import json
import pathlib

import transformers

import refcommon as rc

CLASSES = {
    "gpt2": transformers.GPT2Config,
    "llama": transformers.LlamaConfig,
    "mistral": transformers.MistralConfig,
    "qwen2": transformers.Qwen2Config,
    "mixtral": transformers.MixtralConfig,
}


def main():
    out = {"transformers": transformers.__version__, "classes": {}}
    for model_type, cls in CLASSES.items():
        d = cls().to_dict()
        assert d["model_type"] == model_type, (model_type, d["model_type"])
        out["classes"][model_type] = d
    path = pathlib.Path(rc.HF_FIXTURES) / "config_classes.json"
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {path}: " + ", ".join(f"{k} {len(v)} keys" for k, v in out["classes"].items()))


if __name__ == "__main__":
    main()
