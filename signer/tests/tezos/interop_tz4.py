"""tz4 (BLS12-381) against sigil-signer, checked by independent code: pytezos forges the blocks,
py_ecc (the Ethereum Foundation's pure-Python BLS12-381) verifies every signature and proof.

Sends what octez-baker sends for a tz4 consensus key with a companion key: blocks (0x11),
preattestations and attestations in BLS mode (tags 40/41, no slot), the same tag-41 bytes to the
companion key, and proofs of possession (with and without `bls_pk`). Signature versions as octez
uses them: none and 2/3 sign with the proof-of-possession scheme, 1 with message augmentation, 0
has no BLS.

Environment: SIGNER_URL, CONSENSUS_KEY, COMPANION_KEY, OTHER_PUBLIC_KEY (BLpk… for bls_pk),
CONFIG_PATH (rewritten here to switch proofs of possession on), CHAIN_ID.
Prints one JSON summary line; exits non-zero on any failure.
"""

import json
import os
import sys

from forge import BRANCH, PAYLOAD, block, chain_bytes
from forge import call as http
from py_ecc.bls import G2MessageAugmentation, G2ProofOfPossession
from pytezos.crypto.encoding import base58_decode, base58_encode
from pytezos.michelson.forge import forge_base58

POP_DST = b"BLS_POP_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"
failures = []
signed = {}


def call(path, body=None):
    return http("GET" if body is None else "POST", path, body)


def public_key(pkh):
    status, answer = call(f"/keys/{pkh}")
    assert status == 200, (pkh, status, answer)
    return answer["public_key"]


def raw_public_key(blpk):
    return base58_decode(blpk.encode())


def raw_signature(blsig):
    return base58_decode(blsig.encode())


def bls_consensus(magic, tag, level, round_, payload=PAYLOAD):
    """octez's BLS-mode (pre)attestation: tag 40/41, then level, round, payload hash; no slot."""
    return (magic + chain_bytes() + forge_base58(BRANCH) + bytes([tag]) + level.to_bytes(4, "big")
            + round_.to_bytes(4, "big") + forge_base58(payload))


def verify(blpk, scheme, message, blsig):
    pk, sig = raw_public_key(blpk), raw_signature(blsig)
    if scheme == "pop":
        return G2ProofOfPossession.Verify(pk, message, sig)
    return G2MessageAugmentation.Verify(pk, message, sig)


def check(pkh, blpk, what, data, version="2"):
    query = "" if version is None else f"?version={version}"
    status, answer = call(f"/keys/{pkh}{query}", data.hex())
    if status != 200:
        failures.append(f"{pkh} {what} (version {version}): HTTP {status} {answer}")
        return None
    scheme = "aug" if version == "1" else "pop"
    if not verify(blpk, scheme, data, answer["signature"]):
        failures.append(f"{pkh} {what} (version {version}): the {scheme} signature does not verify")
        return None
    signed[what] = signed.get(what, 0) + 1
    return answer["signature"]


def expect(status_wanted, what, path, body=None):
    status, answer = call(path, body)
    if status != status_wanted:
        failures.append(f"{what}: wanted HTTP {status_wanted}, got {status} {answer}")
    return answer


consensus_pkh, companion_pkh = os.environ["CONSENSUS_KEY"], os.environ["COMPANION_KEY"]
consensus_pk, companion_pk = public_key(consensus_pkh), public_key(companion_pkh)
if not (consensus_pkh.startswith("tz4") and consensus_pk.startswith("BLpk")):
    failures.append(f"GET /keys answered {consensus_pk} for {consensus_pkh}")

# Every version octez sends: none and 2/3 (proof-of-possession scheme), 1 (augmentation).
versions = [None, "2", "3", "1"]
for level in range(1, 9):
    version = versions[level % len(versions)]
    for round_ in (0, 1):
        check(consensus_pkh, consensus_pk, "block", block(level, round_), version)
        check(consensus_pkh, consensus_pk, "preattestation", bls_consensus(b"\x12", 40, level, round_), version)
        attestation = bls_consensus(b"\x13", 41, level, round_)
        check(consensus_pkh, consensus_pk, "attestation", attestation, version)
        # DAL content exists: the baker sends the same bytes to the companion key.
        check(companion_pkh, companion_pk, "companion attestation", attestation, version)

# The same attestation again: the same signature; another payload at that level: refused.
again = bls_consensus(b"\x13", 41, 8, 1)
if check(consensus_pkh, consensus_pk, "attestation", again) != check(consensus_pkh, consensus_pk, "attestation", again):
    failures.append("an identical re-request got a different signature")
other_payload = base58_encode(bytes(range(1, 33)), b"vh").decode()
expect(409, "attestation at a signed level with another payload",
       f"/keys/{consensus_pkh}?version=2", bls_consensus(b"\x13", 41, 8, 1, other_payload).hex())
expect(409, "companion attestation at a signed level with another payload",
       f"/keys/{companion_pkh}?version=2", bls_consensus(b"\x13", 41, 8, 1, other_payload).hex())
# The same bytes in the other scheme are another signature: refused like different data.
expect(409, "the same attestation in the augmented scheme", f"/keys/{consensus_pkh}?version=1", again.hex())
expect(400, "version 0 (no BLS)", f"/keys/{consensus_pkh}?version=0", bls_consensus(b"\x13", 41, 13, 0).hex())
expect(400, "an unknown version", f"/keys/{consensus_pkh}?version=9", bls_consensus(b"\x13", 41, 13, 0).hex())

# Proofs of possession: off until the config says otherwise, then on without a restart.
expect(403, "a proof of possession while allowProofOfPossession is off", f"/bls_prove_possession/{consensus_pkh}")
config_path = os.environ["CONFIG_PATH"]
with open(config_path) as f:
    config = f.read()
with open(config_path + ".new", "w") as f:
    f.write(config.replace("allowProofOfPossession: false", "allowProofOfPossession: true"))
os.replace(config_path + ".new", config_path)
for pkh, blpk in ((consensus_pkh, consensus_pk), (companion_pkh, companion_pk)):
    status, answer = call(f"/bls_prove_possession/{pkh}")
    if status != 200:
        failures.append(f"{pkh}: proof of possession: HTTP {status} {answer}")
        continue
    if not G2ProofOfPossession.PopVerify(raw_public_key(blpk), raw_signature(answer["bls_prove_possession"])):
        failures.append(f"{pkh}: the proof of possession does not verify")
    else:
        signed["proof of possession"] = signed.get("proof of possession", 0) + 1
other = os.environ["OTHER_PUBLIC_KEY"]
status, answer = call(f"/bls_prove_possession/{consensus_pkh}?bls_pk={other}")
if status != 200:
    failures.append(f"proof over bls_pk: HTTP {status} {answer}")
elif not G2ProofOfPossession._CoreVerify(raw_public_key(consensus_pk), raw_public_key(other),
                                         raw_signature(answer["bls_prove_possession"]), POP_DST):
    failures.append("the proof over bls_pk does not verify")
else:
    signed["proof of possession over bls_pk"] = 1
expect(400, "bls_pk that is not a BLS key", f"/bls_prove_possession/{consensus_pkh}?bls_pk=edpkufnz668CdgnVC4X5KRvJoXCMgicr29Tjmr5vxGzvMdipwkTZmM")

print(json.dumps({"signed": signed, "failures": failures}))
sys.exit(1 if failures else 0)
