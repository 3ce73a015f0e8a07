#!/usr/bin/env python3
"""Writes the tiny Hugging Face model fixtures under tests/fixtures/hf/<name>/.

For each family a tiny randomly initialised float32 model (fixed seed) is saved with
save_pretrained (config.json, model.safetensors, generation_config.json) and, beside it,
reference.safetensors with HF's logits, causal-LM loss, the gradient of that loss with respect
to every stored weight, and a greedy continuation. See README.md for the exact contents.
Usage: python tools/reference/make_hf_fixtures.py [name ...]
"""

import argparse
import json
import shutil
import sys

import torch
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import (
    GenerationConfig,
    GPT2Config,
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    Qwen2Config,
    Qwen2MoeConfig,
    AutoModelForCausalLM,
)
from transformers.core_model_loading import revert_weight_conversion

import refcommon as rc

transformers.utils.logging.disable_progress_bar()

VOCAB = 97
BATCH, SEQ = 2, 9
PROMPT_LEN, NEW_TOKENS = 5, 12
INPUT_SEED = 1234  # batch input_ids
PROMPT_SEED = 4321  # greedy prompt
# HF's default initializer_range (0.02) gives near-uniform logits on a model this small, so the
# greedy argmax would hinge on 1e-4 differences. A wider init gives O(1) logits; 1-D parameters
# (norm weights, biases), which HF initialises to exactly 1 or 0, are perturbed so that a kernel
# that ignores them (or swaps weight and bias) fails the comparison.
INIT_RANGE = 0.2
PERTURB_1D = 0.1


def configs() -> dict:
    common_llama = dict(
        vocab_size=VOCAB,
        num_hidden_layers=2,
        max_position_embeddings=64,
        initializer_range=INIT_RANGE,
        attention_dropout=0.0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return {
        "gpt2": (
            GPT2Config(
                vocab_size=VOCAB,
                n_positions=64,
                n_embd=32,
                n_layer=2,
                n_head=4,
                activation_function="gelu_new",
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
                initializer_range=INIT_RANGE,
                tie_word_embeddings=True,
                bos_token_id=96,
                eos_token_id=96,
            ),
            101,
        ),
        "llama": (
            LlamaConfig(
                hidden_size=32,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=64,
                rope_theta=10000.0,
                rms_norm_eps=1e-6,
                tie_word_embeddings=False,
                **common_llama,
            ),
            102,
        ),
        "llama_tied_mqa": (
            LlamaConfig(
                hidden_size=48,
                num_attention_heads=3,
                num_key_value_heads=1,
                head_dim=16,
                intermediate_size=64,
                rope_theta=500000.0,
                rms_norm_eps=1e-5,
                tie_word_embeddings=True,
                **common_llama,
            ),
            103,
        ),
        "mixtral": (
            MixtralConfig(
                hidden_size=32,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=48,
                num_local_experts=4,
                num_experts_per_tok=2,
                router_aux_loss_coef=0.02,
                router_jitter_noise=0.0,
                # transformers adds the load-balancing loss to the loss only with this set.
                output_router_logits=True,
                rms_norm_eps=1e-5,
                rope_theta=1000000.0,
                tie_word_embeddings=False,
                **common_llama,
            ),
            104,
        ),
        # Qwen2-MoE: routed experts (top-2 of 4, probabilities not renormalised) plus a shared
        # expert of its own size behind a sigmoid gate, in every layer.
        "qwen2_moe": (
            Qwen2MoeConfig(
                hidden_size=32,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=40,
                moe_intermediate_size=24,
                shared_expert_intermediate_size=56,
                num_experts=4,
                num_experts_per_tok=2,
                norm_topk_prob=False,
                decoder_sparse_step=1,
                mlp_only_layers=[],
                router_aux_loss_coef=0.02,
                output_router_logits=True,
                rope_theta=10000.0,
                rms_norm_eps=1e-6,
                use_sliding_window=False,
                tie_word_embeddings=False,
                vocab_size=VOCAB,
                num_hidden_layers=2,
                max_position_embeddings=64,
            ),
            109,
        ),
        "qwen2": (
            Qwen2Config(
                hidden_size=32,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=64,
                rope_theta=10000.0,
                rms_norm_eps=1e-6,
                use_sliding_window=False,
                vocab_size=VOCAB,
                num_hidden_layers=2,
                max_position_embeddings=64,
                initializer_range=INIT_RANGE,
                attention_dropout=0.0,
                bos_token_id=1,
                eos_token_id=2,
            ),
            105,
        ),
        # Settings that change the computation, each on: exact (erf) GELU, no 1/sqrt(HS)
        # attention scaling but 1/(layer + 1) instead, the upcast/reordered attention path.
        "gpt2_variants": (
            GPT2Config(
                vocab_size=VOCAB,
                n_positions=64,
                n_embd=32,
                n_layer=3,
                n_head=4,
                activation_function="gelu",
                scale_attn_weights=False,
                scale_attn_by_inverse_layer_idx=True,
                reorder_and_upcast_attn=True,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,
                initializer_range=INIT_RANGE,
                tie_word_embeddings=True,
                bos_token_id=96,
                eos_token_id=96,
            ),
            106,
        ),
        # Sliding-window attention: every layer (Mistral, window 4 over 9-token inputs and a
        # 17-token generation), and only the layers from max_window_layers on (Qwen2).
        "mistral_window": (
            MistralConfig(
                hidden_size=32,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=64,
                rope_theta=10000.0,
                rms_norm_eps=1e-5,
                sliding_window=4,
                tie_word_embeddings=False,
                **common_llama,
            ),
            107,
        ),
        "qwen2_window": (
            Qwen2Config(
                hidden_size=32,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=64,
                rope_theta=10000.0,
                rms_norm_eps=1e-6,
                use_sliding_window=True,
                sliding_window=3,
                max_window_layers=1,
                vocab_size=VOCAB,
                num_hidden_layers=2,
                max_position_embeddings=64,
                initializer_range=INIT_RANGE,
                attention_dropout=0.0,
                bos_token_id=1,
                eos_token_id=2,
            ),
            108,
        ),
    }


def build(name: str, config, seed: int):
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(PERTURB_1D * torch.randn(p.shape, generator=gen))
    return model.eval()


def naive_causal_lm_loss(logits, ids):
    """Independent check of HF's loss: mean CE of logits[:, t] against ids[:, t + 1]."""
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, v), ids[:, 1:].reshape(-1), reduction="mean")


