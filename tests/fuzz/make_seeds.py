#!/usr/bin/env python3
"""Writes the seed corpora of the io fuzz targets (tests/fuzz/corpus/<target>/seed_*).

Standard library only; deterministic. Crash inputs found by `make test-fuzz` are added next to
the seeds as crash_* files by hand and are never regenerated.
"""
import json
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(301)


def out(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed_" + name), "wb") as f:
        f.write(data)


# ---- safetensors ----
def st(header, data=b"", n=None, pad=True):
    h = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h) if n is None else n) + h + data


def tensors(spec):
    """spec: list of (name, dtype, shape, bytes_per_element)."""
    header, data, at = {}, b"", 0
    for name, dt, shape, size in spec:
        n = 1
        for d in shape:
            n *= d
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [at, at + n * size]}
        data += bytes(rng.randrange(256) for _ in range(n * size))
        at += n * size
    return header, data


h, d = tensors([("w", "F32", [2, 3], 4), ("b", "BF16", [3], 2), ("i", "I8", [5], 1)])
h["__metadata__"] = {"format": "pt"}
out("safetensors", "valid", st(h, d))
out("safetensors", "empty", st({}))
h, d = tensors([("s", "F32", [], 4), ("z", "F16", [0, 4], 2), ("l", "I64", [2], 8)])
out("safetensors", "edge", st(h, d))
h, d = tensors([("m", "F32", [2], 4)])
out("safetensors", "misaligned", st(h, d, pad=False) if (8 + len(json.dumps(h, separators=(",", ":")))) % 4 else st(json.dumps(h).encode() + b" ", d, pad=False))
h, d = tensors([("u", "U8", [4], 1), ("f", "F4", [4], 1)])
h["f"]["data_offsets"] = [4, 6]
out("safetensors", "unsupported", st(h, d[:6]))
out("safetensors", "overlap", st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                  "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)))
out("safetensors", "bad_utf8", st(b'{"\xff":{}}'))
out("safetensors", "huge_n", st({}, n=2**63))
out("safetensors", "whitespace", st(b'  \n {"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}', bytes(4)))

# ---- gguf ----
def gstr(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(s)) + s


SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q",
           11: "<q", 12: "<d"}


def kv(key, t, v):
    b = gstr(key) + struct.pack("<I", t)
    if t == 8:
        return b + gstr(v)
    if t == 9:
        et, items = v
        b += struct.pack("<IQ", et, len(items))
        for x in items:
            b += gstr(x) if et == 8 else struct.pack(SCALARS[et], x)
        return b
    return b + struct.pack(SCALARS[t], v)


BLOCK = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
         9: (32, 36), 12: (256, 144), 14: (256, 210), 24: (1, 1), 26: (1, 4), 30: (1, 2), 10: (256, 84)}


def gguf(kvs, tens, version=3, align=32):
    infos, data, off = b"", b"", 0
    for name, typ, ne in tens:
        n = 1
        for d in ne:
            n *= d
        bs, ts = BLOCK[typ]
        nbytes = n // bs * ts
        infos += gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<q", d) for d in ne)
        infos += struct.pack("<IQ", typ, off)
        blob = bytearray(rng.randrange(256) for _ in range(nbytes))
        if typ in (1, 2, 3, 6, 7, 8, 9):  # keep f16 scales finite
            for i in range(0, nbytes, ts):
                blob[i + 1] &= 0x3B
        chunk = bytes(blob) + bytes((align - nbytes % align) % align)
        data += chunk
        off += len(chunk)
    head = b"GGUF" + struct.pack("<IQQ", version, len(tens), len(kvs)) + b"".join(kvs) + infos
    if tens:
        head += bytes((align - len(head) % align) % align)
    return head + data


kvs = [kv("general.architecture", 8, "llama"), kv("llama.block_count", 4, 2),
       kv("llama.rope.freq_base", 6, 10000.0), kv("flag", 7, 1), kv("i64", 11, -5), kv("u64", 10, 7),
       kv("f64", 12, 0.5), kv("u8", 0, 3), kv("i8", 1, -3), kv("u16", 2, 9), kv("i16", 3, -9),
       kv("i32", 5, -1), kv("tokenizer.ggml.tokens", 9, (8, ["<s>", "a", "<0x0A>"])),
       kv("tokenizer.ggml.scores", 9, (6, [0.0, -1.0, -2.0])), kv("bools", 9, (7, [0, 1]))]
tens = [("f32", 0, [4, 2]), ("f16", 1, [8]), ("q4_0", 2, [32, 2]), ("q4_1", 3, [32]),
        ("q5_0", 6, [32]), ("q5_1", 7, [32]), ("q8_0", 8, [64, 2]), ("q8_1", 9, [32]),
        ("q4_k", 12, [256]), ("q6_k", 14, [256]), ("bf16", 30, [4, 2]), ("i32", 26, [3]),
        ("q2_k", 10, [256])]
out("gguf", "valid", gguf(kvs, tens))
out("gguf", "v2", gguf(kvs[:3], tens[:3], version=2))
out("gguf", "align1", gguf([kv("general.alignment", 4, 1)], tens[:4], align=1))
out("gguf", "align64", gguf([kv("general.alignment", 4, 64)], tens[6:9], align=64))
out("gguf", "empty", gguf([], []))
out("gguf", "array_2p63", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gstr("a") + struct.pack("<IIQ", 9, 0, 2**63))
out("gguf", "string_1gib", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gstr("k") + struct.pack("<IQ", 8, 2**30) + b"a" * 140)
out("gguf", "truncated_data", gguf([], tens[:2])[:-20])

