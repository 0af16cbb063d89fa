#!/usr/bin/env bash
# What the audit trail costs: two sigil-signers with the same tz1 key, one logging only warnings
# (no audit record of a signature is written anywhere), one at the default level with JSON logs to
# a file (as a log collector reads them) and `audit.file` on, loaded in turns with the same stream
# of Tezos consensus requests over loopback, one at a time (latency). Reports p50/p99 of each round
# and the ratio of the medians: the audit trail must not move p99 by more than 5%. The marks are
# in memory for both: a file mark's fsync varies by milliseconds from run to run on a shared disk,
# which would hide a cost of microseconds (and makes the audit's share look smaller than it is).
#
#   e2e/bench/audit.sh [seconds-per-run] [rounds]     (defaults 4 and 8)
set -euo pipefail
cd "$(dirname "$0")/../.."
. e2e/lib/common.sh
seconds=${1:-4}
rounds=${2:-8}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sigil/target}
cargo build --quiet --release -p sigil-signer -p sigil-tests --bin sigil-signer --bin tezos-load
bin=$CARGO_TARGET_DIR/release

declare work; temp_dir work
secret=edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN
pkh=tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr

config() { # name, API port, management port, extra line
  cat > "$work/$1.yaml" <<YAML
keys: {baker: {local: {secretKey: $secret}}}
ratchet: {memory: {}}
tezos: {listen: "127.0.0.1:$2", keys: {baker: {allow: [block, preattestation, attestation]}}}
management: {listen: "127.0.0.1:$3"}
$4
YAML
}
quiet_port=$(free_port); quiet_management=$(free_port)
config quiet "$quiet_port" "$quiet_management" ""
SIGIL_LOG=warn "$bin/sigil-signer" --config "$work/quiet.yaml" 2>/dev/null &
track_pid $!
audited_port=$(free_port); audited_management=$(free_port)
config audited "$audited_port" "$audited_management" "audit: {file: $work/audit.jsonl}"
"$bin/sigil-signer" --log-format json --config "$work/audited.yaml" 2>"$work/audited.log" &
track_pid $!
wait_until 10 "the quiet signer" curl -fsS "http://127.0.0.1:$quiet_management/readyz"
wait_until 10 "the audited signer" curl -fsS "http://127.0.0.1:$audited_management/readyz"

echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
results=()
for _ in $(seq "$rounds"); do
  for name in quiet audited; do
    port_var=${name}_port
    result=$("$bin/tezos-load" --addr "127.0.0.1:${!port_var}" --pkh "$pkh" --seconds "$seconds" --label "$name")
    echo "$result"
    results+=("$result")
  done
done
records=$(wc -l < "$work/audit.jsonl")
logged=$(grep -c '"target":"sigil_signer::audit"' "$work/audited.log" || true)
python3 - "$records" "$logged" "${results[@]}" <<'PY'
import json, statistics, sys
records, logged, runs = int(sys.argv[1]), int(sys.argv[2]), [json.loads(a) for a in sys.argv[3:]]
def median(label, field):
    return statistics.median(r[field] for r in runs if r["signer"] == label)
signed = sum(r["requests"] for r in runs if r["signer"] == "audited")
print(json.dumps({
    "p50_audited_over_quiet": round(median("audited", "p50_us") / median("quiet", "p50_us"), 3),
    "p99_audited_over_quiet": round(median("audited", "p99_us") / median("quiet", "p99_us"), 3),
    "audited_signatures": signed,
    "audit_file_records": records,
    "audit_log_records": logged,
}))
PY
