#!/usr/bin/env bash
# sigil-signer and Signatory side by side: the same tz1 key (a local file), a file high-water mark,
# the same stream of preattestations, attestations and blocks at rising levels, over loopback.
# Reports throughput and p50/p99 for both, and the ratios. sigil fsyncs every mark before it
# answers; Signatory's file watermark does not fsync. Then tz4 (BLS12-381): one baker's
# attestations (BLS mode, tag 41) for sigil's tz1 key, sigil's tz4 key and Signatory's tz4 key.
#
#   e2e/bench/tezos.sh [seconds-per-run]     (default 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
. e2e/lib/common.sh
seconds=${1:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sigil/target}
cargo build --quiet --release -p sigil-signer -p sigil-tests --bin sigil-signer --bin tezos-load
bin=$CARGO_TARGET_DIR/release
signatory=$(e2e/lib/signatory)

declare work; temp_dir work

secret=edsk3qAQSJaDBSYN2PCMdv7BuJoBKeRyDFq5uPAwDfFRAhQdwHxPMN
pkh=tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr
tz4_secret=BLsk1eGhiPQXKtvvkBeXzmtVVJs6KPhEF45drF7MLjoCDcSnTGuyjL
tz4=tz4TFJdv9Jd44FtBMAxi3KQT7AtazhVyaPa6
sigil_port=$(free_port); sigil_management=$(free_port)
signatory_port=$(free_port); signatory_utility=$(free_port)

cat > "$work/sigil.yaml" <<YAML
keys: {baker: {local: {secretKey: $secret}}, tz4: {local: {secretKey: $tz4_secret}}}
ratchet: {file: {dir: $work/sigil-ratchet}}
tezos:
  listen: "127.0.0.1:$sigil_port"
  keys: {baker: {allow: [block, preattestation, attestation]}, tz4: {allow: [attestation]}}
management: {listen: "127.0.0.1:$sigil_management"}
YAML
SIGIL_LOG=warn "$bin/sigil-signer" --config "$work/sigil.yaml" &
track_pid $!

echo "[{\"name\":\"baker\",\"value\":\"unencrypted:$secret\"},{\"name\":\"tz4\",\"value\":\"unencrypted:$tz4_secret\"}]" > "$work/secret_keys"
cat > "$work/signatory.yaml" <<YAML
base_dir: $work/signatory
server:
  address: 127.0.0.1:$signatory_port
  utility_address: 127.0.0.1:$signatory_utility
vaults:
  local:
    driver: file
    config:
      file: $work/secret_keys
watermark:
  driver: file
tezos:
  $pkh:
    allow:
      block:
      preattestation:
      attestation:
  $tz4:
    allow:
      attestation:
YAML
"$signatory" serve -c "$work/signatory.yaml" --log warn >"$work/signatory.log" 2>&1 &
track_pid $!

wait_until 10 "sigil-signer" curl -fsS "http://127.0.0.1:$sigil_management/readyz"
wait_until 10 "Signatory" curl -fsS "http://127.0.0.1:$signatory_port/keys/$pkh"

echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(basename "$(dirname "$signatory")")"
for concurrency in 1 4 16; do
  ours=$("$bin/tezos-load" --addr "127.0.0.1:$sigil_port" --pkh "$pkh" --concurrency "$concurrency" --seconds "$seconds" --label sigil)
  theirs=$("$bin/tezos-load" --addr "127.0.0.1:$signatory_port" --pkh "$pkh" --concurrency "$concurrency" --seconds "$seconds" --label signatory)
  echo "$ours"
  echo "$theirs"
  python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({
    "concurrency": ours["concurrency"],
    "throughput_ratio_sigil_over_signatory": round(ours["signatures_per_second"] / theirs["signatures_per_second"], 2),
    "p99_ratio_signatory_over_sigil": round(theirs["p99_us"] / ours["p99_us"], 2),
}))
PY
done

# tz4 beside tz1: one attestation at a time, as a baker signs them.
load() { "$bin/tezos-load" --addr "127.0.0.1:$1" --pkh "$2" --seconds "$seconds" --attestations-only --label "$3"; }
sigil_tz1=$(load "$sigil_port" "$pkh" "sigil tz1")
sigil_tz4=$(load "$sigil_port" "$tz4" "sigil tz4")
signatory_tz4=$(load "$signatory_port" "$tz4" "signatory tz4")
printf '%s\n' "$sigil_tz1" "$sigil_tz4" "$signatory_tz4"
python3 - "$sigil_tz1" "$sigil_tz4" "$signatory_tz4" <<'PY'
import json, sys
tz1, tz4, signatory = (json.loads(a) for a in sys.argv[1:])
print(json.dumps({
    "tz4_over_tz1_p50": round(tz4["p50_us"] / tz1["p50_us"], 2),
    "signatory_tz4_over_sigil_tz4_p99": round(signatory["p99_us"] / tz4["p99_us"], 2),
    # A baker has a 6 s block; one attestation's share of it at p99.
    "sigil_tz4_p99_share_of_a_6s_block": f'{tz4["p99_us"] / 6e6:.4%}',
}))
PY
