"""DeepSpeed's elastic batch for zerospeed's train/ tests: tests/fixtures/deepspeed/elasticity.json.

For each (ds_config, data-parallel world size) pair it records what DeepSpeed itself makes of an
"elasticity" block: the train_batch_size / train_micro_batch_size_per_gpu /
gradient_accumulation_steps that DeepSpeedConfig writes over the config (runtime/config.py
DeepSpeedConfig.__init__, which calls deepspeed.elasticity.compute_elastic_config), the valid world
sizes compute_elastic_config returns, or the exception DeepSpeed raises. Nothing here restates the
algorithm: every number comes from the installed deepspeed package.

Elasticity was removed in DeepSpeed 0.19.8 (its DeepSpeedConfig refuses the block), so this needs
deepspeed 0.19.7, the last release with it, which is not the version of tools/reference/
requirements.txt. A separate venv (about 5.4 GB with torch's CUDA wheels; CPU only is used):
    python3 -m venv /tmp/ds0197 && DS_BUILD_OPS=0 /tmp/ds0197/bin/pip install numpy packaging \
        torch==2.15.0 && DS_BUILD_OPS=0 /tmp/ds0197/bin/pip install --no-build-isolation \
        deepspeed==0.19.7
Then, from the repository root:
    /tmp/ds0197/bin/python tools/reference/make_elastic_fixture.py
DeepSpeedConfig takes the world size from a fake mpu's get_data_parallel_world_size() after a
one-rank gloo group on 127.0.0.1 is set up (as make_ds_fixtures.py does). Output is deterministic.
"""
import copy
import json
import os
import pathlib
import platform
import random
import sys

os.environ.setdefault("DS_ACCELERATOR", "cpu")
import deepspeed  # noqa: E402
from dscommon import FakeMpu  # noqa: E402
import torch  # noqa: E402

try:
    from deepspeed.elasticity import compute_elastic_config  # noqa: E402
except ImportError:
    sys.exit(f"deepspeed {deepspeed.__version__} has no deepspeed.elasticity (removed in 0.19.8): "
             "install deepspeed==0.19.7 as the docstring says")
from deepspeed.git_version_info import version as ds_version  # noqa: E402
from deepspeed.runtime.config import DeepSpeedConfig  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "deepspeed" / "elasticity.json"
WORLDS = list(range(1, 13)) + [16, 24, 32, 48, 64]


def run(name, config, full_error):
    """DeepSpeed's answers for one config over WORLDS. results[i] is, for WORLDS[i], either
    [train_batch_size, micro, accumulation, v] where valid[v] lists the valid world sizes
    compute_elastic_config returned (v = -1 when elasticity is off), or the error's class name
    (with full_error, "Class: start of the message")."""
    results, valid = [], []
    for world in WORLDS:
        try:
            c = DeepSpeedConfig(copy.deepcopy(config), mpu=FakeMpu(world))
        except Exception as e:  # noqa: BLE001
            text = " ".join(f"{type(e).__name__}: {e}".split())
            results.append(text[:100] if full_error else type(e).__name__)
            continue
        batch = [c.train_batch_size, c.train_micro_batch_size_per_gpu, c.gradient_accumulation_steps]
        v = -1
        if c.elasticity_enabled:
            final, sizes, micro = compute_elastic_config(copy.deepcopy(config), ds_version, world_size=world)
            assert [final, micro] == batch[:2], (config, world, final, micro, batch)
            sizes = [int(x) for x in sizes]
            if sizes not in valid:
                valid.append(sizes)
            v = valid.index(sizes)
        results.append(batch + [v])
    return {"name": name, "config": config, "results": results, "valid": valid}


def elastic(**kw):
    return {"elasticity": dict(enabled=True, **kw)}


