"""Decoding and verifying AWS Nitro attestation documents, with the real documents as fixtures."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from nitronb.enclave.attestation import (
    AWS_NITRO_ROOT_G1_SHA256, REASONS, AttestationDocument, aws_nitro_root, binding_user_data,
    config_id_from_user_data, load_roots, parse_document,
)
from nitronb.enclave.verification import verify_document
from nitronb.cli import main
from nitronb.errors import AttestationError

NITRO = Path(__file__).resolve().parent / "data" / "nitro"
ROOT_PEM = NITRO / "AWS_NitroEnclaves_Root-G1.pem"
SYNTHETIC = "synthetic_selfsigned_not_from_nitro.cbor"
MANIFEST = json.loads((NITRO / "MANIFEST.json").read_text(encoding="utf-8"))
REAL = sorted(name for name, entry in MANIFEST.items() if entry["expected"].startswith("valid"))
BLOCKY = "blocky_nitro_attestation.cbor"


@pytest.fixture(scope="module")
def aws_roots():
    return load_roots(ROOT_PEM)


def _raw(name: str) -> bytes:
    return (NITRO / name).read_bytes()


def _reason(excinfo) -> str:
    assert excinfo.value.reason in REASONS
    return excinfo.value.reason


# --- the real documents -----------------------------------------------------------------------


def test_the_manifest_lists_real_documents():
    assert len(REAL) >= 7
    assert SYNTHETIC in MANIFEST and SYNTHETIC not in REAL


@pytest.mark.parametrize("name", REAL)
def test_real_document_verifies_at_its_own_time(name, aws_roots):
    entry = MANIFEST[name]
    raw = _raw(name)
    assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
    document = verify_document(raw, roots=aws_roots, at="document")
    assert document.module_id == entry["module_id"]
    assert document.timestamp_ms == entry["timestamp_ms"]
    assert document.timestamp == datetime.fromisoformat(entry["timestamp_utc"])
    for index in (0, 1, 2):
        assert document.pcrs[index].hex() == entry[f"pcr{index}"]
        assert document.pcr_hex(index) == entry[f"pcr{index}"]
    assert document.debug_mode is entry["debug_mode"]
    assert (document.public_key is not None) is entry["has_public_key"]
    assert (document.user_data is not None) is entry["has_user_data"]
    assert (document.nonce is not None) is entry["has_nonce"]
    assert document.digest == "SHA384"
    assert sorted(document.pcrs) == list(range(16))


@pytest.mark.parametrize("name", REAL)
def test_real_document_is_rejected_today(name, aws_roots):
    with pytest.raises(AttestationError) as excinfo:
        verify_document(_raw(name), roots=aws_roots)
    assert _reason(excinfo) == "validity"
    assert "expired at" in str(excinfo.value)
    assert 'at="document"' in str(excinfo.value)


@pytest.mark.parametrize("name", REAL)
def test_real_document_is_rejected_under_another_root(name, other_root):
    with pytest.raises(AttestationError) as excinfo:
        verify_document(_raw(name), roots=[other_root], at="document")
    assert _reason(excinfo) == "chain"
    assert "CN=aws.nitro-enclaves" in str(excinfo.value)


def test_the_synthetic_document_is_rejected(aws_roots):
    with pytest.raises(AttestationError) as excinfo:
        verify_document(_raw(SYNTHETIC), roots=aws_roots, at="document")
    assert _reason(excinfo) == "malformed"


def test_parse_exposes_the_raw_cose_parts():
    raw = _raw(BLOCKY)
    document = parse_document(raw)
    assert cbor2.loads(raw) == [document.protected, {}, document.payload, document.signature]
    assert document.protected == bytes.fromhex("a1013822")
    assert len(document.signature) == 96
    assert document.cabundle[0] == load_roots(ROOT_PEM)[0].public_bytes(Encoding.DER)
    assert hashlib.sha256(document.cabundle[0]).hexdigest() == AWS_NITRO_ROOT_G1_SHA256
    assert document.leaf_certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0] \
        .value.startswith(document.module_id)


def test_to_json_is_json_with_hex_and_iso_time():
    document = parse_document(_raw(BLOCKY))
    data = json.loads(json.dumps(document.to_json()))
    assert data["module_id"] == MANIFEST[BLOCKY]["module_id"]
    assert data["pcrs"]["0"] == MANIFEST[BLOCKY]["pcr0"]
    assert datetime.fromisoformat(data["timestamp"]) == datetime.fromisoformat(
        MANIFEST[BLOCKY]["timestamp_utc"])
    assert bytes.fromhex(data["certificate"]) == document.certificate
    assert bytes.fromhex(data["nonce"]) == document.nonce
    assert data["debug_mode"] is False


# --- tampering --------------------------------------------------------------------------------


def _positions(raw: bytes) -> dict[str, list[int]]:
    """Offsets of bytes in the protected header, the payload and the signature of ``raw``."""
    protected, _, payload, signature = cbor2.loads(raw)
    start_protected = raw.index(protected)
    start_payload = raw.index(payload)
    start_signature = len(raw) - len(signature)
    return {
        "protected": [start_protected + i for i in range(len(protected))],
        "payload": [start_payload + i for i in (0, 5, 40, 200, len(payload) // 2,
                                                 len(payload) - 1)],
        "signature": [start_signature + i for i in (0, 1, 47, 48, 70, 95)],
        "framing": [0, start_payload - 1],
    }


@pytest.mark.parametrize("part", ["protected", "payload", "signature", "framing"])
def test_a_flipped_byte_is_rejected(part, aws_roots):
    raw = _raw(BLOCKY)
    for position in _positions(raw)[part]:
        for mask in (0x01, 0x80):
            damaged = bytearray(raw)
            damaged[position] ^= mask
            with pytest.raises(AttestationError) as excinfo:
                verify_document(bytes(damaged), roots=aws_roots, at="document")
            _reason(excinfo)


def test_any_flipped_byte_raises_only_attestation_errors(aws_roots):
    raw = _raw("hf_nitrite_d2d8010.cbor")
    seen = set()
    for position in range(0, len(raw), 23):
        damaged = bytearray(raw)
        damaged[position] ^= 0x10
        with pytest.raises(AttestationError) as excinfo:
            verify_document(bytes(damaged), roots=aws_roots, at="document")
        seen.add(_reason(excinfo))
    assert {"malformed", "signature"} <= seen


@pytest.mark.parametrize("position, mask", [(88, 0x01), (89, 0xFF), (944, 0x01)])
def test_damage_that_once_escaped_as_other_errors(position, mask, aws_roots):
    # a timestamp beyond year 9999, and a certificate with an invalid X.509 version
    damaged = bytearray(_raw("evervault_valid-attestation-doc-bytes.cbor"))
    damaged[position] ^= mask
    with pytest.raises(AttestationError) as excinfo:
        verify_document(bytes(damaged), roots=aws_roots, at="document")
    assert _reason(excinfo) == "malformed"


def test_truncated_and_extended_documents_are_malformed(aws_roots):
    raw = _raw(BLOCKY)
    for size in (0, 1, 5, 100, len(raw) - 1):
        with pytest.raises(AttestationError) as excinfo:
            verify_document(raw[:size], roots=aws_roots, at="document")
        assert _reason(excinfo) == "malformed"
    with pytest.raises(AttestationError, match="trailing") as excinfo:
        verify_document(raw + b"\x00", roots=aws_roots, at="document")


def test_a_tag_18_wrapped_document_verifies_and_other_tags_do_not(aws_roots):
    items = cbor2.loads(_raw(BLOCKY))
    tagged = cbor2.dumps(cbor2.CBORTag(18, items))
    assert verify_document(tagged, roots=aws_roots, at="document").module_id
    with pytest.raises(AttestationError) as excinfo:
        verify_document(cbor2.dumps(cbor2.CBORTag(98, items)), roots=aws_roots, at="document")
    assert _reason(excinfo) == "malformed"


@pytest.mark.parametrize("garbage", [b"", b"\xff", b"\x84\x40\xa0\x40\x40",
                                     cbor2.dumps({"a": 1}), cbor2.dumps([1, 2, 3, 4]),
                                     bytes(range(256))])
def test_garbage_is_malformed(garbage, other_root):
    with pytest.raises(AttestationError) as excinfo:
        verify_document(garbage, roots=[other_root])
    assert _reason(excinfo) == "malformed"


# --- policy: time, PCRs, nonce, age, binding ----------------------------------------------------


def test_explicit_times_inside_and_outside_the_leaf_validity(aws_roots):
    raw = _raw(BLOCKY)
    issued = parse_document(raw).timestamp
    verify_document(raw, roots=aws_roots, at=issued + timedelta(hours=1))
    with pytest.raises(AttestationError) as excinfo:
        verify_document(raw, roots=aws_roots, at=issued + timedelta(hours=4))
    assert _reason(excinfo) == "validity"
    assert "CN=i-0a22e5c5f24d22174-enc0191cceb4289903f" in str(excinfo.value)
    with pytest.raises(AttestationError, match="not valid before") as excinfo:
        verify_document(raw, roots=aws_roots, at=issued - timedelta(minutes=1))
    assert _reason(excinfo) == "validity"


def test_a_naive_time_or_no_root_is_a_programming_error(aws_roots):
    with pytest.raises(ValueError, match="time zone"):
        verify_document(_raw(BLOCKY), roots=aws_roots, at=datetime(2024, 9, 7, 15))
    with pytest.raises(ValueError, match="root"):
        verify_document(_raw(BLOCKY), roots=[], at="document")


def test_expected_pcrs_as_bytes_or_hex(aws_roots):
    entry = MANIFEST[BLOCKY]
    expected = {0: bytes.fromhex(entry["pcr0"]), 1: entry["pcr1"], 2: entry["pcr2"].upper()}
    document = verify_document(_raw(BLOCKY), roots=aws_roots, at="document",
                               expected_pcrs=expected)
    assert [document.pcr_hex(i) for i in range(3)] == [entry[f"pcr{i}"] for i in range(3)]
    # each form is compared, not only accepted: one changed byte in any of them is refused
    for index in range(3):
        value = expected[index]
        flipped = (bytes([value[0] ^ 1]) + value[1:] if isinstance(value, bytes)
                   else format(int(value[:2], 16) ^ 1, "02x") + value[2:])
        with pytest.raises(AttestationError, match=f"PCR{index} is") as excinfo:
            verify_document(_raw(BLOCKY), roots=aws_roots, at="document",
                            expected_pcrs={**expected, index: flipped})
        assert _reason(excinfo) == "pcrs"


def test_a_pcr_mismatch_names_the_index_and_both_values(aws_roots):
    entry = MANIFEST[BLOCKY]
    wrong = "ab" * 48
    with pytest.raises(AttestationError) as excinfo:
        verify_document(_raw(BLOCKY), roots=aws_roots, at="document",
                        expected_pcrs={0: entry["pcr0"], 2: wrong})
    assert _reason(excinfo) == "pcrs"
    message = str(excinfo.value)
    assert "PCR2" in message and entry["pcr2"][:16] in message and wrong[:16] in message
    with pytest.raises(AttestationError, match="no PCR20") as excinfo:
        verify_document(_raw(BLOCKY), roots=aws_roots, at="document",
                        expected_pcrs={20: bytes(48)})
    assert _reason(excinfo) == "pcrs"


def test_nonce(aws_roots):
    raw = _raw(BLOCKY)
    document = parse_document(raw)
    verify_document(raw, roots=aws_roots, at="document", nonce=document.nonce)
    with pytest.raises(AttestationError) as excinfo:
        verify_document(raw, roots=aws_roots, at="document", nonce=b"another challenge")
    assert _reason(excinfo) == "nonce"
    without = _raw("evervault_debug-mode-attestation-doc-bytes.cbor")
    with pytest.raises(AttestationError, match="none") as excinfo:
        verify_document(without, roots=aws_roots, at="document", nonce=b"x")
    assert _reason(excinfo) == "nonce"


def test_max_age(aws_roots):
    raw = _raw(BLOCKY)
    issued = parse_document(raw).timestamp
    later = issued + timedelta(hours=1)
    verify_document(raw, roots=aws_roots, at=later, max_age=timedelta(hours=2))
    verify_document(raw, roots=aws_roots, at="document", max_age=timedelta(0))
    with pytest.raises(AttestationError, match="60 min") as excinfo:
        verify_document(raw, roots=aws_roots, at=later, max_age=timedelta(minutes=10))
    assert _reason(excinfo) == "stale"


def test_real_documents_bind_no_configuration(aws_roots):
    raw = _raw(BLOCKY)
    document = parse_document(raw)
    assert document.config_id is None
    with pytest.raises(AttestationError) as excinfo:
        verify_document(raw, roots=aws_roots, at="document", config_id="c0ffee")
    assert _reason(excinfo) == "binding"
    with pytest.raises(AttestationError) as excinfo:
        verify_document(raw, roots=aws_roots, at="document", public_key=b"another key")
    assert _reason(excinfo) == "binding"
    no_key = _raw("evervault_nondebug_cert_2023-01-18.cbor")
    with pytest.raises(AttestationError, match="no public_key") as excinfo:
        verify_document(no_key, roots=aws_roots, at="document", config_id="c0ffee")
    assert _reason(excinfo) == "binding"


def test_binding_user_data_is_em_apps_with_the_raw_config_id():
    public_key, config_id = b"enclave public key", "c0ffee" * 10 + "abcd"
    raw = bytes.fromhex(config_id)
    inner = hashlib.sha256(public_key).digest()
    expected = hashlib.sha256(b"\x01" + inner + raw).digest() + raw
    assert binding_user_data(public_key, config_id) == expected
    assert len(expected) == 64
    assert binding_user_data(public_key, config_id)[:32].hex() == (
        "6e3a05c13c5e454f7cda632551aafb3802dfc7f4c360e09febc550551436c0c8")
    assert config_id_from_user_data(expected) == config_id
    assert binding_user_data(b"another key", config_id) != expected
    assert binding_user_data(public_key, config_id.upper()) == expected


@pytest.mark.parametrize("config_id", ["c0ffee", "zz" * 32, "ab" * 33, ""])
def test_a_config_id_that_is_no_sha256_binds_nothing(config_id):
    with pytest.raises(AttestationError, match="not an APPCONFIG_ID") as excinfo:
        binding_user_data(b"key", config_id)
    assert excinfo.value.reason == "binding"


def test_config_id_from_user_data_rejects_what_is_no_binding():
    for size in (32, 63, 65, 96):
        with pytest.raises(AttestationError, match=f"user_data has {size} bytes") as excinfo:
            config_id_from_user_data(bytes(size))
        assert excinfo.value.reason == "binding"
    assert config_id_from_user_data(bytes(32) + bytes(range(32))) == bytes(range(32)).hex()


# --- hand-made documents: structure and chain rules ---------------------------------------------


def _key():
    return ec.generate_private_key(ec.SECP384R1())


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool | None, path_length=None,
          start=None, days=1, hash_algorithm=None):
    start = start or datetime.now(timezone.utc) - timedelta(minutes=1)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + timedelta(days=days)))
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length),
                                        critical=True)
    return builder.sign(issuer_key, hash_algorithm or hashes.SHA384())


@pytest.fixture(scope="module")
def other_root():
    key = _key()
    return _cert("another root", key, "another root", key, ca=True)


def _document(payload: dict, leaf_key, *, protected: bytes = b"\xa1\x01\x38\x22") -> bytes:
    body = cbor2.dumps(payload)
    to_sign = cbor2.dumps(["Signature1", protected, b"", body])
    r, s = decode_dss_signature(leaf_key.sign(to_sign, ec.ECDSA(hashes.SHA384())))
    return cbor2.dumps([protected, {}, body, r.to_bytes(48, "big") + s.to_bytes(48, "big")])


@pytest.fixture(scope="module")
def pki():
    """A root, an intermediate and a leaf, all fine: tests break one thing at a time."""
    root_key, inter_key, leaf_key = _key(), _key(), _key()
    root = _cert("test root", root_key, "test root", root_key, ca=True)
    inter = _cert("test intermediate", inter_key, "test root", root_key, ca=True, path_length=0)
    leaf = _cert("test leaf", leaf_key, "test intermediate", inter_key, ca=False)
    return {"root": root, "root_key": root_key, "inter": inter, "inter_key": inter_key,
            "leaf": leaf, "leaf_key": leaf_key}


def _payload(pki, **changes) -> dict:
    payload = {
        "module_id": "i-test-enc0000000000000001", "digest": "SHA384",
        "timestamp": int(datetime.now(timezone.utc).timestamp() * 1000),
        "pcrs": {index: bytes(48) for index in range(16)},
        "certificate": pki["leaf"].public_bytes(Encoding.DER),
        "cabundle": [pki["root"].public_bytes(Encoding.DER),
                     pki["inter"].public_bytes(Encoding.DER)],
        "public_key": None, "user_data": None, "nonce": None,
    }
    payload.update(changes)
    return payload


def test_a_well_made_document_verifies(pki):
    document = verify_document(_document(_payload(pki), pki["leaf_key"]), roots=[pki["root"]])
    assert isinstance(document, AttestationDocument)
    assert document.public_key is None and document.config_id is None


@pytest.mark.parametrize("change, words", [
    ({"digest": "SHA256"}, "digest"),
    ({"timestamp": 1.5}, "timestamp"),
    ({"timestamp": True}, "timestamp"),
    ({"timestamp": 2**53}, "timestamp"),
    ({"module_id": ""}, "module_id"),
    ({"pcrs": {0: bytes(47)}}, "PCR0"),
    ({"pcrs": {32: bytes(48)}}, "PCR index"),
    ({"pcrs": {}}, "pcrs"),
    ({"cabundle": []}, "cabundle"),
    ({"cabundle": None}, "cabundle"),
    ({"cabundle": ["not bytes"]}, "cabundle[0]"),
    ({"certificate": b"not DER"}, "certificate"),
    ({"nonce": "text"}, "nonce"),
    ({"extra": b""}, "unknown"),
])
def test_strict_structure(pki, change, words):
    data = _document(_payload(pki, **change), pki["leaf_key"])
    with pytest.raises(AttestationError, match=re.escape(words)) as excinfo:
        verify_document(data, roots=[pki["root"]])
    assert _reason(excinfo) == "malformed"


def test_the_protected_header_must_say_es384(pki):
    data = _document(_payload(pki), pki["leaf_key"], protected=cbor2.dumps({1: -7}))
    with pytest.raises(AttestationError, match="ES384") as excinfo:
        verify_document(data, roots=[pki["root"]])
    assert _reason(excinfo) == "malformed"


def test_a_document_signed_by_another_key_fails_the_signature(pki):
    data = _document(_payload(pki), _key())
    with pytest.raises(AttestationError, match="CN=test leaf") as excinfo:
        verify_document(data, roots=[pki["root"]])
    assert _reason(excinfo) == "signature"


def test_a_leaf_without_a_p384_key_fails_the_signature(pki):
    p256 = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert("p256 leaf", p256, "test intermediate", pki["inter_key"], ca=False)
    data = _document(_payload(pki, certificate=leaf.public_bytes(Encoding.DER)), _key())
    with pytest.raises(AttestationError, match="P-384") as excinfo:
        verify_document(data, roots=[pki["root"]])
    assert _reason(excinfo) == "signature"


def test_a_leaf_not_issued_by_the_bundle_fails_the_chain(pki):
    stranger = _key()
    leaf = _cert("test leaf", pki["leaf_key"], "test intermediate", stranger, ca=False)
    data = _document(_payload(pki, certificate=leaf.public_bytes(Encoding.DER)),
                     pki["leaf_key"])
    with pytest.raises(AttestationError, match="does not verify") as excinfo:
        verify_document(data, roots=[pki["root"]])
    assert _reason(excinfo) == "chain"


def test_an_issuer_name_mismatch_fails_the_chain(pki):
    leaf = _cert("test leaf", pki["leaf_key"], "somebody else", pki["inter_key"], ca=False)
    data = _document(_payload(pki, certificate=leaf.public_bytes(Encoding.DER)),
                     pki["leaf_key"])
    with pytest.raises(AttestationError, match="issuer") as excinfo:
        verify_document(data, roots=[pki["root"]])
    assert _reason(excinfo) == "chain"


@pytest.mark.parametrize("ca", [False, None])
def test_an_intermediate_that_is_no_ca_fails_the_chain(pki, ca):
    inter = _cert("test intermediate", pki["inter_key"], "test root", pki["root_key"], ca=ca)
    bundle = [pki["root"].public_bytes(Encoding.DER), inter.public_bytes(Encoding.DER)]
    data = _document(_payload(pki, cabundle=bundle), pki["leaf_key"])
    with pytest.raises(AttestationError, match="not a CA") as excinfo:
        verify_document(data, roots=[pki["root"]])
    assert _reason(excinfo) == "chain"


def test_path_length_constraints_are_enforced(pki):
    sub_key = _key()
    sub = _cert("test sub", sub_key, "test intermediate", pki["inter_key"], ca=True)
    leaf = _cert("test leaf", pki["leaf_key"], "test sub", sub_key, ca=False)
    bundle = [pki["root"].public_bytes(Encoding.DER), pki["inter"].public_bytes(Encoding.DER),
              sub.public_bytes(Encoding.DER)]
    data = _document(_payload(pki, cabundle=bundle, certificate=leaf.public_bytes(Encoding.DER)),
                     pki["leaf_key"])
    with pytest.raises(AttestationError, match="allows 0") as excinfo:
        verify_document(data, roots=[pki["root"]])
    assert _reason(excinfo) == "chain"


def test_an_expired_intermediate_fails_validity(pki):
    old = datetime.now(timezone.utc) - timedelta(days=10)
    inter = _cert("test intermediate", pki["inter_key"], "test root", pki["root_key"], ca=True,
                  start=old, days=2)
    bundle = [pki["root"].public_bytes(Encoding.DER), inter.public_bytes(Encoding.DER)]
    data = _document(_payload(pki, cabundle=bundle), pki["leaf_key"])
    with pytest.raises(AttestationError, match="CN=test intermediate expired") as excinfo:
        verify_document(data, roots=[pki["root"]])
    assert _reason(excinfo) == "validity"


# --- command line -------------------------------------------------------------------------------


def test_cli_verify_valid_at_the_document_time(capsys):
    code = main(["attestation", "verify", str(NITRO / BLOCKY), "--root", str(ROOT_PEM),
                 "--at", "document", "--pcr", f"0={MANIFEST[BLOCKY]['pcr0']}"])
    out = capsys.readouterr().out
    assert code == 0
    assert MANIFEST[BLOCKY]["module_id"] in out
    assert MANIFEST[BLOCKY]["pcr0"][:16] in out
    assert "public_key  present" in out
    assert out.rstrip().endswith("VALID") and "INVALID" not in out


def test_the_shipped_aws_root_is_the_published_one():
    path = aws_nitro_root()
    assert path.is_file() and path.name == "AWS_NitroEnclaves_Root-G1.pem"
    assert path.read_bytes() == ROOT_PEM.read_bytes()
    (root,) = load_roots(path)
    assert hashlib.sha256(root.public_bytes(Encoding.DER)).hexdigest() == AWS_NITRO_ROOT_G1_SHA256
    assert root.subject.rfc4514_string() == "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"
    verify_document(_raw(BLOCKY), roots=load_roots(path), at="document")


def test_cli_on_a_terminal_that_cannot_show_the_ellipsis():
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("PYTHONIOENCODING", "LANG", "LANGUAGE")}
    environment.update(LC_ALL="C", PYTHONUTF8="0")
    run = subprocess.run(
        [sys.executable, "-m", "nitronb", "attestation", "verify", str(NITRO / BLOCKY),
         "--at", "document"], capture_output=True, env=environment, timeout=120)
    out = run.stdout.decode("ascii")
    assert run.returncode == 0, run.stderr.decode("ascii", "replace")
    assert f"PCR0        {MANIFEST[BLOCKY]['pcr0'][:16]}\\u2026" in out
    assert out.rstrip().endswith("VALID")


@pytest.mark.parametrize("name", [BLOCKY, "hf_nitrite_d2d8010.cbor"])
def test_cli_verify_trusts_the_shipped_aws_root_without_root(name, capsys):
    code = main(["attestation", "verify", str(NITRO / name), "--at", "document", "--allow-debug"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert MANIFEST[name]["module_id"] in out
    assert out.rstrip().endswith("VALID") and "INVALID" not in out


def test_cli_verify_without_root_refuses_a_local_document(tmp_path, capsys):
    from nitronb.enclave.nsm import LocalNSM

    document = tmp_path / "local.cbor"
    document.write_bytes(LocalNSM(tmp_path / "nsm").attest(pcrs={0: bytes([1]) * 48}))
    code = main(["attestation", "verify", str(document)])
    out = capsys.readouterr().out
    assert code == 1
    assert "INVALID: chain:" in out


def test_cli_verify_help_names_the_default_root(capsys):
    with pytest.raises(SystemExit):
        main(["attestation", "verify", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--root PEM" in help_text
    assert "default: the AWS Nitro Enclaves root certificate shipped with nitronb" in help_text


def test_cli_verify_invalid_today(capsys):
    code = main(["attestation", "verify", str(NITRO / BLOCKY), "--root", str(ROOT_PEM)])
    out = capsys.readouterr().out
    assert code == 1
    assert "INVALID: validity:" in out


def test_cli_verify_json(capsys):
    entry = MANIFEST[BLOCKY]
    code = main(["attestation", "verify", str(NITRO / BLOCKY), "--root", str(ROOT_PEM),
                 "--at", entry["timestamp_utc"], "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["valid"] is True and result["reason"] is None and result["error"] is None
    assert result["pcrs"]["1"] == entry["pcr1"]
    code = main(["attestation", "verify", str(NITRO / BLOCKY), "--root", str(ROOT_PEM),
                 "--at", "document", "--nonce", "00", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert result["valid"] is False and result["reason"] == "nonce" and result["error"]
    assert result["module_id"] == entry["module_id"]


def test_cli_verify_the_synthetic_document(capsys):
    code = main(["attestation", "verify", str(NITRO / SYNTHETIC), "--root", str(ROOT_PEM),
                 "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1
    assert result == {"valid": False, "reason": "malformed", "error": result["error"]}


def test_cli_show_is_labelled_unverified(capsys):
    code = main(["attestation", "show", str(NITRO / BLOCKY)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("UNVERIFIED")
    assert MANIFEST[BLOCKY]["module_id"] in out
    code = main(["attestation", "show", str(NITRO / BLOCKY), "--json"])
    assert json.loads(capsys.readouterr().out)["verified"] is False


def test_cli_reports_unreadable_files(tmp_path, capsys):
    code = main(["attestation", "show", str(tmp_path / "missing.cbor")])
    assert code == 1
    assert "cannot read the document" in capsys.readouterr().err


def test_cli_rejects_a_bad_pcr_argument(capsys):
    with pytest.raises(SystemExit):
        main(["attestation", "verify", "doc", "--root", "root.pem", "--pcr", "zero=00"])
    assert "N=HEX" in capsys.readouterr().err


def test_cli_as_a_process():
    run = subprocess.run(
        [sys.executable, "-m", "nitronb", "attestation", "verify", str(NITRO / BLOCKY),
         "--root", str(ROOT_PEM), "--at", "document"],
        capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert run.returncode == 0, run.stderr
    assert "VALID" in run.stdout
    run = subprocess.run(
        [sys.executable, "-m", "nitronb", "attestation", "verify", str(NITRO / BLOCKY),
         "--at", "document"], capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.rstrip().endswith("VALID")
    run = subprocess.run(
        [sys.executable, "-m", "nitronb", "attestation", "verify", str(NITRO / SYNTHETIC),
         "--root", str(ROOT_PEM)], capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert run.returncode == 1
    assert "INVALID: malformed" in run.stdout


def test_roots_may_be_given_as_pem_or_der_bytes():
    root = load_roots(ROOT_PEM)[0]
    raw = _raw(BLOCKY)
    for given in (ROOT_PEM.read_bytes(), [ROOT_PEM.read_bytes()], [root.public_bytes(Encoding.DER)],
                  root):
        assert verify_document(raw, roots=given, at="document").module_id
    with pytest.raises(TypeError):
        verify_document(raw, roots=[str(ROOT_PEM)], at="document")
    assert load_roots(ROOT_PEM.read_text(encoding="utf-8")) == load_roots(str(ROOT_PEM))


def test_load_roots_says_what_is_wrong(tmp_path):
    with pytest.raises(AttestationError, match="cannot read"):
        load_roots(tmp_path / "missing.pem")
    (tmp_path / "empty.pem").write_text("nothing here", encoding="utf-8")
    with pytest.raises(AttestationError, match="no PEM certificate"):
        load_roots(tmp_path / "empty.pem")


def test_documents_are_hashable_and_compare_by_content():
    first, second = parse_document(_raw(BLOCKY)), parse_document(_raw(BLOCKY))
    assert first == second and hash(first) == hash(second)
    assert first != parse_document(_raw("hf_nitrite_d2d8010.cbor"))


def test_the_protected_header_must_be_exactly_alg_es384(pki):
    for header in ({1: -35, 4: b"kid"}, {True: -35}):
        data = _document(_payload(pki), pki["leaf_key"], protected=cbor2.dumps(header))
        with pytest.raises(AttestationError) as excinfo:
            verify_document(data, roots=[pki["root"]])
        assert _reason(excinfo) == "malformed"


def test_cli_refuses_a_debug_mode_document_unless_allowed(capsys):
    debug = NITRO / "blocky_nitro_attestation_debug.cbor"
    code = main(["attestation", "verify", str(debug), "--root", str(ROOT_PEM), "--at", "document"])
    out = capsys.readouterr().out
    assert code == 1 and "INVALID: debug" in out and "--allow-debug" in out
    code = main(["attestation", "verify", str(debug), "--root", str(ROOT_PEM), "--at", "document",
                 "--allow-debug"])
    assert code == 0 and "VALID" in capsys.readouterr().out


# --- clock skew: live checks allow a little, the document's own time none ---------------------


def _validity(name: str) -> tuple[datetime, datetime]:
    """The latest start and the earliest end of the validity of a real document's chain."""
    document = parse_document(_raw(name))
    chain = [document.leaf_certificate,
             *(x509.load_der_x509_certificate(der) for der in document.cabundle)]
    return (max(c.not_valid_before_utc for c in chain),
            min(c.not_valid_after_utc for c in chain))


