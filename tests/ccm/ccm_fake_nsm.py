"""A test-only attestation verifier (the AttestationVerifier interface) and its document maker.

Documents are JSON signed with an Ed25519 key kept in ``<workspace>/test-nsm/key.bin``; the
verifier checks the signature, the PCRs, the nonce and the key/config binding of DESIGN §3.7.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nitronb.errors import AttestationError


def _key(workspace: Path) -> Ed25519PrivateKey:
    path = Path(workspace) / "test-nsm" / "key.bin"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(Ed25519PrivateKey.generate().private_bytes_raw())
    return Ed25519PrivateKey.from_private_bytes(path.read_bytes())


def binding(public_key: bytes, config_id: str) -> bytes:
    raw = bytes.fromhex(config_id)
    return hashlib.sha256(b"\x01" + hashlib.sha256(public_key).digest() + raw).digest() + raw


def make_document(workspace: Path, *, pcrs: dict[int, bytes], public_key: bytes,
                  config_id: str, nonce: bytes | None, key: Ed25519PrivateKey | None = None
                  ) -> bytes:
    body = json.dumps({
        "pcrs": {str(i): v.hex() for i, v in pcrs.items()},
        "public_key": base64.b64encode(public_key).decode(),
        "user_data": base64.b64encode(binding(public_key, config_id)).decode(),
        "nonce": base64.b64encode(nonce).decode() if nonce is not None else None,
    }).encode()
    signature = (key or _key(workspace)).sign(body)
    return json.dumps({"body": body.decode(), "sig": signature.hex()}).encode()


@dataclass
class Verified:
    public_key: bytes
    pcrs: dict[int, bytes]
    nonce: bytes | None
    user_data: bytes | None = None


class FakeVerifier:
    def __init__(self, workspace: Path) -> None:
        self.public = _key(workspace).public_key()

    def verify(self, document: bytes, *, expected_pcrs, public_key, config_id, nonce):
        try:
            outer = json.loads(document)
            body = outer["body"].encode()
            self.public.verify(bytes.fromhex(outer["sig"]), body)
        except (ValueError, KeyError, TypeError):
            raise AttestationError("the document is not a test document.", reason="malformed")
        except InvalidSignature:
            raise AttestationError("bad signature.", reason="signature") from None
        doc = json.loads(body)
        pcrs = {int(i): bytes.fromhex(v) for i, v in doc["pcrs"].items()}
        for i, value in expected_pcrs.items():
            if pcrs.get(i) != value:
                raise AttestationError(f"PCR{i} differs.", reason="pcrs")
        key = base64.b64decode(doc["public_key"])
        if base64.b64decode(doc["user_data"]) != binding(key, config_id):
            raise AttestationError("user_data does not bind this key and config.",
                                   reason="binding")
        doc_nonce = base64.b64decode(doc["nonce"]) if doc["nonce"] else None
        if nonce is not None and doc_nonce != nonce:
            raise AttestationError("nonce differs.", reason="nonce")
        return Verified(public_key=key, pcrs=pcrs, nonce=doc_nonce,
                        user_data=base64.b64decode(doc["user_data"]))


def make(workspace: Path) -> FakeVerifier:
    return FakeVerifier(workspace)
