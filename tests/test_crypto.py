"""The encrypted-file format: round trips, interoperability, bad input, no partial files."""

import io
import os
import stat

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nitronb import crypto
from nitronb.crypto import (CHUNK_SIZE, NONCE_SIZE, OVERHEAD, TAG_SIZE, decrypt_bytes,
                            decrypt_file, decrypt_stream, encrypt_bytes, encrypt_file,
                            encrypt_stream)
from nitronb.errors import DecryptionError, NitronbError, SameFileError
from nitronb.keys import generate_key

KEY = generate_key()
SIZES = [0, 1, 15, 16, 17, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1,
         CHUNK_SIZE + TAG_SIZE - 1, 2 * CHUNK_SIZE + 7, 5 * CHUNK_SIZE]


def _data(size: int) -> bytes:
    return os.urandom(size)


class _Trickle(io.RawIOBase):
    """A reader that hands out at most ``step`` bytes a call, like a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self):
        return True

    def readinto(self, buf):
        n = min(len(buf), self._step, len(self._data) - self._pos)
        buf[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


@pytest.mark.parametrize("size", SIZES)
def test_file_round_trip(tmp_path, size):
    plain = _data(size)
    (tmp_path / "in").write_bytes(plain)
    encrypt_file(KEY, tmp_path / "in", tmp_path / "enc")
    assert (tmp_path / "enc").stat().st_size == size + OVERHEAD
    decrypt_file(KEY, tmp_path / "enc", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == plain


@pytest.mark.parametrize("size", [0, 1, 100, CHUNK_SIZE + 3])
@pytest.mark.parametrize("step", [1, 7, 4096])
def test_stream_round_trip_with_short_reads(size, step):
    plain = _data(size)
    enc = io.BytesIO()
    encrypt_stream(KEY, _Trickle(plain, step), enc)
    out = io.BytesIO()
    assert decrypt_stream(KEY, _Trickle(enc.getvalue(), step), out) == size
    assert out.getvalue() == plain


@pytest.mark.parametrize("size", [0, 1, 1000])
def test_bytes_round_trip_and_fresh_nonce(size):
    plain = _data(size)
    a, b = encrypt_bytes(KEY, plain), encrypt_bytes(KEY, plain)
    assert a[:NONCE_SIZE] != b[:NONCE_SIZE]
    assert decrypt_bytes(KEY, a) == decrypt_bytes(KEY, b) == plain


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE + 5])
def test_interoperates_with_one_shot_aesgcm(tmp_path, size):
    plain = _data(size)
    key = bytes.fromhex(KEY)
    # ours -> independent implementation
    (tmp_path / "in").write_bytes(plain)
    encrypt_file(KEY, tmp_path / "in", tmp_path / "enc")
    blob = (tmp_path / "enc").read_bytes()
    assert AESGCM(key).decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], None) == plain
    # independent implementation -> ours
    nonce = os.urandom(NONCE_SIZE)
    (tmp_path / "theirs").write_bytes(nonce + AESGCM(key).encrypt(nonce, plain, None))
    decrypt_file(KEY, tmp_path / "theirs", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == plain
    assert decrypt_bytes(KEY, nonce + AESGCM(key).encrypt(nonce, plain, None)) == plain


def _files(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize("position", [0, NONCE_SIZE, NONCE_SIZE + 500, -TAG_SIZE, -1])
def test_flipped_byte_is_rejected_without_output(tmp_path, position):
    (tmp_path / "in").write_bytes(_data(2000))
    encrypt_file(KEY, tmp_path / "in", tmp_path / "enc")
    blob = bytearray((tmp_path / "enc").read_bytes())
    blob[position] ^= 0x01
    (tmp_path / "enc").write_bytes(blob)
    with pytest.raises(DecryptionError) as info:
        decrypt_file(KEY, tmp_path / "enc", tmp_path / "out")
    assert str(tmp_path / "enc") in str(info.value)
    assert "authentication failed" in str(info.value)
    assert isinstance(info.value, NitronbError)
    assert _files(tmp_path) == ["enc", "in"]
    with pytest.raises(DecryptionError):
        decrypt_bytes(KEY, bytes(blob))


def test_wrong_key_is_rejected_and_existing_output_kept(tmp_path):
    (tmp_path / "in").write_bytes(b"secret rows")
    encrypt_file(KEY, tmp_path / "in", tmp_path / "enc")
    (tmp_path / "out").write_bytes(b"previous result")
    with pytest.raises(DecryptionError, match="key is not the one"):
        decrypt_file(generate_key(), tmp_path / "enc", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"previous result"
    assert _files(tmp_path) == ["enc", "in", "out"]


@pytest.mark.parametrize("keep", [0, 5, NONCE_SIZE, OVERHEAD - 1, OVERHEAD, 1000])
def test_truncated_file_is_rejected(tmp_path, keep):
    (tmp_path / "in").write_bytes(_data(2000))
    encrypt_file(KEY, tmp_path / "in", tmp_path / "enc")
    blob = (tmp_path / "enc").read_bytes()[:keep]
    (tmp_path / "enc").write_bytes(blob)
    with pytest.raises(DecryptionError):
        decrypt_file(KEY, tmp_path / "enc", tmp_path / "out")
    with pytest.raises(DecryptionError):
        decrypt_stream(KEY, io.BytesIO(blob), io.BytesIO())
    assert _files(tmp_path) == ["enc", "in"]


def test_short_file_message_says_truncated(tmp_path):
    (tmp_path / "enc").write_bytes(b"tiny")
    with pytest.raises(DecryptionError, match="4 bytes, shorter than the 28"):
        decrypt_file(KEY, tmp_path / "enc", tmp_path / "out")


def test_stream_failure_writes_nothing_to_destination():
    blob = bytearray(encrypt_bytes(KEY, _data(3 * CHUNK_SIZE)))
    blob[-1] ^= 0xFF
    out = io.BytesIO()
    with pytest.raises(DecryptionError):
        decrypt_stream(KEY, io.BytesIO(bytes(blob)), out)
    assert out.getvalue() == b""


def test_output_over_input_is_refused(tmp_path):
    (tmp_path / "f").write_bytes(b"data")
    with pytest.raises(SameFileError):
        encrypt_file(KEY, tmp_path / "f", tmp_path / "f")
    os.link(tmp_path / "f", tmp_path / "hard")
    with pytest.raises(SameFileError):
        decrypt_file(KEY, tmp_path / "f", tmp_path / "hard")
    with pytest.raises(SameFileError):
        encrypt_file(KEY, tmp_path / "f", tmp_path / "sub" / ".." / "f")
    assert (tmp_path / "f").read_bytes() == b"data"


def test_missing_input_and_folder_give_clear_errors(tmp_path):
    with pytest.raises(NitronbError, match="does not exist") as missing:
        encrypt_file(KEY, tmp_path / "nope", tmp_path / "out")
    assert missing.value.hint and "Check the path" in missing.value.hint
    (tmp_path / "in").write_bytes(b"x")
    with pytest.raises(NitronbError, match="folder .* does not exist"):
        encrypt_file(KEY, tmp_path / "in", tmp_path / "no" / "out")
    assert _files(tmp_path) == ["in"]


def test_failure_mid_encryption_leaves_no_partial_file(tmp_path, monkeypatch):
    (tmp_path / "in").write_bytes(_data(3 * CHUNK_SIZE))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(crypto, "_write_all", broken)
    with pytest.raises(OSError):
        encrypt_file(KEY, tmp_path / "in", tmp_path / "enc")
    assert _files(tmp_path) == ["in"]


def test_modes_of_outputs(tmp_path):
    (tmp_path / "in").write_bytes(b"rows")
    old = os.umask(0o022)
    try:
        encrypt_file(KEY, tmp_path / "in", tmp_path / "enc")
        decrypt_file(KEY, tmp_path / "enc", tmp_path / "out")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "enc").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o600


def test_sample_round_trip(tmp_path):
    from nitronb import sample_path

    encrypt_file(KEY, sample_path(), tmp_path / "c.enc")
    decrypt_file(KEY, tmp_path / "c.enc", tmp_path / "c.csv")
    assert (tmp_path / "c.csv").read_bytes() == sample_path().read_bytes()


def test_output_to_a_folder_is_refused(tmp_path):
    (tmp_path / "in").write_bytes(b"rows")
    (tmp_path / "out").mkdir()
    with pytest.raises(NitronbError, match="is a folder"):
        encrypt_file(KEY, tmp_path / "in", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_output_through_a_symlink_replaces_the_file_it_names(tmp_path):
    (tmp_path / "in").write_bytes(b"rows")
    (tmp_path / "real.enc").write_bytes(b"old")
    (tmp_path / "link.enc").symlink_to(tmp_path / "real.enc")
    encrypt_file(KEY, tmp_path / "in", tmp_path / "link.enc")
    assert (tmp_path / "link.enc").is_symlink()
    assert decrypt_bytes(KEY, (tmp_path / "real.enc").read_bytes()) == b"rows"


def test_output_to_a_pipe_is_written_in_place_after_verification(tmp_path):
    import threading

    (tmp_path / "in").write_bytes(b"rows " * 1000)
    encrypt_file(KEY, tmp_path / "in", tmp_path / "enc")
    os.mkfifo(tmp_path / "fifo")
    received = []
    reader = threading.Thread(target=lambda: received.append((tmp_path / "fifo").read_bytes()))
    reader.start()
    decrypt_file(KEY, tmp_path / "enc", tmp_path / "fifo")
    reader.join(10)
    assert received == [b"rows " * 1000]
    assert stat.S_ISFIFO((tmp_path / "fifo").stat().st_mode)


def test_decrypting_to_dev_null_keeps_the_device(tmp_path):
    (tmp_path / "in").write_bytes(b"rows")
    encrypt_file(KEY, tmp_path / "in", tmp_path / "enc")
    decrypt_file(KEY, tmp_path / "enc", "/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def _fifo_fed_with(path, data: bytes):
    import threading

    os.mkfifo(path)

    def write() -> None:
        with open(path, "wb") as handle:
            handle.write(data)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE + TAG_SIZE - 1, 2 * CHUNK_SIZE + 7])
def test_a_fifo_input_is_read_to_its_end(tmp_path, size):
    plain = _data(size)
    writer = _fifo_fed_with(tmp_path / "fifo", encrypt_bytes(KEY, plain))
    decrypt_file(KEY, tmp_path / "fifo", tmp_path / "out")
    writer.join(10)
    assert (tmp_path / "out").read_bytes() == plain
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o600
    writer = _fifo_fed_with(tmp_path / "fifo2", plain)
    encrypt_file(KEY, tmp_path / "fifo2", tmp_path / "enc")
    writer.join(10)
    assert decrypt_bytes(KEY, (tmp_path / "enc").read_bytes()) == plain


@pytest.mark.parametrize("keep", [0, 11, 12, 27])
def test_a_truncated_fifo_is_a_decryption_error_and_writes_nothing(tmp_path, keep):
    writer = _fifo_fed_with(tmp_path / "fifo", encrypt_bytes(KEY, b"rows")[:keep])
    with pytest.raises(DecryptionError, match=f"it is {keep} bytes.*truncated"):
        decrypt_file(KEY, tmp_path / "fifo", tmp_path / "out")
    writer.join(10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


def test_a_tampered_fifo_writes_nothing(tmp_path):
    blob = bytearray(encrypt_bytes(KEY, _data(CHUNK_SIZE * 2)))
    blob[CHUNK_SIZE] ^= 0x01
    writer = _fifo_fed_with(tmp_path / "fifo", bytes(blob))
    with pytest.raises(DecryptionError, match="authentication failed"):
        decrypt_file(KEY, tmp_path / "fifo", tmp_path / "out")
    writer.join(10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]
