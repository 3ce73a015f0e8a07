#!/usr/bin/env bash
# ZeRO-Inference on this machine's disk (tools/run_benchmarks.sh zero-inference): SmolLM2-135M
# re-typed to a bf16 GGUF (`zerospeed convert --to gguf --dtype bf16`: 269 MB of weights)
# generating greedily
#   - in memory, uncapped (the reference speed and text),
#   - with --offload-weights nvme (every block's weights read from O_DIRECT files for every
#     forward) inside a memory cgroup of CAP (default 192M: below the bf16 weights) at batch 1, 4,
#     16 and 64, and at batch 256 and 512 under CAP_LARGE (default 1G: the KV cache, logits and
#     activations of that many sequences need more than the weights; the weights still stream),
#   - llama.cpp's llama-cli (when LLAMA_CLI names it) on the same bf16 file, mmap (its default),
#     inside the same CAP cgroup, at batch 1,
# against the disk's direct-I/O read bandwidth (dd, 1 GiB) and the bf16 matmul peak (`zerospeed
# doctor`), both measured in the same run. Bound at batch B: the disk's, read bandwidth / bytes
# per forward x B tokens/s; the compute's, peak / (2 x parameters) tokens/s. Printed: measured /
# disk bound, and achieved FLOP/s (2 x parameters x tokens/s) / peak.
# Usage: bench/offload/zero_inference.sh BIN GGUF OUT NVME_DIR   (as root: the cgroups)
#   CAP (192M), CAP_LARGE (1G), BATCHES ("1 4 16 64 256 512"), TOKENS (16), LLAMA_CLI
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/../cgroup_common.sh"
bin=$1 gguf=$2 out=$3 nvme=$4
mkdir -p "$out" "$nvme"
n=${TOKENS:-16} cap=${CAP:-192M} cap_large=${CAP_LARGE:-1G}
batches=${BATCHES:-1 4 16 64 256 512}
prompt="The history of the printing press"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

model=$out/smollm2-bf16.gguf
"$bin" convert --model "$gguf" --to gguf --dtype bf16 --output "$model" >/dev/null
dd if=/dev/zero of="$nvme/dd.bin" bs=1M count=1024 oflag=direct conv=fsync 2>/dev/null
rbw=$(dd if="$nvme/dd.bin" of=/dev/null bs=1M iflag=direct 2>&1 | tail -1 |
    awk -F', ' '{split($3, t, " "); printf "%.0f", 1073741824 / t[1]}')
rm -f "$nvme/dd.bin"
peak=$("$bin" doctor 2>&1 | sed -n 's/^matmul bf16 .*: \([0-9.]*\) GFLOP\/s.*/\1/p')
echo "disk read (dd, 1 GiB, direct): $(awk -v b="$rbw" 'BEGIN{printf "%.2f", b/1e9}') GB/s;" \
    "bf16 matmul peak (zerospeed doctor, $OMP_NUM_THREADS threads): $peak GFLOP/s"

gen() {  # gen LABEL ARGS...: zerospeed generate, text to LABEL.txt, log to LABEL.log
    local label=$1
    shift
    "$bin" generate --model "$model" --dtype bf16 --prompt "$prompt" --max-tokens "$n" \
        --temperature 0 --ignore-eos "$@" >"$out/$label.txt" 2>"$out/$label.log"
}
gen memory
: >"$out/peaks.txt"
for b in $batches; do
    c=$cap
    [ "$b" -gt 64 ] && c=$cap_large
    # --memory-cap: the stream's own budget, what the cgroup leaves after the process's code,
    # libraries and thread stacks (48 MiB).
    mc=$(($(cg_bytes "$c") - 48 * 1048576))
    cg_run "$c" "$bin" generate --model "$model" --dtype bf16 --prompt "$prompt" \
        --max-tokens "$n" --temperature 0 --ignore-eos --offload-weights nvme \
        --offload-path "$nvme" --memory-cap "$mc" --batch "$b" \
        >"$out/nvme_b$b.txt" 2>"$out/nvme_b$b.log" ||
        echo "nvme batch $b: failed (exit $?; $out/nvme_b$b.log)"
    echo "nvme_b$b $c $cg_peak" >>"$out/peaks.txt"
