#!/usr/bin/env bash
# `make bench`: every benchmark with its peer measured in the same run (this machine is noisy:
# compare ratios, not absolute figures). Results land in BUILD/bench/results/<time>/, one file per
# section; docs/BENCHMARKS.md records the figures with these commands.
#
# Usage: tools/run_benchmarks.sh [BUILD] [section...]
#   sections: ops optim tokenizer comm collectives mpi-configs train generate quant perplexity tp ep
#   pipeline serve sp offload infinity zero-inference zero-inference-serve decode (default: all
#   but collectives, mpi-configs, quant, perplexity, pipeline, sp, offload, infinity,
#   zero-inference, zero-inference-serve and decode)
# Peers: the Python ones (torch, deepspeed, tiktoken, HF tokenizers, sentencepiece) come from the
# reference venv, installed (once, cached) by tools/reference_venv.sh. llama.cpp's llama-server is
# used when LLAMA_SERVER names its binary (llama-bench from LLAMA_BENCH), llm.c's CPU trainer when LLMC_TRAIN names its
# train_gpt2 (both built by you from their public source, outside this repository).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
shift || true
sections=${*:-ops optim tokenizer comm train generate tp serve}
py=$("$root/tools/reference_venv.sh")
out=$build/bench/results/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
bin=$build/bin/zerospeed
have_py() { [ -x "$py" ] && "$py" -c "import $1" 2>/dev/null; }
tokens_per_s() {  # a train --metrics CSV: mean tokens/s over steps 3.. (the first two warm up); nothing if none
    awk -F, 'NR>1 && $1>2 {s+=$9; n++} END {if (n) printf "%.1f", s/n}' "$1"
}
train_data() {  # the training sections' dataset: Austen in GPT-2 tokens (prepared once per build)
    local data=$build/bench/train_data
    if [ ! -f "$data/index.json" ]; then
        "$bin" data prepare --tokenizer "$root/tests/fixtures/tokenizers/gpt2" \
            --input "$root/data/corpora/austen.txt" --output "$data" >/dev/null
    fi
    echo "$data"
}
note() { echo "== $*" | tee -a "$out/README.txt"; }

note "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(date -u)"
note "commit: $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
"$bin" doctor --brief | sed -n 's/^\(cpu\|matmul routes\): /== \1: /p' | tee -a "$out/README.txt"

