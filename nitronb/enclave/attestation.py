"""AWS Nitro attestation documents: their format, decoded, and the trust anchors to verify them.

The format is AWS Nitro Enclaves' attestation document (DESIGN §3.7; AWS's specification is
``docs/attestation_process.md`` in aws/aws-nitro-enclaves-nsm-api): a COSE_Sign1 structure (ES384)
whose payload is a CBOR map issued by a Nitro Secure Module, with the fields ``module_id``,
``digest``, ``timestamp``, ``pcrs``, ``certificate``, ``cabundle`` and the optional
``public_key``, ``user_data``, ``nonce``.

This module owns:

- :class:`AttestationDocument` and :func:`parse_document` (CBOR/COSE decoding; structure only,
  nothing is trusted yet);
- the binding of an enclave's key and configuration in ``user_data``
  (:func:`binding_user_data`, :func:`config_id_from_user_data`);
- trusted roots (:func:`load_roots`, :func:`aws_nitro_root`) and PCR values given as bytes or hex
  (:func:`normalise_pcrs`).

Verifying a document (signature, chain, validity, PCRs, nonce, age, binding) is
:func:`nitronb.enclave.verification.verify_document`, which imports this module (never the
reverse). Every failure raises :class:`~nitronb.errors.AttestationError` whose ``reason`` names
the check (:data:`REASONS`).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping, NoReturn

from nitronb.errors import AttestationError

if TYPE_CHECKING:  # pragma: no cover
    from cryptography import x509

__all__ = [
    "AttestationDocument", "AttestationError", "parse_document", "load_roots",
    "binding_user_data", "config_id_from_user_data", "REASONS", "AWS_NITRO_ROOT_G1_SHA256",
    "aws_nitro_root", "normalise_pcrs", "BINDING_SIZE",
]

#: every ``AttestationError.reason`` that decoding (here) and verification raise
REASONS = ("malformed", "signature", "chain", "validity", "pcrs", "nonce", "binding", "stale")

#: SHA-256 of the DER of the AWS Nitro Enclaves root certificate (``CN=aws.nitro-enclaves``)
AWS_NITRO_ROOT_G1_SHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"

COSE_ALG_ES384 = -35
_PROTECTED = {1: COSE_ALG_ES384}
_COSE_SIGN1_TAG = 18
_REQUIRED = ("module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle")
_OPTIONAL = ("public_key", "user_data", "nonce")
_PCR_SIZES = (32, 48, 64)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z


@dataclass(frozen=True)
class AttestationDocument:
    """A decoded attestation document. Decoding proves nothing: see
    :func:`~nitronb.enclave.verification.verify_document`."""

    module_id: str
    digest: str
    timestamp_ms: int
    pcrs: Mapping[int, bytes]
    certificate: bytes  #: the leaf certificate (DER) whose key signed the document
    cabundle: tuple[bytes, ...]  #: DER certificates: root first, issuer of the leaf last
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None
    protected: bytes = field(repr=False)
    payload: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    def __hash__(self) -> int:
        return hash((self.protected, self.payload, self.signature))

    @property
    def timestamp(self) -> datetime:
        """When the module issued the document (UTC)."""
        return _EPOCH + timedelta(milliseconds=self.timestamp_ms)

    @property
    def debug_mode(self) -> bool:
        """True for an enclave run in debug mode: the module then reports PCR0 as all zeros."""
        pcr0 = self.pcrs.get(0)
        return pcr0 is not None and not any(pcr0)

    @property
    def leaf_certificate(self) -> "x509.Certificate":
        """The leaf certificate, parsed."""
        return _load_der(self.certificate, "certificate")

    @property
    def config_id(self) -> str | None:
        """The configuration id that ``user_data`` binds to ``public_key``, or None if none is."""
        if self.user_data is None or self.public_key is None:
            return None
        try:
            candidate = config_id_from_user_data(self.user_data)
        except AttestationError:
            return None
        if binding_user_data(self.public_key, candidate) != self.user_data:
            return None
        return candidate

    def pcr_hex(self, index: int) -> str | None:
        """PCR ``index`` as lower-case hex, or None if the document does not carry it."""
        value = self.pcrs.get(index)
        return None if value is None else value.hex()

    def to_json(self) -> dict[str, Any]:
        """The decoded fields as JSON-ready values: bytes as hex, the time as ISO 8601 (UTC)."""

        def hexed(value: bytes | None) -> str | None:
            return None if value is None else value.hex()

        try:
            subject = self.leaf_certificate.subject.rfc4514_string()
        except AttestationError:
            subject = None
        return {
            "module_id": self.module_id,
            "digest": self.digest,
            "timestamp": _iso(self.timestamp),
            "timestamp_ms": self.timestamp_ms,
            "debug_mode": self.debug_mode,
            "pcrs": {str(index): value.hex() for index, value in sorted(self.pcrs.items())},
            "certificate_subject": subject,
            "certificate": self.certificate.hex(),
            "cabundle": [der.hex() for der in self.cabundle],
            "public_key": hexed(self.public_key),
            "user_data": hexed(self.user_data),
            "nonce": hexed(self.nonce),
            "config_id": self.config_id,
            "signature": self.signature.hex(),
        }


# --- decoding -------------------------------------------------------------------------------


def parse_document(data: bytes) -> AttestationDocument:
    """Decode a COSE_Sign1 attestation document (bare or tagged 18), checking its structure.

    Nothing is verified: use :func:`~nitronb.enclave.verification.verify_document` before
    trusting any field. Raises :class:`~nitronb.errors.AttestationError` (``malformed``) for
    anything that is not a well-formed document, TypeError if ``data`` is not bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"an attestation document is bytes, not {type(data).__name__}")
    import cbor2

    data = bytes(data)
    outer = _cbor_decode(data, "the document")
    if isinstance(outer, cbor2.CBORTag):
        if outer.tag != _COSE_SIGN1_TAG:
            _malformed(f"the document is CBOR tag {outer.tag}; a COSE_Sign1 is tag 18 or untagged")
        outer = outer.value
    if not isinstance(outer, (list, tuple)) or len(outer) != 4:
        _malformed("the document is not a COSE_Sign1 array of 4 items "
                   "[protected, unprotected, payload, signature]")
    protected, unprotected, payload, signature = outer
    if not isinstance(protected, bytes):
        _malformed("the COSE protected header is not a byte string")
    header = _cbor_decode(protected, "the COSE protected header")
    if (not isinstance(header, Mapping) or len(header) != 1
            or any(type(key) is not int or type(value) is not int for key, value in header.items())
            or dict(header) != _PROTECTED):
        _malformed(f"the COSE protected header is {header!r}; an attestation document uses "
                   f"{{1: -35}} (ES384)")
    if not isinstance(unprotected, Mapping):
        _malformed("the COSE unprotected header is not a map")
    if not isinstance(payload, bytes):
        _malformed("the COSE payload is not a byte string")
    if not isinstance(signature, bytes) or len(signature) != 96:
        size = len(signature) if isinstance(signature, bytes) else type(signature).__name__
        _malformed(f"the signature is {size}; ES384 signatures are 96 bytes (r||s)")
    body = _cbor_decode(payload, "the payload")
    if not isinstance(body, Mapping):
        _malformed("the payload is not a CBOR map")
    return _from_payload(body, protected, payload, signature)


