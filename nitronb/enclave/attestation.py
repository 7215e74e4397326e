"""AWS Nitro attestation documents: decode them, and verify them against trusted roots.

A document is a COSE_Sign1 structure (ES384) whose payload is a CBOR map issued by a Nitro
Secure Module (see DESIGN §3.7). Verifying checks the signature, the certificate chain up to a
trusted root, every certificate's validity at a chosen time, and, when asked, the PCRs, the nonce,
the document's age and the binding of the enclave's key and configuration in ``user_data``.
Every failure raises :class:`~nitronb.errors.AttestationError` whose ``reason`` names the check.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Mapping, NoReturn, Sequence

from nitronb.errors import AttestationError

if TYPE_CHECKING:  # pragma: no cover
    from cryptography import x509

__all__ = [
    "AttestationDocument", "AttestationError", "parse_document", "verify_document", "load_roots",
    "binding_user_data", "config_id_from_user_data", "REASONS", "AWS_NITRO_ROOT_G1_SHA256",
    "aws_nitro_root",
]

#: every ``AttestationError.reason`` this module raises
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
    """A decoded attestation document. Decoding proves nothing: see :func:`verify_document`."""

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

    Nothing is verified: use :func:`verify_document` before trusting any field.
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


# --- verifying ------------------------------------------------------------------------------


#: how far the verifier's clock may be off from the certificates' issuer's in live verification
DEFAULT_CLOCK_SKEW = timedelta(seconds=60)


def verify_document(
    data: bytes | AttestationDocument,
    *,
    roots: Sequence["x509.Certificate | bytes"],
    at: datetime | Literal["document"] | None = None,
    expected_pcrs: Mapping[int, bytes | str] | None = None,
    nonce: bytes | None = None,
    public_key: bytes | None = None,
    config_id: str | None = None,
    max_age: timedelta | None = None,
    clock_skew: timedelta | None = None,
) -> AttestationDocument:
    """Verify an attestation document and return it decoded.

    ``roots`` are the trusted root certificates (objects, or PEM/DER bytes); ``at`` is when the
    certificates must be valid (default now; ``"document"`` means the document's own timestamp).
    ``expected_pcrs`` maps a PCR index to its expected value (bytes or hex); ``nonce`` must
    equal the document's; ``public_key``/``config_id`` must be bound by the document (see
    :func:`binding_user_data`); ``max_age`` bounds the time between the document's timestamp
    and ``at``. ``clock_skew`` widens every certificate's validity by that much on both sides,
    for clocks that are not quite in step: :data:`DEFAULT_CLOCK_SKEW` (60 s) when checking at
    now, none at an explicit time unless given; at ``"document"`` the check is always exact.
    Raises :class:`AttestationError` naming the failed check in ``reason``.
    """
    from cryptography.exceptions import UnsupportedAlgorithm

    roots = _trusted(roots)
    expected = normalise_pcrs(expected_pcrs or {})
    document = data if isinstance(data, AttestationDocument) else parse_document(data)
    when = _resolve_at(at, document)
    skew = _resolve_skew(at, clock_skew)
    try:
        leaf = document.leaf_certificate
        _verify_signature(document, leaf)
        chain = _verify_chain(document, leaf, roots)
        _verify_validity(chain, when, at, skew)
    except (ValueError, UnsupportedAlgorithm) as exc:
        # cryptography parses keys and extensions lazily: a damaged one surfaces here
        raise AttestationError(f"a certificate of the document is damaged ({exc}); this is not "
                               f"a well-formed Nitro attestation document.",
                               reason="malformed") from None
    if max_age is not None:
        _verify_age(document, when, max_age)
    _verify_pcrs(document, expected)
    if nonce is not None and document.nonce != bytes(nonce):
        shown = "none" if document.nonce is None else document.nonce.hex()[:16]
        raise AttestationError(
            f"the document's nonce ({shown}) is not the expected one ({bytes(nonce).hex()[:16]}); "
            f"it answers another challenge: ask the enclave for a fresh document with this nonce.",
            reason="nonce")
    if public_key is not None or config_id is not None:
        _verify_binding(document, public_key, config_id)
    return document


def _trusted(roots: Any) -> list["x509.Certificate"]:
    from cryptography import x509

    if isinstance(roots, (x509.Certificate, bytes, bytearray)):
        roots = [roots]
    result = []
    for root in roots or ():
        if isinstance(root, (bytes, bytearray)):
            root = bytes(root)
            result.extend(load_roots(root) if b"-----BEGIN" in root
                          else [x509.load_der_x509_certificate(root)])
        elif isinstance(root, x509.Certificate):
            result.append(root)
        else:
            raise TypeError(f"a trusted root is a certificate or PEM/DER bytes, not "
                            f"{type(root).__name__}")
    if not result:
        raise ValueError("verify_document needs at least one trusted root certificate "
                         "(for AWS: AWS_NitroEnclaves_Root-G1.pem)")
    return result


def _resolve_at(at: datetime | str | None, document: AttestationDocument) -> datetime:
    if at is None:
        return _now()
    if at == "document":
        return document.timestamp
    if not isinstance(at, datetime):
        raise TypeError(f"at is a datetime, 'document' or None, not {at!r}")
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("at is a naive datetime; give it a time zone (e.g. tzinfo=timezone.utc)")
    return at.astimezone(timezone.utc)


def _resolve_skew(at: Any, clock_skew: timedelta | None) -> timedelta:
    if clock_skew is None:
        return DEFAULT_CLOCK_SKEW if at is None else timedelta(0)
    if not isinstance(clock_skew, timedelta) or clock_skew < timedelta(0):
        raise ValueError(f"clock_skew is a timedelta of zero or more, not {clock_skew!r}")
    if at == "document" and clock_skew:
        raise ValueError("at='document' checks at the document's own time, exactly: it takes no "
                         "clock_skew")
    return clock_skew


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _verify_signature(document: AttestationDocument, leaf: "x509.Certificate") -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise AttestationError(
            f"the leaf certificate {_name(leaf)} does not hold a P-384 key; ES384 documents are "
            f"signed with one.", reason="signature")
    import cbor2

    to_be_signed = cbor2.dumps(["Signature1", document.protected, b"", document.payload])
    r = int.from_bytes(document.signature[:48], "big")
    s = int.from_bytes(document.signature[48:], "big")
    try:
        key.verify(encode_dss_signature(r, s), to_be_signed, ec.ECDSA(hashes.SHA384()))
    except (InvalidSignature, ValueError):
        raise AttestationError(
            f"the document's ES384 signature does not verify with the key of {_name(leaf)}: the "
            f"document was altered or not signed by that module; do not trust it.",
            reason="signature") from None


def _verify_chain(document: AttestationDocument, leaf: "x509.Certificate",
                  roots: Sequence["x509.Certificate"]) -> list["x509.Certificate"]:
    from cryptography.hazmat.primitives.serialization import Encoding

    trusted = {root.public_bytes(Encoding.DER) for root in roots}
    bundle = [_load_der(der, f"cabundle[{i}]") for i, der in enumerate(document.cabundle)]
    if document.cabundle[0] not in trusted:
        names = "; ".join(_name(root) for root in roots)
        raise AttestationError(
            f"the document chains to {_name(bundle[0])} (sha256 "
            f"{hashlib.sha256(document.cabundle[0]).hexdigest()[:16]}…), which is not a trusted "
            f"root ({names}); pass the root of the module that issued it in roots=.",
            reason="chain")
    chain = bundle + [leaf]
    for position in range(1, len(chain)):
        _verify_issued(chain[position - 1], chain[position])
    for position, cert in enumerate(bundle):
        _verify_ca(cert, intermediates_below=len(bundle) - 1 - position)
    usage = _key_usage(leaf)
    if usage is not None and not usage.digital_signature:
        raise AttestationError(f"the leaf {_name(leaf)} is not allowed to sign documents "
                               f"(keyUsage lacks digitalSignature).", reason="chain")
    return chain


def _verify_issued(issuer: "x509.Certificate", cert: "x509.Certificate") -> None:
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec

    if cert.issuer != issuer.subject:
        raise AttestationError(
            f"{_name(cert)} names its issuer {cert.issuer.rfc4514_string()}, but the certificate "
            f"before it in the chain is {_name(issuer)}; the cabundle is not a chain.",
            reason="chain")
    key = issuer.public_key()
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or algorithm is None:
        raise AttestationError(
            f"{_name(cert)} is not signed with ECDSA by {_name(issuer)}; Nitro chains are ECDSA.",
            reason="chain")
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
    except InvalidSignature:
        raise AttestationError(
            f"the signature on {_name(cert)} does not verify with the key of {_name(issuer)}: "
            f"the chain was altered; do not trust this document.", reason="chain") from None


def _verify_ca(cert: "x509.Certificate", *, intermediates_below: int) -> None:
    from cryptography import x509

    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise AttestationError(f"{_name(cert)} issues certificates but is not a CA "
                               f"(basicConstraints CA=true is missing).", reason="chain")
    if constraints.path_length is not None and intermediates_below > constraints.path_length:
        raise AttestationError(f"{_name(cert)} allows {constraints.path_length} CA(s) below it; "
                               f"the chain has {intermediates_below}.", reason="chain")
    usage = _key_usage(cert)
    if usage is not None and not usage.key_cert_sign:
        raise AttestationError(f"{_name(cert)} is not allowed to sign certificates "
                               f"(keyUsage lacks keyCertSign).", reason="chain")


def _key_usage(cert: "x509.Certificate"):
    from cryptography import x509

    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _verify_validity(chain: Sequence["x509.Certificate"], when: datetime, at: Any,
                     skew: timedelta) -> None:
    checked = f"checked at {_iso(when)}" + (f", allowing {_duration(skew)} of clock skew"
                                            if skew else "")
    for cert in chain:
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        if start - skew <= when <= end + skew:
            continue
        if at == "document":
            hint = "the document's own time is outside it: it was not issued by this chain"
        else:
            hint = ("to check a document as of its issuing time, verify at the document's own "
                    "time (at=\"document\", CLI --at document)")
        if when > end:
            message = f"certificate {_name(cert)} expired at {_iso(end)} ({checked})"
        else:
            message = f"certificate {_name(cert)} is not valid before {_iso(start)} ({checked})"
        raise AttestationError(f"{message}; {hint}.", reason="validity")


def _verify_age(document: AttestationDocument, when: datetime, max_age: timedelta) -> None:
    age = when - document.timestamp
    if age > max_age:
        raise AttestationError(
            f"the document was issued at {_iso(document.timestamp)}, {_duration(age)} before "
            f"{_iso(when)}; the limit is {_duration(max_age)}: ask the enclave for a fresh one.",
            reason="stale")


def _verify_pcrs(document: AttestationDocument, expected: Mapping[int, bytes]) -> None:
    for index, value in sorted(expected.items()):
        actual = document.pcrs.get(index)
        if actual is None:
            raise AttestationError(f"the document carries no PCR{index}; expected "
                                   f"{value.hex()[:16]}….", reason="pcrs")
        if actual != value:
            raise AttestationError(
                f"PCR{index} is {actual.hex()[:16]}…, expected {value.hex()[:16]}…: the enclave "
                f"does not run the measured image (a debug-mode enclave reports zeros); "
                f"rebuild or whitelist the right measurements.", reason="pcrs")


def _verify_binding(document: AttestationDocument, public_key: bytes | None,
                    config_id: str | None) -> None:
    if public_key is not None and document.public_key != bytes(public_key):
        what = "no public_key" if document.public_key is None else "a different public_key"
        raise AttestationError(f"the document carries {what}, not the expected one: the key is "
                               f"not the attested enclave's; do not send it secrets.",
                               reason="binding")
    key = document.public_key
    if key is None:
        raise AttestationError("the document carries no public_key, so it binds no "
                               "configuration; the enclave must attest with its key.",
                               reason="binding")
    if config_id is None:
        config_id = document.config_id
        if config_id is None:
            raise AttestationError("the document's user_data carries no configuration binding "
                                   "(SHA256(0x01 | SHA256(public_key) | id) | id, id being the "
                                   "APPCONFIG_ID's 32 raw bytes).", reason="binding")
    expected = binding_user_data(key, config_id)
    if document.user_data is not None and len(document.user_data) != BINDING_SIZE:
        raise AttestationError(
            f"the document's user_data has {len(document.user_data)} bytes, not the "
            f"{BINDING_SIZE} of em-app's binding SHA256(0x01 | SHA256(public_key) | id) | id "
            f"with the APPCONFIG_ID's 32 raw bytes as id; the enclave bound its configuration "
            f"in another form.", reason="binding")
    if document.user_data != expected:
        raise AttestationError(
            f"the document's user_data does not bind its public_key to configuration "
            f"{config_id[:16]}…; the enclave attested another configuration or key.",
            reason="binding")


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


def _name(cert: "x509.Certificate") -> str:
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={names[0].value}" if names else cert.subject.rfc4514_string() or "(no subject)"


def _iso(moment: datetime) -> str:
    text = moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
