#!/usr/bin/env bash
# Webhook latency under a burst of pod creations, on the local control plane: N rounds of three
# pods created back to back (labelled, through the injection webhook; plain; and the injected pod
# created without the webhook), see e2e/bench/pod-creates.py. Reports each kind's create latency
# p50/p99 in microseconds, what the webhook added, and how that splits between the webhook call
# and the larger pod; then the mean webhook call as the API server timed it, and the mean
# handling as the webhook timed it (sigil_operator_admission_duration_seconds).
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
port=$(free_port) metrics_port=$(free_port)
"$CARGO_TARGET_DIR/release/sigil-operator" --namespace "$ns" --lease-namespace "$ns" --metrics-addr "127.0.0.1:$metrics_port" \
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

# Mean time per admission as the API server measured its webhook call, and as the webhook
# measured its own handling: sum and count of each histogram, before and after the run.
means() {
  kubectl get --raw /metrics | awk '/^apiserver_admission_webhook_admission_duration_seconds_(sum|count)\{name="inject.sigil.dev",.*rejected="false"/ {
    if ($1 ~ /_sum/) sum = $2; else count = $2 } END { printf "%s %s ", sum + 0, count + 0 }'
  curl -fsS "http://127.0.0.1:$metrics_port/metrics" | awk '/^sigil_operator_admission_duration_seconds_(sum|count) / {
    if ($1 ~ /_sum/) sum = $2; else count = $2 } END { printf "%s %s", sum + 0, count + 0 }'
}
state=${SIGIL_CLUSTER_DIR:-$HOME/.cache/sigil/cluster}
echo "# $(date -u +%F) $(nproc) cores; $n rounds of three pods (labelled, plain, preinjected) on one connection"
before=$(means)
python3 e2e/bench/pod-creates.py "$(cat "$state/apiserver-url")" "$state/pki/ca.crt" "$state/pki/admin.crt" \
  "$state/pki/admin.key" "$ns" voter "$n"
after=$(means)
# shellcheck disable=SC2086 # four numbers each
echo $before $after | awk '{ printf "{\"apiserver_webhook_call_mean_us\": %d, \"webhook_handler_mean_us\": %d}\n",
  ($5 - $1) / ($6 - $2) * 1e6, ($7 - $3) / ($8 - $4) * 1e6 }'