def naive_aux_loss(router_logits, config):
    """Independent check of HF's Mixtral load-balancing loss (Switch Transformer eq. 4-6, pooled
    over layers): E * sum_e f_e * P_e, with f_e the fraction of the L*N top-k slots routed to e
    (sums to top_k) and P_e the mean router probability of e over all L*N rows. Also returns the
    smallest gap between the k-th and (k+1)-th router probability (a near-tie would make top-k
    routing fragile in a reimplementation)."""
    e = getattr(config, "num_local_experts", None) or config.num_experts
    k = config.num_experts_per_tok
    probs = torch.cat([torch.softmax(r.detach(), dim=-1) for r in router_logits], dim=0)
    top = torch.topk(probs, k + 1, dim=-1)
    counts = torch.zeros(e).scatter_add_(0, top.indices[:, :k].reshape(-1), torch.ones(probs.shape[0] * k))
    f = counts / probs.shape[0]
    p = probs.mean(dim=0)
    gap = float((top.values[:, k - 1] - top.values[:, k]).min())
    return e * (f * p).sum(), gap


def naive_greedy(model, prompt, steps):
    """Greedy decoding without a KV cache: full forward over the growing sequence each step."""
    seq = prompt.clone()
    margins = []
    with torch.no_grad():
        for _ in range(steps):
            last = model(seq, use_cache=False).logits[0, -1]
            top2 = torch.topk(last, 2).values
            margins.append(float(top2[0] - top2[1]))
            seq = torch.cat([seq, last.argmax().view(1, 1)], dim=1)
    return seq, min(margins)


def tied_name(model) -> str:
    emb = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is emb
    return next(n for n, p in model.named_parameters() if p is emb)