def _from_payload(body: Mapping, protected: bytes, payload: bytes,
                  signature: bytes) -> AttestationDocument:
    unknown = sorted(str(key) for key in body if key not in _REQUIRED + _OPTIONAL)
    if unknown:
        _malformed(f"the payload has unknown fields {', '.join(unknown)}")
    missing = [key for key in _REQUIRED if body.get(key) is None]
    if missing:
        _malformed(f"the payload lacks {', '.join(missing)}; a Nitro document always carries "
                   f"{', '.join(_REQUIRED)}")
    module_id, digest, timestamp = body["module_id"], body["digest"], body["timestamp"]
    if not isinstance(module_id, str) or not module_id:
        _malformed("module_id is not a non-empty text string")
    if digest != "SHA384":
        _malformed(f"digest is {digest!r}; Nitro documents use 'SHA384'")
    if type(timestamp) is not int or not 0 < timestamp <= _MAX_MS:
        _malformed(f"timestamp is {timestamp!r}; it must be milliseconds since the epoch")
    pcrs = body["pcrs"]
    if not isinstance(pcrs, Mapping) or not 1 <= len(pcrs) <= 32:
        _malformed("pcrs is not a map of 1 to 32 entries")
    for index, value in pcrs.items():
        if type(index) is not int or not 0 <= index < 32:
            _malformed(f"PCR index {index!r} is not an integer from 0 to 31")
        if not isinstance(value, bytes) or len(value) not in _PCR_SIZES:
            _malformed(f"PCR{index} is not 32, 48 or 64 bytes")
    certificate, cabundle = body["certificate"], body["cabundle"]
    if not isinstance(certificate, bytes) or not certificate:
        _malformed("certificate is not a DER byte string")
    if not isinstance(cabundle, (list, tuple)) or not cabundle:
        _malformed("cabundle is not a non-empty list of certificates (root first)")
    for position, der in enumerate(cabundle):
        if not isinstance(der, bytes) or not der:
            _malformed(f"cabundle[{position}] is not a DER byte string")
    optional = {}
    for key in _OPTIONAL:
        value = body.get(key)
        if value is not None and not isinstance(value, bytes):
            _malformed(f"{key} is {type(value).__name__}; it must be a byte string or null")
        optional[key] = value
    return AttestationDocument(
        module_id=module_id, digest=digest, timestamp_ms=timestamp,
        pcrs=MappingProxyType({index: pcrs[index] for index in sorted(pcrs)}),
        certificate=certificate, cabundle=tuple(cabundle), protected=protected,
        payload=payload, signature=signature, **optional)


