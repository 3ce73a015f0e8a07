#!/usr/bin/env bash
# ZeRO-Inference in the server (tools/run_benchmarks.sh zero-inference-serve): SmolLM2-135M
# (bf16, dequantized from the cached GGUF) served
#   - in memory (the compute-bound reference),
#   - with --offload-weights nvme --memory-cap 128M (below the 0.27 GB of bf16 weights: the blocks
#     stream from O_DIRECT files once per engine step, for every sequence in the step),
# each loaded by `zerospeed bench serve` at 1, 4 and 16 closed-loop clients (random prompts of
# PROMPT (64) tokens, OUTPUT (32) greedy tokens, 2 requests per client; PREFETCH (2) blocks read
# ahead, MEMCAP (128M) the cap, a 40M KV pool). Against the disk's direct-I/O read bandwidth
# (dd iflag=direct bs=1M, 1 GiB, before and after; the higher; bs=8M printed beside): the
# disk-bound rate of a load point is read bandwidth / weight bytes per step x output tokens per
# step (from /metrics:
# the steps the server ran and the tokens it produced), i.e. the rate if each step took only its
# weight reads; measured / bound is the fraction of the time the disk was reading.
# Usage: bench/offload/zero_inference_serve.sh BIN GGUF OUT NVME_DIR
set -euo pipefail
bin=$1 gguf=$2 out=$3 nvme=$4
mkdir -p "$out" "$nvme"
prompt=${PROMPT:-64} output=${OUTPUT:-32} clients=${CLIENTS:-1 4 16} prefetch=${PREFETCH:-2} cap=${MEMCAP:-128M}
read_bw() {  # "B1 B8": the disk's direct-I/O read bandwidth, bytes/s, dd of 1 GiB at bs=1M (the
    # bound, as bench/offload/zero_inference.sh) and at bs=8M (more requests in the device queue)
    dd if=/dev/zero of="$nvme/dd.bin" bs=1M count=1024 oflag=direct conv=fsync 2>/dev/null
    for bs in 1M 8M; do
        dd if="$nvme/dd.bin" of=/dev/null bs=$bs iflag=direct 2>&1 | tail -1 |
            awk -F', ' '{split($3, t, " "); printf "%.0f ", 1073741824 / t[1]}'
    done
    rm -f "$nvme/dd.bin"
}
rbw0=$(read_bw)
metric() {  # metric NAME: its value on the running server's /metrics
    curl -sf "http://127.0.0.1:$port/metrics" | awk -v n="$1" '$1 == n {print $2}'
}
run_server() {  # run_server LABEL FLAGS...: serve, load it at each client count, stop it
    local label=$1
    shift
    # --port 0: the server binds a free port and logs it (a drawn one may be taken meanwhile).
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$bin" serve --model "$gguf" --dtype bf16 --port 0 \
        --max-seqs 16 --kv-cache-memory 40M "$@" >"$out/$label.log" 2>&1 &
    local pid=$!
    port=""
    for _ in $(seq 1 600); do
        [ -n "$port" ] ||
            port=$(sed -n 's|.* on http://127.0.0.1:\([0-9]*\).*|\1|p' "$out/$label.log" | head -1)
        [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
        kill -0 $pid 2>/dev/null || { cat "$out/$label.log"; exit 1; }
        sleep 0.2
    done
    for c in $clients; do
        local s0 t0
        s0=$(metric zerospeed_engine_steps_total)
        t0=$(metric zerospeed_generation_tokens_total)
        "$bin" bench serve --url "http://127.0.0.1:$port" --clients "$c" --requests $((2 * c)) \
            --prompt-tokens "$prompt" --output-tokens "$output" --max-output-tokens "$output" \
            --label "$label" --out "$out/$label.c$c.jsonl" >"$out/$label.c$c.txt" 2>&1
        echo "$c $(($(metric zerospeed_engine_steps_total) - s0)) $(($(metric zerospeed_generation_tokens_total) - t0))" \
            >"$out/$label.c$c.steps"
    done
    kill -TERM $pid
    wait $pid || true
}
rm -f "$out"/*.jsonl
run_server memory
run_server nvme --offload-weights nvme --offload-path "$nvme" --memory-cap "$cap" --prefetch "$prefetch"
rbw1=$(read_bw)
python3 - "$out" "$rbw0" "$rbw1" "$clients" <<'PY'
import json, re, sys
out, clients = sys.argv[1], [int(c) for c in sys.argv[4].split()]
b0, b1 = [list(map(float, a.split())) for a in sys.argv[2:4]]
rbw, rbw8 = max(b0[0], b1[0]), max(b0[1], b1[1])  # the higher of before and after
print(f"disk read (dd, 1 GiB, direct) before / after: bs=1M {b0[0] / 1e9:.2f} / {b1[0] / 1e9:.2f} "
      f"GB/s, bs=8M {b0[1] / 1e9:.2f} / {b1[1] / 1e9:.2f} GB/s; the bound uses bs=1M's "
      f"{rbw / 1e9:.2f}")
log = open(f"{out}/nvme.log").read()
per_step = int(re.search(r"\((\d+) B\) of block weights per engine step", log).group(1))
mem = re.search(r"memory: (.*)", log).group(1)
print(f"weights streamed per engine step: {per_step / 1e9:.3f} GB; {mem}")
def load(label, c):
    r = json.loads(open(f"{out}/{label}.c{c}.jsonl").readlines()[-1])
    _, steps, toks = map(int, open(f"{out}/{label}.c{c}.steps").read().split())
    return r, steps, toks
for c in clients:
    m, _, _ = load("memory", c)
    r, steps, toks = load("nvme", c)
    tps = toks / steps
    bound = rbw / per_step * tps
    rate = r["output_tokens_per_s"]
    # Steps per second in the measured window (bench serve's warm-up request is in the steps
    # but not in its seconds) x bytes per step.
    read_gbs = rate / tps * per_step / 1e9
    print(f"{c:2d} clients: nvme {rate:.2f} output tokens/s ({r['failed']} failed), "
          f"{steps} steps, {tps:.2f} tokens/step; disk bound {bound:.2f} tokens/s "
          f"({rbw / 1e9:.2f} GB/s / {per_step / 1e9:.3f} GB x {tps:.2f}); measured / bound "
          f"{rate / bound:.2f} (weights read at {read_gbs:.2f} GB/s: {read_gbs * 1e9 / rbw8:.2f}x dd bs=8M); in memory {m['output_tokens_per_s']:.2f} tokens/s "
          f"(nvme / memory {rate / m['output_tokens_per_s']:.2f})")
PY
