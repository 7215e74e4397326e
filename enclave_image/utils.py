"""What the enclave app needs around its analysis: datasets, downloads, AES-256-GCM, uploads.

Runs inside the enclave with the Python standard library, cryptography and requests only.
The enclave OS writes one folder per dataset connected to a port,
``APP_CONFIG_DIR/<port>/<node>/dataset/``, where ``<node>`` is the workflow graph's node name
for that dataset (a short generated id such as ``cxhcfxdvl``, not the dataset's display name).
Each holds ``credentials.bin`` (JSON: ``query_string`` = base64 of the presigned URL's query
string, ``encryption.key`` = 64 hex characters) and ``location.txt`` (the URL without its
query). ``APP_CONFIG_DIR`` is ``/opt/fortanix/enclave-os/app-config/rw`` unless the environment
says otherwise. Encrypted files are ``nonce (12) | ciphertext | tag (16)``, AES-256-GCM, no
associated data.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Callable

DEFAULT_APP_CONFIG_DIR = "/opt/fortanix/enclave-os/app-config/rw"
NONCE_SIZE = 12
TAG_SIZE = 16
KEY_SIZE = 32
CHUNK_SIZE = 1 << 20
TIMEOUT = (10, 300)  # connect, read (seconds)


class AppError(Exception):
    """A failure the app reports in one line and turns into a non-zero exit."""


# --- names and the app-config folder -------------------------------------------------------


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a single safe path component; raise :class:`AppError` if not."""
    if (not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name
            or "\0" in name or os.path.isabs(name)):
        raise AppError(f"unsafe {what} {name!r}: it must be one path component, without '/', "
                       f"'..' or NUL.")
    return name


def safe_join(base: str, *names: str) -> str:
    """``base/name1/name2…`` after checking each name and that the result stays in ``base``."""
    path = base
    for name in names:
        path = os.path.join(path, check_name(name))
    root = os.path.realpath(base)
    real = os.path.realpath(path)
    if real != root and not real.startswith(root + os.sep):
        raise AppError(f"{path} resolves outside {base}; refusing to use it.")
    return path


def app_config_dir() -> str:
    """The app-config folder: ``$APP_CONFIG_DIR`` or the enclave OS's default."""
    return os.environ.get("APP_CONFIG_DIR") or DEFAULT_APP_CONFIG_DIR


@dataclass(frozen=True)
class Dataset:
    """One dataset connected to a port, as the enclave OS wrote it into the app-config folder:
    ``<port>/<node>/dataset/``."""

    port: str
    node: str
    location: str
    query_string: str = field(repr=False)
    key: bytes = field(repr=False)

    @property
    def name(self) -> str:
        """The dataset's name inside the enclave: its workflow node name."""
        return self.node

    @property
    def url(self) -> str:
        """The presigned URL: ``location + "?" + query_string``."""
        return f"{self.location}?{self.query_string}" if self.query_string else self.location


def read_dataset(port: str, node: str, config_dir: str | None = None) -> Dataset:
    """Read the credentials and location of the dataset of node ``node`` on ``port``."""
    folder = safe_join(config_dir or app_config_dir(), port, node, "dataset")
    where = f"dataset {node!r} on port {port!r}"
    try:
        with open(os.path.join(folder, "credentials.bin"), "rb") as fh:
            credentials = json.loads(fh.read().decode("utf-8"))
        with open(os.path.join(folder, "location.txt"), encoding="utf-8") as fh:
            location = fh.read().strip()
    except FileNotFoundError as exc:
        raise AppError(f"{where}: {exc.filename} is missing.") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise AppError(f"{where}: credentials.bin is not JSON.") from None
    try:
        encoded = credentials.get("query_string") or ""
        query = base64.b64decode(encoded, validate=True).decode("utf-8")
        key = parse_key(credentials["encryption"]["key"])
    except (AttributeError, KeyError, TypeError):
        raise AppError(f"{where}: credentials.bin lacks query_string or encryption.key.") from None
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 once decoded
        raise AppError(f"{where}: query_string in credentials.bin is not base64 text.") from None
    except AppError as exc:
        raise AppError(f"{where}: {exc}") from None
    if not location.startswith(("https://", "http://")):
        raise AppError(f"{where}: location.txt does not hold an http(s) URL.")
    return Dataset(port=port, node=node, location=location, query_string=query, key=key)


def list_datasets(port: str, config_dir: str | None = None) -> list[Dataset]:
    """Every dataset connected to ``port`` — each ``<port>/<node>/dataset/`` folder — sorted by
    node name; none if the port has no folder. Entries without a ``dataset/`` folder (another
    kind of connection) are skipped."""
    folder = safe_join(config_dir or app_config_dir(), port)
    if not os.path.isdir(folder):
        return []
    nodes = [node for node in sorted(os.listdir(folder))
             if os.path.isdir(os.path.join(folder, node, "dataset"))]
    return [read_dataset(port, node, config_dir) for node in nodes]


def parse_key(text: object) -> bytes:
    """The 32 bytes of a 64-hex-character key."""
    if not isinstance(text, str) or len(text.strip()) != 2 * KEY_SIZE:
        raise AppError("the encryption key is not 64 hex characters.")
    try:
        return bytes.fromhex(text.strip())
    except ValueError:
        raise AppError("the encryption key is not 64 hex characters.") from None


# --- AES-256-GCM, streaming ----------------------------------------------------------------