for s in $sections; do
    case $s in
    ops)
        note "ops: GEMM (ours vs oneDNN direct vs OpenBLAS), kernels, STREAM triad"
        OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$build/bench/ops_bench" \
            --benchmark_out="$out/ops.json" --benchmark_out_format=json | tee "$out/ops.txt"
        # Memory-bound ops as fractions of the triad measured in the same round, five rounds
        # (this machine's bandwidth moves by tens of percent from minute to minute): the
        # median of the per-round fractions is the figure.
        note "ops: memory-bound ops / STREAM triad, 5 rounds"
        for round in 1 2 3 4 5; do
            OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$build/bench/ops_bench" --benchmark_min_time=0.3 \
                --benchmark_filter='BM_stream_triad|BM_(layernorm|rmsnorm|softmax|gelu|add)/32768' \
                2>/dev/null | awk -v r="$round" '/^BM_/ { match($0, /GB\/s=[0-9.]+/); g = substr($0, RSTART + 5, RLENGTH - 5);
                    if ($1 ~ /triad/) t = g; else { sub(/\/real_time/, "", $1); printf "round %s %s %.2f\n", r, $1, g / t } }'
        done | tee "$out/ops_fractions.txt"
        sort -k3,3 -k4,4n "$out/ops_fractions.txt" | awk '{ n[$3]++; v[$3, n[$3]] = $4 }
            END { for (k in n) { c = n[k]; printf "%-28s median %.2f of triad (min %.2f, max %.2f)\n",
                  k, v[k, int((c + 1) / 2)], v[k, 1], v[k, c] } }' | sort | tee -a "$out/ops_fractions.txt"
        ;;
    optim)
        note "optim: AdamW/Lion/SGD on 100M parameters; peers DeepSpeedCPUAdam and torch AdamW"
        for round in 1 2; do  # interleaved: ours, peers, ours, peers
            OMP_NUM_THREADS=2 "$build/bench/optim_bench" --benchmark_out="$out/optim.$round.json" \
                --benchmark_out_format=json | tee -a "$out/optim.txt"
            if have_py deepspeed; then
                DS_ACCELERATOR=cpu "$py" "$root/bench/peers/adamw_peers.py" --threads 2 \
                    | tee -a "$out/optim_peers.jsonl"
            else
                note "optim peers skipped: no deepspeed/torch in $py"
            fi
        done
        ;;
    tokenizer)
        note "tokenizer: encode MB/s, one thread; peers tiktoken, HF tokenizers, sentencepiece"
        "$build/bench/tokenizer_bench" --benchmark_out="$out/tokenizer.json" \
            --benchmark_out_format=json | tee "$out/tokenizer.txt"
        if have_py tiktoken; then
            "$py" "$root/bench/peers/tokenizer_peers.py" | tee "$out/tokenizer_peers.jsonl"
        else
            note "tokenizer peers skipped: no tiktoken in $py"
        fi
        ;;
    comm)
        note "comm: our Communicator vs blocking MPI calls, 2 ranks"
        mpirun --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS=1 \
            "$build/bench/comm_bench" --iters 5 | tee "$out/comm.json"
        ;;
    collectives)
        # The shared-memory transport (comm/shm.h) against OpenMPI's calls (comm_bench alternates
        # them in one run), our Communicator over MPI (ZS_SHM=0), and MPICH's calls (the peer
        # bench/peers/mpi_coll_bench.c, compiled here with MPICH's mpicc), with the STREAM triad
        # of this run as the hardware's yardstick.
        "$root/tools/install_deps.sh" mpich libmpich-dev
        note "collectives: shared memory vs OpenMPI vs MPICH, 2 ranks, one host"
        triad() { OMP_NUM_THREADS=2 "$build/bench/ops_bench" --benchmark_filter=BM_stream_triad \
            --benchmark_min_time=0.5 2>/dev/null | grep -o 'GB/s=[0-9.]*'; }
        mpicc.mpich -O2 -o "$build/bench/mpich_coll_bench" "$root/bench/peers/mpi_coll_bench.c"
        ompi=(mpirun --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS=1)
        for round in 1 2 3; do
            echo "round $round triad threads=2: $(triad)" | tee -a "$out/collectives.txt"
            for mode in "--iters 7" "--latency"; do
                # shellcheck disable=SC2086
                echo "round $round ours+openmpi ($mode): $("${ompi[@]}" "$build/bench/comm_bench" \
                    $mode </dev/null 2>&1 | tr -d '\n' | sed 's/  */ /g')" | tee -a "$out/collectives.txt"
                # shellcheck disable=SC2086
                echo "round $round ours-over-mpi ($mode): $("${ompi[@]}" -x ZS_SHM=0 \
                    "$build/bench/comm_bench" $mode </dev/null 2>&1 | tr -d '\n' \
                    | sed 's/  */ /g')" | tee -a "$out/collectives.txt"
                # shellcheck disable=SC2086
                echo "round $round mpich ($mode): $(mpiexec.mpich -n 2 "$build/bench/mpich_coll_bench" \
                    $mode </dev/null 2>&1 | tr -d '\n' | sed 's/  */ /g')" | tee -a "$out/collectives.txt"
            done
        done
        ;;
    mpi-configs)
        # What OpenMPI itself can do on one host (the fast-collectives issue asks for this before a
        # transport of our own): the plain MPI calls of comm_bench (bus bandwidth 1-256 MiB, and
        # 8-64 KiB allreduce latency) under each documented configuration, with the STREAM triad
        # of this run as the hardware's yardstick.
        note "mpi-configs: OpenMPI configurations on 2 ranks, one host; STREAM triad for reference"
        echo "triad threads=2: $(OMP_NUM_THREADS=2 "$build/bench/ops_bench" \
            --benchmark_filter=BM_stream_triad --benchmark_min_time=0.5 2>/dev/null \
            | grep -o 'GB/s=[0-9.]*')" | tee -a "$out/mpi_configs.txt"
        while IFS='|' read -r label mca; do
            [ -n "$label" ] || continue
            for mode in "--iters 7" "--latency"; do
                # shellcheck disable=SC2086
                echo "$label ($mode): $(mpirun --allow-run-as-root --oversubscribe -np 2 \
                    -x OMP_NUM_THREADS=1 $mca "$build/bench/comm_bench" $mode </dev/null 2>&1 \
                    | tr -d '\n' | sed 's/  */ /g')" | tee -a "$out/mpi_configs.txt"
            done
        done <<'CONFIGS'
