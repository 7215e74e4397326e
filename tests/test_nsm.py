"""The local Nitro Secure Module: its CA, and documents that verify like AWS's."""

from __future__ import annotations

import json
import os
import stat
import threading
from datetime import timedelta
from pathlib import Path

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from nitronb.enclave import nsm as nsm_module
from nitronb.enclave.attestation import binding_user_data, load_roots, parse_document
from nitronb.enclave.verification import verify_document
from nitronb.cli import main
from nitronb.errors import AttestationError, LocalStackError
from nitronb.enclave.nsm import LEAF_LIFETIME, LocalNSM

NITRO = Path(__file__).resolve().parent / "data" / "nitro"
PCR0, PCR1, PCR2 = (bytes([n]) * 48 for n in (0xA0, 0xA1, 0xA2))


@pytest.fixture
def nsm(tmp_path) -> LocalNSM:
    return LocalNSM(tmp_path / "nsm")


def _attest(nsm: LocalNSM, **kwargs) -> bytes:
    return nsm.attest(pcrs={0: PCR0, 1: PCR1, 2: PCR2}, **kwargs)


def test_documents_verify_against_the_local_root(nsm):
    data = _attest(nsm)
    document = verify_document(data, roots=[nsm.root_certificate],
                               expected_pcrs={0: PCR0, 1: PCR1, 2: PCR2.hex()})
    assert document.module_id == nsm.module_id
    assert document.module_id.startswith("i-local-enc")
    assert sorted(document.pcrs) == list(range(16))
    assert all(document.pcrs[index] == bytes(48) for index in range(3, 16))
    assert document.public_key is document.user_data is document.nonce is None
    assert not document.debug_mode


def test_documents_fail_against_the_aws_root(nsm):
    aws_root = NITRO / "AWS_NitroEnclaves_Root-G1.pem"
    with pytest.raises(AttestationError) as excinfo:
        verify_document(_attest(nsm), roots=load_roots(aws_root))
    assert excinfo.value.reason == "chain"


def test_documents_fail_against_another_local_root(nsm, tmp_path):
    other = LocalNSM(tmp_path / "other")
    with pytest.raises(AttestationError) as excinfo:
        verify_document(_attest(nsm), roots=[other.root_certificate])
    assert excinfo.value.reason == "chain"


def test_the_format_is_the_aws_format(nsm):
    data = _attest(nsm, public_key=b"k", user_data=b"u", nonce=b"n")
    items = cbor2.loads(data)
    assert isinstance(items, list) and len(items) == 4  # untagged, as the AWS module returns it
    protected, unprotected, payload, signature = items
    assert protected == bytes.fromhex("a1013822") and unprotected == {} and len(signature) == 96
    body = cbor2.loads(payload)
    assert list(body) == ["module_id", "digest", "timestamp", "pcrs", "certificate", "cabundle",
                          "public_key", "user_data", "nonce"]
    assert body["digest"] == "SHA384"
    assert (body["public_key"], body["user_data"], body["nonce"]) == (b"k", b"u", b"n")
    real = (NITRO / "blocky_nitro_attestation.cbor").read_bytes()
    assert list(body) == list(cbor2.loads(cbor2.loads(real)[2]))
    assert cbor2.loads(real)[0] == protected


def test_absent_optional_fields_are_null(nsm):
    body = cbor2.loads(cbor2.loads(_attest(nsm))[2])
    assert "nonce" in body and body["nonce"] is None
    assert body["public_key"] is None and body["user_data"] is None


def test_each_document_has_a_fresh_three_hour_leaf(nsm):
    first, second = parse_document(_attest(nsm)), parse_document(_attest(nsm))
    assert first.certificate != second.certificate
    leaf = first.leaf_certificate
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == LEAF_LIFETIME
    assert leaf.not_valid_before_utc <= first.timestamp <= leaf.not_valid_after_utc
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is False
    assert first.cabundle[0] == nsm.root_certificate.public_bytes(Encoding.DER)


def test_a_document_expires_with_its_leaf(nsm):
    data = _attest(nsm)
    issued = parse_document(data).timestamp
    verify_document(data, roots=[nsm.root_certificate], at=issued + timedelta(hours=2))
    with pytest.raises(AttestationError) as excinfo:
        verify_document(data, roots=[nsm.root_certificate], at=issued + timedelta(hours=4))
    assert excinfo.value.reason == "validity"
    verify_document(data, roots=[nsm.root_certificate], at="document")


def test_key_and_configuration_binding_round_trip(nsm):
    public_key = os.urandom(97)
    config_id = "5e" * 32
    data = _attest(nsm, public_key=public_key,
                   user_data=binding_user_data(public_key, config_id), nonce=b"challenge")
    document = verify_document(data, roots=[nsm.root_certificate], nonce=b"challenge",
                               public_key=public_key, config_id=config_id,
                               max_age=timedelta(minutes=5))
    assert document.config_id == config_id
    verify_document(data, roots=[nsm.root_certificate], public_key=public_key)
    verify_document(data, roots=[nsm.root_certificate], config_id=config_id)
    for kwargs in ({"config_id": "6f" * 32}, {"public_key": os.urandom(97)},
                   {"public_key": public_key, "config_id": config_id[:-1]}):
        with pytest.raises(AttestationError) as excinfo:
            verify_document(data, roots=[nsm.root_certificate], **kwargs)
        assert excinfo.value.reason == "binding"
    with pytest.raises(AttestationError) as excinfo:
        verify_document(data, roots=[nsm.root_certificate], nonce=b"old challenge")
    assert excinfo.value.reason == "nonce"


