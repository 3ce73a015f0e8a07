#!/usr/bin/env bash
# Every JSON document zerospeed reads goes through io::parse_json (src/io/json.cpp), which bounds
# size and depth, rejects NUL bytes and duplicate keys, and turns every nlohmann exception (a
# number out of range included) into an IoError naming the document. A direct
# nlohmann::json::parse elsewhere lets those exceptions escape as crashes (the config fuzzer found
# one in parse_hf_config): this check fails on any, except the non-throwing form
# (`json::parse(text, nullptr, false)`, whose result is checked with is_discarded()).
set -euo pipefail
cd "$(dirname "$0")/../.."
bad=$(grep -rn --include='*.cpp' --include='*.h' 'json::parse(' src |
      grep -v '^src/io/json\.cpp:' | grep -Ev '_test[a-z_]*\.(cpp|h):' |
      grep -v 'nullptr, false)' || true)
if [ -n "$bad" ]; then
    echo "json check: parse JSON with io::parse_json (src/io/json.h), not nlohmann directly:"
    echo "$bad"
    exit 1
fi
echo "json check: ok (every JSON parse goes through io::parse_json)"
