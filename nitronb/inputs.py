"""The input CSV a data owner shares, checked before it is encrypted: a file the enclave's app
cannot read is refused in one line before anyone approves anything.

What is checked, with bounded memory whatever the file's size:

- the file exists and is not empty, and the declared encoding is one Python knows;
- the header — the first non-blank record of the first :data:`SAMPLE_BYTES` — parses as
  comma-separated values (the app reads them with pandas' defaults) and names every required
  column; at least one record follows it;
- every byte of the file decodes in the declared encoding, and every quoted field is closed:
  both are checked while the file streams into the encryption (:func:`encrypt_csv`), so that the
  file is read once. The quote rule is RFC 4180's: a field holding a ``"`` is enclosed in quotes
  and each ``"`` inside it is doubled, so a well-formed file holds an even number of ``"``; an
  odd number means a quoted field never closes, and the app would read the rest of the file into
  it (pandas: "EOF inside string"). Counting costs one ``bytes.count`` per chunk.

Other malformed records are parsed by the app, not here: they show as the app's own error in
the run result.

The app reads UTF-8. A file in another encoding is transcoded to UTF-8 as it streams into the
encryption, and a UTF-8 byte-order mark is dropped, so the app always reads plain UTF-8.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from nitronb.errors import InputDataError

#: the columns the walk-through's app (``enclave_image/describe.py``) reads
REQUIRED_COLUMNS = ("DESCRIPTION",)
#: how much of the file the header check reads
SAMPLE_BYTES = 1 << 20
CHUNK_SIZE = 1 << 20


@dataclass(frozen=True)
class CsvCheck:
    """What :func:`check_csv` found: the file, its encoding (Python's codec name), its columns,
    whether it starts with a UTF-8 byte-order mark, and its size in bytes."""

    path: Path
    encoding: str
    columns: tuple[str, ...]
    bom: bool
    size: int

    @property
    def transcoded(self) -> bool:
        """Whether the bytes the app receives differ from the file's (re-encoded or BOM dropped)."""
        return self.encoding != "utf-8" or self.bom


def column_names(text: str) -> list[str]:
    """Column names from text, as ``papermill -p required_columns …`` passes them: a JSON or
    YAML-style list (``["A", "B"]``, ``[A, B]``, ``[]``) or names separated by commas."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [name.strip().strip("'\"") for name in text.split(",") if name.strip()]


def check_csv(path: str | os.PathLike[str], *, encoding: str = "utf-8",
              required_columns: Iterable[str] = REQUIRED_COLUMNS) -> CsvCheck:
    """Check the header and the first record of the CSV at ``path`` (see the module's text).

    Raises :class:`~nitronb.errors.InputDataError` with a one-line message and hint when the
    file is missing or empty, the encoding unknown or wrong, a required column missing, or no
    record follows the header.
    """
    path = Path(path)
    codec = _codec(encoding)
    check_path(path)
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        sample = handle.read(SAMPLE_BYTES)
    if not sample.strip():
        raise InputDataError(f"the input CSV {path.name} is empty.", path=path,
                             hint=_needs(required_columns))
    bom = codec == "utf-8" and sample.startswith(codecs.BOM_UTF8)
    complete = len(sample) == size
    decoder = codecs.getincrementaldecoder("utf-8-sig" if codec == "utf-8" else codec)()
    try:
        text = decoder.decode(sample, final=complete)
    except UnicodeDecodeError as exc:
        raise _not_encoded(path, codec, exc, sample) from None
    records = _records(text, path)
    header = next(records, None)
    if header is None:
        raise InputDataError(f"the input CSV {path.name} has no header line.", path=path,
                             hint=_needs(required_columns))
    first_row = next(records, None)
    if first_row is None and not complete:
        raise InputDataError(f"the header of {path.name} is longer than "
                             f"{SAMPLE_BYTES // (1 << 20)} MiB: this is not a CSV file the app "
                             "can read.", path=path, hint=_needs(required_columns))
    missing = [c for c in required_columns if c not in header]
    if missing:
        raise InputDataError(
            f"{path.name} has no column {', '.join(missing)} (its header: {_shown(header)}).",
            path=path, hint=_hint_missing(header, required_columns))
    if first_row is None:
        raise InputDataError(f"{path.name} has a header but no rows: the app would describe an "
                             "empty column.", path=path,
                             hint="Share a CSV with at least one row of data.")
    return CsvCheck(path, codec, tuple(header), bom, size)


def check_path(path: Path) -> None:
    """Raise :class:`~nitronb.errors.InputDataError` unless ``path`` is a file this process may
    read (it is not opened)."""
    if not path.exists():
        raise InputDataError(f"the input CSV {path} does not exist.", path=path,
                             hint="Check the path (a relative one is read from the folder the "
                                  "command or kernel runs in).")
    if path.is_dir():
        raise InputDataError(f"the input CSV {path} is a folder.", path=path,
                             hint="Name the CSV file itself.")
    if not os.access(path, os.R_OK):
        raise InputDataError(f"the input CSV {path} is not readable by this user.", path=path,
                             hint="Check its permissions.")


def encrypt_csv(key: bytes | str, check: CsvCheck, target: str | os.PathLike[str]) -> int:
    """Encrypt the checked CSV into ``target`` (atomically, mode 0600) as UTF-8 without a
    byte-order mark, checking every byte against the declared encoding on the way.

    Returns the number of plaintext bytes encrypted (the file's size unless transcoded).
    Raises :class:`~nitronb.errors.InputDataError` — and leaves ``target`` as it was — when a
    byte does not decode, or when a quoted field never closes (an odd number of ``"``, see the
    module's text).
    """
    from nitronb.crypto import encrypt_stream

    target = Path(target)
    tmp = target.with_name(f".{target.name}.{os.urandom(4).hex()}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(check.path, "rb") as raw, os.fdopen(fd, "wb") as out:
            reader = _Utf8Reader(raw, check)
            encrypt_stream(key, reader, out, size=check.size)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return reader.written


class _Utf8Reader(io.RawIOBase):
    """The file's text as UTF-8 bytes without a BOM, decoded strictly as it is read; at the
    end, refused if it holds an odd number of ``"`` (a quoted field never closes)."""

    def __init__(self, raw: io.BufferedReader, check: CsvCheck) -> None:
        self._raw, self._check = raw, check
        self._decoder = codecs.getincrementaldecoder(
            "utf-8-sig" if check.encoding == "utf-8" else check.encoding)()
        self._pending = b""
        self._offset = 0  # bytes of the file read so far
        self._done = False
        self.written = 0
        self._quotes = 0  # '"' in the UTF-8 bytes so far (0x22 is never part of another character)
        self._last_quoted: tuple[bytes, int] | None = None  # a chunk with '"', its file offset

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending and not self._done:
            self._fill()
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self.written += n
        return n

    def _fill(self) -> None:
        chunk = self._raw.read(CHUNK_SIZE)
        final = not chunk
        try:
            text = self._decoder.decode(chunk, final=final)
        except UnicodeDecodeError as exc:
            raise _not_encoded(self._check.path, self._check.encoding, exc, chunk,
                               offset=self._offset,
                               lines=_lines_before(self._check.path, self._offset)) from None
        if self._check.transcoded:
            self._pending = text.encode("utf-8")
        else:
            self._pending = chunk  # already UTF-8 without a BOM: pass the bytes on as they are
        # find (memchr) skips a chunk without quotes at a fraction of count's cost
        if self._pending.find(b'"') != -1:
            self._quotes += self._pending.count(b'"')
            self._last_quoted = (self._pending, self._offset)
        self._offset += len(chunk)
        self._done = final
        if final and self._quotes % 2:
            raise self._unclosed()

    def _unclosed(self) -> InputDataError:
        """The refusal of a file with an odd number of quotes, naming the line of the last one
        (where, counting quotes in pairs, the field that never closes opens)."""
        data, offset = self._last_quoted
        at = data.rfind(b'"')
        line = _lines_before(self._check.path, offset) + data.count(b"\n", 0, at) + 1
        name = self._check.path.name
        return InputDataError(
            f"{name} has a quoted field that never closes: it holds an odd number of '\"' "
            f"({self._quotes:,}), the last on line {line:,}.",
            path=self._check.path,
            hint="In CSV a field holding '\"' is enclosed in quotes and each '\"' inside it is "
                 "doubled (\"5\"\" pipe\"); close the field or double the quote, or export the "
                 "file again as CSV.")


def _lines_before(path: Path, offset: int) -> int:
    """The line feeds in the first ``offset`` bytes of the file (for an error's line number:
    counted only when there is an error to report)."""
    lines = 0
    with open(path, "rb") as handle:
        while offset > 0:
            chunk = handle.read(min(CHUNK_SIZE, offset))
            if not chunk:
                break
            lines += chunk.count(b"\n")
            offset -= len(chunk)
    return lines


def codec_name(encoding: str) -> str:
    """Python's name of the codec for ``encoding`` (``utf-8`` for ``utf-8-sig`` too); raises
    :class:`~nitronb.errors.InputDataError` for an encoding Python does not know."""
    return _codec(encoding)


def _codec(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except (LookupError, TypeError):
        raise InputDataError(f"unknown encoding {encoding!r}.",
                             hint="Name one Python knows, e.g. utf-8, cp1252 or latin-1.") from None
    return "utf-8" if name == "utf-8-sig" else name


def _records(text: str, path: Path):
    """The non-blank records of ``text`` (the csv module's reading of comma-separated values)."""
    try:
        for record in csv.reader(io.StringIO(text, newline="")):
            if record and any(field.strip() for field in record):
                yield record
    except csv.Error as exc:
        raise InputDataError(f"{path.name} is not comma-separated values the app can read: "
                             f"{exc}.", path=path,
                             hint="Check the file, or export it again as CSV.") from None


def _not_encoded(path: Path, codec: str, exc: UnicodeDecodeError, data: bytes, *,
                 offset: int = 0, lines: int = 0) -> InputDataError:
    where = offset + exc.start
    line = lines + data.count(b"\n", 0, exc.start) + 1
    bad = data[exc.start:exc.end][:4].hex(" ").upper()
    return InputDataError(
        f"{path.name} is not {codec} text: byte {where:,} (line {line}) is 0x{bad}, which "
        f"{codec} cannot decode.", path=path,
        hint="Set the encoding parameter of 02_encrypt_input to the file's encoding (e.g. "
             "-p encoding cp1252), or save the file as UTF-8.")


def _needs(columns: Iterable[str]) -> str:
    names = ", ".join(columns)
    if not names:
        return "The app needs a header line and at least one row."
    return f"The app needs a header line with the column(s) {names} and at least one row."


def _shown(header: list[str], limit: int = 8) -> str:
    shown = ", ".join(header[:limit])
    return shown + (f", … ({len(header)} columns)" if len(header) > limit else "")


def _hint_missing(header: list[str], required: Iterable[str]) -> str:
    if len(header) == 1 and any(sep in header[0] for sep in ";\t|"):
        return ("The app reads comma-separated values; this header has no comma. Export the "
                "file with commas between the columns.")
    return (f"The app reads the column(s) {', '.join(required)}; rename the column in the file, "
            "or set required_columns if your app reads others.")
