"""An independent Tezos client against sigil-signer: pytezos forges blocks, (pre)attestations and
manager operations, sends them the way octez-client does (GET /authorized_keys, then POST
/keys/<pkh> with `version` and, when asked for, `authentication`), and verifies every signature.

Environment: SIGNER_URL, KEYS (JSON list of secret keys), CLIENT_SECRET (the authentication key),
CHAIN_ID. Prints one JSON summary line; exits non-zero on any failure.
"""

import json
import os
import sys

from forge import BRANCH, PAYLOAD, block, call, chain_bytes
from pytezos.crypto.key import Key
from pytezos.michelson.forge import forge_address, forge_base58
from pytezos.operation.forge import forge_operation, forge_operation_group

CLIENT = Key.from_encoded_key(os.environ["CLIENT_SECRET"])
failures = []
signed = {}


def sign(pkh, data):
    """What octez-client does: ask whether authentication is required, then POST."""
    status, authorized = call("GET", "/authorized_keys")
    assert status == 200, authorized
    query = "?version=2"
    if CLIENT.public_key_hash() in authorized.get("authorized_keys", []):
        to_sign = b"\x04\x01" + forge_address(pkh, tz_only=True) + data
        query += "&authentication=" + CLIENT.sign(to_sign)
    return call("POST", f"/keys/{pkh}{query}", data.hex())


def consensus(magic, kind, level, round_, dal=None):
    content = {"kind": kind, "slot": 3, "level": level, "round": round_, "block_payload_hash": PAYLOAD}
    if dal is not None:
        content["dal_attestation"] = dal
    return magic + chain_bytes() + forge_base58(BRANCH) + forge_operation(content)


def transaction(source, counter):
    group = {
        "branch": BRANCH,
        "contents": [
            {"kind": "transaction", "source": source, "fee": "1420", "counter": str(counter), "gas_limit": "10600",
             "storage_limit": "300", "amount": "1000000", "destination": "tz1SodoUsWVe1Yey9eMFbqRUtNpBWfir5NRr"},
            {"kind": "transaction", "source": source, "fee": "0", "counter": str(counter + 1), "gas_limit": "10600",
             "storage_limit": "0", "amount": "1", "destination": "KT1BEqzn5Wx8uJrZNvuS9DVHmLvG9td3fDLi",
             "parameters": {"entrypoint": "transfer", "value": {"prim": "Unit"}}},
        ],
    }
    return b"\x03" + forge_operation_group(group)


def check(key, what, data):
    status, answer = sign(key.public_key_hash(), data)
    if status != 200:
        failures.append(f"{key.public_key_hash()} {what}: HTTP {status} {answer}")
        return None
    signature = answer["signature"]
    try:
        key.verify(signature, data)
    except Exception as error:  # noqa: BLE001 - any verification failure is a test failure
        failures.append(f"{key.public_key_hash()} {what}: signature does not verify: {error}")
        return None
    signed[what] = signed.get(what, 0) + 1
    return signature


def expect_refused(key, what, data, status_wanted):
    status, answer = sign(key.public_key_hash(), data)
    if status != status_wanted:
        failures.append(f"{key.public_key_hash()} {what}: wanted HTTP {status_wanted}, got {status} {answer}")


for secret in json.loads(os.environ["KEYS"]):
    key = Key.from_encoded_key(secret)
    pkh = key.public_key_hash()
    status, answer = call("GET", f"/keys/{pkh}")
    if status != 200 or answer.get("public_key") != key.public_key():
        failures.append(f"{pkh}: GET /keys answered {status} {answer}")
    for level in range(1, 11):
        for round_ in (0, 1):
            check(key, "block", block(level, round_))
            check(key, "preattestation", consensus(b"\x12", "preattestation", level, round_))
            check(key, "attestation", consensus(b"\x13", "attestation", level, round_))
    check(key, "attestation_with_dal", consensus(b"\x13", "attestation", 11, 0, dal=5))
    for counter in range(1, 6):
        check(key, "transaction", transaction(pkh, counter * 10))
    # The same block again: the same signature. A different block at that level: refused.
    first = check(key, "block", block(20, 0))
    again = check(key, "block", block(20, 0))
    if first != again:
        failures.append(f"{pkh}: an identical re-request got a different signature")
    different = bytearray(block(20, 0))
    different[-2] ^= 1
    expect_refused(key, "block (same level, different payload)", bytes(different), 409)
    expect_refused(key, "block (lower level)", block(19, 5), 409)

status, answer = call("GET", "/keys/tz1burnburnburnburnburnburnburjAYjjX")
if status != 404:
    failures.append(f"unknown key: wanted 404, got {status} {answer}")

print(json.dumps({"signed": signed, "failures": failures}))
sys.exit(1 if failures else 0)
