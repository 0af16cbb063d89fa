#!/usr/bin/env bash
# Time from `kubectl apply` of N RemoteSigners to all Ready, and the operator's peak memory, on the
# local control plane (e2e/cluster).
#
#   e2e/bench/operator.sh [N ...]      (default: 1 100 1000)
set -euo pipefail
cd "$(dirname "$0")/../.."
. e2e/lib/common.sh
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sigil/target}
cargo build --quiet --release -p sigil-operator --bin sigil-operator
operator=$CARGO_TARGET_DIR/release/sigil-operator
e2e/cluster up
eval "$(e2e/cluster env)"
kubectl apply --server-side -f crds/remotesigner.yaml >/dev/null
kubectl wait --for condition=established crd/remotesigners.sigil.dev --timeout=60s >/dev/null

now_ms() { date +%s%3N; }

echo "# $(date -u +%F) $(nproc) cores; kube-apiserver $(kubectl version -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
for n in "${@:-1 100 1000}"; do
  for count in $n; do
    ns=bench-$count-$RANDOM
    kubectl create namespace "$ns" >/dev/null
    kubectl -n "$ns" create secret generic voter-key --from-literal=seed="$(printf '00%.0s' {1..32})" >/dev/null
    log=$(mktemp)
    "$operator" --namespace "$ns" --lease-namespace "$ns" --metrics-addr 127.0.0.1:0 2>"$log" &
    pid=$!
    track_pid "$pid"
    manifest=$(mktemp)
    for i in $(seq "$count"); do
      printf -- '---\napiVersion: sigil.dev/v1alpha1\nkind: RemoteSigner\nmetadata: {name: signer-%s}\nspec: {protocol: Atto, key: {secretRef: {name: voter-key, key: seed}}, atto: {capabilities: [VOTE]}}\n' "$i"
    done > "$manifest"
    start=$(now_ms)
    kubectl -n "$ns" apply --server-side -f "$manifest" >/dev/null
    applied=$(now_ms)
    deadline=$((SECONDS + 600))
    until [ "$(kubectl -n "$ns" get remotesigners -o jsonpath='{range .items[*]}{.status.conditions[0].status}{"\n"}{end}' | grep -c '^True$')" -eq "$count" ]; do
      [ "$SECONDS" -lt "$deadline" ] || { echo "timed out waiting for $count Ready" >&2; exit 1; }
      sleep 0.2
    done
    ready=$(now_ms)
    rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    printf '{"remote_signers": %d, "apply_ms": %d, "apply_to_all_ready_ms": %d, "operator_peak_rss_mib": %.1f}\n' \
      "$count" $((applied - start)) $((ready - start)) "$(echo "$rss / 1024" | bc -l)"
    stop_pid "$pid"
    kubectl delete namespace "$ns" --wait=false >/dev/null
    rm -f "$manifest" "$log"
  done
done
