"""DeepSpeed's own answers for zerospeed's train/ tests: tests/fixtures/deepspeed/reference.json.

Records, with the PyPI `deepspeed` package (CPU only; DS_BUILD_OPS=0 installs it without compiling):
  * schedules: the lr (and OneCycle's betas) that DeepSpeed's scheduler objects
    (deepspeed.runtime.lr_schedules) put into a torch optimizer, for 0..N scheduler.step() calls.
    Entry n is the lr the (n+1)-th applied optimizer step runs at: DeepSpeedEngine builds the
    scheduler with last_batch_iteration=-1 and calls scheduler.step() after each applied step.
  * loss_scaler: for scripted overflow sequences, the scale each step runs at, whether it is skipped
    and the scale after it, from the scaler DeepSpeed's ZeRO optimizers build
    (fp16.loss_scaler.CreateLossScaler with DeepSpeedFP16Config.dynamic_loss_scale_args()), and the
    event at which DeepSpeed raises (overflow at the minimum scale), if any.
  * batch: train_batch_size / micro / accumulation as DeepSpeedConfig resolves them (or the error it
    raises) for given world sizes. DeepSpeedConfig takes the world size from an `mpu` object's
    get_data_parallel_world_size(), so a small fake mpu supplies it; no process group is needed.
  * configs: every tests/fixtures/deepspeed/configs/*.json read by DeepSpeedConfig (same fake
    mpu), with the resolved values and defaults the C++ parser must reproduce.

Run from the repository root (the venv of tools/reference/README.md plus `pip install deepspeed`):
    ~/.cache/zerospeed/venv/bin/python tools/reference/make_ds_fixtures.py
The loss scaler logs through deepspeed.comm.get_rank(), so a one-rank gloo group on 127.0.0.1 is
initialised first. Output is deterministic.
"""
import json
import math
import os
import pathlib
import platform
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")
import deepspeed  # noqa: E402
from dscommon import FakeMpu  # noqa: E402
import torch  # noqa: E402
from deepspeed.runtime import lr_schedules  # noqa: E402
from deepspeed.runtime.config import DeepSpeedConfig  # noqa: E402
from deepspeed.runtime.fp16.loss_scaler import CreateLossScaler  # noqa: E402
from deepspeed.runtime.precision_config import DeepSpeedFP16Config  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "tests" / "fixtures" / "deepspeed"
STEPS = 60

# (scheduler type, params, optimizer "AdamW"|"SGD", optimizer lr)
SCHEDULES = [
    ("WarmupLR", dict(warmup_min_lr=1e-4, warmup_max_lr=1e-3, warmup_num_steps=10), "AdamW", 7e-4),
    ("WarmupLR", dict(warmup_min_lr=0.0, warmup_max_lr=3e-4, warmup_num_steps=7, warmup_type="linear"),
     "AdamW", 7e-4),
    ("WarmupLR", dict(warmup_num_steps=12), "AdamW", 5e-4),  # warmup_max_lr: the optimizer's lr
    ("WarmupLR", dict(warmup_min_lr=2e-5, warmup_num_steps=1, warmup_type="linear"), "SGD", 1e-2),
    ("WarmupDecayLR", dict(total_num_steps=30, warmup_min_lr=1e-5, warmup_max_lr=1e-3, warmup_num_steps=8),
     "AdamW", 7e-4),
    ("WarmupDecayLR", dict(total_num_steps=25, warmup_max_lr=2e-3, warmup_num_steps=5, warmup_type="linear"),
     "AdamW", 7e-4),
    ("WarmupDecayLR", dict(total_num_steps=40), "AdamW", 7e-4),  # warmup 1000 > total; max 0.001
    ("WarmupDecayLR", dict(total_num_steps=6, warmup_num_steps=9, warmup_type="linear"), "AdamW", 7e-4),
    ("WarmupCosineLR", dict(total_num_steps=30, warmup_min_ratio=0.1, warmup_num_steps=6, cos_min_ratio=0.01),
     "AdamW", 7e-4),
    ("WarmupCosineLR", dict(total_num_steps=20, warmup_num_steps=4, warmup_type="linear"), "AdamW", 3e-3),
    ("WarmupCosineLR", dict(total_num_steps=5, warmup_num_steps=8, cos_min_ratio=0.2), "SGD", 1e-1),
    ("OneCycle", dict(cycle_min_lr=1e-4, cycle_max_lr=1e-3, cycle_first_step_size=8, cycle_second_step_size=12,
                      decay_lr_rate=0.1, decay_step_size=3, cycle_momentum=True, cycle_min_mom=0.85,
                      cycle_max_mom=0.95, decay_mom_rate=0.05), "AdamW", 7e-4),
    ("OneCycle", dict(cycle_min_lr=2e-4, cycle_max_lr=2e-3, cycle_first_step_size=6, cycle_first_stair_count=3,
                      cycle_momentum=False), "AdamW", 7e-4),
    ("OneCycle", dict(cycle_min_lr=1e-3, cycle_max_lr=1e-2, cycle_first_step_size=5, cycle_second_step_size=9,
                      cycle_first_stair_count=2, cycle_second_stair_count=4, decay_step_size=4,
                      decay_lr_rate=0.5), "AdamW", 7e-4),
    ("OneCycle", dict(cycle_min_lr=1e-3, cycle_max_lr=1e-2, cycle_first_step_size=10, decay_step_size=2,
                      decay_lr_rate=0.2), "SGD", 1e-2),  # SGD has no betas: momentum is not cycled
    ("LRRangeTest", dict(lr_range_test_min_lr=1e-4, lr_range_test_step_size=5, lr_range_test_step_rate=2.0),
     "AdamW", 7e-4),
    ("LRRangeTest", dict(lr_range_test_min_lr=3e-4, lr_range_test_step_size=4, lr_range_test_step_rate=0.5,
                         lr_range_test_staircase=True), "SGD", 7e-4),
]