# --- binding and helpers --------------------------------------------------------------------


BINDING_SIZE = 64  #: bytes of a key and configuration binding in ``user_data``


def _config_id_bytes(config_id: str) -> bytes:
    if isinstance(config_id, str) and len(config_id) == 64:
        try:
            return bytes.fromhex(config_id)
        except ValueError:
            pass
    shown = config_id[:20] + "…" if isinstance(config_id, str) and len(config_id) > 20 \
        else config_id
    raise AttestationError(f"configuration id {shown!r} is not an APPCONFIG_ID (64 hex "
                           f"characters, a SHA-256).", reason="binding")


def binding_user_data(public_key: bytes, config_id: str) -> bytes:
    """em-app's binding of a key to a configuration, 64 bytes:
    ``SHA256(0x01 ‖ SHA256(public_key) ‖ id) ‖ id`` where ``id`` is the APPCONFIG_ID's 32 raw
    bytes (hex-decoded). AttestationError (``binding``) if ``config_id`` is not 64 hex digits."""
    raw = _config_id_bytes(config_id)
    digest = hashlib.sha256(b"\x01" + hashlib.sha256(public_key).digest() + raw).digest()
    return digest + raw


def config_id_from_user_data(user_data: bytes) -> str:
    """The APPCONFIG_ID (lower-case hex) in the last 32 bytes of a 64-byte binding."""
    if len(user_data) != BINDING_SIZE:
        raise AttestationError(
            f"user_data has {len(user_data)} bytes; a key and configuration binding has "
            f"{BINDING_SIZE}: SHA256(0x01 | SHA256(public_key) | id) | id, with the "
            f"APPCONFIG_ID's 32 raw bytes as id.", reason="binding")
    return user_data[32:].hex()


