"""Key generation, key files and their errors."""

import os
import re
import shutil
import stat
import subprocess

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
    assert (tmp_path / "k.hex").read_text(encoding="ascii") == key + "\n"


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
    (tmp_path / "k.hex").write_bytes((key.lower() + " \r\n\n").encode("ascii"))
    assert read_key_file(tmp_path / "k.hex") == key


@pytest.mark.parametrize("content, words", [
    ("", "is empty"),
    ("ABCD\n", "has 4 hex characters"),
    ("A" * 66, "has 66 hex characters"),
    ("G" + "A" * 63, "non-hex character 'G' at position 1"),
    ("A" * 63 + "\n", "has 63 hex characters"),
    ("A" * 60 + "\n" + "A" * 5 + "\n", "has 65 hex characters"),
    ("A" * 60 + "\n" + "A" * 3 + "\n", "has 63 hex characters"),
    ("A" * 32 + "\v" + "A" * 32, "non-hex character U+000B at position 33"),
    ("A" * 32 + "\f" + "A" * 32, "non-hex character U+000C at position 33"),
    ("A" * 32 + "-" + "A" * 32, "non-hex character '-' at position 33"),
    ("0x" + "A" * 64, "non-hex character 'x' at position 2"),
])
def test_malformed_key_file_names_file_and_problem(tmp_path, content, words):
    path = tmp_path / "bad.hex"
    path.write_bytes(content.encode("ascii"))
    with pytest.raises(KeyFileError) as info:
        read_key_file(path)
    message = str(info.value)
    assert str(path) in message and words in message
    assert "nitronb keygen" in message
    assert info.value.path == str(path)


# 60 hex digits, a line break, the last 4: the layout `xxd -u -l 32 -p` writes
XXD_LAYOUT = ("63F0A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C\n"
              "D24A\n")


def test_the_xxd_layout_is_accepted(tmp_path):
    path = tmp_path / "k.hex"
    path.write_bytes(XXD_LAYOUT.encode("ascii"))
    assert read_key_file(path) == XXD_LAYOUT.replace("\n", "")
    assert len(read_key_file(path)) == 64


@pytest.mark.skipif(shutil.which("xxd") is None, reason="xxd is not installed")
def test_a_key_written_by_real_xxd_is_accepted(tmp_path):
    path = tmp_path / "k.hex"
    with open(path, "wb") as handle:
        subprocess.run(["xxd", "-u", "-l", "32", "-p", "/dev/urandom"], stdout=handle, check=True)
    lines = path.read_bytes().decode("ascii").split("\n")
    assert [len(line) for line in lines] == [60, 4, 0]  # the layout this test is about
    assert read_key_file(path) == "".join(lines)


@pytest.mark.parametrize("layout", [
    "{key}\r\n",  # saved with CRLF line ends
    "{a}\r\n{b}\r\n",  # xxd's two lines, CRLF
    " {key} ",  # spaces around
    "{a} {b}",  # a space inside
    "\t{key}",  # a leading tab
    "{pairs}\n",  # byte by byte: "63 F0 A1 ..."
    "\n\n{a}\n\n{b}\n\n",  # blank lines
])
def test_ascii_whitespace_between_the_digits_is_accepted(tmp_path, layout):
    key = generate_key()
    text = layout.format(key=key, a=key[:60], b=key[60:],
                         pairs=" ".join(key[i:i + 2] for i in range(0, 64, 2)))
    path = tmp_path / "k.hex"
    path.write_bytes(text.encode("ascii"))
    assert read_key_file(path) == key
    assert parse_key(text) == key


@pytest.mark.parametrize("space", ["\u00a0", "\u2003", "\u3000", "\u200b"])
def test_non_ascii_whitespace_is_refused(tmp_path, space):
    key = generate_key()
    text = key[:32] + space + key[32:]
    words = f"non-hex character U+{ord(space):04X} at position 33"
    with pytest.raises(KeyFileError, match=re.escape(words)):
        parse_key(text)
    path = tmp_path / "k.hex"
    path.write_bytes(text.encode("utf-8"))
    with pytest.raises(KeyFileError, match="not text"):
        read_key_file(path)


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
    (tmp_path / "k").write_bytes(almost.encode("ascii"))
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


def test_a_fingerprint_shows_no_digit_of_the_key():
    import hashlib

    from nitronb.keys import fingerprint

    key = "63F0" + "0" * 56 + "D24A"
    expected = hashlib.sha256(bytes.fromhex(key)).hexdigest()[:8]
    assert fingerprint(key) == fingerprint(key.lower()) == fingerprint(bytes.fromhex(key)) \
        == expected
    assert "63f0" not in fingerprint(key) and "d24a" not in fingerprint(key)
    with pytest.raises(KeyFileError):
        fingerprint("short")