SKEWED = [BLOCKY, "evervault_valid-attestation-doc-bytes.cbor"]


@pytest.mark.parametrize("name", SKEWED)
def test_live_verification_allows_the_default_clock_skew_at_both_edges(name, aws_roots,
                                                                       monkeypatch):
    import nitronb.enclave.verification as verification

    start, end = _validity(name)
    for inside, outside in ((start - timedelta(seconds=60), start - timedelta(seconds=61)),
                            (end + timedelta(seconds=60), end + timedelta(seconds=61))):
        monkeypatch.setattr(verification, "_now", lambda: inside)
        verify_document(_raw(name), roots=aws_roots)
        monkeypatch.setattr(verification, "_now", lambda: outside)
        with pytest.raises(AttestationError, match="allowing 60 s of clock skew") as excinfo:
            verify_document(_raw(name), roots=aws_roots)
        assert _reason(excinfo) == "validity"
    assert verification.DEFAULT_CLOCK_SKEW == timedelta(seconds=60)


@pytest.mark.parametrize("name", SKEWED)
def test_a_chosen_clock_skew_at_an_explicit_time_and_none_by_default(name, aws_roots):
    start, end = _validity(name)
    skew = timedelta(seconds=300)
    for edge, step in ((start, -1), (end, 1)):
        verify_document(_raw(name), roots=aws_roots, at=edge + step * skew, clock_skew=skew)
        with pytest.raises(AttestationError, match="allowing 5 min of clock skew"):
            verify_document(_raw(name), roots=aws_roots,
                            at=edge + step * (skew + timedelta(seconds=1)), clock_skew=skew)
        verify_document(_raw(name), roots=aws_roots, at=edge)
        with pytest.raises(AttestationError) as excinfo:  # an explicit time is exact by default
            verify_document(_raw(name), roots=aws_roots, at=edge + step * timedelta(seconds=1))
        assert _reason(excinfo) == "validity" and "clock skew" not in str(excinfo.value)


