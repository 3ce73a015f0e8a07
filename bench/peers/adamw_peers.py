#!/usr/bin/env python3
"""The CPU AdamW step on 100M fp32 parameters through DeepSpeed's cpu_adam (DeepSpeedCPUAdam,
JIT-built by PyPI deepspeed with this machine's compiler) and torch.optim.AdamW (foreach and
fused), with the same hyper-parameters as bench/optim/optim_bench.cpp. Prints one JSON line per
optimizer: {"name", "params_per_s", "ms_per_step"}.

  python bench/peers/adamw_peers.py [--params 100000000] [--threads 2] [--steps 10]
"""
import argparse
import json
import os
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", type=int, default=100_000_000)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--only", default="", help="comma list: deepspeed_cpu_adam,torch_foreach,torch_fused")
    a = ap.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch

    torch.set_num_threads(a.threads)

    def make(name):
        p = torch.nn.Parameter(torch.full((a.params,), 0.5))
        p.grad = torch.full((a.params,), 1e-3)
        kw = dict(lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
        if name == "deepspeed_cpu_adam":
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return p, DeepSpeedCPUAdam([p], adamw_mode=True, **kw)
        if name == "torch_foreach":
            return p, torch.optim.AdamW([p], foreach=True, **kw)
        return p, torch.optim.AdamW([p], fused=True, **kw)

    names = a.only.split(",") if a.only else ["deepspeed_cpu_adam", "torch_foreach", "torch_fused"]
    for name in names:
        p, opt = make(name)
        opt.step()  # warm-up: allocates the states
        t0 = time.perf_counter()
        for _ in range(a.steps):
            opt.step()
        dt = (time.perf_counter() - t0) / a.steps
        moved = float(p.detach()[12345]) < 0.5
        print(json.dumps({"name": name, "params_per_s": a.params / dt, "ms_per_step": dt * 1e3,
                          "threads": a.threads, "updated": moved}), flush=True)
        del p, opt


if __name__ == "__main__":
    main()
