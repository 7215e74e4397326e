"""The data files the project ships (test fixtures and package data) match their provenance."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

import nitronb
from nitronb.enclave.attestation import AWS_NITRO_ROOT_G1_SHA256, aws_nitro_root, load_roots

PACKAGE_DATA = Path(nitronb.__file__).resolve().parent / "data"
ROW = re.compile(r"^\| `(?P<file>[^`]+)` \| `(?P<sha256>[0-9a-f]{64})` \| (?P<source>[^|]+) \|"
                 r" (?P<licence>[^|]+) \|$")
SECTION_SHA256 = re.compile(r"sha256 `([0-9a-f]{64})`")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _table(provenance: Path) -> dict[str, re.Match]:
    rows = {}
    for line in provenance.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            assert match["file"] not in rows, f"{match['file']} is listed twice"
            rows[match["file"]] = match
    return rows


def _sections(provenance: Path) -> dict[str, str]:
    """``# <file name>`` heading -> the text of its section."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in provenance.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            current = line[2:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {name: "\n".join(lines) for name, lines in sections.items()}


def test_every_test_fixture_is_listed_with_source_licence_and_checksum(test_data):
    rows = _table(test_data / "PROVENANCE.md")
    files = {path.relative_to(test_data).as_posix() for path in test_data.rglob("*")
             if path.is_file() and path.name != "PROVENANCE.md"}
    assert files, f"no fixtures under {test_data}"
    assert set(rows) == files
    for name, row in sorted(rows.items()):
        assert _sha256(test_data / name) == row["sha256"], f"{name} differs from its checksum"
        assert row["source"].strip() and row["licence"].strip()


def test_the_nitro_manifest_checksums_match_the_documents(test_data):
    manifest = json.loads((test_data / "nitro" / "MANIFEST.json").read_text(encoding="utf-8"))
    documents = {path.name for path in (test_data / "nitro").glob("*.cbor")}
    assert set(manifest) == documents
    for name, entry in manifest.items():
        assert _sha256(test_data / "nitro" / name) == entry["sha256"], name


def test_every_package_data_file_is_described_with_its_checksum():
    sections = _sections(PACKAGE_DATA / "PROVENANCE.md")
    files = {path.name for path in PACKAGE_DATA.iterdir()
             if path.is_file() and path.name != "PROVENANCE.md"}
    assert set(sections) == files
    for name, text in sections.items():
        listed = SECTION_SHA256.findall(text)
        assert listed, f"the section on {name} gives no sha256"
        assert _sha256(PACKAGE_DATA / name) == listed[0], f"{name} differs from its checksum"


def test_the_sample_is_the_package_copy():
    assert nitronb.sample_path().resolve() == PACKAGE_DATA / "conditions.csv"


@pytest.mark.parametrize("pem", ["package", "tests"])
def test_the_aws_root_is_the_one_aws_publishes(pem, test_data):
    path = (aws_nitro_root() if pem == "package"
            else test_data / "nitro" / "AWS_NitroEnclaves_Root-G1.pem")
    (root,) = load_roots(path)
    assert hashlib.sha256(root.public_bytes(Encoding.DER)).hexdigest() == AWS_NITRO_ROOT_G1_SHA256
