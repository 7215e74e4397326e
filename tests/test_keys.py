"""Key generation, key files and their errors."""

import os
import re
import stat

import pytest

from nitronb.errors import KeyFileError, OutputExistsError
from nitronb.keys import generate_key, key_bytes, parse_key, read_key_file, redact, write_key_file


def test_generated_key_is_64_upper_hex_and_random():
    a, b = generate_key(), generate_key()
    assert re.fullmatch(r"[0-9A-F]{64}", a)
    assert a != b


def test_key_file_is_owner_only_and_round_trips(tmp_path):
    old = os.umask(0o022)
    try:
        key = write_key_file(tmp_path / "k.hex")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "k.hex").stat().st_mode)
    assert mode == 0o600
    assert read_key_file(tmp_path / "k.hex") == key
    assert (tmp_path / "k.hex").read_text() == key + "\n"


def test_existing_key_file_is_not_overwritten(tmp_path):
    path = tmp_path / "k.hex"
    first = write_key_file(path)
    with pytest.raises(OutputExistsError, match="already exists"):
        write_key_file(path)
    assert read_key_file(path) == first
    second = write_key_file(path, overwrite=True)
    assert read_key_file(path) == second != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["k.hex"]


def test_trailing_whitespace_and_lower_case_are_accepted(tmp_path):
    key = generate_key()
    (tmp_path / "k.hex").write_text(key.lower() + " \r\n\n")
    assert read_key_file(tmp_path / "k.hex") == key


@pytest.mark.parametrize("content, words", [
    ("", "is empty"),
    ("ABCD\n", "has 4 hex characters"),
    ("A" * 66, "has 66 hex characters"),
    ("G" + "A" * 63, "non-hex character 'G' at position 1"),
    (" " + "A" * 64, "non-hex character ' ' at position 1"),
])
def test_malformed_key_file_names_file_and_problem(tmp_path, content, words):
    path = tmp_path / "bad.hex"
    path.write_text(content)
    with pytest.raises(KeyFileError) as info:
        read_key_file(path)
    message = str(info.value)
    assert str(path) in message and words in message
    assert "nitronb keygen" in message
    assert info.value.path == str(path)


def test_binary_and_missing_key_files(tmp_path):
    (tmp_path / "bin").write_bytes(b"\xff\xfe" * 32)
    with pytest.raises(KeyFileError, match="not text"):
        read_key_file(tmp_path / "bin")
    with pytest.raises(KeyFileError, match="does not exist"):
        read_key_file(tmp_path / "missing.hex")
    with pytest.raises(KeyFileError, match="is a folder"):
        read_key_file(tmp_path)


def test_error_never_contains_the_key(tmp_path):
    almost = generate_key()[:63]
    (tmp_path / "k").write_text(almost)
    with pytest.raises(KeyFileError) as info:
        read_key_file(tmp_path / "k")
    assert almost not in str(info.value)


def test_key_bytes_accepts_hex_and_raw():
    key = generate_key()
    assert key_bytes(key) == bytes.fromhex(key)
    assert key_bytes(bytes.fromhex(key)) == bytes.fromhex(key)
    with pytest.raises(KeyFileError, match="16 bytes"):
        key_bytes(b"x" * 16)
    with pytest.raises(KeyFileError):
        parse_key("zz")


def test_redact_shows_only_the_ends():
    key = "63F0" + "0" * 56 + "D24A"
    assert redact(key) == "63F0…D24A"
    assert redact(bytes.fromhex(key)) == "63F0…D24A"
    assert redact("short") == "…"
