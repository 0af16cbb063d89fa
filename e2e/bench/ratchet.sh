#!/usr/bin/env bash
# The ratchet stores side by side: the same Tezos signer and the same load (tezos-load), with the
# high-water marks in a file and in a ConfigMap on the local control plane (e2e/cluster). Reports
# signatures/s and p50/p99 for each.
#
#   e2e/bench/ratchet.sh [seconds-per-run]     (default 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
. e2e/lib/common.sh
seconds=${1:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sigil/target}
cargo build --quiet --release -p sigil-signer -p sigil-tests --bin sigil-signer --bin tezos-load
bin=$CARGO_TARGET_DIR/release
e2e/cluster up >/dev/null
eval "$(e2e/cluster env)"

declare work; temp_dir work
namespace=bench-ratchet-$$
# At exit, in reverse order: the signer (track_pid below), the namespace, $work.
at_exit kubectl delete namespace "$namespace" --wait=false
kubectl create namespace "$namespace" >/dev/null

pkh=tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr
echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); kube-apiserver $(kubectl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
for store in file configMap; do
  case $store in
    file) ratchet="{file: {dir: $work/marks}}" ;;
    configMap) ratchet="{configMap: {name: sigil-ratchet, namespace: $namespace}}" ;;
  esac
  port=$(free_port)
  management=$(free_port)
  cat > "$work/$store.yaml" <<YAML
keys: {baker: {local: {secretKey: edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN}}}
ratchet: $ratchet
tezos: {listen: "127.0.0.1:$port", keys: {baker: {allow: [block, preattestation, attestation]}}}
management: {listen: "127.0.0.1:$management"}
YAML
  # A ConfigMap store is set up on purpose (created and sealed), as the operator does.
  [ "$store" = configMap ] && "$bin/sigil-signer" --config "$work/$store.yaml" ratchet init >/dev/null
  SIGIL_LOG=warn "$bin/sigil-signer" --config "$work/$store.yaml" &
  signer_pid=$!
  track_pid "$signer_pid"
  for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$management/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  for concurrency in 1 4 16; do
    "$bin/tezos-load" --addr "127.0.0.1:$port" --pkh "$pkh" --concurrency "$concurrency" --seconds "$seconds" --label "$store"
  done
  stop_pid "$signer_pid"
done
