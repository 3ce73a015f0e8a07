#!/usr/bin/env python3
"""Writes tests/fixtures/hf/<name>/train_reference.safetensors: 20 optimizer steps in PyTorch.

Starting from the tiny fixture models written by make_hf_fixtures.py, runs fp32 training the way a
DeepSpeed engine with {"optimizer": AdamW, "scheduler": WarmupLR, "gradient_clipping": 1.0} and
no ZeRO/fp16 does: forward + HF causal-LM loss, backward, global-norm clip, torch.optim.AdamW
step, then scheduler step. Records per-step loss, grad norm (before clipping), the lr applied,
and the final parameters. The schedule and optimizer are documented in README.md.
Usage: python tools/reference/make_train_fixture.py [name ...]   (default: llama gpt2)
"""

import argparse
import math
import sys

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file
from transformers.core_model_loading import revert_weight_conversion

import refcommon as rc

transformers.utils.logging.disable_progress_bar()

STEPS = 20
BATCH, SEQ = 2, 9
BATCH_SEED = 2024
# DeepSpeed WarmupLR parameters ("scheduler": {"type": "WarmupLR", "params": {...}}).
WARMUP_MIN_LR = 1e-4
WARMUP_MAX_LR = 1e-3
WARMUP_NUM_STEPS = 5
WARMUP_TYPE = "log"
# AdamW / clipping.
BETAS = (0.9, 0.95)
EPS = 1e-8
WEIGHT_DECAY = 0.1
CLIP = 1.0


def warmup_lr(last_batch_iteration: int) -> float:
    """DeepSpeed WarmupLR.get_lr() for scheduler state `last_batch_iteration` (-1 before the first
    scheduler.step()). warmup_num_steps is clamped to >= 2 as DeepSpeed does."""
    w = max(2, WARMUP_NUM_STEPS)
    if last_batch_iteration < 0:
        return WARMUP_MIN_LR
    if last_batch_iteration < w:
        if WARMUP_TYPE == "log":
            gamma = math.log(last_batch_iteration + 1) / math.log(w)
        else:  # "linear"
            gamma = last_batch_iteration / w
    else:
        gamma = 1.0
    return WARMUP_MIN_LR + (WARMUP_MAX_LR - WARMUP_MIN_LR) * gamma


def clip_(params, max_norm: float) -> torch.Tensor:
    """DeepSpeed runtime.utils.clip_grad_norm_ (single rank, L2): returns the norm before clipping;
    every gradient is multiplied by min(1, max_norm / (norm + 1e-6))."""
    norms = torch.stack([p.grad.detach().float().norm(2) for p in params])
    total = norms.square().sum().sqrt()
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for p in params:
        p.grad.mul_(coef)
    return total


class NaiveAdamW:
    """Independent restatement of the update in README.md, used to check torch.optim.AdamW."""

    def __init__(self, params):
        self.p = [p.detach().clone() for p in params]
        self.m = [torch.zeros_like(p) for p in self.p]
        self.v = [torch.zeros_like(p) for p in self.p]
        self.t = 0

    def step(self, grads, lr):
        self.t += 1
        b1, b2 = BETAS
        for p, m, v, g in zip(self.p, self.m, self.v, grads):
            p.mul_(1 - lr * WEIGHT_DECAY)
            m.mul_(b1).add_((1 - b1) * g)
            v.mul_(b2).add_((1 - b2) * g * g)
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            p.sub_(lr * m_hat / (v_hat.sqrt() + EPS))


def make(name: str) -> None:
    model = rc.load_tiny(name)
    model.train()  # all dropout probabilities are 0 in the fixture configs
    vocab = model.config.vocab_size
    batches = torch.randint(
        0, vocab, (STEPS, BATCH, SEQ), generator=torch.Generator().manual_seed(BATCH_SEED)
    )
    named = list(model.named_parameters())  # tied parameters appear once
    params = [p for _, p in named]
    opt = torch.optim.AdamW(
        params, lr=WARMUP_MAX_LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY, foreach=False
    )
    naive = NaiveAdamW(params)

    sched_state = -1  # WarmupLR(last_batch_iteration=-1) sets the lr at construction
    for g in opt.param_groups:
        g["lr"] = warmup_lr(sched_state)

    losses, norms, lrs = [], [], []
    for step in range(STEPS):
        ids = batches[step]
        opt.zero_grad(set_to_none=True)
        loss = model(ids, labels=ids).loss
        loss.backward()
        norm = clip_(params, CLIP)
        lr = opt.param_groups[0]["lr"]
        naive.step([p.grad.detach() for p in params], lr)
        opt.step()
        sched_state += 1  # engine.step(): optimizer.step() then lr_scheduler.step()
        for g in opt.param_groups:
            g["lr"] = warmup_lr(sched_state)
        losses.append(float(loss.detach()))
        norms.append(float(norm))
        lrs.append(lr)

    for p, q in zip(params, naive.p):
        assert torch.allclose(p.detach(), q, atol=1e-6, rtol=1e-5), "AdamW restatement disagrees"

    final = revert_weight_conversion(model, {n: p.detach() for n, p in named})
    stored = load_file(rc.HF_FIXTURES / name / "model.safetensors")
    assert set(final) == set(stored), sorted(set(final) ^ set(stored))

    tensors = {
        "batches": batches,
        "loss": torch.tensor(losses, dtype=torch.float32),
        "grad_norm": torch.tensor(norms, dtype=torch.float32),
        "lr": torch.tensor(lrs, dtype=torch.float32),
    }
    for k, v in final.items():
        tensors["param." + k] = v
    meta = rc.metadata(
        family=name,
        steps=STEPS,
        batch_seed=BATCH_SEED,
        optimizer="torch.optim.AdamW(foreach=False), weight decay on every parameter",
        betas=f"{BETAS[0]},{BETAS[1]}",
        eps=EPS,
        weight_decay=WEIGHT_DECAY,
        gradient_clipping=CLIP,
        scheduler="DeepSpeed WarmupLR",
        warmup_min_lr=WARMUP_MIN_LR,
        warmup_max_lr=WARMUP_MAX_LR,
        warmup_num_steps=WARMUP_NUM_STEPS,
        warmup_type=WARMUP_TYPE,
        lr_float64=",".join(repr(x) for x in lrs),
        loss="HF causal LM loss on batches[step] (labels = input_ids), before that step's update",
    )
    out = rc.HF_FIXTURES / name / "train_reference.safetensors"
    rc.save_tensors(tensors, out, meta)
    back = load_file(out)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    with safe_open(out, "pt") as f:
        assert f.metadata()["warmup_type"] == WARMUP_TYPE
    print(
        f"{name}: loss {losses[0]:.5f} -> {losses[-1]:.5f}, grad_norm {norms[0]:.4f} -> "
        f"{norms[-1]:.4f}, clipped at {sum(n > CLIP for n in norms)} steps, "
        f"file {out.stat().st_size} bytes"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=["llama", "gpt2"])
    args = ap.parse_args()
    rc.setup_torch()
    for name in args.names:
        if not (rc.HF_FIXTURES / name / "model.safetensors").exists():
            print(f"{name}: run make_hf_fixtures.py first", file=sys.stderr)
            return 2
        make(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