def make(name: str, config, seed: int) -> None:
    out = rc.HF_FIXTURES / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    built = build(name, config, seed)
    built.save_pretrained(out, safe_serialization=True)
    # Everything below uses the model as loaded back from disk, so the reference describes
    # exactly the checkpoint a consumer will read.
    model = rc.load_tiny(name).eval()
    stored = load_file(out / "model.safetensors")
    for k, t in stored.items():
        assert t.dtype == torch.float32, (name, k, t.dtype)
    if config.tie_word_embeddings:
        assert "lm_head.weight" not in stored, name

    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(INPUT_SEED))
    with torch.no_grad():
        ref_logits = built(ids).logits
    is_moe = isinstance(config, (MixtralConfig, Qwen2MoeConfig))
    router_gap = 0.0

    # Forward + loss + backward.
    model.zero_grad(set_to_none=True)
    kwargs = {"output_router_logits": True} if is_moe else {}
    res = model(ids, labels=ids, **kwargs)
    logits = res.logits.detach()
    assert torch.equal(logits, ref_logits) or torch.allclose(logits, ref_logits, atol=1e-6), name
    ce = naive_causal_lm_loss(logits, ids)
    tensors = {"input_ids": ids, "logits": logits}
    if is_moe:
        aux = res.aux_loss.detach()
        total = ce + config.router_aux_loss_coef * aux
        assert torch.allclose(res.loss.detach(), total, atol=1e-6), (res.loss, total)
        naive_aux, router_gap = naive_aux_loss(res.router_logits, config)
        assert torch.allclose(aux, naive_aux, atol=1e-6), (aux, naive_aux)
        tensors["ce_loss"] = ce.reshape(1)
        tensors["aux_loss"] = aux.reshape(1)
        for i, rl in enumerate(res.router_logits):
            tensors[f"router_logits.{i}"] = rl.detach()
    else:
        assert torch.allclose(res.loss.detach(), ce, atol=1e-6), (res.loss, ce)
    tensors["loss"] = res.loss.detach().reshape(1)
    res.loss.backward()

    grads = {n: p.grad.detach() for n, p in model.named_parameters()}
    # Mixtral: transformers 5 fuses the experts into 3-D parameters (gate_up_proj, down_proj)
    # but writes the checkpoint in the original per-expert layout (w1/w2/w3). Apply the same
    # mapping to the gradients so that grad.<name> lines up with model.safetensors.
    grads_ckpt = revert_weight_conversion(model, dict(grads))
    assert set(grads_ckpt) == set(stored), (sorted(set(grads_ckpt) ^ set(stored)))
    params_ckpt = revert_weight_conversion(model, {n: p.detach() for n, p in model.named_parameters()})
    for k in stored:
        assert torch.equal(params_ckpt[k], stored[k]), k
        assert grads_ckpt[k].shape == stored[k].shape, k
        tensors["grad." + k] = grads_ckpt[k]

    # Greedy continuation. eos is disabled (not suppressed with min_new_tokens, which would mask
    # the eos logit and so change the argmax) so generate runs all NEW_TOKENS steps.
    prompt = torch.randint(
        0, VOCAB, (1, PROMPT_LEN), generator=torch.Generator().manual_seed(PROMPT_SEED)
    )
    gcfg = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=NEW_TOKENS,
        eos_token_id=None,
        pad_token_id=0,
        use_cache=True,
    )
    # generate() fills settings left at None from the model's own generation config (eos 2 here):
    # clear it there too, or a greedy step that happens to pick eos would end the run early.
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        greedy = model.generate(prompt, attention_mask=torch.ones_like(prompt), generation_config=gcfg)
    assert greedy.shape == (1, PROMPT_LEN + NEW_TOKENS), greedy.shape
    check, margin = naive_greedy(model, prompt, NEW_TOKENS)
    assert torch.equal(check, greedy), (check, greedy)
    tensors["greedy.prompt"] = prompt
    tensors["greedy.output"] = greedy

    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    meta = rc.metadata(
        family=name,
        model_class=type(model).__name__,
        model_seed=seed,
        input_seed=INPUT_SEED,
        prompt_seed=PROMPT_SEED,
        init_range=INIT_RANGE,
        perturb_1d=PERTURB_1D,
        loss=(
            f"ce_loss + router_aux_loss_coef * aux_loss (HF {type(model).__name__}, output_router_logits=True)"
            if is_moe
            else "HF causal LM loss: mean CE over B*(T-1) shifted tokens"
        ),
        tied_embeddings=tied,
        tied_parameter=("lm_head.weight -> " + tied_name(model)) if tied else "",
        greedy_min_top2_margin=f"{margin:.6f}",
        router_aux_loss_coef=getattr(model.config, "router_aux_loss_coef", ""),
        router_min_topk_gap=f"{router_gap:.6f}" if is_moe else "",
    )
    rc.save_tensors(tensors, out / "reference.safetensors", meta)

    # Read back.
    back = load_file(out / "reference.safetensors")
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    with safe_open(out / "reference.safetensors", "pt") as f:
        assert f.metadata()["transformers"] == rc.versions()["transformers"]
    size = sum(p.stat().st_size for p in out.iterdir())
    cfg = json.loads((out / "config.json").read_text())
    print(
        f"{name}: {len(stored)} weights, {sum(t.numel() for t in stored.values())} params, "
        f"loss {tensors['loss'].item():.6f}, greedy margin {margin:.4f}, dir {size} bytes, "
        f"arch {cfg.get('architectures')}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="families to (re)generate; default all")
    args = ap.parse_args()
    rc.setup_torch()
    all_cfgs = configs()
    for name in args.names or list(all_cfgs):
        if name not in all_cfgs:
            print(f"unknown family {name!r}; known: {', '.join(all_cfgs)}", file=sys.stderr)
            return 2
        cfg, seed = all_cfgs[name]
        make(name, cfg, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