def schedule_trace(name, params, opt_name, base_lr):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = (torch.optim.AdamW([p], lr=base_lr, betas=(0.9, 0.999)) if opt_name == "AdamW"
           else torch.optim.SGD([p], lr=base_lr))
    sched = getattr(lr_schedules, name)(opt, **params)
    lrs, betas = [], []
    for _ in range(STEPS + 1):
        g = opt.param_groups[0]
        lrs.append(float(g["lr"]))
        betas.append([float(b) for b in g["betas"]] if "betas" in g else None)
        sched.step()
    return {"type": name, "params": params, "optimizer": opt_name, "optimizer_lr": base_lr, "lr": lrs,
            "betas": betas}


def scaler_trace(fp16, events):
    cfg = DeepSpeedFP16Config(**fp16)
    scaler = CreateLossScaler(dtype=torch.half, static_loss_scale=cfg.loss_scale,
                              dynamic_scaling=cfg.loss_scale == 0,
                              dynamic_loss_args=cfg.dynamic_loss_scale_args())
    before, skip, after, raised_at = [], [], [], None
    for i, ev in enumerate(events):
        scale = float(scaler.cur_scale)
        try:
            scaler.update_scale(bool(ev))
        except Exception:  # noqa: BLE001  DeepSpeed raises a bare Exception at the minimum scale
            raised_at = i
            break
        before.append(scale)
        skip.append(bool(ev))  # ZeRO skips the optimizer step exactly when it overflowed
        after.append(float(scaler.cur_scale))
    return {"fp16": fp16, "overflow": events[:len(before) + (raised_at is not None)], "scale_before": before,
            "skip": skip, "scale_after": after, "raised_at": raised_at}


def batch_case(tbs, mbs, gas, world):
    cfg = {k: v for k, v in (("train_batch_size", tbs), ("train_micro_batch_size_per_gpu", mbs),
                             ("gradient_accumulation_steps", gas)) if v is not None}
    case = {"in": [tbs, mbs, gas, world]}
    try:
        c = DeepSpeedConfig(cfg, mpu=FakeMpu(world))
        case.update(ok=True, out=[c.train_batch_size, c.train_micro_batch_size_per_gpu,
                                  c.gradient_accumulation_steps])
    except Exception as e:  # noqa: BLE001
        case.update(ok=False, error=f"{type(e).__name__}: {e}"[:240])
    return case


def jsonable(v):
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, float) and math.isinf(v):
        return None
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    return str(v)  # enums, paths, torch dtypes


