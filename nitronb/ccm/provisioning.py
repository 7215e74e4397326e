"""Releasing a runtime configuration to an attested enclave (DESIGN §3.7), and only to it.

The enclave asks for a nonce (``issue_nonce``), has its Nitro Secure Module attest with that
nonce, its public key and ``user_data`` binding the key to the APPCONFIG_ID (em-app's rule:
``SHA256(0x01 ‖ SHA256(public_key) ‖ id) ‖ id`` with the id's 32 raw bytes), and sends the
document. The manager releases the runtime configuration ``{"config", "extra"}`` (DESIGN §3.5,
``extra.connections`` carrying each dataset's location and credentials) only when the workflow
is final and approved, both whitelisting tasks are approved, and the document verifies against
the build's PCRs; the release is sealed to the enclave's key:

* the enclave's ``public_key`` is an **X25519** key, 32 raw bytes or DER SubjectPublicKeyInfo;
* the envelope is ``{"alg", "config_id", "epk", "nonce", "ciphertext"}`` (base64 fields):
  ephemeral X25519 ECDH, HKDF-SHA256 (salt = epk ‖ recipient key) to an AES-256-GCM key, the
  associated data being ``alg|config_id``. :func:`open_envelope` opens it on the enclave side.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from nitronb.ccm import runtime
from nitronb.errors import (AttestationError, DecryptionError, ProvisioningRefusedError,
                            ValidationError)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

ALGORITHM = "X25519-HKDF-SHA256-A256GCM"
NONCE_TTL = 300.0
_INFO = b"nitronb ccm provisioning v1"


class VerifiedDocument(Protocol):
    """What a verifier returns: at least the enclave's public key, its PCRs, ``user_data``
    and nonce (the manager checks PCRs, binding and nonce itself too)."""

    public_key: bytes | None
    pcrs: dict[int, bytes]
    user_data: bytes | None
    nonce: bytes | None


class AttestationVerifier(Protocol):
    """Checks an attestation document; raises AttestationError when any check fails."""

    def verify(self, document: bytes, *, expected_pcrs: dict[int, bytes],
               public_key: bytes | None, config_id: str, nonce: bytes | None
               ) -> VerifiedDocument: ...


class NitroVerifier:
    """The default verifier: ``nitronb.enclave.verification`` against trusted root certificates.

    Roots are PEM files read at each verification, so a root created after the manager
    started (``<workspace>/nsm/root.pem``) is picked up.
    """

    def __init__(self, root_paths: Sequence[str | Path]) -> None:
        self.root_paths = [Path(p) for p in root_paths]

    def roots(self) -> list[bytes]:
        return [p.read_bytes() for p in self.root_paths if p.is_file()]

    def zone_ca(self) -> list[str]:
        """Each trusted root certificate as PEM text: the runtime configuration's ``zone_ca``."""
        from cryptography.hazmat.primitives.serialization import Encoding

        from nitronb.enclave.attestation import load_roots

        pems = []
        for data in self.roots():
            try:
                certificates = load_roots(data)
            except (AttestationError, ValueError):
                continue
            pems += [c.public_bytes(Encoding.PEM).decode("ascii") for c in certificates]
        return pems

    def verify(self, document: bytes, *, expected_pcrs: dict[int, bytes],
               public_key: bytes | None, config_id: str, nonce: bytes | None
               ) -> VerifiedDocument:
        from nitronb.enclave.verification import verify_document

        roots = self.roots()
        if not roots:
            raise AttestationError(
                "the manager trusts no attestation root: none of "
                f"{', '.join(map(str, self.root_paths)) or '(no paths)'} exists.",
                reason="no-trusted-root",
                hint="Start the manager with --trust-root PEM, or start the local node agent.")
        return verify_document(document, roots=roots, expected_pcrs=expected_pcrs, nonce=nonce,
                               public_key=public_key, config_id=config_id)


# --- the envelope ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise ValidationError(f"'{what}' must be a base64 string.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"'{what}' is not valid base64.") from None