# Hand-picked: DeepSpeed's docstring example and unit tests, the fix of deepspeedai/DeepSpeed#8237,
# the version-0.2 fallback, batch keys next to the block, and every error ElasticityConfig raises.
NAMED = [
    ("docstring example (version 0.2 default)", elastic(max_train_batch_size=2000, micro_batch_sizes=[2, 4, 6],
                                                        min_gpus=1, max_gpus=10000, min_time=20)),
    ("docstring example, version 0.1", elastic(max_train_batch_size=2000, micro_batch_sizes=[2, 4, 6],
                                               version=0.1)),
    ("test_basic_10k", elastic(max_train_batch_size=10000, micro_batch_sizes=[8, 12, 16, 17], min_gpus=32,
                               max_gpus=1500, min_time=20, version=0.1)),
    ("test_proper_mbsz", elastic(max_train_batch_size=32, micro_batch_sizes=[1, 2, 3, 7], min_gpus=1,
                                 max_gpus=1500, version=0.1)),
    ("LCM above the max (#8237)", elastic(max_train_batch_size=100, micro_batch_sizes=[8, 10, 12], max_gpus=1500,
                                          version=0.1)),
    ("prefer the smaller batch", elastic(max_train_batch_size=1000, micro_batch_sizes=[2, 3, 5],
                                         prefer_larger_batch=False, version=0.1)),
    ("version 0.2 per node", elastic(max_train_batch_size=4096, micro_batch_sizes=[2, 4], num_gpus_per_node=4,
                                     model_parallel_size=2, min_gpus=4, max_gpus=64, version=0.2)),
    ("version 0.2 world off the list (fallback)", elastic(max_train_batch_size=1000, micro_batch_sizes=[3, 4],
                                                          num_gpus_per_node=8, min_gpus=8, max_gpus=64)),
    ("version 0.2 max_gpus below one node", elastic(max_train_batch_size=512, micro_batch_sizes=[4, 8],
                                                    num_gpus_per_node=8, max_gpus=4)),
    ("version as a string", elastic(max_train_batch_size=256, micro_batch_sizes=[4, 8], version="0.1")),
    ("repeated micro-batch sizes", elastic(max_train_batch_size=600, micro_batch_sizes=[5, 5, 10], version=0.1)),
    ("micro-batch equal to the max", elastic(max_train_batch_size=24, micro_batch_sizes=[24, 8], version=0.1)),
    ("batch keys without ignore flag", dict(train_batch_size=64, **elastic(max_train_batch_size=256,
                                                                           micro_batch_sizes=[4, 8]))),
    ("batch keys with ignore flag", dict(train_batch_size=64, gradient_accumulation_steps=2,
                                         **elastic(max_train_batch_size=256, micro_batch_sizes=[4, 8],
                                                   ignore_non_elastic_batch_info=True))),
    ("disabled block: the batch keys apply", {"train_batch_size": 48, "elasticity": {
        "enabled": False, "max_train_batch_size": 256, "micro_batch_sizes": [4, 8]}}),
    ("block without enabled: ignored", {"train_micro_batch_size_per_gpu": 2, "elasticity": {
        "max_train_batch_size": 256, "micro_batch_sizes": [4, 8]}}),
    ("error: no max_train_batch_size", elastic(micro_batch_sizes=[4, 8])),
    ("error: no micro_batch_sizes", elastic(max_train_batch_size=64)),
    ("error: micro_batch_sizes not a list", elastic(max_train_batch_size=64, micro_batch_sizes=4)),
    ("error: a float micro-batch size", elastic(max_train_batch_size=64, micro_batch_sizes=[4.0, 8])),
    ("error: a zero micro-batch size", elastic(max_train_batch_size=64, micro_batch_sizes=[0, 8])),
    ("error: min_gpus 0", elastic(max_train_batch_size=64, micro_batch_sizes=[4], min_gpus=0)),
    ("error: max_gpus < min_gpus", elastic(max_train_batch_size=64, micro_batch_sizes=[4], min_gpus=8,
                                           max_gpus=4)),
    ("error: model parallel with version 0.1", elastic(max_train_batch_size=64, micro_batch_sizes=[4],
                                                       model_parallel_size=2, num_gpus_per_node=2,
                                                       version=0.1)),
    ("error: version 0.3", elastic(max_train_batch_size=64, micro_batch_sizes=[4], version=0.3)),
    ("error: version 0.15", elastic(max_train_batch_size=64, micro_batch_sizes=[4], version=0.15)),
    ("error: num_gpus_per_node not divisible by model_parallel_size",
     elastic(max_train_batch_size=64, micro_batch_sizes=[4], num_gpus_per_node=4, model_parallel_size=3)),
    ("error: micro-batch above the max", elastic(max_train_batch_size=6, micro_batch_sizes=[4, 8], version=0.1)),
    ("error: micro-batch above the per-node max", elastic(max_train_batch_size=64, micro_batch_sizes=[16],
                                                          num_gpus_per_node=8)),
    ("error: negative min_time", elastic(max_train_batch_size=64, micro_batch_sizes=[4], min_time=-1)),
]

