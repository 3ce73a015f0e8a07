#!/usr/bin/env bash
# e2e: `zerospeed serve` on SmolLM2-135M (GGUF) driven over loopback by the official openai
# client, with every response and stream chunk validated against the OpenAI OpenAPI schemas
# (serve_openai.py), the greedy completion compared with `zerospeed generate`, and SIGTERM ending
# the server with exit code 0.
# Usage: serve_openai.sh <zerospeed binary> <repo root>
set -euo pipefail
bin=$1
root=$2
gguf=$("$root/tools/fetch_smollm2.sh")
py=$("$root/tools/serve_venv.sh")
spec=$root/tests/fixtures/openai/openapi.yaml  # vendored, MIT (its README has the sha256)
[ -f "$spec" ] || { echo "serve_openai: the OpenAI spec is missing: $spec"; exit 1; }
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

prompt="The capital of France is"
oracle=$("$bin" generate --model "$gguf" --dtype f32 --prompt "$prompt" --max-tokens 16 --temperature 0 2>/dev/null)
oracle=${oracle%$'\n'}

OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "$bin" serve --model "$gguf" --dtype f32 --port 0 --max-seqs 8 \
    --kv-cache-memory 256M --served-model-name smollm2 >"$work/serve.log" 2>&1 &
pid=$!
port=""
for _ in $(seq 1 300); do
    port=$(sed -n 's|.*on http://127.0.0.1:\([0-9]*\).*|\1|p' "$work/serve.log" | head -1)
    [ -n "$port" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
    sleep 0.1
done
[ -n "$port" ] || { echo "serve did not start"; cat "$work/serve.log"; exit 1; }
curl -sf "http://127.0.0.1:$port/health" >/dev/null

status=0
"$py" "$root/tests/e2e/serve_openai.py" "http://127.0.0.1:$port" "$spec" smollm2 "$prompt" \
    "$oracle" || status=1

kill -TERM "$pid"
if wait "$pid"; then echo "ok   SIGTERM: exit 0"; else
    echo "FAIL SIGTERM: exit $?"
    status=1
fi
grep -q "serve: stopped" "$work/serve.log" || { echo "FAIL: no clean stop"; cat "$work/serve.log"; status=1; }
exit $status