default (vader BTL, CMA single copy, tuned)|
vader without single copy|--mca btl_vader_single_copy_mechanism none
tuned forced ring algorithms|--mca coll_tuned_use_dynamic_rules 1 --mca coll_tuned_allreduce_algorithm 4 --mca coll_tuned_reduce_scatter_block_algorithm 3 --mca coll_tuned_allgather_algorithm 4
tuned ring allreduce, 1 MiB segments|--mca coll_tuned_use_dynamic_rules 1 --mca coll_tuned_allreduce_algorithm 5 --mca coll_tuned_allreduce_algorithm_segmentsize 1048576
han hierarchical collectives|--mca coll_han_priority 100
UCX point-to-point|--mca pml ucx
CONFIGS
        ;;
    train)
        note "train: GPT-2 124M, B=4 T=64: ours fp32 (1 rank x 2 threads) vs PyTorch; ZeRO-2/3 on 2 ranks vs DeepSpeed"
        data=$(train_data)
        train() {  # label ds ranks
            local csv=$out/train_$1.csv
            if [ "$3" = 1 ]; then
                OMP_NUM_THREADS=2 "$bin" train --model-config "$root/bench/train/gpt2_124m.json" \
                    --ds-config "$root/bench/train/$2" --data "$data" --seq-len 64 --steps 8 \
                    --metrics "$csv" --no-progress 2>&1 | tail -3 | tee -a "$out/train.txt"
            else
                OMP_NUM_THREADS=1 "$build/bin/zerospeed-run" --num_procs "$3" "$bin" train \
                    --model-config "$root/bench/train/gpt2_124m.json" \
                    --ds-config "$root/bench/train/$2" --data "$data" --seq-len 64 --steps 8 \
                    --metrics "$csv" --no-progress 2>&1 | tail -3 | tee -a "$out/train.txt"
            fi
            local t
            t=$(tokens_per_s "$csv")
            [ -z "$t" ] || echo "{\"name\": \"zerospeed-$1\", \"tokens_per_s\": $t}" | tee -a "$out/train.jsonl"
        }
        train fp32 ds_fp32.json 1
        if have_py transformers; then
            OMP_NUM_THREADS=2 "$py" "$root/bench/peers/train_torch.py" \
                --config "$root/bench/train/gpt2_124m.json" --batch 4 --seq 64 --steps 8 \
                --precision fp32 | tee -a "$out/train.jsonl"
        fi
        train bf16 ds_bf16.json 1
        if have_py transformers; then
            OMP_NUM_THREADS=2 "$py" "$root/bench/peers/train_torch.py" \
                --config "$root/bench/train/gpt2_124m.json" --batch 4 --seq 64 --steps 8 \
                --precision bf16 | tee -a "$out/train.jsonl"
        fi
        if [ -n "${LLMC_TRAIN:-}" ] && have_py numpy; then  # llm.c's train_gpt2 (fp32, B=4 T=64)
            OMP_NUM_THREADS=2 "$py" "$root/bench/peers/llmc_train.py" --llmc "$LLMC_TRAIN" \
                --zerospeed "$bin" --steps 6 | tee -a "$out/train.jsonl"
        else
            note "llm.c skipped: set LLMC_TRAIN to its train_gpt2 binary"
        fi
        train zero2 ds_zero2.json 2
        train zero3 ds_zero3.json 2
        if have_py deepspeed; then
            OMP_NUM_THREADS=1 DS_ACCELERATOR=cpu "$(dirname "$py")/torchrun" --nproc_per_node 2 \
                "$root/bench/peers/train_deepspeed.py" --config "$root/bench/train/gpt2_124m.json" \
                --ds-config "$root/bench/train/ds_zero3.json" --seq 64 --steps 8 2>/dev/null \
                | grep '^{' | tee -a "$out/train.jsonl"
        fi
        ;;
    generate)
        # SmolLM2-135M at the same precision on both sides: the Q4_1 GGUF re-typed to f32 and
        # bf16 by `zerospeed convert --to gguf`; a 557-token prompt, 64 greedy tokens, 1 and 2
        # threads. llama-bench decodes its 64 tokens after 512 of context (-d 512, where the build has
        # it), as ours do.
        note "generate: zerospeed generate${LLAMA_BENCH:+ vs llama-bench ($LLAMA_BENCH)}, f32 and bf16"
        gguf=$("$root/tools/fetch_smollm2.sh")
        depth=""  # llama-bench builds before -d (n-depth, 2025-03) decode at an empty context
        if [ -n "${LLAMA_BENCH:-}" ] && "$LLAMA_BENCH" --help 2>&1 | grep -q -- '--n-depth'; then
            depth="-d 512"
        fi
        # The roofline's bandwidth: the STREAM triad at 1 and 2 threads, in this run.
        for t in 1 2; do
            echo "triad threads=$t: $(OMP_NUM_THREADS=$t "$build/bench/ops_bench" \
                --benchmark_filter=BM_stream_triad --benchmark_min_time=0.5 2>/dev/null \
                | grep -o 'GB/s=[0-9.]*')" | tee -a "$out/generate.txt"
        done
        prompt=$(head -c 2500 "$root/data/corpora/austen.txt" | tail -c 2390)
        for dt in f32 bf16; do
            "$bin" convert --model "$gguf" --to gguf --dtype $dt --output "$out/smollm2-$dt.gguf" 2>/dev/null
            for t in 1 2; do
                for rep in 1 2 3; do  # three runs, as llama-bench's -r 3
                    echo "zerospeed $dt threads=$t run $rep: $(OMP_NUM_THREADS=$t "$bin" generate \
                        --model "$out/smollm2-$dt.gguf" --prompt "$prompt" --max-tokens 64 \
                        --temperature 0 --dtype $dt 2>&1 >/dev/null | tail -1)" | tee -a "$out/generate.txt"
                done
            done
            if [ -n "${LLAMA_BENCH:-}" ]; then  # prefill of 512; 64 decodes after 512 tokens
                "$LLAMA_BENCH" -m "$out/smollm2-$dt.gguf" -t 1,2 -p 512 -n 0 -r 3 2>/dev/null \
                    | grep '^|' | tee -a "$out/generate.txt"
                "$LLAMA_BENCH" -m "$out/smollm2-$dt.gguf" -t 1,2 -p 0 -n 64 $depth -r 3 2>/dev/null \
                    | grep '^|' | tee -a "$out/generate.txt"
            fi
            rm -f "$out/smollm2-$dt.gguf"
        done
        # The Q4_1 file itself with its blocks kept quantized (--dtype auto; issue 19), the
        # same prompt and runs, next to the f32 / bf16 lines above.
        for t in 1 2; do
            for rep in 1 2 3; do
                echo "zerospeed q4_1 threads=$t run $rep: $(OMP_NUM_THREADS=$t "$bin" generate \
                    --model "$gguf" --prompt "$prompt" --max-tokens 64 \
                    --temperature 0 --dtype auto 2>&1 >/dev/null | tail -1)" | tee -a "$out/generate.txt"
            done
        done
        if [ -n "${LLAMA_BENCH:-}" ]; then
            "$LLAMA_BENCH" -m "$gguf" -t 1,2 -p 512 -n 0 -r 3 2>/dev/null | grep '^|' | tee -a "$out/generate.txt"
            "$LLAMA_BENCH" -m "$gguf" -t 1,2 -p 0 -n 64 $depth -r 3 2>/dev/null | grep '^|' | tee -a "$out/generate.txt"
        fi
        ;;
    quant)
        # Issue 19: SmolLM2-135M in Q8_0, Q4_0, Q4_K_M and Q6_K (made from the Q4_1 file by
        # llama-quantize, LLAMA_QUANTIZE or next to LLAMA_BENCH; without it Q8_0 and Q4_0 by our
        # convert), decoded by zerospeed (weights repacked to interleaved16 at load, and with
        # ZS_QUANT_REPACK=0 in the file layout) and llama.cpp on the same file: 64 greedy tokens
        # after a 557-token prompt, the same with llama-cli (LLAMA_CLI or next to LLAMA_BENCH),
        # and llama-bench -p 512 / -p 0 -n 64 (-d 512 where the build has it). The
        # roofline: GGUF bytes per token (SmolLM2 ties its head: every weight byte is read once
        # per token) / STREAM triad of this run. With 576-column matrices (not a multiple of 256)
        # llama-quantize falls back to q5_0 (Q4_K_M) and q8_0 (Q6_K) for most tensors.
        # QUANT_REPS (default 3) runs per line, QUANT_THREADS (default "1 2") thread counts.
        note "quant: quantized decode / prefill, zerospeed vs ${LLAMA_BENCH:-llama-bench (LLAMA_BENCH unset: skipped)}"
        gguf=$("$root/tools/fetch_smollm2.sh")
        quantize=${LLAMA_QUANTIZE:-${LLAMA_BENCH:+$(dirname "$LLAMA_BENCH")/llama-quantize}}
        cli=${LLAMA_CLI:-${LLAMA_BENCH:+$(dirname "$LLAMA_BENCH")/llama-cli}}
        reps=${QUANT_REPS:-3}
        threads=${QUANT_THREADS:-1 2}  # QUANT_THREADS=1 where the cores are shared
        prompt=$(head -c 2500 "$root/data/corpora/austen.txt" | tail -c 2390)
        declare -A triad
        for t in $threads; do
            triad[$t]=$(OMP_NUM_THREADS=$t "$build/bench/ops_bench" --benchmark_filter=BM_stream_triad \
                --benchmark_min_time=0.5 2>/dev/null | grep -o 'GB/s=[0-9.]*' | cut -d= -f2)
            echo "triad threads=$t: ${triad[$t]} GB/s" | tee -a "$out/quant.txt"
        done
        for q in Q8_0 Q4_0 Q4_K_M Q6_K; do
            f=$out/smollm2-$q.gguf
            if [ -n "$quantize" ] && [ -x "$quantize" ]; then
                "$quantize" --allow-requantize "$gguf" "$f" $q >/dev/null 2>&1
            elif [ $q = Q8_0 ] || [ $q = Q4_0 ]; then
                "$bin" convert --model "$gguf" --to gguf --quantize "${q,,}" --output "$f" >/dev/null 2>&1
            else
                echo "$q: no llama-quantize (LLAMA_QUANTIZE); skipped" | tee -a "$out/quant.txt"
                continue
            fi
            bytes=$(stat -c %s "$f")
            for t in $threads; do
                for layout in interleaved16 file; do
                    for rep in $(seq "$reps"); do
                        line=$( (if [ $layout = file ]; then export ZS_QUANT_REPACK=0; fi
                            OMP_NUM_THREADS=$t "$bin" generate --model "$f" --prompt "$prompt" \
                            --max-tokens 64 --temperature 0 --ignore-eos --dtype auto 2>&1 >/dev/null | tail -1))
                        dec=$(echo "$line" | sed -n 's/.*generated: .*(\([0-9.]*\) tokens\/s).*/\1/p')
                        echo "zerospeed $q $layout threads=$t run $rep: $line | roofline $(awk -v d="$dec" \
                            -v b="$bytes" -v g="${triad[$t]}" 'BEGIN { printf "%.2f", d * b / (g * 1e9) }')" \
                            | tee -a "$out/quant.txt"
                        if [ $layout = file ]; then break; fi  # one run: the before/after line
                    done
                done
            done
            if [ -n "${LLAMA_BENCH:-}" ]; then
                "$LLAMA_BENCH" -m "$f" -t "${threads// /,}" -p 512 -n 0 -r "$reps" 2>/dev/null | grep '^|' | tee -a "$out/quant.txt"
                depth=""  # builds before -d (n-depth) decode at an empty context
                if "$LLAMA_BENCH" --help 2>&1 | grep -q -- '--n-depth'; then depth="-d 512"; fi
                "$LLAMA_BENCH" -m "$f" -t "${threads// /,}" -p 0 -n 64 $depth -r "$reps" 2>/dev/null | grep '^|' | tee -a "$out/quant.txt"
            fi
            if [ -n "$cli" ] && [ -x "$cli" ]; then  # the same prompt and 64 tokens as ours
                for t in $threads; do
                    for rep in $(seq "$reps"); do
                        echo "llama-cli $q threads=$t run $rep: $("$cli" -m "$f" -p "$prompt" -n 64 -t $t \
                            --temp 0 -no-cnv --ignore-eos </dev/null 2>&1 | grep 'eval time' \
                            | sed 's/.*(//; s/)//' | tr '\n' ' ')" | tee -a "$out/quant.txt"
                    done
                done
            fi
            rm -f "$f"
        done
        ;;
    perplexity)
        # Issue 19's accuracy goal: zerospeed perplexity vs llama-perplexity (LLAMA_PERPLEXITY) on
        # the same GGUF files and text: the last 40 kB of Austen (a held-back slice, from a line
        # start), 4 chunks of 512, the second half of each scored. SmolLM2-135M's Q4_1 weights as
        # f32 (the exact values), then Q8_0, Q4_0, Q4_K_M, Q6_K quantized from it by llama-quantize
        # (LLAMA_QUANTIZE or next to LLAMA_PERPLEXITY) and by our convert (files compared byte for
        # byte). zerospeed: --dtype auto (quantized weights, bf16 compute) with the dequantized-tile
        # prefill (ZS_QUANT_PREFILL=dequant: the default route on AVX2-only CPUs is int8), with the
        # int8 prefill (activations Q8-quantized, as llama.cpp's kernels do: ZS_QUANT_PREFILL=int8),
        # llama.cpp's activation rounding (f32 compute, ZS_QUANT_ACT=ggml: Q8_0 / Q8_K blocks),
        # the same with llama.cpp's default f16 KV cache, and --dtype f32 --kv-cache-dtype f32 (weights dequantized, f32 compute).
        if [ -z "${LLAMA_PERPLEXITY:-}" ]; then
            note "perplexity: LLAMA_PERPLEXITY unset (llama.cpp's llama-perplexity); skipped"
            continue
        fi
        note "perplexity: zerospeed perplexity vs $LLAMA_PERPLEXITY, same files and slice"
        gguf=$("$root/tools/fetch_smollm2.sh")
        quantize=${LLAMA_QUANTIZE:-$(dirname "$LLAMA_PERPLEXITY")/llama-quantize}
        slice=$out/austen-tail40k.txt
        python3 - "$root/data/corpora/austen.txt" "$slice" <<'PY'