def load_roots(source: bytes | str | Path) -> list["x509.Certificate"]:
    """The certificates of a PEM file or PEM text (bytes or str beginning with -----BEGIN)."""
    from cryptography import x509

    if isinstance(source, Path) or (isinstance(source, str) and "-----BEGIN" not in source):
        path = Path(source)
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise AttestationError(f"cannot read the root certificate file {path}: "
                                   f"{exc.strerror or exc}.", reason="chain") from None
        where = str(path)
    else:
        text = source.encode("utf-8") if isinstance(source, str) else bytes(source)
        where = "the given PEM"
    try:
        certs = x509.load_pem_x509_certificates(text)
    except ValueError:
        raise AttestationError(f"{where} holds no PEM certificate (-----BEGIN CERTIFICATE-----).",
                               reason="chain") from None
    return certs


def aws_nitro_root() -> Path:
    """The path of the AWS Nitro Enclaves root certificate (PEM) shipped with nitronb.

    Pass it to :func:`load_roots` to trust the documents real Nitro enclaves issue. The file is
    checked against :data:`AWS_NITRO_ROOT_G1_SHA256` (SHA-256 of its DER) on every call; an
    :class:`~nitronb.errors.AttestationError` (reason ``"chain"``) says when it is missing or
    altered.
    """
    from importlib import resources

    from cryptography.hazmat.primitives.serialization import Encoding

    path = Path(str(resources.files("nitronb") / "data" / "AWS_NitroEnclaves_Root-G1.pem"))
    certs = load_roots(path)
    if [hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest() for cert in certs] != [
            AWS_NITRO_ROOT_G1_SHA256]:
        raise AttestationError(f"{path} is not the AWS Nitro Enclaves root certificate "
                               f"(its SHA-256 is not {AWS_NITRO_ROOT_G1_SHA256[:16]}…).",
                               reason="chain",
                               hint="Reinstall nitronb, or pass the root you trust with --root.")
    return path


def normalise_pcrs(expected: Mapping[int, bytes | str]) -> dict[int, bytes]:
    """PCR values given as bytes or hex, keyed by index 0..31, as bytes; ValueError otherwise."""
    result = {}
    for index, value in expected.items():
        if type(index) is not int or not 0 <= index < 32:
            raise ValueError(f"PCR index {index!r} is not an integer from 0 to 31")
        if isinstance(value, str):
            try:
                value = bytes.fromhex(value)
            except ValueError:
                raise ValueError(f"PCR{index} is not hex: {value[:20]!r}") from None
        result[index] = bytes(value)
    return result


def _cbor_decode(data: bytes, what: str) -> Any:
    import cbor2

    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # noqa: BLE001 - any decoding failure of untrusted input
        raise AttestationError(f"{what} is not valid CBOR ({exc}); it is not an attestation "
                               f"document or it was damaged.", reason="malformed") from None
    if stream.tell() != len(data):
        _malformed(f"{what} has {len(data) - stream.tell()} trailing bytes after its CBOR item")
    return value


def _load_der(der: bytes, what: str) -> "x509.Certificate":
    from cryptography import x509

    try:
        with warnings.catch_warnings():
            # a damaged certificate may only warn here; the signature checks reject it later
            warnings.simplefilter("ignore")
            cert = x509.load_der_x509_certificate(der)
            cert.subject  # noqa: B018 - parse the names now, so a damaged one fails here
            cert.issuer  # noqa: B018
    except (ValueError, x509.InvalidVersion) as exc:
        raise AttestationError(f"{what} is not a DER X.509 certificate ({exc}).",
                               reason="malformed") from None
    return cert


def _malformed(message: str) -> NoReturn:
    raise AttestationError(f"{message}; this is not a well-formed Nitro attestation document.",
                           reason="malformed")


def _iso(moment: datetime) -> str:
    text = moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
