"""HMAC signatures over gate records, so deploy can refuse a model that was never blessed.

The key comes from the LEPTON_CI_SIGNING_KEY secret. Without it a record is written unsigned and
says so; deploy then refuses it unless told `--allow-unblessed`.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from lepton_ci.records import GateRecord

KEY_ENV = "LEPTON_CI_SIGNING_KEY"


def signing_key() -> bytes | None:
    key = os.environ.get(KEY_ENV)
    return key.encode() if key else None


def key_id(key: bytes) -> str:
    """A public fingerprint of the key, so a mismatch can say which key signed."""
    return hashlib.sha256(b"lepton-ci key id\0" + key).hexdigest()[:16]


def sign(record: GateRecord, key: bytes | None) -> GateRecord:
    if key is None:
        record.signature = {"alg": "none", "reason": f"{KEY_ENV} is not set: this gate record is unsigned"}
        return record
    mac = hmac.new(key, record.signed_payload(), hashlib.sha256).hexdigest()
    record.signature = {"alg": "hmac-sha256", "key_id": key_id(key), "value": mac}
    return record


def verify(record: GateRecord, key: bytes | None) -> tuple[bool, str]:
    """(valid, reason). Constant-time comparison; reasons are safe to print (no key material)."""
    sig = record.signature or {}
    if sig.get("alg") != "hmac-sha256":
        return False, "the gate record is unsigned"
    if key is None:
        return False, f"{KEY_ENV} is not set, so the gate signature cannot be checked"
    if sig.get("key_id") != key_id(key):
        return False, f"the gate record was signed with another key (key id {sig.get('key_id')})"
    expected = hmac.new(key, record.signed_payload(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(sig.get("value", ""))):
        return False, "the gate signature does not match: the record was changed after it was signed"
    return True, "signature verified"