done
if [ -n "${LLAMA_CLI:-}" ]; then
    # The file's pages leave the page cache first: pages cached by an earlier reader stay charged
    # to that reader's cgroup, and llama.cpp would read them from memory past the cap.
    sync
    echo 1 >/proc/sys/vm/drop_caches
    cg_run "$cap" "$LLAMA_CLI" -m "$model" -p "$prompt" -n "$n" -t "$OMP_NUM_THREADS" -c 256 \
        --temp 0 -no-cnv --ignore-eos </dev/null >"$out/llama_b1.log" 2>&1 ||
        echo "llama-cli: failed (exit $?; $out/llama_b1.log)"
    echo "llama_b1 $cap $cg_peak" >>"$out/peaks.txt"
fi
if [ -f "$out/nvme_b1.txt" ]; then
    cmp -s "$out/memory.txt" "$out/nvme_b1.txt" && same=identical || same=DIFFERENT
    echo "batch 1 text streamed vs in memory: $same"
fi
python3 - "$out" "$rbw" "$peak" "$model" <<'PY'
import os, re, sys
out, rbw, peak, model = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]) * 1e9, sys.argv[4]
params = os.path.getsize(model) / 2  # bf16 GGUF: 2 bytes per parameter (norms are negligible)
peaks = {l.split()[0]: (l.split()[1], int(l.split()[2])) for l in open(f"{out}/peaks.txt")}
def rate(label):
    try:
        t = open(f"{out}/{label}.log").read()
    except OSError:
        return None, 0
    m = re.search(r"generated: (\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s", t)
    w = re.search(r"([\d.]+) GB of block weights per forward", t)
    return (float(m.group(3)) if m else None), (float(w.group(1)) * 1e9 if w else 0)
mem, _ = rate("memory")
print(f"model: {params / 1e6:.1f} M parameters, {2 * params / 1e6:.0f} MB of bf16 weights")
print(f"in memory (uncapped), batch 1: {mem:.2f} tokens/s")
for label in sorted((k for k in peaks if k.startswith("nvme_b")), key=lambda k: int(k[6:])):
    b = int(label[6:])
    r, per_fwd = rate(label)
    cap, used = peaks[label]
    if r is None or not per_fwd:
        print(f"nvme batch {b}: no result (see {out}/{label}.log)")
        continue
    disk = rbw / per_fwd * b
    print(f"nvme batch {b} (cgroup {cap}, peak {used / 2**20:.0f} MiB): {r:.2f} tokens/s; "
          f"disk bound {disk:.2f} ({per_fwd / 1e9:.3f} GB per forward at {rbw / 1e9:.2f} GB/s x {b}): "
          f"{r / disk:.2f}x; {2 * params * r / 1e9:.1f} GFLOP/s = {2 * params * r / peak:.2f} of "
          f"the bf16 peak")
if "llama_b1" in peaks:
    t = open(f"{out}/llama_b1.log").read()
    m = [l for l in t.splitlines() if " eval time" in l and "prompt eval" not in l]
    r = re.search(r"([\d.]+) tokens per second", m[-1]) if m else None
    cap, used = peaks["llama_b1"]
    if r:
        ours, _ = rate("nvme_b1")
        print(f"llama.cpp (llama-cli, mmap) batch 1 (cgroup {cap}, peak {used / 2**20:.0f} MiB): "
              f"{float(r.group(1)):.2f} tokens/s; zerospeed nvme batch 1 / llama.cpp: "
              f"{(ours or 0) / float(r.group(1)):.2f}x")
    else:
        print(f"llama.cpp batch 1: no eval line (see {out}/llama_b1.log)")
PY
