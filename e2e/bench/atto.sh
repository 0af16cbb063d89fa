#!/usr/bin/env bash
# Loads sigil-signer's Atto API over loopback and reports signatures/s and p50/p99 latency next
# to the raw Ed25519 sign rate measured in the same run (the physical limit).
#
#   e2e/bench/atto.sh [seconds-per-run]     (default 10)
#
# Runs one connection (latency: HTTP overhead over the raw sign) and 16 connections (throughput).
set -euo pipefail
cd "$(dirname "$0")/../.."
. e2e/lib/common.sh
seconds=${1:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sigil/target}
cargo build --quiet --release -p sigil-signer -p sigil-tests --bin sigil-signer --bin atto-load
bin=$CARGO_TARGET_DIR/release

declare work; temp_dir work
api_port=$(free_port)
management_port=$(free_port)
"$bin/sigil-signer" key generate --out "$work/key" 2>/dev/null >/dev/null
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
cat > "$work/signer.yaml" <<YAML
keys: {bench: {local: {secretKeyFile: $work/key}}}
atto: {listen: "127.0.0.1:$api_port", key: bench, capabilities: [VOTE], tokenFile: $work/token}
management: {listen: "127.0.0.1:$management_port"}
YAML
SIGIL_LOG=warn "$bin/sigil-signer" --config "$work/signer.yaml" &
track_pid $!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$management_port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$management_port/readyz" >/dev/null

echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for concurrency in 1 16; do
  SIGNER_TOKEN=$(cat "$work/token") "$bin/atto-load" --addr "127.0.0.1:$api_port" \
    --concurrency "$concurrency" --seconds "$seconds"
done
