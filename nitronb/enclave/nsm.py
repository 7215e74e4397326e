"""A local Nitro Secure Module: issues attestation documents in the AWS format from a local root.

The module keeps a root CA (``root.pem``, ``root.key``) and an intermediate CA
(``intermediate.pem``, ``intermediate.key``), both P-384, in a folder of the workspace
(``<workspace>/nsm``), created on first use and reused afterwards; keys are mode 0600.
Each document is signed by a fresh leaf certificate that lives three hours, as AWS's do; its
``cabundle`` is ``[root, intermediate]``. Documents verify with
:func:`nitronb.enclave.verification.verify_document` given ``roots=[nsm.root_certificate]``, and
never against the AWS root.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

from nitronb._files import write_atomic
from nitronb.errors import LocalStackError
from nitronb.workspace import private_dir, workspace_dir

if TYPE_CHECKING:  # pragma: no cover
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["LocalNSM", "PCR_COUNT", "PCR_SIZE", "LEAF_LIFETIME"]

PCR_COUNT = 16  #: PCRs 0..15 are in every document, unused ones zero
PCR_SIZE = 48  #: SHA-384
LEAF_LIFETIME = timedelta(hours=3)
ROOT_LIFETIME = timedelta(days=30 * 365)
INTERMEDIATE_LIFETIME = timedelta(days=365)
_RENEW_BEFORE = timedelta(days=7)  # renew the intermediate when less than this is left
_MAX_FIELD = 1024  # bytes, for public_key, user_data and nonce (what the module accepts)

_ROOT_KEY, _ROOT_CERT = "root.key", "root.pem"
_INTER_KEY, _INTER_CERT = "intermediate.key", "intermediate.pem"
_ORGANISATION = "nitronb"
_UNIT = "local NSM"


class LocalNSM:
    """The Nitro Secure Module of enclaves launched locally; its CA lives in ``folder``."""

    def __init__(self, folder: str | os.PathLike[str], *, module_id: str | None = None) -> None:
        self.folder = Path(folder).expanduser()
        #: the module id put in documents when ``attest`` is not given one
        self.module_id = module_id or f"i-local-enc{secrets.token_hex(8)}"
        self._ca: tuple | None = None

    @classmethod
    def in_workspace(cls, workspace: str | os.PathLike[str] | None = None, **kwargs) -> "LocalNSM":
        """The module whose CA lives in ``<workspace>/nsm`` (see :func:`workspace_dir`)."""
        return cls(workspace_dir(workspace) / "nsm", **kwargs)

    # --- the certificate authority --------------------------------------------------------

    @property
    def root_certificate(self) -> "x509.Certificate":
        """The local root CA certificate: the one trusted root of this module's documents."""
        return self._authority()[0]

    @property
    def root_pem(self) -> bytes:
        """The local root CA certificate as PEM bytes."""
        from cryptography.hazmat.primitives.serialization import Encoding

        return self.root_certificate.public_bytes(Encoding.PEM)

    @property
    def root_path(self) -> Path:
        """The PEM file of the local root CA (created if needed)."""
        self._authority()
        return self.folder / _ROOT_CERT

    def _authority(self):
        """(root cert, intermediate cert, intermediate key), created or loaded once."""
        if self._ca is None or self._ca[1].not_valid_after_utc - _now() < _RENEW_BEFORE:
            private_dir(self.folder)
            with _locked(self.folder / ".lock"):
                self._ca = self._load_or_create()
        return self._ca

    def _load_or_create(self):
        root_pair = self._read_pair(_ROOT_KEY, _ROOT_CERT)
        if root_pair is None:
            root_key = _new_key()
            root_cert = _ca_certificate(root_key, None, None, "local.nitro-enclaves",
                                        ROOT_LIFETIME, path_length=None)
            self._write_pair(_ROOT_KEY, _ROOT_CERT, root_key, root_cert)
            inter_pair = None
        else:
            root_key, root_cert = root_pair
            inter_pair = self._read_pair(_INTER_KEY, _INTER_CERT)
        if inter_pair is not None:
            inter_key, inter_cert = inter_pair
            if (inter_cert.issuer != root_cert.subject
                    or inter_cert.not_valid_after_utc - _now() < _RENEW_BEFORE):
                inter_pair = None
        if inter_pair is None:
            inter_key = _new_key()
            name = f"{secrets.token_hex(8)}.local.nitro-enclaves"
            inter_cert = _ca_certificate(inter_key, root_key, root_cert, name,
                                         INTERMEDIATE_LIFETIME, path_length=0)
            self._write_pair(_INTER_KEY, _INTER_CERT, inter_key, inter_cert)
        return root_cert, inter_cert, inter_key

    def _read_pair(self, key_name: str, cert_name: str):
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key_path, cert_path = self.folder / key_name, self.folder / cert_name
        if not key_path.exists() and not cert_path.exists():
            return None
        fix = (f"Remove {self.folder} to create a new local CA (documents issued before will "
               f"no longer verify).")
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise LocalStackError(f"the local NSM's {cert_name} / {key_name} in {self.folder} "
                                  f"cannot be read ({exc}).", hint=fix) from None
        if (not isinstance(key, ec.EllipticCurvePrivateKey)
                or key.public_key().public_numbers() != cert.public_key().public_numbers()):
            raise LocalStackError(f"the local NSM's {key_name} does not match {cert_name} in "
                                  f"{self.folder}.", hint=fix)
        return key, cert

    def _write_pair(self, key_name: str, cert_name: str, key, cert) -> None:
        from cryptography.hazmat.primitives import serialization

        pem_key = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        write_atomic(self.folder / key_name, pem_key, mode=0o600)
        write_atomic(self.folder / cert_name,
                      cert.public_bytes(serialization.Encoding.PEM), mode=0o644)

    # --- documents --------------------------------------------------------------------------

    def attest(
        self,
        *,
        pcrs: Mapping[int, bytes | str],
        public_key: bytes | None = None,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        module_id: str | None = None,
    ) -> bytes:
        """A signed attestation document (untagged COSE_Sign1, as the AWS module returns).

        ``pcrs`` maps indexes 0..31 to 48-byte values (bytes or hex); PCRs 0..15 not given are
        zero. ``public_key``, ``user_data`` and ``nonce`` are carried as given (null if None).
        """
        import cbor2
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
        from cryptography.hazmat.primitives.serialization import Encoding

        registers = _pcr_map(pcrs)
        for name, value in (("public_key", public_key), ("user_data", user_data),
                            ("nonce", nonce)):
            if value is not None and (not isinstance(value, (bytes, bytearray))
                                      or len(value) > _MAX_FIELD):
                raise ValueError(f"{name} must be bytes, at most {_MAX_FIELD} of them")
        module = module_id or self.module_id
        root_cert, inter_cert, inter_key = self._authority()
        now_ms = time.time_ns() // 1_000_000
        leaf_key = _new_key()
        leaf_cert = _leaf_certificate(leaf_key, inter_key, inter_cert, module, now_ms)
        payload = cbor2.dumps({
            "module_id": module,
            "digest": "SHA384",
            "timestamp": now_ms,
            "pcrs": registers,
            "certificate": leaf_cert.public_bytes(Encoding.DER),
            "cabundle": [root_cert.public_bytes(Encoding.DER),
                         inter_cert.public_bytes(Encoding.DER)],
            "public_key": None if public_key is None else bytes(public_key),
            "user_data": None if user_data is None else bytes(user_data),
            "nonce": None if nonce is None else bytes(nonce),
        })
        protected = cbor2.dumps({1: -35})
        to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
        r, s = decode_dss_signature(leaf_key.sign(to_be_signed, ec.ECDSA(hashes.SHA384())))
        signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
        return cbor2.dumps([protected, {}, payload, signature])


