#!/usr/bin/env python3
"""DeepSpeed itself (PyPI deepspeed + torch CPU, gloo) training the same model with the same
ds_config.json as zerospeed: Hugging Face GPT2LMHeadModel from bench/train/gpt2_124m.json,
DeepSpeed's ZeRO stage from the config, random token batches of B x T. Launch one process per
rank with torchrun:

  torchrun --nproc_per_node 2 bench/peers/train_deepspeed.py --config bench/train/gpt2_124m.json \
      --ds-config bench/train/ds_zero3.json --seq 64 --steps 6

Rank 0 prints one JSON line: {"name", "tokens_per_s" (all ranks), "s_per_step", "peak_rss_bytes"
(max over ranks)}. The first `--warmup` steps are not timed.
"""
import argparse
import json
import os
import resource
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--ds-config", required=True)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    ap.add_argument("--local_rank", type=int, default=0)
    a = ap.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import torch
    import torch.distributed as dist
    import deepspeed
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(a.threads)
    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ds = json.load(open(a.ds_config))
    ds.pop("steps_per_print", None)
    ds["steps_per_print"] = 10**9
    # Adam through DeepSpeed's own CPU kernel when the optimizer is on the CPU, as users run it.
    torch.manual_seed(0)
    cfg = GPT2Config(**{k: v for k, v in json.load(open(a.config)).items() if k != "model_type"})
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage == 3:
        with deepspeed.zero.Init(config_dict_or_path=ds):
            model = GPT2LMHeadModel(cfg)
    else:
        model = GPT2LMHeadModel(cfg)
    model.config._attn_implementation = "sdpa"
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)
    B = engine.train_micro_batch_size_per_gpu()
    g = torch.Generator().manual_seed(1 + rank)
    times = []
    for step in range(a.warmup + a.steps):
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(engine.gradient_accumulation_steps()):
            x = torch.randint(0, cfg.vocab_size, (B, a.seq), generator=g)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=engine.bfloat16_enabled()):
                loss = engine(input_ids=x, labels=x).loss
            engine.backward(loss)
            engine.step()
        dist.barrier()
        dt = time.perf_counter() - t0
        if step >= a.warmup:
            times.append(dt)
        if rank == 0:
            print(f"deepspeed step {step}: loss {float(loss):.4f} {dt:.2f} s", flush=True)
    rss = torch.tensor([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024], dtype=torch.int64)
    dist.all_reduce(rss, op=dist.ReduceOp.MAX)
    if rank == 0:
        s = sorted(times)[len(times) // 2]
        tokens = B * a.seq * engine.gradient_accumulation_steps() * world
        print(json.dumps({"name": f"deepspeed_zero{stage}", "tokens_per_s": tokens / s, "s_per_step": s,
                          "ranks": world, "threads_per_rank": a.threads, "micro_batch": B,
                          "seq": a.seq, "deepspeed": deepspeed.__version__,
                          "peak_rss_bytes_max_rank": int(rss.item())}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