MICRO = [[1], [2], [4], [7], [2, 4, 6], [1, 2, 3, 7], [8, 10, 12], [8, 12], [3, 5], [1, 2, 4, 8, 16],
         [6, 10, 15], [2, 3], [16, 24, 32], [4, 6], [12, 18], [1, 3, 9], [2, 4, 8], [6], [5, 7, 11]]
MAXES = [1, 2, 6, 7, 16, 24, 32, 48, 64, 100, 128, 250, 500, 1000, 1024, 2000, 4096, 9999, 10000, 65536,
         100000, 1000000, 10000000]
GPUS = [(1, 10000), (1, 8), (2, 16), (4, 4), (3, 64), (1, 1), (16, 10000), (1, 3), (8, 256), (5, 7), (2, 10000),
        (100, 200)]


def sampled(n, seed=20260901):
    """n random elasticity blocks over the grids above (version 0.1, and 0.2 with node shapes)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lo, hi = rng.choice(GPUS)
        micro = rng.choice(MICRO)
        # Mostly a max that every micro-batch size fits (else DeepSpeed stops at that check).
        maxes = MAXES if rng.random() < 0.15 else [m for m in MAXES if m >= max(micro)]
        block = dict(enabled=True, max_train_batch_size=rng.choice(maxes), micro_batch_sizes=micro,
                     min_gpus=lo, max_gpus=hi, prefer_larger_batch=rng.random() < 0.75)
        if rng.random() < 0.5:
            block["version"] = 0.1
        else:
            block["version"] = 0.2
            block["num_gpus_per_node"] = rng.choice([1, 1, 2, 4, 8, 3, 6])
            block["model_parallel_size"] = rng.choice([m for m in (1, 1, 2, 3, 4)
                                                       if block["num_gpus_per_node"] % m == 0])
        out.append((f"sampled {i}", {"elasticity": block}))
    return out


def main():
    for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT="29519", RANK="0", WORLD_SIZE="1",
                     LOCAL_RANK="0").items():
        os.environ.setdefault(k, v)
    deepspeed.init_distributed(dist_backend="gloo")
    cases = [run(name, config, True) for name, config in NAMED]
    cases += [run(name, config, False) for name, config in sampled(150)]
    out = {
        "meta": {
            "generator": "tools/reference/make_elastic_fixture.py",
            "deepspeed_version": deepspeed.__version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
        },
        "worlds": WORLDS,
        "cases": cases,
    }
    text = json.dumps(out, sort_keys=True, separators=(",", ":"))
    # One case per line, so diffs stay readable.
    text = text.replace(',{"config":', ',\n{"config":')
    OUT.write_text(text + "\n")
    ok = sum(isinstance(r, list) for c in cases for r in c["results"])
    print(f"wrote {OUT.relative_to(REPO)}: {len(cases)} configs x {len(WORLDS)} world sizes, "
          f"{ok} resolved, {len(cases) * len(WORLDS) - ok} errors")


if __name__ == "__main__":
    main()