def encrypt_stream(key: bytes, src: BinaryIO, dst: BinaryIO) -> int:
    """Encrypt ``src`` into ``dst`` (``nonce | ciphertext | tag``); return the bytes written."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    nonce = secrets.token_bytes(NONCE_SIZE)
    encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    dst.write(nonce)
    written = NONCE_SIZE
    while chunk := src.read(CHUNK_SIZE):
        out = encryptor.update(chunk)
        dst.write(out)
        written += len(out)
    dst.write(encryptor.finalize())
    dst.write(encryptor.tag)
    return written + TAG_SIZE


def decrypt_stream(key: bytes, src: BinaryIO, dst: BinaryIO) -> int:
    """Decrypt ``src`` into ``dst``; raise :class:`AppError` if the tag does not verify.

    ``dst`` receives unauthenticated plaintext before the tag is checked: give it a temporary
    file and use that only when this returns (as :func:`decrypt_file` does).
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    nonce = _read_exact(src, NONCE_SIZE)
    if len(nonce) < NONCE_SIZE:
        raise AppError("the encrypted data is shorter than a nonce and a tag.")
    decryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).decryptor()
    held = b""  # the last TAG_SIZE bytes seen: they may be the tag
    written = 0
    while chunk := src.read(CHUNK_SIZE):
        data = held + chunk
        held = data[-TAG_SIZE:]
        out = decryptor.update(data[:-TAG_SIZE])
        dst.write(out)
        written += len(out)
    if len(held) < TAG_SIZE:
        raise AppError("the encrypted data is shorter than a nonce and a tag.")
    try:
        decryptor.finalize_with_tag(held)
    except InvalidTag:
        raise AppError("authentication failed: wrong key, or the data was modified or "
                       "truncated.") from None
    return written


def decrypt_file(key: bytes, src: str, dst: str) -> str:
    """Decrypt the file ``src`` into ``dst`` (mode 0600), which appears only once verified."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst) or ".", prefix=".decrypt.", suffix=".part")
    try:
        with open(src, "rb") as reader, os.fdopen(fd, "wb") as writer:
            decrypt_stream(key, reader, writer)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dst


def encrypt_file(key: bytes, src: str, dst: str) -> str:
    """Encrypt the file ``src`` into ``dst``."""
    with open(src, "rb") as reader, open(dst, "wb") as writer:
        encrypt_stream(key, reader, writer)
    return dst


# --- HTTP ----------------------------------------------------------------------------------


def _retries() -> int:
    return max(1, int(os.environ.get("APP_HTTP_ATTEMPTS", "3")))


def _backoff() -> float:
    return float(os.environ.get("APP_HTTP_BACKOFF", "1.0"))


def _with_retries(what: str, attempt: Callable[[], None]) -> None:
    """Run ``attempt`` up to ``APP_HTTP_ATTEMPTS`` times; retry connection errors and 5xx."""
    import requests

    attempts = _retries()
    for n in range(1, attempts + 1):
        try:
            attempt()
            return
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else 0
            reason = f"HTTP {status}"
            if status < 500 or n == attempts:
                raise AppError(f"{what} failed: {reason}{_s3_code(exc.response)}.") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            reason = type(exc).__name__
            if n == attempts:
                raise AppError(f"{what} failed after {attempts} attempts: {reason}.") from None
        time.sleep(_backoff() * n)


def _s3_code(response: object) -> str:
    text = getattr(response, "text", "") or ""
    start, end = text.find("<Code>"), text.find("</Code>")
    return f" ({text[start + 6:end]})" if 0 <= start < end and end - start < 80 else ""


#: seconds between two progress reports of a long download
REPORT_EVERY = 5.0


def download(url: str, dst: str, *, what: str = "the download",
             report: Callable[[int, int | None], None] | None = None) -> int:
    """GET ``url`` into the file ``dst``, streaming; return its size in bytes.

    ``report(bytes so far, total bytes or None)`` is called every :data:`REPORT_EVERY` seconds
    while the download lasts."""
    import requests

    size = 0

    def attempt() -> None:
        nonlocal size
        size = 0
        with requests.get(url, stream=True, timeout=TIMEOUT) as response:
            _raise_for_status(response)
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            due = time.monotonic() + REPORT_EVERY
            with open(dst, "wb") as fh:
                for chunk in response.iter_content(CHUNK_SIZE):
                    fh.write(chunk)
                    size += len(chunk)
                    if report is not None and time.monotonic() >= due:
                        report(size, total)
                        due = time.monotonic() + REPORT_EVERY

    _with_retries(what, attempt)
    return size


def upload(url: str, src: str, *, what: str = "the upload") -> None:
    """PUT the file ``src`` to ``url`` (with its Content-Length); raise unless 2xx."""
    import requests

    def attempt() -> None:
        with open(src, "rb") as fh:
            response = requests.put(url, data=fh, timeout=TIMEOUT,
                                    headers={"Content-Length": str(os.fstat(fh.fileno()).st_size)})
        _raise_for_status(response)

    _with_retries(what, attempt)


def _raise_for_status(response) -> None:
    if response.status_code >= 400 and int(response.headers.get("Content-Length") or 0) < 65536:
        response.content  # keep a short error body (S3's <Code>) for the message
    response.raise_for_status()


def _read_exact(src: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = src.read(n - len(data))
        if not part:
            break
        data += part
    return data
