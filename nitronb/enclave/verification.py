"""Verifying AWS Nitro attestation documents against trusted roots.

:func:`verify_document` decodes a document (:func:`nitronb.enclave.attestation.parse_document`;
the format is AWS Nitro Enclaves' attestation document, DESIGN §3.7) and checks, in this order:
the ES384 signature of the COSE_Sign1 with the leaf certificate's key, the certificate chain from
the ``cabundle`` up to a trusted root (issuer names, ECDSA signatures, basicConstraints and
keyUsage), every certificate's validity at a chosen time (with a clock skew when checking at now),
and, when asked, the document's age, its PCRs, its nonce and the binding of the enclave's key
and configuration in ``user_data`` (:func:`nitronb.enclave.attestation.binding_user_data`).

Every failure raises :class:`~nitronb.errors.AttestationError` whose ``reason`` names the check
(one of :data:`nitronb.enclave.attestation.REASONS`). This module imports
:mod:`nitronb.enclave.attestation`, never the reverse.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

from nitronb.enclave.attestation import (
    BINDING_SIZE, AttestationDocument, _iso, _load_der, binding_user_data, load_roots,
    normalise_pcrs, parse_document,
)
from nitronb.errors import AttestationError

if TYPE_CHECKING:  # pragma: no cover
    from cryptography import x509

__all__ = ["verify_document", "DEFAULT_CLOCK_SKEW"]

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
    :func:`~nitronb.enclave.attestation.binding_user_data`); ``max_age`` bounds the time
    between the document's timestamp and ``at``. ``clock_skew`` widens every certificate's
    validity by that much on both sides, for clocks that are not quite in step:
    :data:`DEFAULT_CLOCK_SKEW` (60 s) when checking at now, none at an explicit time unless
    given; at ``"document"`` the check is always exact.
    Raises :class:`AttestationError` naming the failed check in ``reason``; TypeError or
    ValueError for arguments of the wrong kind (no root, a naive ``at``, a PCR that is not hex).
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


def _name(cert: "x509.Certificate") -> str:
    from cryptography.x509.oid import NameOID

    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={names[0].value}" if names else cert.subject.rfc4514_string() or "(no subject)"


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
