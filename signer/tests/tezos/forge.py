"""What both Tezos interop scripts send: HTTP calls as octez-client makes them, and block headers
forged by pytezos. Environment: SIGNER_URL, CHAIN_ID."""

import json
import os
import urllib.error
import urllib.request

from pytezos.block.forge import forge_block_header, forge_protocol_data
from pytezos.crypto.encoding import base58_encode
from pytezos.michelson.forge import forge_base58

URL = os.environ["SIGNER_URL"].rstrip("/")
CHAIN = os.environ["CHAIN_ID"]
BRANCH = "BLockGenesisGenesisGenesisGenesisGenesisf79b5d1CoW2"
PAYLOAD = base58_encode(bytes(range(32)), b"vh").decode()


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(URL + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def chain_bytes():
    return forge_base58(CHAIN)


def block(level, round_):
    fitness = ["02", f"{level:08x}", "", f"{max(round_ - 1, 0):08x}", f"{round_:08x}"]
    protocol_data = {
        "payload_hash": PAYLOAD,
        "payload_round": 0,
        "proof_of_work_nonce": "00" * 8,
        "liquidity_baking_toggle_vote": "pass",
    }
    header = {
        "level": level,
        "proto": 1,
        "predecessor": BRANCH,
        "timestamp": f"2026-01-01T00:{level // 60:02d}:{level % 60:02d}Z",
        "validation_pass": 4,
        "operations_hash": "LLoZqBDX1E2ADRXbmwYo8VtMNeHG6Ygzmm4Zqv97i91UPBQHy9Vq3",
        "fitness": fitness,
        "context": "CoVDyf9y9gHfAkPWofBJffo4X4bWjmehH2LeVonDcCKKzyQYwqdk",
        "protocol_data": forge_protocol_data(protocol_data).hex(),
    }
    return b"\x11" + chain_bytes() + forge_block_header(header)