# ---- json ----
out("json", "config", json.dumps({
    "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_hidden_layers": 2,
    "rope_theta": 10000.0, "rope_scaling": {"factor": 8.0, "rope_type": "llama3"},
    "tie_word_embeddings": False, "eos_token_id": [1, 2], "torch_dtype": "bfloat16",
    "max_position_embeddings": 5e8, "nothing": None}, indent=2).encode())
out("json", "ds_config", json.dumps({
    "train_batch_size": 8, "zero_optimization": {"stage": 3, "reduce_bucket_size": 5e8},
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "betas": [0.9, 0.95]}},
    "layers": [{"x": 1}, {"x": "a"}]}).encode())
out("json", "duplicate", b'{"a": {"b": 1, "b": 2}}')
out("json", "deep", b"[" * 40 + b"]" * 40)
out("json", "numbers", b'{"a": -0, "b": 1e308, "c": 18446744073709551616, "d": -9223372036854775809, "e": 0.1e-400}')
out("json", "unicode", '{"k": "h\u00e9llo \\ud83d\\ude00", "\\u0000": 1}'.encode())
out("json", "nul", b'{"a": 1}\x00{"b"')


# ---- tokenizer.json ----
def bytes_to_unicode():
    """GPT-2's byte -> printable character map (the byte-level alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def byte_level(merges, pre=None, extra=None):
    alphabet = [bytes_to_unicode()[b] for b in range(256)]
    vocab = {t: i for i, t in enumerate(alphabet)}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = {"version": "1.0", "added_tokens": [
        {"id": len(vocab), "content": "<|endoftext|>", "special": True, "single_word": False,
         "lstrip": False, "rstrip": False, "normalized": False}],
        "normalizer": None,
        "pre_tokenizer": pre or {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                 "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False, "vocab": vocab,
                  "merges": [f"{a} {b}" for a, b in merges]}}
    if extra:
        tok.update(extra)
    return json.dumps(tok, ensure_ascii=False).encode()


gpt_merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"),
              ("o", "n"), ("Ġ", "s"), ("r", "e"), ("e", "d")]
out("tokenizer_json", "byte_level", byte_level(gpt_merges))
out("tokenizer_json", "split_regex", byte_level(gpt_merges[:4], pre={"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": r"(?i:'s|'t|'re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"},
     "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}))
# A catastrophic-backtracking pattern: must be refused at load or bounded at encode.
out("tokenizer_json", "regex_bomb", byte_level([], pre={"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}))
spm_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    spm_vocab[f"<0x{b:02X}>"] = len(spm_vocab)
for t in ["▁", "a", "b", "e", "h", "l", "o", "t", "▁t", "he", "▁the", "ll", "▁he", "llo", "▁hello"]:
    spm_vocab[t] = len(spm_vocab)
out("tokenizer_json", "sentencepiece", json.dumps({
    "version": "1.0",
    "added_tokens": [{"id": i, "content": c, "special": True, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False} for c, i in list(spm_vocab.items())[:3]],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                       {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    "pre_tokenizer": None,
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
    "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "vocab": spm_vocab,
              "merges": [["▁", "t"], ["h", "e"], ["▁t", "he"], ["l", "l"], ["▁", "he"], ["ll", "o"],
                         ["▁he", "llo"]]}}, ensure_ascii=False).encode())
out("tokenizer_json", "sparse_ids", b'{"model": {"type": "BPE", "vocab": {"a": 0, "b": 4000000000}, "merges": []}}')
out("tokenizer_json", "bad_merge", b'{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}, "pre_tokenizer": {"type": "ByteLevel"}}')

# ---- config (ds_config.json and a model's config.json, both through their parsers) ----
out("config", "llama", json.dumps({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 97, "max_position_embeddings": 64,
    "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu",
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": [2, 3],
    "torch_dtype": "bfloat16"}).encode())
out("config", "gpt2", json.dumps({
    "model_type": "gpt2", "vocab_size": 97, "n_embd": 32, "n_layer": 2, "n_head": 4,
    "n_positions": 64, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
    "tie_word_embeddings": True, "bos_token_id": 96, "eos_token_id": 96}).encode())
out("config", "mixtral", json.dumps({
    "model_type": "mixtral", "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 97,
    "num_local_experts": 4, "num_experts_per_tok": 2, "router_aux_loss_coef": 0.02,
    "sliding_window": None, "rope_theta": 1e6}).encode())
out("config", "ds_zero3", json.dumps({
    "train_batch_size": 16, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 4,
    "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-8,
                                              "weight_decay": 0.1}},
    "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": 0, "warmup_max_lr": 3e-4,
                                                      "warmup_num_steps": 10, "total_num_steps": 100}},
    "gradient_clipping": 1.0, "bf16": {"enabled": True},
    "zero_optimization": {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
                          "reduce_bucket_size": 5e8, "stage3_prefetch_bucket_size": 5e7,
                          "stage3_param_persistence_threshold": 1e5},
    "steps_per_print": 10, "wall_clock_breakdown": False}).encode())
out("config", "ds_fp16", json.dumps({
    "train_batch_size": "auto", "fp16": {"enabled": True, "loss_scale": 0, "initial_scale_power": 16,
                                         "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1},
    "optimizer": {"type": "Adam", "params": {"lr": "auto"}},
    "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}).encode())
