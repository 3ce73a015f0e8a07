#!/usr/bin/env bash
# ZeRO-Inference on this machine's disk (tools/run_benchmarks.sh zero-inference): SmolLM2-135M
# (bf16, dequantized from the cached GGUF) generating greedily
#   - in memory (the compute-bound reference),
#   - with --offload-weights nvme --memory-cap 100M (below the bf16 weights: the blocks stream from
#     O_DIRECT files for every forward) at batch 1, 4 and 16,
# against the disk's direct-I/O read bandwidth (dd iflag=direct, 1 GiB): the bound at batch 1 is
# read bandwidth / weight bytes per forward, in tokens/s; the ratio measured / bound is printed.
# Usage: bench/offload/zero_inference.sh BIN GGUF OUT NVME_DIR
set -euo pipefail
bin=$1 gguf=$2 out=$3 nvme=$4
mkdir -p "$out" "$nvme"
n=${TOKENS:-32}
dd if=/dev/zero of="$nvme/dd.bin" bs=1M count=1024 oflag=direct conv=fsync 2>/dev/null
rbw=$(dd if="$nvme/dd.bin" of=/dev/null bs=1M iflag=direct 2>&1 | tail -1 |
    awk -F', ' '{split($3, t, " "); printf "%.0f", 1073741824 / t[1]}')
rm -f "$nvme/dd.bin"
echo "disk read (dd, 1 GiB, direct): $(awk -v b="$rbw" 'BEGIN{printf "%.2f", b/1e9}') GB/s"
gen() {  # gen LABEL ARGS...
    local label=$1
    shift
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$bin" generate --model "$gguf" --dtype bf16 \
        --prompt "The history of the printing press" --max-tokens "$n" --temperature 0 \
        --ignore-eos "$@" >"$out/$label.txt" 2>"$out/$label.log"
}
gen memory
for b in 1 4 16; do
    gen "nvme_b$b" --offload-weights nvme --offload-path "$nvme" --memory-cap 100M --batch "$b"
done
cmp -s "$out/memory.txt" "$out/nvme_b1.txt" && same=identical || same=DIFFERENT
echo "batch 1 text streamed vs in memory: $same"
python3 - "$out" "$rbw" <<'PY'
import re, sys
out, rbw = sys.argv[1], float(sys.argv[2])
def rate(label):
    t = open(f"{out}/{label}.log").read()
    m = re.search(r"generated: (\d+) tokens in ([\d.]+) s \(([\d.]+) tokens/s", t)
    w = re.search(r"([\d.]+) GB of block weights per forward", t)
    return float(m.group(3)), (float(w.group(1)) * 1e9 if w else 0)
mem, _ = rate("memory")
print(f"in memory: {mem:.2f} tokens/s")
for b in (1, 4, 16):
    r, per_fwd = rate(f"nvme_b{b}")
    bound = rbw / per_fwd * b
    print(f"nvme batch {b}: {r:.2f} tokens/s; disk bound {bound:.2f} tokens/s "
          f"({per_fwd / 1e9:.3f} GB per forward at {rbw / 1e9:.2f} GB/s, x {b}); "
          f"measured / bound {r / bound:.2f}; vs in memory {r / mem:.2f}")
PY
