#!/usr/bin/env bash
# Sign latency per key backend: one sigil-signer per backend with a secp256k1 (tz2) key, the same
# stream of Tezos preattestations, attestations and blocks from one baker connection, over
# loopback. Backends: local (the baseline), SoftHSM2 (PKCS#11), MiniStack (AWS KMS), and the GCP
# KMS and Azure Key Vault fakes (HTTPS for Azure). The signer's own histogram of backend calls
# separates the two sides: backend = the vendor client's round trip to the service (with our
# decoding and verification of the answer); sigil = everything else (HTTP, parsing, policy,
# ratchet, which is the memory store here so the backend is what differs).
#
#   e2e/bench/backends.sh [seconds-per-run]     (default 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
. e2e/lib/common.sh
seconds=${1:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sigil/target}
cargo build --quiet --release -p sigil-signer -p sigil-tests --bin sigil-signer --bin tezos-load --bin kms-fixture
bin=$CARGO_TARGET_DIR/release
softhsm=$(e2e/lib/softhsm)
ministack=$(e2e/lib/ministack)

declare work; temp_dir work
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

aws_port=$(free_port)
GATEWAY_PORT=$aws_port BIND_HOST=127.0.0.1 SERVICES=kms IOT_MTLS_ENABLED=0 "$ministack" >"$work/ministack.log" 2>&1 &
track_pid $!
for _ in $(seq 600); do (echo >"/dev/tcp/127.0.0.1/$aws_port") 2>/dev/null && break; sleep 0.05; done

# Prepares the backend's key; prints its JSON line to $work/$1.json. Fakes keep serving in the
# background (started here, in this shell, so that track_pid can kill them at exit).
fixture() { # backend
  local out=$work/$1.json
  case $1 in
    local) "$bin/kms-fixture" local >"$out" ;;
    pkcs11) mkdir -p "$work/hsm" && "$bin/kms-fixture" pkcs11 --dir "$work/hsm" --module "$softhsm" >"$out" ;;
    aws) "$bin/kms-fixture" aws --endpoint "http://127.0.0.1:$aws_port" >"$out" ;;
    gcp) "$bin/kms-fixture" gcp >"$out" & track_pid $! ;;
    azure) mkdir -p "$work/azure"; "$bin/kms-fixture" azure --dir "$work/azure" >"$out" & track_pid $! ;;
  esac
  for _ in $(seq 400); do grep -q '}$' "$out" 2>/dev/null && return 0; sleep 0.05; done
  echo "$1: no fixture output" >&2; return 1
}

echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); one connection, ${seconds}s per backend"
results=()
for backend in local pkcs11 aws gcp azure; do
  fixture $backend
  json=$(head -1 "$work/$backend.json")
  pkh=$(field "$json" pkh)
  port=$(free_port); management=$(free_port)
  cat > "$work/$backend.yaml" <<YAML
keys: {baker: $(field "$json" key)}
ratchet: {memory: {}}
tezos: {listen: "127.0.0.1:$port", keys: {baker: {allow: [block, preattestation, attestation]}}}
management: {listen: "127.0.0.1:$management"}
YAML
  mapfile -t env < <(python3 -c 'import json,sys; [print(f"{k}={v}") for k,v in json.loads(sys.argv[1])["env"].items()]' "$json")
  env -i PATH="$PATH" SIGIL_LOG=warn "${env[@]}" "$bin/sigil-signer" --config "$work/$backend.yaml" 2>"$work/$backend.log" &
  signer=$!
  wait_until 20 "the $backend signer" curl -fsS "http://127.0.0.1:$management/readyz" || { cat "$work/$backend.log" >&2; exit 1; }
  load=$("$bin/tezos-load" --addr "127.0.0.1:$port" --pkh "$pkh" --concurrency 1 --seconds "$seconds" --label "$backend")
  metrics=$(curl -fsS "http://127.0.0.1:$management/metrics")
  kill $signer; wait $signer 2>/dev/null || true
  result=$(python3 - "$backend" "$load" "$metrics" <<'PY'
import json, re, sys
backend, load, metrics = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
def metric(name):
    m = re.search(r'^sigil_signer_backend_sign_duration_seconds_%s\{[^}]*key="baker"[^}]*\} (\S+)' % name, metrics, re.M)
    return float(m.group(1))
calls, total = metric("count"), metric("sum")
mean_us = 1e6 / load["signatures_per_second"]
backend_us = total / calls * 1e6
print(json.dumps({"backend": backend, "signatures_per_second": round(load["signatures_per_second"], 1),
                  "p50_us": load["p50_us"], "p99_us": load["p99_us"], "mean_us": round(mean_us, 1),
                  "backend_mean_us": round(backend_us, 1), "sigil_mean_us": round(mean_us - backend_us, 1)}))
PY
)
  echo "$result"
  results+=("$result")
done

python3 - "${results[@]}" <<'PY'
import json, sys
rows = [json.loads(r) for r in sys.argv[1:]]
print()
print("| backend | signatures/s | p50 µs | p99 µs | mean µs | in the backend call | in sigil |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['backend']} | {r['signatures_per_second']} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {r['mean_us']:.0f} | {r['backend_mean_us']:.0f} | {r['sigil_mean_us']:.0f} |")
PY