def load_public_key(data: bytes):
    """An X25519 public key from 32 raw bytes or DER SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    if len(data) == 32:
        return X25519PublicKey.from_public_bytes(data)
    try:
        key = load_der_public_key(data)
    except ValueError:
        key = None
    if not isinstance(key, X25519PublicKey):
        raise ProvisioningRefusedError(
            "the attestation document's public_key is not an X25519 key (32 raw bytes or DER "
            "SubjectPublicKeyInfo); the manager seals the release to that key only.")
    return key


def new_enclave_key() -> tuple["X25519PrivateKey", bytes]:
    """A fresh enclave key pair: the private key and the 32 raw public bytes to attest."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _derive(shared: bytes, epk: bytes, recipient: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=epk + recipient,
                info=_INFO).derive(shared)


def seal_envelope(public_key: bytes, payload: dict[str, Any], config_id: str) -> dict[str, str]:
    """Encrypt ``payload`` (JSON) to the X25519 ``public_key``."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    recipient = load_public_key(public_key)
    raw = PublicFormat.Raw
    recipient_bytes = recipient.public_bytes(Encoding.Raw, raw)
    ephemeral = X25519PrivateKey.generate()
    epk = ephemeral.public_key().public_bytes(Encoding.Raw, raw)
    key = _derive(ephemeral.exchange(recipient), epk, recipient_bytes)
    nonce = secrets.token_bytes(12)
    aad = f"{ALGORITHM}|{config_id}".encode()
    ciphertext = AESGCM(key).encrypt(nonce, json.dumps(payload).encode("utf-8"), aad)
    return {"alg": ALGORITHM, "config_id": config_id, "epk": _b64(epk), "nonce": _b64(nonce),
            "ciphertext": _b64(ciphertext)}


def open_envelope(private_key: "X25519PrivateKey | bytes", envelope: dict[str, Any]
                  ) -> dict[str, Any]:
    """The enclave side: decrypt a release with the enclave's private key (object or 32 bytes)."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import (X25519PrivateKey,
                                                                  X25519PublicKey)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if isinstance(private_key, (bytes, bytearray)):
        private_key = X25519PrivateKey.from_private_bytes(bytes(private_key))
    if not isinstance(envelope, dict) or envelope.get("alg") != ALGORITHM:
        raise DecryptionError(f"not a provisioning envelope of algorithm {ALGORITHM}.")
    try:
        epk = _unb64(envelope["epk"], "epk")
        nonce = _unb64(envelope["nonce"], "nonce")
        ciphertext = _unb64(envelope["ciphertext"], "ciphertext")
        config_id = str(envelope["config_id"])
    except (KeyError, ValidationError) as exc:
        raise DecryptionError(f"malformed provisioning envelope: {exc}") from None
    mine = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key = _derive(private_key.exchange(X25519PublicKey.from_public_bytes(epk)), epk, mine)
    try:
        plain = AESGCM(key).decrypt(nonce, ciphertext, f"{ALGORITHM}|{config_id}".encode())
    except InvalidTag:
        raise DecryptionError("the provisioning envelope does not open with this key "
                              "(another enclave's release, or tampered).") from None
    return json.loads(plain)


# --- the service's verbs --------------------------------------------------------------------


def _short(data: bytes) -> str:
    text = data.hex()
    return f"{text[:8]}…{text[-8:]}"