def test_user_data_that_binds_another_key_is_refused(nsm):
    key, other = os.urandom(64), os.urandom(64)
    config_id = "7a" * 32
    data = _attest(nsm, public_key=key, user_data=binding_user_data(other, config_id))
    assert parse_document(data).config_id is None
    with pytest.raises(AttestationError) as excinfo:
        verify_document(data, roots=[nsm.root_certificate], public_key=key,
                        config_id=config_id)
    assert excinfo.value.reason == "binding"


def test_a_binding_of_the_id_as_hex_text_is_refused(nsm):
    """The 96-byte form, with the APPCONFIG_ID's hex text instead of its 32 raw bytes."""
    import hashlib

    key, config_id = os.urandom(32), "5e" * 32
    text = config_id.encode()
    as_text = hashlib.sha256(b"\x01" + hashlib.sha256(key).digest() + text).digest() + text
    data = _attest(nsm, public_key=key, user_data=as_text)
    assert parse_document(data).config_id is None
    with pytest.raises(AttestationError, match="96 bytes, not the 64") as excinfo:
        verify_document(data, roots=[nsm.root_certificate], public_key=key,
                        config_id=config_id)
    assert excinfo.value.reason == "binding"
    with pytest.raises(AttestationError) as excinfo:
        verify_document(data, roots=[nsm.root_certificate], public_key=key)
    assert excinfo.value.reason == "binding"


def test_the_ca_is_created_once_and_kept_private(nsm):
    pem = nsm.root_pem
    folder = nsm.folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for key_file in ("root.key", "intermediate.key"):
        assert stat.S_IMODE((folder / key_file).stat().st_mode) == 0o600
    assert nsm.root_path.read_bytes() == pem
    again = LocalNSM(folder)
    assert again.root_pem == pem
    data = _attest(again)
    verify_document(data, roots=load_roots(nsm.root_path))
    root = nsm.root_certificate
    assert root.subject == root.issuer
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.not_valid_after_utc - root.not_valid_before_utc > timedelta(days=3650)


def test_concurrent_first_use_creates_one_root(tmp_path):
    folder = tmp_path / "nsm"
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(LocalNSM(folder).root_pem))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert LocalNSM(folder).root_pem == results[0]


def test_an_intermediate_near_its_end_is_renewed_under_the_same_root(nsm, monkeypatch):
    first = parse_document(_attest(nsm))
    monkeypatch.setattr(nsm_module, "_RENEW_BEFORE", nsm_module.INTERMEDIATE_LIFETIME * 2)
    renewed = LocalNSM(nsm.folder)
    data = _attest(renewed)
    second = verify_document(data, roots=[nsm.root_certificate])
    assert second.cabundle[0] == first.cabundle[0]
    assert second.cabundle[1] != first.cabundle[1]


def test_a_damaged_ca_is_reported(nsm):
    nsm.root_pem
    (nsm.folder / "intermediate.key").write_bytes(b"not a key")
    with pytest.raises(LocalStackError, match="intermediate"):
        LocalNSM(nsm.folder).root_pem


def test_a_key_that_does_not_match_its_certificate_is_reported(nsm, tmp_path):
    nsm.root_pem
    other = LocalNSM(tmp_path / "other")
    other.root_pem
    (nsm.folder / "root.key").write_bytes((other.folder / "root.key").read_bytes())
    with pytest.raises(LocalStackError, match="does not match"):
        LocalNSM(nsm.folder).root_pem


@pytest.mark.parametrize("pcrs, words", [
    ({0: bytes(47)}, "48 bytes"),
    ({40: bytes(48)}, "0 to 31"),
    ({0: "zz"}, "not hex"),
])
def test_bad_pcrs_are_refused(nsm, pcrs, words):
    with pytest.raises(ValueError, match=words):
        nsm.attest(pcrs=pcrs)


def test_pcrs_as_hex_and_beyond_15(nsm):
    document = parse_document(nsm.attest(pcrs={0: PCR0.hex(), 20: PCR1}))
    assert document.pcrs[0] == PCR0 and document.pcrs[20] == PCR1
    assert sorted(document.pcrs) == list(range(16)) + [20]


def test_oversized_fields_are_refused(nsm):
    with pytest.raises(ValueError, match="user_data"):
        nsm.attest(pcrs={}, user_data=bytes(1025))
    with pytest.raises(ValueError, match="nonce must be bytes"):
        nsm.attest(pcrs={}, nonce="text")


def test_cli_verifies_a_local_document(nsm, tmp_path, capsys):
    path = tmp_path / "doc.cbor"
    path.write_bytes(_attest(nsm, nonce=b"\x01\x02"))
    code = main(["attestation", "verify", str(path), "--root", str(nsm.root_path),
                 "--pcr", f"0={PCR0.hex()}", "--nonce", "0102", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["valid"] is True
    code = main(["attestation", "verify", str(path), "--root", str(nsm.root_path),
                 "--pcr", f"1={PCR0.hex()}"])
    out = capsys.readouterr().out
    assert code == 1 and "INVALID: pcrs: PCR1" in out


def test_in_workspace_uses_the_nsm_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("NITRONB_WORKSPACE", str(tmp_path / "ws"))
    local = LocalNSM.in_workspace()
    assert local.folder == (tmp_path / "ws").resolve() / "nsm"
    assert local.root_path == local.folder / "root.pem"  # where the manager looks for it
    assert LocalNSM.in_workspace(tmp_path / "ws").root_pem == local.root_pem


def test_the_root_file_alone_verifies_documents(nsm):
    data = nsm.attest(pcrs={0: PCR0.hex(), 1: PCR1.hex(), 2: PCR2.hex()}, module_id="i-local-e1")
    document = verify_document(data, roots=[nsm.root_path.read_bytes()],
                               expected_pcrs={0: PCR0, 1: PCR1, 2: PCR2})
    assert document.module_id == "i-local-e1"