# --- certificates ---------------------------------------------------------------------------


def _new_key() -> "ec.EllipticCurvePrivateKey":
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP384R1())


def _name(common_name: str) -> "x509.Name":
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANISATION),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, _UNIT),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _ca_certificate(key, issuer_key, issuer_cert, common_name: str, lifetime: timedelta, *,
                    path_length: int | None) -> "x509.Certificate":
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    start = _now().replace(microsecond=0) - timedelta(minutes=5)
    subject = _name(common_name)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(subject if issuer_cert is None else issuer_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start)
               .not_valid_after(start + lifetime)
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_length),
                              critical=True)
               .add_extension(_usage(digital_signature=True, key_cert_sign=True, crl_sign=True),
                              critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    signer = key if issuer_key is None else issuer_key
    if issuer_key is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    return builder.sign(signer, hashes.SHA384())


def _leaf_certificate(key, issuer_key, issuer_cert, module_id: str,
                      now_ms: int) -> "x509.Certificate":
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    start = datetime.fromtimestamp(now_ms // 1000, tz=timezone.utc) - timedelta(seconds=3)
    end = min(start + LEAF_LIFETIME, issuer_cert.not_valid_after_utc)
    return (x509.CertificateBuilder()
            .subject_name(_name(f"{module_id}.local"))
            .issuer_name(issuer_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(digital_signature=True, content_commitment=True),
                           critical=False)
            .sign(issuer_key, hashes.SHA384()))


def _usage(*, digital_signature=False, content_commitment=False, key_cert_sign=False,
           crl_sign=False):
    from cryptography import x509

    return x509.KeyUsage(digital_signature=digital_signature,
                         content_commitment=content_commitment, key_encipherment=False,
                         data_encipherment=False, key_agreement=False,
                         key_cert_sign=key_cert_sign, crl_sign=crl_sign, encipher_only=False,
                         decipher_only=False)


def _pcr_map(pcrs: Mapping[int, bytes | str]) -> dict[int, bytes]:
    from nitronb.enclave.attestation import normalise_pcrs

    registers = {index: bytes(PCR_SIZE) for index in range(PCR_COUNT)}
    for index, value in normalise_pcrs(pcrs).items():
        if len(value) != PCR_SIZE:
            raise ValueError(f"PCR{index} must be {PCR_SIZE} bytes (a SHA-384 value)")
        registers[index] = value
    return dict(sorted(registers.items()))


# --- files ----------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (POSIX), so two processes create one CA, not two."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: creation is not serialised
        yield
        return
    with open(path, "a+b") as handle:
        os.chmod(path, 0o600)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
