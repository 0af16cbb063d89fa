#!/usr/bin/env bash
# sigil-signer and tmkms side by side as CometBFT privval signers: the same Ed25519 key (a
# priv_validator_key.json), the same harness node (tests/src/bin/privval-load.rs) over the same
# transport (TCP with SecretConnection), the same stream of proposals, prevotes and precommits at
# rising heights, served in turns by one harness. Reports p50/p99 and throughput (requests over
# the time spent waiting for that signer) for both, and the ratios. Every sigil answer is covered
# by a flushed record (with reserveNextStep: its own, or a reservation of its step, see
# docs/ratchet.md); tmkms writes its state file without fsync.
#
#   e2e/bench/cometbft.sh [seconds-per-run]     (default 10)
set -euo pipefail
cd "$(dirname "$0")/../.."
. e2e/lib/common.sh
seconds=${1:-10}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sigil/target}
cargo build --quiet --release -p sigil-signer -p sigil-tests --bin sigil-signer --bin privval-load
bin=$CARGO_TARGET_DIR/release
tmkms=$(e2e/lib/tmkms)

work=$(mktemp -d)
[ -n "${KEEP:-}" ] || at_exit rm -rf "$work"

chain=bench-chain
# One validator key for both, in CometBFT's file format, and tmkms's SecretConnection identity.
python3 - "$work" <<'PY'
import base64, os, sys
work = sys.argv[1]
seed = os.urandom(32)
open(f"{work}/seed.hex", "w").write(seed.hex())
open(f"{work}/kms-identity.key", "w").write(base64.b64encode(os.urandom(32)).decode())
PY
public=$("$bin/sigil-signer" key show --file "$work/seed.hex" | awk '/^public key/ {print $3}')
python3 - "$work" "$public" <<'PY'
import base64, hashlib, json, sys
work, public = sys.argv[1], bytes.fromhex(sys.argv[2])
seed = bytes.fromhex(open(f"{work}/seed.hex").read())
json.dump({"address": hashlib.sha256(public).hexdigest()[:40].upper(), "pub_key": {"type": "tendermint/PubKeyEd25519", "value": base64.b64encode(public).decode()},
           "priv_key": {"type": "tendermint/PrivKeyEd25519", "value": base64.b64encode(seed + public).decode()}},
          open(f"{work}/priv_validator_key.json", "w"))
PY
chmod 600 "$work"/*.json "$work"/*.key "$work/seed.hex"

sigil_port=$(free_port)
cat > "$work/sigil.yaml" <<YAML
keys: {validator: {local: {secretKeyFile: $work/priv_validator_key.json}}}
ratchet: {file: {dir: $work/sigil-ratchet, reserveNextStep: true}}
cometbft: [{connect: "tcp://127.0.0.1:$sigil_port", chainId: $chain, key: validator}]
management: {listen: "127.0.0.1:$(free_port)"}
YAML

tmkms_port=$(free_port)
cat > "$work/tmkms.toml" <<TOML
[[chain]]
id = "$chain"
key_format = { type = "hex" }
state_file = "$work/tmkms-state.json"
sign_extensions = true

[[validator]]
chain_id = "$chain"
addr = "tcp://127.0.0.1:$tmkms_port"
secret_key = "$work/kms-identity.key"
protocol_version = "v0.38"
reconnect = true

[[providers.softsign]]
chain_ids = ["$chain"]
key_type = "consensus"
path = "$work/priv_validator_key.json"
key_format = "json"
TOML

echo "# $(date -u +%F) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $("$tmkms" version 2>/dev/null | head -1)"
# One harness serves both, a height each in turn, so that both meet the same moments of the
# machine (a VM's steal time moves figures between runs made one after the other).
"$bin/privval-load" --signer "sigil=127.0.0.1:$sigil_port" --signer "tmkms=127.0.0.1:$tmkms_port" \
  --chain-id "$chain" --seconds "$seconds" > "$work/load.json" &
load=$!
track_pid "$load"
SIGIL_LOG=warn "$bin/sigil-signer" --config "$work/sigil.yaml" > "$work/sigil.log" 2>&1 &
track_pid $!
"$tmkms" start -c "$work/tmkms.toml" > "$work/tmkms.log" 2>&1 &
track_pid $!
wait "$load" || { tail -n 20 "$work/sigil.log" "$work/tmkms.log" >&2; exit 1; }
ours=$(grep '"signer":"sigil"' "$work/load.json")
theirs=$(grep '"signer":"tmkms"' "$work/load.json")
echo "$ours"
echo "$theirs"
python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(json.dumps({
    "throughput_ratio_sigil_over_tmkms": round(ours["signatures_per_second"] / theirs["signatures_per_second"], 2),
    "p99_ratio_tmkms_over_sigil": round(theirs["p99_us"] / ours["p99_us"], 2),
}))
PY