def test_the_documents_own_time_is_exact(aws_roots):
    verify_document(_raw(BLOCKY), roots=aws_roots, at="document", clock_skew=timedelta(0))
    with pytest.raises(ValueError, match="exactly"):
        verify_document(_raw(BLOCKY), roots=aws_roots, at="document",
                        clock_skew=timedelta(seconds=60))
    with pytest.raises(ValueError, match="timedelta of zero or more"):
        verify_document(_raw(BLOCKY), roots=aws_roots, clock_skew=timedelta(seconds=-1))


def test_cli_clock_skew(capsys):
    start, end = _validity(BLOCKY)
    verify = ["attestation", "verify", str(NITRO / BLOCKY), "--root", str(ROOT_PEM)]
    assert main([*verify, "--at", (end + timedelta(seconds=90)).isoformat(),
                 "--clock-skew", "90"]) == 0
    assert main([*verify, "--at", (end + timedelta(seconds=91)).isoformat(),
                 "--clock-skew", "90"]) == 1
    assert "allowing 90 s of clock skew" in capsys.readouterr().out
    assert main([*verify, "--at", (start - timedelta(seconds=1)).isoformat()]) == 1
    assert main([*verify, "--at", "document", "--clock-skew", "5"]) == 2
    assert "takes no --clock-skew" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*verify, "--clock-skew", "-1"])
