"""DeepSpeed's own learning-rate schedules, fp16 dynamic loss scaler and batch-size resolution,
recorded as a JSON fixture for zerospeed's train/ tests (tests/fixtures/deepspeed/reference.json).

Run with the tools/reference venv plus `pip install deepspeed` (DS_BUILD_OPS=0 needs no compiler):
    ~/.cache/zerospeed/venv/bin/python tools/reference/make_ds_fixtures.py
Schedules are stepped exactly as DeepSpeedEngine does: built with last_batch_iteration=-1, then
scheduler.step() after each applied optimizer step; we record the lr the optimizer holds before
each of 40 steps.
"""
import json
import os
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")
import deepspeed  # noqa: E402
import torch  # noqa: E402
from deepspeed.runtime import lr_schedules  # noqa: E402
from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "deepspeed", "reference.json")

SCHEDULES = [
    ("WarmupLR", dict(warmup_min_lr=1e-4, warmup_max_lr=1e-3, warmup_num_steps=10)),
    ("WarmupLR", dict(warmup_min_lr=0.0, warmup_max_lr=3e-4, warmup_num_steps=7, warmup_type="linear")),
    ("WarmupDecayLR", dict(total_num_steps=30, warmup_min_lr=1e-5, warmup_max_lr=1e-3, warmup_num_steps=8)),
    ("WarmupDecayLR", dict(total_num_steps=25, warmup_max_lr=2e-3, warmup_num_steps=5, warmup_type="linear")),
    ("WarmupCosineLR", dict(total_num_steps=30, warmup_min_ratio=0.1, warmup_num_steps=6, cos_min_ratio=0.01)),
    ("WarmupCosineLR", dict(total_num_steps=20, warmup_num_steps=4, warmup_type="linear")),
    ("OneCycle", dict(cycle_min_lr=1e-4, cycle_max_lr=1e-3, cycle_first_step_size=8, cycle_second_step_size=12,
                      decay_lr_rate=0.1, decay_step_size=3, cycle_momentum=True, cycle_min_mom=0.85,
                      cycle_max_mom=0.95, decay_mom_rate=0.05)),
    ("OneCycle", dict(cycle_min_lr=2e-4, cycle_max_lr=2e-3, cycle_first_step_size=6, cycle_first_stair_count=3,
                      cycle_momentum=False)),
]


def schedule_trace(name, params, base_lr=7e-4, steps=40):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=base_lr, betas=(0.9, 0.999))
    sched = getattr(lr_schedules, name)(opt, **params)
    lrs, moms = [], []
    for _ in range(steps):
        lrs.append(float(opt.param_groups[0]["lr"]))
        moms.append(float(opt.param_groups[0]["betas"][0]))
        sched.step()
    return {"type": name, "params": params, "optimizer_lr": base_lr, "lr": lrs, "beta1": moms}


def scaler_trace(cfg, events):
    s = DynamicLossScaler(init_scale=2 ** cfg["initial_scale_power"], scale_window=cfg["loss_scale_window"],
                          min_scale=cfg["min_loss_scale"], delayed_shift=cfg["hysteresis"],
                          consecutive_hysteresis=cfg["consecutive_hysteresis"], raise_error_at_min_scale=False)
    scales = []
    for ev in events:
        s.update_scale(bool(ev))
        scales.append(float(s.cur_scale))
    return {"config": cfg, "overflow": events, "scale_after": scales}


def batch_case(tbs, mbs, gas, world):
    from deepspeed.runtime.config import DeepSpeedConfig
    cfg = {}
    if tbs is not None:
        cfg["train_batch_size"] = tbs
    if mbs is not None:
        cfg["train_micro_batch_size_per_gpu"] = mbs
    if gas is not None:
        cfg["gradient_accumulation_steps"] = gas

    class FakeMpu:  # DeepSpeedConfig asks the mpu for the data-parallel world size
        def get_data_parallel_world_size(self):
            return world

        def get_data_parallel_rank(self):
            return 0

        def get_model_parallel_world_size(self):
            return 1

    try:
        c = DeepSpeedConfig(cfg, mpu=FakeMpu())
        return {"in": [tbs, mbs, gas, world], "ok": True,
                "out": [c.train_batch_size, c.train_micro_batch_size_per_gpu, c.gradient_accumulation_steps]}
    except Exception as e:  # noqa: BLE001
        return {"in": [tbs, mbs, gas, world], "ok": False, "error": str(e)[:200]}


def main():
    import random
    for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT="29517", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0").items():
        os.environ.setdefault(k, v)
    deepspeed.init_distributed(dist_backend="gloo")
    rnd = random.Random(11)
    events = [1 if rnd.random() < 0.25 else 0 for _ in range(60)]
    out = {
        "deepspeed_version": deepspeed.__version__,
        "torch_version": torch.__version__,
        "schedules": [schedule_trace(n, p) for n, p in SCHEDULES],
        "loss_scaler": [
            scaler_trace(dict(initial_scale_power=8, loss_scale_window=5, min_loss_scale=1.0, hysteresis=2,
                              consecutive_hysteresis=False), events),
            scaler_trace(dict(initial_scale_power=4, loss_scale_window=3, min_loss_scale=2.0, hysteresis=1,
                              consecutive_hysteresis=False), events),
            scaler_trace(dict(initial_scale_power=10, loss_scale_window=4, min_loss_scale=1.0, hysteresis=3,
                              consecutive_hysteresis=True), events),
        ],
        "batch": [batch_case(*c) for c in [
            (32, 4, 2, 4), (32, 4, None, 4), (32, None, 2, 4), (None, 4, 2, 4), (32, None, None, 4),
            (None, 4, None, 4), (16, 4, 4, 2), (30, 4, None, 4), (8, 2, None, 1), (None, 3, 5, 3)]],
    }
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()
