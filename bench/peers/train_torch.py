#!/usr/bin/env python3
"""PyTorch CPU training throughput on the model zerospeed trains in bench/run_train.sh: Hugging
Face transformers' GPT2LMHeadModel built from the same config.json (bench/train/gpt2_124m.json),
torch.optim.AdamW (fused), batch B x T, fp32 or bf16 autocast. The first `--warmup` steps are not
timed. Prints one JSON line: {"name", "tokens_per_s", "s_per_step", "peak_rss_bytes", ...}.

  python bench/peers/train_torch.py --config bench/train/gpt2_124m.json --batch 4 --seq 64 \
      --steps 6 --precision fp32
"""
import argparse
import json
import os
import resource
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    a = ap.parse_args()
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = GPT2Config(**{k: v for k, v in json.load(open(a.config)).items() if k != "model_type"})
    model = GPT2LMHeadModel(cfg, ).train()
    model.config._attn_implementation = "sdpa"
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0, fused=True)
    g = torch.Generator().manual_seed(1)
    times, losses = [], []
    for step in range(a.warmup + a.steps):
        x = torch.randint(0, cfg.vocab_size, (a.batch, a.seq + 1), generator=g)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            out = model(input_ids=x[:, :-1], labels=x[:, :-1])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        losses.append(float(out.loss))
        if step >= a.warmup:
            times.append(dt)
        print(f"torch step {step}: loss {losses[-1]:.4f} {dt:.2f} s", flush=True)
    s = sorted(times)[len(times) // 2]
    print(json.dumps({"name": f"pytorch_{a.precision}", "tokens_per_s": a.batch * a.seq / s,
                      "s_per_step": s, "batch": a.batch, "seq": a.seq, "threads": a.threads,
                      "torch": torch.__version__,
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}),
          flush=True)


if __name__ == "__main__":
    main()
