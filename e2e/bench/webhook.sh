#!/usr/bin/env bash
# Webhook latency under a burst of pod creations, on the local control plane: N labelled pods
# (through the injection webhook) and N unlabelled pods (never sent to it), created back to back.
# Reports the API server's create latency p50/p99 for both, from kubectl's request log.
#
#   e2e/bench/webhook.sh [N]      (default 200)
set -euo pipefail
cd "$(dirname "$0")/../.."
. e2e/lib/common.sh
n=${1:-200}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sigil/target}
cargo build --quiet --release -p sigil-operator --bin sigil-operator
e2e/cluster up
eval "$(e2e/cluster env)"
kubectl apply --server-side -f crds/remotesigner.yaml >/dev/null
kubectl wait --for condition=established crd/remotesigners.sigil.dev --timeout=60s >/dev/null
ns=bench-webhook-$RANDOM
declare work; temp_dir work
# At exit, in reverse order: the operator (track_pid below), the namespace, its webhook
# configuration, $work.
at_exit kubectl delete mutatingwebhookconfiguration "sigil-operator-$ns" --ignore-not-found
at_exit kubectl delete namespace "$ns" --wait=false

kubectl create namespace "$ns" >/dev/null
kubectl -n "$ns" create secret generic voter-key --from-literal=seed="$(printf '00%.0s' {1..32})" >/dev/null
port=$(free_port)
"$CARGO_TARGET_DIR/release/sigil-operator" --namespace "$ns" --lease-namespace "$ns" --metrics-addr "127.0.0.1:$(free_port)" \
  --webhook-addr "127.0.0.1:$port" --webhook-url "https://127.0.0.1:$port" --shutdown-delay 0s 2>"$work/operator.log" &
track_pid $!
printf 'apiVersion: sigil.dev/v1alpha1\nkind: RemoteSigner\nmetadata: {name: voter}\nspec: {protocol: Atto, key: {secretRef: {name: voter-key, key: seed}}, atto: {capabilities: [VOTE]}}\n' |
  kubectl -n "$ns" apply -f - >/dev/null
kubectl -n "$ns" wait --for=condition=Ready remotesigner/voter --timeout=60s >/dev/null
# The webhook is in effect once a pod naming a missing RemoteSigner is refused.
probe='{"apiVersion":"v1","kind":"Pod","metadata":{"name":"probe","labels":{"sigil.dev/signer":"none"}},"spec":{"containers":[{"name":"c","image":"x"}]}}'
for _ in $(seq 60); do
  if ! out=$(echo "$probe" | kubectl -n "$ns" create -f - 2>&1); then
    case "$out" in *"RemoteSigner none"*) break ;; esac
  else kubectl -n "$ns" delete pod probe --wait=false >/dev/null; fi
  sleep 0.5
done

pods() { # label-or-empty prefix
  for i in $(seq "$n"); do
    printf -- '---\napiVersion: v1\nkind: Pod\nmetadata: {name: %s-%s, labels: {%s}}\nspec: {containers: [{name: node, image: atto/node}]}\n' "$2" "$i" "$1"
  done
}
pods 'sigil.dev/signer: voter' labelled > "$work/labelled.yaml"
pods 'app: plain' plain > "$work/plain.yaml"
stats() {
  grep -E 'verb="POST" url="[^"]*/pods\?' | grep -o 'milliseconds=[0-9]*' | cut -d= -f2 | sort -n |
    awk '{ v[NR] = $1 } END { printf "{\"pods\": %d, \"p50_ms\": %d, \"p99_ms\": %d, \"max_ms\": %d}", NR, v[int((NR - 1) * 0.5) + 1], v[int((NR - 1) * 0.99) + 1], v[NR] }'
}
echo "# $(date -u +%F) $(nproc) cores; $n pods each, created back to back by one kubectl"
printf '{"through_webhook": %s, ' "$(kubectl -n "$ns" create -f "$work/labelled.yaml" -v=6 2>&1 | stats)"
printf '"not_sent_to_webhook": %s}\n' "$(kubectl -n "$ns" create -f "$work/plain.yaml" -v=6 2>&1 | stats)"
injected=$(kubectl -n "$ns" get pods -l sigil.dev/signer=voter -o jsonpath='{range .items[*]}{.spec.initContainers[0].name}{"\n"}{end}' | grep -c sigil-signer)
echo "injected: $injected of $n labelled pods"