import sys
t = open(sys.argv[1], "rb").read()
at = len(t) - 40000
nl = t.find(b"\n", at)
open(sys.argv[2], "wb").write(t[at if nl < 0 else nl + 1:])
PY
        args=(--file "$root/data/corpora/austen.txt" --tail-bytes 40000 --ctx 512 --chunks 4 --quiet)
        "$bin" convert --model "$gguf" --to gguf --dtype f32 --output "$out/smollm2-f32.gguf" 2>/dev/null
        for q in f32 Q8_0 Q4_0 Q4_K_M Q6_K; do
            f=$out/smollm2-$q.gguf
            if [ $q != f32 ]; then
                if [ -x "$quantize" ]; then
                    "$quantize" "$out/smollm2-f32.gguf" "$f" $q >/dev/null 2>&1
                    "$bin" convert --model "$out/smollm2-f32.gguf" --to gguf --quantize "${q,,}" \
                        --output "$out/zs-$q.gguf" 2>/dev/null
                    echo "$q: zerospeed convert vs llama-quantize: $(cmp -s "$f" "$out/zs-$q.gguf" \
                        && echo byte-identical || echo differ)" | tee -a "$out/perplexity.txt"
                    rm -f "$out/zs-$q.gguf"
                else
                    "$bin" convert --model "$out/smollm2-f32.gguf" --to gguf --quantize "${q,,}" \
                        --output "$f" 2>/dev/null
                fi
            fi
            echo "llama-perplexity $q: $("$LLAMA_PERPLEXITY" -m "$f" -f "$slice" -c 512 --chunks 4 \
                -b 512 2>&1 | grep -o 'Final estimate: PPL = [0-9.]*')" | tee -a "$out/perplexity.txt"
            if [ $q = f32 ]; then
                echo "zerospeed $q f32: $("$bin" perplexity --model "$f" "${args[@]}" --dtype f32 \
                    --kv-cache-dtype f32 2>/dev/null)" | tee -a "$out/perplexity.txt"
            else
                echo "zerospeed $q auto: $(ZS_QUANT_PREFILL=dequant "$bin" perplexity --model "$f" \
                    "${args[@]}" 2>/dev/null)" | tee -a "$out/perplexity.txt"
                echo "zerospeed $q auto int8-prefill: $(ZS_QUANT_PREFILL=int8 "$bin" perplexity \
                    --model "$f" "${args[@]}" 2>/dev/null)" | tee -a "$out/perplexity.txt"
                echo "zerospeed $q ggml rounding: $(ZS_QUANT_COMPUTE=f32 ZS_QUANT_PREFILL=int8 \
                    ZS_QUANT_ACT=ggml "$bin" perplexity --model "$f" "${args[@]}" 2>/dev/null)" \
                    | tee -a "$out/perplexity.txt"
                echo "zerospeed $q ggml rounding, f16 cache: $(ZS_QUANT_COMPUTE=f32 \
                    ZS_QUANT_PREFILL=int8 ZS_QUANT_ACT=ggml "$bin" perplexity --model "$f" \
                    "${args[@]}" --kv-cache-dtype f16 2>/dev/null)" | tee -a "$out/perplexity.txt"
                echo "zerospeed $q f32: $("$bin" perplexity --model "$f" "${args[@]}" --dtype f32 \
                    --kv-cache-dtype f32 2>/dev/null)" | tee -a "$out/perplexity.txt"
                rm -f "$f"
            fi
        done
        rm -f "$out/smollm2-f32.gguf"
        ;;
    tp)
        # Tensor parallelism on one host over the MPI transport: GPT-2 124M (12 heads; random
        # weights, --ignore-eos) decode and prefill at tp 2 (2 ranks x 1 thread) vs tp 1 (1 rank x
        # 2 threads), 556-token prompt, 64 greedy tokens; training tokens/s of tp 2 vs dp 2 (2
        # ranks x 1 thread, B=4 per data-parallel rank, T=64).
        note "tp: generate tp 2 (2 ranks x 1 thread) vs tp 1 (1 rank x 2 threads); train tp 2 vs dp 2; GPT-2 124M"
        data=$(train_data)
        "$bin" train --model-config "$root/bench/train/gpt2_124m.json" \
            --ds-config "$root/bench/train/ds_fp32.json" --data "$data" --seq-len 64 --steps 0 \
            --no-progress --export-hf "$out/gpt2-random" >/dev/null 2>&1
        prompt=$(head -c 2500 "$root/data/corpora/austen.txt" | tail -c 2390)
        for dt in f32 bf16; do
            for rep in 1 2 3; do  # interleaved: tp 1, tp 2, tp 1, ...
                echo "tp 1 $dt run $rep: $(OMP_NUM_THREADS=2 "$bin" generate --model "$out/gpt2-random" \
                    --prompt "$prompt" --max-tokens 64 --temperature 0 --ignore-eos --dtype $dt \
                    2>&1 >/dev/null | tail -1)" | tee -a "$out/tp.txt"
                echo "tp 2 $dt run $rep: $(OMP_NUM_THREADS=1 "$build/bin/zerospeed-run" --num_procs 2 \
                    "$bin" generate --model "$out/gpt2-random" --prompt "$prompt" --max-tokens 64 \
                    --temperature 0 --ignore-eos --dtype $dt --tp 2 2>&1 >/dev/null \
                    | grep -o 'prompt: .*' | tail -1)" | tee -a "$out/tp.txt"
            done
        done
        for mode in dp tp; do
            csv=$out/train_$mode.csv
            OMP_NUM_THREADS=1 "$build/bin/zerospeed-run" --num_procs 2 "$bin" train \
                --model-config "$root/bench/train/gpt2_124m.json" \
                --ds-config "$root/bench/train/ds_fp32.json" --data "$data" --seq-len 64 --steps 8 \
                --metrics "$csv" --no-progress $([ $mode = tp ] && echo --tp 2) 2>&1 | tail -2 \
                | tee -a "$out/tp.txt"
            t=$(tokens_per_s "$csv")
            [ -z "$t" ] || echo "train $mode 2: $t tokens/s" | tee -a "$out/tp.txt"
        done
        rm -rf "$out/gpt2-random"
        ;;
    pipeline)
        # Pipeline parallelism on one host: GPT-2 124M (12 blocks; the "flops" partition, which
        # counts the LM head and the stages' recompute), 8 micro-batches of 64 tokens, 2 stages
        # (2 ranks x 1 thread): each schedule's measured idle time per stage against the same
        # schedule simulated with the measured mean F/B/W (and (p-1)/(m+p-1) for the fused ones),
        # what each stage held beyond its live micro-batch against the formula, tokens/s against
        # one rank training the whole model with 1 thread (the same per-rank compute, so the ratio
        # is the pipeline's speed-up), and the measured timelines. The mean F/B/W of the ZB-H1 run
        # then drive `plan pipeline --sweep` for 1F1B and ZB-H1 at 2-64 stages.
        note "pipeline: GPT-2 124M, pp 2 (2 ranks x 1 thread) gpipe/1f1b/zb-h1/zb-h2 vs 1 rank x 1 thread, 8 micro-batches"
        data=$(train_data)
        for pol in gpipe 1f1b zb-h1 zb-h2; do
            python3 -c "import json,sys; c=json.load(open(sys.argv[1])); c['pipeline']['schedule']=sys.argv[2]; json.dump(c, open(sys.argv[3],'w'))" \
                "$root/bench/train/ds_pp.json" $pol "$out/ds_pp_$pol.json"
            OMP_NUM_THREADS=1 "$build/bin/zerospeed-run" --num_procs 2 "$bin" train \
                --model-config "$root/bench/train/gpt2_124m.json" --ds-config "$out/ds_pp_$pol.json" \
                --data "$data" --seq-len 64 --steps 4 --eval-batches 1 --no-progress --pp 2 \
                --metrics "$out/pp_$pol.csv" --pipeline-timeline "$out/pp_$pol.svg" 2>&1 \
                | grep -o 'pipeline: .*\|pipeline, .*' | tee "$out/pp_$pol.txt" >>"$out/pipeline.txt"
            cat "$out/pp_$pol.txt"
            echo "pp 2 $pol: $(tokens_per_s "$out/pp_$pol.csv") tokens/s" | tee -a "$out/pipeline.txt"
        done
        OMP_NUM_THREADS=1 "$bin" train --model-config "$root/bench/train/gpt2_124m.json" \
            --ds-config "$root/bench/train/ds_pp.json" --data "$data" --seq-len 64 --steps 4 \
            --eval-batches 1 --no-progress --metrics "$out/pp_1.csv" >/dev/null 2>&1
        echo "1 rank: $(tokens_per_s "$out/pp_1.csv") tokens/s" | tee -a "$out/pipeline.txt"
        read -r f b w < <(sed -n 's/.*measured mean F \([0-9.]*\) ms, B \([0-9.]*\) ms, W \([0-9.]*\) ms.*/\1 \2 \3/p' "$out/pp_zb-h1.txt" | tail -1)
        for pol in 1f1b zb-h1; do
            "$bin" plan pipeline --stages 2 --micro-batches 8 --policy $pol --f "$f" --b "$b" --w "$w" --sweep \
                | tee -a "$out/pipeline.txt"
        done
        ;;
    ep)
        # MoE expert parallelism: tokens/s of ep 2 vs ep 1 on two ranks, all-to-all bytes vs the
        # formula (bench/train/ep_bench.sh).
        note "ep: Mixtral-shaped training, 2 ranks, ep 2 vs ep 1"
        "$root/bench/train/ep_bench.sh" "$build/bin" | tee "$out/ep.txt"
        note "ep: speculative MoE, consecutive decode steps' expert locality and co-location bytes"
        "$root/bench/train/expert_locality.sh" "$build/bin" | tee -a "$out/ep.txt"
        note "ep: generate/serve --ep 2, each expert row computed once vs every rank the whole batch"
        "$root/bench/train/ep_infer_bench.sh" "$build/bin" | tee -a "$out/ep.txt"
        ;;
    offload)
        note "offload: ZeRO-Infinity optimizer offload to this disk (GPT-2 124M bf16 ZeRO-2) vs in memory, disk bandwidth by dd"
        OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$root/bench/train/offload_bench.sh" "$bin" "$(train_data)" \
            "$out/offload" ${OFFLOAD_DIR:+"$OFFLOAD_DIR"} | tee "$out/offload.txt"
        ;;
    infinity)
        note "infinity: ZeRO-Infinity (optimizer, gradients, parameters on NVMe) under a memory cgroup of MEM_CAP (8G); model INFINITY_MODEL (bench/offload/llama_3b.json); needs root and ~30 bytes/parameter of disk + MIN_FREE_GB"
        "$root/bench/offload/infinity_cgroup.sh" "$bin" "$(train_data)" "$out/infinity" \
            "${OFFLOAD_DIR:-$out/infinity/nvme}" ${INFINITY_MODEL:+"$INFINITY_MODEL"} | tee "$out/infinity.txt"
        ;;
    zero-inference)
        note "zero-inference: SmolLM2-135M (bf16) generate with block weights streamed from NVMe inside a memory cgroup below the weights (batch 1-256) vs the dd direct read bound and the bf16 matmul peak${LLAMA_CLI:+; llama-cli ($LLAMA_CLI, mmap) under the same cap}; needs root"
        LLAMA_CLI=${LLAMA_CLI:-${LLAMA_BENCH:+$(dirname "$LLAMA_BENCH")/llama-cli}} \
            "$root/bench/offload/zero_inference.sh" "$bin" "$("$root/tools/fetch_smollm2.sh")" \
            "$out/zero_inference" "${OFFLOAD_DIR:-$out/zero_inference/nvme}" | tee "$out/zero_inference.txt"
        ;;
    zero-inference-serve)
        note "zero-inference-serve: SmolLM2-135M served with block weights streamed from NVMe once per engine step, 1/4/16 clients, vs in memory and the dd direct read bound"
        "$root/bench/offload/zero_inference_serve.sh" "$bin" "$("$root/tools/fetch_smollm2.sh")" \
            "$out/zero_inference_serve" "${OFFLOAD_DIR:-$out/zero_inference_serve/nvme}" |
            tee "$out/zero_inference_serve.txt"
        ;;
    decode)
        # Issue 19: decode on shared cores and the server's TPOT against generate, SmolLM2-135M
        # Q4_1, same prompt (~250 tokens of Austen), 64 greedy tokens. (1) 2-thread decode quiet,
        # then with one busy process (`yes`) on the machine, with the thread tuner and with it
        # off (ZS_THREAD_TUNER=0: the fixed count); (2) serve's single-client p50 TPOT against
        # generate's ms per token at 1 and 2 threads, interleaved.
        note "decode: 2-thread decode quiet vs one busy process; serve TPOT vs generate"
        gguf=$("$root/tools/fetch_smollm2.sh")
        prompt=$(head -c 1000 "$root/data/corpora/austen.txt")
        gen_tps() {  # env... : decode tokens/s of one generate run
            env "$@" "$bin" generate --model "$gguf" --prompt "$prompt" --max-tokens 64 \
                --temperature 0 --ignore-eos 2>&1 >/dev/null | tail -1 \
                | sed -n 's/.*generated: [0-9]* tokens in [0-9.]* s (\([0-9.]*\) tokens\/s).*/\1/p'
        }
        for rep in 1 2 3; do
            echo "quiet threads=2 run $rep: $(gen_tps OMP_NUM_THREADS=2) tokens/s" | tee -a "$out/decode.txt"
        done
        yes >/dev/null &
        busy=$!
        for rep in 1 2 3; do
            echo "busy threads=2 run $rep: $(gen_tps OMP_NUM_THREADS=2) tokens/s" | tee -a "$out/decode.txt"
            echo "busy threads=2 tuner off run $rep: $(gen_tps OMP_NUM_THREADS=2 ZS_THREAD_TUNER=0) tokens/s" \
                | tee -a "$out/decode.txt"
        done
        kill "$busy"
        awk '/^quiet threads=2 run/ {q += $5; nq++} /^busy threads=2 run/ {b += $5; nb++}
            /tuner off/ {o += $7; no++}
            END {if (nq && nb) printf "busy / quiet (2 threads): %.2f (tuner off: %.2f)\n", b / nb / (q / nq), o / no / (q / nq)}' \
            "$out/decode.txt" | tee -a "$out/decode.txt"
        for t in 1 2; do
            OMP_NUM_THREADS=$t "$bin" serve --model "$gguf" --port 8321 --kv-cache-memory 256M \
                >"$out/decode_serve_$t.log" 2>&1 &
            srv=$!
            for _ in $(seq 1 300); do curl -sf http://127.0.0.1:8321/v1/models >/dev/null 2>&1 && break; sleep 0.2; done
            for rep in 1 2 3; do
                tpot=$("$bin" bench serve --url http://127.0.0.1:8321 --clients 1 --requests 4 \
                    --prompt-tokens 256 --output-tokens 64 --max-prompt-tokens 256 \
                    --max-output-tokens 64 --text "$root/data/corpora/austen.txt" \
                    --tokenizer "$gguf" | tail -1 | awk '{print $8 * 1000}')
                tps=$(gen_tps OMP_NUM_THREADS=$t)
                echo "threads=$t run $rep: serve p50 TPOT $tpot ms, generate $(awk -v x="$tps" 'BEGIN {printf "%.1f", 1000 / x}') ms/token" \
                    | tee -a "$out/decode.txt"
            done
            kill "$srv"
            wait "$srv" 2>/dev/null || true
        done
        ;;
    serve)
        note "serve: zerospeed SplitFuse vs prefill-first${LLAMA_SERVER:+ vs llama.cpp ($LLAMA_SERVER)}"
        "$root/tools/bench_serve_peers.sh" --out "$out/serve" \
            ${LLAMA_SERVER:+--llama-server "$LLAMA_SERVER"} | tee "$out/serve.txt"
        ;;
    sp)
        note "sp: sequence parallelism at T=8192 (tokens/s of sp 1, Ulysses 2, ring 2, dp 2; attention bytes per step) and peak activations per rank vs T"
        "$root/bench/train/sp_bench.sh" "$build/bin" 8192 1 4 | tee "$out/sp.txt"
        "$build/bench/sp_memory_bench" "$out/sp_memory.svg" "$out/sp_memory.csv" 2048 | tee -a "$out/sp.txt"
        "$root/bench/train/sp_long_equivalence.sh" "$build/bin" "$root" 4096 8192 | tee -a "$out/sp.txt"
        ;;
    *)
        echo "unknown section $s (ops optim tokenizer comm mpi-configs train generate quant perplexity tp ep pipeline serve sp offload infinity zero-inference zero-inference-serve decode)" >&2
        exit 2
        ;;
    esac
done
note "results in $out"