def config_case(path, world):
    c = DeepSpeedConfig(str(path), mpu=FakeMpu(world))
    zero = c.zero_config.model_dump()
    ac = c.activation_checkpointing_config
    mon = c.monitor_config
    return {
        "file": path.name, "world_size": world,
        "train_batch_size": c.train_batch_size,
        "train_micro_batch_size_per_gpu": c.train_micro_batch_size_per_gpu,
        "gradient_accumulation_steps": c.gradient_accumulation_steps,
        "optimizer_name": c.optimizer_name, "optimizer_params": c.optimizer_params,
        "scheduler_name": c.scheduler_name, "scheduler_params": c.scheduler_params,
        "gradient_clipping": c.gradient_clipping,
        "fp16": jsonable(c.float16_config.model_dump()),
        "bf16": jsonable(c.bfloat16_config.model_dump()),
        "zero": jsonable(zero),
        "activation_checkpointing": {k: getattr(ac, k) for k in (
            "partition_activations", "contiguous_memory_optimization", "cpu_checkpointing",
            "number_checkpoints", "synchronize_checkpoint_boundary", "profile")},
        "steps_per_print": c.steps_per_print, "wall_clock_breakdown": c.wall_clock_breakdown,
        "dump_state": c.dump_state, "prescale_gradients": c.prescale_gradients,
        "gradient_predivide_factor": c.gradient_predivide_factor,
        "communication_data_type": jsonable(c.communication_data_type),
        "checkpoint_tag_validation_enabled": c.checkpoint_tag_validation_enabled,
        "checkpoint_tag_validation_fail": c.checkpoint_tag_validation_fail,
        "load_universal_checkpoint": c.load_universal_checkpoint,
        "use_node_local_storage": c.use_node_local_storage,
        "grad_accum_dtype": c.grad_accum_dtype,
        "csv_monitor": jsonable(mon.csv_monitor.model_dump()),
        "tensorboard": jsonable(mon.tensorboard.model_dump()),
    }


def main():
    for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517", RANK="0", WORLD_SIZE="1",
                     LOCAL_RANK="0").items():
        os.environ.setdefault(k, v)
    deepspeed.init_distributed(dist_backend="gloo")

    # Scripted overflow sequences: a seeded random one and hand-written edge cases.
    state = 11
    rnd = []
    for _ in range(80):  # a small LCG, so the sequence does not depend on Python's random module
        state = (state * 1103515245 + 12345) % (1 << 31)
        rnd.append(1 if (state >> 16) % 4 == 0 else 0)
    burst = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    scalers = [
        scaler_trace(dict(enabled=True, initial_scale_power=8, loss_scale_window=5, min_loss_scale=1,
                          hysteresis=2, consecutive_hysteresis=False), rnd),
        scaler_trace(dict(enabled=True, initial_scale_power=4, loss_scale_window=3, min_loss_scale=2,
                          hysteresis=1), rnd),  # reaches the minimum and raises
        scaler_trace(dict(enabled=True, initial_scale_power=10, loss_scale_window=4, min_loss_scale=1,
                          hysteresis=3, consecutive_hysteresis=True), rnd),
        scaler_trace(dict(enabled=True, initial_scale_power=16, loss_scale_window=2, hysteresis=2), burst),
        scaler_trace(dict(enabled=True, initial_scale_power=16, loss_scale_window=1, hysteresis=4,
                          consecutive_hysteresis=True), burst),
        scaler_trace(dict(enabled=True), burst),  # DeepSpeed's defaults
        scaler_trace(dict(enabled=True, loss_scale=128.0), burst),  # static
    ]
    batch = [batch_case(*c) for c in [
        (32, 4, 2, 4), (32, 4, None, 4), (32, None, 2, 4), (None, 4, 2, 4), (32, None, None, 4),
        (None, 4, None, 4), (16, 4, 4, 2), (30, 4, None, 4), (8, 2, None, 1), (None, 3, 5, 3),
        (None, None, 4, 2), (None, None, None, 1), (33, 4, 2, 4), (12, 4, None, 4), (16, 16, None, 2),
        (10, None, 3, 1), (0, 4, None, 1), (8, 0, None, 1), (8, 4, 0, 1), (-8, 2, None, 1),
        (7, None, None, 2), (96, 4, None, 8), (96, None, 3, 8), (32.0, 4, None, 4), (1, None, None, 1)]]
    configs = [config_case(p, w) for p, w in [
        (OUT_DIR / "configs" / "zero2_offload.json", 4), (OUT_DIR / "configs" / "zero3_offload.json", 8),
        (OUT_DIR / "configs" / "fp16_dynamic.json", 2), (OUT_DIR / "configs" / "bf16_lion.json", 6)]]
    out = {
        "generator": "tools/reference/make_ds_fixtures.py",
        "deepspeed_version": deepspeed.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "schedules": [schedule_trace(*s) for s in SCHEDULES],
        "loss_scaler": scalers,
        "batch": batch,
        "configs": configs,
    }
    text = json.dumps(out, indent=1, sort_keys=True)
    (OUT_DIR / "reference.json").write_text(text + "\n")
    print(f"wrote {OUT_DIR / 'reference.json'} ({len(text)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
