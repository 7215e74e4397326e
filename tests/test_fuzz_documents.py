"""Fuzzing what nitronb reads from others: attestation documents (real ones from ``tests/data``
with bytes changed, and well-signed ones with a field changed), dataset credentials JSON and key
files. Each reader raises only its own error (a NitronbError, or the enclave app's AppError),
never another exception. Settings come from the profile in ``tests/conftest.py``."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nitronb.enclave.attestation import load_roots, parse_document
from nitronb.enclave.verification import verify_document
from nitronb.errors import AttestationError, NitronbError

HERE = Path(__file__).resolve().parent
NITRO = HERE / "data" / "nitro"
MANIFEST = json.loads((NITRO / "MANIFEST.json").read_text(encoding="utf-8"))
DOCUMENTS = [(NITRO / name).read_bytes() for name in sorted(MANIFEST)]
AWS_ROOTS = load_roots(NITRO / "AWS_NitroEnclaves_Root-G1.pem")


def _scaled(fraction: float) -> settings:
    return settings(max_examples=max(20, int(settings.default.max_examples * fraction)))


# --- attestation documents ------------------------------------------------------------------


edits = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]),
                           st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=4)


def _edited(raw: bytes, operations) -> bytes:
    data = bytearray(raw)
    for op, position, byte in operations:
        if not data:
            break
        at = position % len(data)
        if op == "flip":
            data[at] ^= byte or 1
        elif op == "insert":
            data.insert(at, byte)
        elif op == "delete":
            del data[at]
        else:
            del data[at:]
    return bytes(data)


@_scaled(1)
@given(st.sampled_from(range(len(DOCUMENTS))), edits, st.booleans())
def test_real_documents_with_bytes_changed_raise_only_attestation_errors(which, operations,
                                                                         at_document):
    data = _edited(DOCUMENTS[which], operations)
    try:
        verify_document(data, roots=AWS_ROOTS, at="document" if at_document else None)
    except AttestationError:
        pass


def _key():
    return ec.generate_private_key(ec.SECP384R1())


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool):
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA384()))


ROOT_KEY, LEAF_KEY = _key(), _key()
ROOT = _cert("fuzz root", ROOT_KEY, "fuzz root", ROOT_KEY, ca=True)
LEAF = _cert("fuzz leaf", LEAF_KEY, "fuzz root", ROOT_KEY, ca=False)
ENCLAVE_KEY = LEAF_KEY.public_key().public_bytes(Encoding.DER,
                                                 PublicFormat.SubjectPublicKeyInfo)


def _payload() -> dict:
    return {"module_id": "i-fuzz-enc0000000000000001", "digest": "SHA384",
            "timestamp": int(datetime.now(timezone.utc).timestamp() * 1000),
            "pcrs": {index: bytes(48) for index in range(16)},
            "certificate": LEAF.public_bytes(Encoding.DER),
            "cabundle": [ROOT.public_bytes(Encoding.DER)],
            "public_key": ENCLAVE_KEY, "user_data": bytes(64), "nonce": b"n" * 32}


def _signed(payload: dict, protected: bytes = b"\xa1\x01\x38\x22") -> bytes:
    body = cbor2.dumps(payload)
    to_sign = cbor2.dumps(["Signature1", protected, b"", body])
    r, s = decode_dss_signature(LEAF_KEY.sign(to_sign, ec.ECDSA(hashes.SHA384())))
    return cbor2.dumps([protected, {}, body, r.to_bytes(48, "big") + s.to_bytes(48, "big")])


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=80) | st.sampled_from([bytes(48), bytes(32), bytes(64), b"", 0, -1,
                                                2**63, [], {}, LEAF.public_bytes(Encoding.DER)]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.integers(-2, 40) | st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
FIELDS = ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle", "public_key",
          "user_data", "nonce", "extra"]


@_scaled(1)
@given(st.sampled_from(FIELDS), cbor_values, st.booleans(),
       st.sampled_from(["none", "pcrs", "nonce", "binding"]))
@example("timestamp", 2**63, False, "none")
@example("pcrs", {0: bytes(48), -1: bytes(48)}, False, "pcrs")
def test_signed_documents_with_a_field_changed_raise_only_attestation_errors(field, value,
                                                                             remove, check):
    payload = _payload()
    if remove:
        payload.pop(field, None)
    else:
        payload[field] = value
    try:
        data = _signed(payload)
    except (cbor2.CBOREncodeError, TypeError, ValueError):
        return  # not encodable: no document to read
    options = {"none": {}, "pcrs": {"expected_pcrs": {0: bytes(48)}},
               "nonce": {"nonce": b"n" * 32},
               "binding": {"public_key": ENCLAVE_KEY, "config_id": "ab" * 32}}[check]
    try:
        document = verify_document(data, roots=[ROOT], **options)
    except AttestationError:
        return
    document.to_json()  # what verified can be shown
    assert document.config_id is None or len(document.config_id) == 64


@_scaled(0.5)
@given(cbor_values)
def test_any_cbor_raises_only_attestation_errors(value):
    try:
        data = cbor2.dumps(value)
    except (cbor2.CBOREncodeError, TypeError, ValueError):
        return
    try:
        parse_document(data)
    except AttestationError:
        pass


# --- dataset credentials --------------------------------------------------------------------


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12)
KEY = "0123456789ABCDEF" * 4


@st.composite
def credentials_documents(draw):
    """Credentials JSON: well-formed with one value changed, any JSON, or text that is not."""
    valid = {"query_string": "WC1BbXotU2lnbmF0dXJlPWFi", "encryption": {"key": KEY}}
    kind = draw(st.sampled_from(["changed", "any", "text"]))
    if kind == "changed":
        where = draw(st.sampled_from(["query_string", "encryption", "key", "extra"]))
        new = draw(json_values | st.text(max_size=80))
        if where == "key":
            valid["encryption"] = {"key": new}
        else:
            valid[where] = new
        return json.dumps(valid)
    if kind == "any":
        return json.dumps(draw(json_values))
    return draw(st.text(max_size=80) | st.sampled_from(['{"query_string": ', "[", "NaN", "\ufeff{}"]))


@_scaled(1)
@given(credentials_documents())
@example("[]")
@example("not json")
@example('{"query_string": "", "encryption": "key"}')
def test_credentials_json_raises_only_nitronb_errors(text):
    from nitronb.s3.presign import url_from_credentials

    for given_as in (text, text.encode("utf-8")):
        try:
            url = url_from_credentials("http://127.0.0.1:9/nitronb/x.enc", given_as)
        except NitronbError:
            continue
        assert url.startswith("http://127.0.0.1:9/nitronb/x.enc")


@_scaled(1)
@given(credentials_documents(), json_values)
@example('{"query_string": "", "encryption": "key"}', None)
@example('{"query_string": "", "encryption": {"key": 7}}', None)
@example('{"query_string": "", "encryption": {"key": "%s"}}' % KEY, ["a list"])
@example('{"query_string": 5, "encryption": {"key": "%s"}}' % KEY, {"location": "http://["})
def test_dataset_definitions_raise_only_nitronb_errors(tmp_path_factory, credentials, other):
    from nitronb.datasets import Dataset

    folder = tmp_path_factory.mktemp("definitions")
    definition = {"name": "conditions", "location": "http://127.0.0.1:9/nitronb/x.enc",
                  "credentials": json.loads(credentials) if credentials[:1] in "{[" and
                  _is_json(credentials) else credentials}
    for doc in (definition, {**definition, "labels": other}, other, {**definition, **(
            other if isinstance(other, dict) else {"description": other})}):
        path = folder / "dataset.json"
        path.write_text(json.dumps(doc), encoding="utf-8")
        try:
            Dataset.load(path)
        except NitronbError:
            pass


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def enclave_utils():
    sys.path.insert(0, str(HERE.parent / "enclave_image"))
    try:
        import utils
        yield utils
    finally:
        sys.path.remove(str(HERE.parent / "enclave_image"))


@_scaled(0.5)
@given(credentials_documents(), st.binary(max_size=40) | st.just(b"http://127.0.0.1:9/x"))
@example('{"query_string": "", "encryption": {"key": 7}}', b"http://127.0.0.1:9/x")
@example('{"query_string": "\\u0080", "encryption": {"key": "%s"}}' % KEY, b"http://h/x")
def test_the_enclave_apps_reader_raises_only_app_errors(enclave_utils, tmp_path_factory,
                                                        credentials, location):
    root = tmp_path_factory.mktemp("app-config")
    folder = root / "input" / "node" / "dataset"
    folder.mkdir(parents=True)
    (folder / "credentials.bin").write_text(credentials, encoding="utf-8")
    (folder / "location.txt").write_bytes(location)
    try:
        enclave_utils.read_dataset("input", "node", str(root))
    except enclave_utils.AppError:
        pass


# --- key files ------------------------------------------------------------------------------


@_scaled(1)
@given(st.binary(max_size=140) | st.text(alphabet="0123456789abcdefABCDEF \t\r\n\x00",
                                         max_size=140).map(str.encode))
@example(b"\xff" * 64)
@example(("0" * 64 + "\u0660").encode("utf-8"))
def test_key_files_raise_only_key_errors(tmp_path_factory, content):
    from nitronb.keys import key_bytes, parse_key, read_key_file

    path = tmp_path_factory.mktemp("keys") / "key.hex"
    path.write_bytes(content)
    for read in (lambda: read_key_file(path), lambda: parse_key(content.decode("latin-1")),
                 lambda: key_bytes(content.decode("latin-1")), lambda: key_bytes(content)):
        try:
            key = read()
        except NitronbError:
            continue
        assert len(key) in (32, 64)