class ProvisioningVerbs:
    """Nonces and provisioning (mixed into :class:`nitronb.ccm.service.Service`)."""

    def issue_nonce(self, client: str | None = None) -> dict[str, Any]:
        """A fresh single-use nonce for an attestation document, valid for five minutes:
        ``{"nonce": base64, "expires_in": seconds}``. ``client`` is the requester's remote
        address, for the limits of :mod:`nitronb.ccm.limits` (TooManyRequestsError, 429)."""
        from nitronb.ccm.limits import take_nonce

        nonce = secrets.token_bytes(32)
        take_nonce(self.store, nonce.hex(), client=client, ttl=NONCE_TTL)
        return {"nonce": _b64(nonce), "expires_in": int(NONCE_TTL)}

    def provision(self, config_id: str, attestation_document: str,
                  nonce: str | None = None) -> dict[str, Any]:
        """The sealed release for an enclave whose document verifies (see the module doc)."""
        stored = self._runtime_config(config_id)
        final = stored.final
        document = _unb64(attestation_document, "attestation_document")
        expected_nonce = _unb64(nonce, "nonce") if nonce is not None else None
        app_config = self.store.get("app_config", stored.app_config_id)
        build = self.store.get("build", app_config.build_id) if app_config else None
        try:
            if build is None:
                raise ProvisioningRefusedError(
                    f"the application configuration of runtime configuration {config_id[:12]}… "
                    "or its build no longer exists.")
            verified = self._check_enclave(final, app_config, build, config_id, document,
                                           expected_nonce)
            # consent is read again where the release is recorded: none follows a withdrawal
            with self.store.transaction():
                self.check_consent(final.id, app_config, build)
                extra = self._connections(stored, self.dataset_credentials)
                payload = {"config": stored.config, "extra": extra}
                envelope = seal_envelope(verified.public_key, payload, config_id)
                names = sorted({self.store.get("dataset", dataset_id).name
                                for _, _, dataset_id in runtime.dataset_nodes(stored.config)})
                self._audit("enclave", "provision.release", object_type="runtime_config",
                            object_id=config_id,
                            details={"workflow_id": final.id, "pcr0": build.measurements["pcr0"],
                                     "datasets": names})
        except ProvisioningRefusedError as exc:
            from nitronb.ccm.limits import record_refusal

            record_refusal(self.store, config_id, exc.message, lambda details: self._audit(
                "enclave", "provision.refused", object_type="runtime_config",
                object_id=config_id, details=details))
            raise
        return {"app_config_id": config_id, "envelope": envelope}

    def _check_enclave(self, final, app_config, build, config_id, document, expected_nonce):
        self.check_consent(final.id, app_config, build)
        if self.verifier is None:
            raise ProvisioningRefusedError("the manager has no attestation verifier configured.",
                                           hint="Start it with --trust-root PEM.")
        expected = {i: bytes.fromhex(build.measurements[f"pcr{i}"]) for i in range(3)}
        try:
            verified = self.verifier.verify(document, expected_pcrs=expected, public_key=None,
                                            config_id=config_id, nonce=expected_nonce)
        except AttestationError as exc:
            raise ProvisioningRefusedError(
                f"the attestation document was refused ({exc.reason}): {exc.message}") from None
        pcrs = getattr(verified, "pcrs", None) or {}
        for i in range(3):
            got = pcrs.get(i)
            if got != expected[i]:
                shown = _short(got) if isinstance(got, bytes) else "missing"
                raise ProvisioningRefusedError(
                    f"PCR{i} of the enclave {shown} does not match the whitelisted build "
                    f"{_short(expected[i])}.")
        self._check_binding(verified, config_id)
        doc_nonce = getattr(verified, "nonce", None) or None
        if doc_nonce is None:
            raise ProvisioningRefusedError(
                "the attestation document carries no nonce; take one from "
                "POST /v1/runtime/nonces and attest with it.")
        if expected_nonce is not None and doc_nonce != expected_nonce:
            raise ProvisioningRefusedError("the attestation document's nonce is not the one "
                                           "sent with the request.")
        outcome = self.store.consume_nonce(bytes(doc_nonce).hex(), time.time())
        if outcome != "ok":
            raise ProvisioningRefusedError({
                "unknown": "the attestation document's nonce was not issued by this manager.",
                "used": "the attestation document's nonce was already used (replay refused).",
                "expired": "the attestation document's nonce expired; take a fresh one.",
            }[outcome])
        if not getattr(verified, "public_key", None):
            raise ProvisioningRefusedError("the attestation document carries no public key to "
                                           "seal the release to.")
        load_public_key(verified.public_key)
        return verified

    @staticmethod
    def _check_binding(verified, config_id: str) -> None:
        """The manager's own check that the document's ``user_data`` binds its ``public_key``
        to ``config_id`` (em-app's rule), whatever the verifier checked."""
        from nitronb.enclave.attestation import binding_user_data

        key = getattr(verified, "public_key", None)
        if not key:
            raise ProvisioningRefusedError("the attestation document carries no public key to "
                                           "seal the release to.")
        if getattr(verified, "user_data", None) != binding_user_data(bytes(key), config_id):
            raise ProvisioningRefusedError(
                f"the attestation document's user_data does not bind its public key to "
                f"APPCONFIG_ID {config_id[:12]}…; the enclave attested another configuration "
                "or key.")
