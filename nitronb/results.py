"""The run result (DESIGN §3.4): ``{"returncode", "stdout": base64, "stderr": base64}``,
encrypted with the output dataset's key in the file format."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from nitronb.errors import NitronbError


class RunResultError(NitronbError):
    """A decrypted run result is not the JSON the enclave app writes."""


@dataclass(frozen=True)
class RunResult:
    """What the enclave's app did: its exit code and its output streams."""

    returncode: int
    stdout: bytes
    stderr: bytes
    #: the input files as the app names them (``input/<node>``) → the dataset each one holds;
    #: for display only (it is not part of the result's JSON)
    inputs: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def text(self) -> str:
        """The app's stdout as text."""
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def labelled_text(self) -> str:
        """The app's stdout with each input file's line labelled with its dataset:
        ``input/cxhcfxdvl`` reads ``input/cxhcfxdvl (dataset my-data)``."""
        if not self.inputs:
            return self.text
        return "".join(f"{line.rstrip(chr(10))} (dataset {self.inputs[line.strip()]})\n"
                       if line.strip() in self.inputs else line
                       for line in self.text.splitlines(keepends=True))

    def stderr_tail(self, lines: int = 20) -> str:
        """The last ``lines`` non-blank lines of the app's stderr, as text."""
        kept = [line for line in self.stderr.decode("utf-8", errors="replace").splitlines()
                if line.strip()]
        return "\n".join(kept[-lines:])

    def error_line(self) -> str:
        """One line: the app's exit code and the last line of its stderr (for a Python app, the
        exception, e.g. pandas' ``ValueError: Usecols do not match columns …``)."""
        last = self.stderr_tail(1).strip()
        if self.ok:
            return "the enclave's app exited with code 0."
        return (f"the enclave's app exited with code {self.returncode}: "
                f"{last or 'it wrote nothing to stderr'}")

    def report(self, lines: int = 20) -> str:
        """What the output owner reads: the app's stdout if it succeeded; else the error line,
        then the tail of its stderr and whatever it printed to stdout."""
        if self.ok:
            return self.labelled_text
        parts = [self.error_line()]
        if self.stderr_tail(lines):
            parts.append(f"its stderr (last lines):\n{self.stderr_tail(lines)}")
        if self.text.strip():
            parts.append(f"its stdout:\n{self.labelled_text.rstrip()}")
        return "\n\n".join(parts)

    def to_json(self) -> bytes:
        return json.dumps({
            "returncode": self.returncode,
            "stdout": base64.b64encode(self.stdout).decode("ascii"),
            "stderr": base64.b64encode(self.stderr).decode("ascii"),
        }).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str) -> "RunResult":
        try:
            doc = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RunResultError(f"the run result is not JSON ({exc}).") from None
        if not isinstance(doc, dict) or not {"returncode", "stdout", "stderr"} <= doc.keys():
            raise RunResultError("the run result must be an object with returncode, stdout and "
                                 "stderr.")
        if not isinstance(doc["returncode"], int) or isinstance(doc["returncode"], bool):
            raise RunResultError("the run result's returncode is not an integer.")
        try:
            out = base64.b64decode(doc["stdout"], validate=True)
            err = base64.b64decode(doc["stderr"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise RunResultError("the run result's stdout or stderr is not base64.") from None
        return cls(doc["returncode"], out, err)


def decrypt_run_result(key: bytes | str, source: str | os.PathLike[str] | bytes, *,
                       name: str | None = None) -> RunResult:
    """Decrypt an encrypted run result (a path or the bytes) with the output owner's key.

    ``name`` is how errors name the source (default: its path, or "the run result"); raises
    :class:`~nitronb.errors.DecryptionError` or :class:`RunResultError`."""
    from nitronb.crypto import decrypt_bytes

    if isinstance(source, (bytes, bytearray)):
        return RunResult.from_json(decrypt_bytes(key, bytes(source),
                                                 name=name or "the run result"))
    path = Path(source)
    return RunResult.from_json(decrypt_bytes(key, path.read_bytes(), name=name or str(path)))


_ROW = re.compile(r"^(count|unique|top|freq)\s+(.*?)\s*$")


def describe_summary(text: str) -> dict[str, dict[str, str | int]]:
    """Parse the ``describe()`` blocks the tutorial's app prints, one per input file.

    Returns ``{path: {"count": int, "unique": int, "top": str, "freq": int}}``; a block starts
    with the dataset's path on a line of its own. Plain ``describe()`` output, with no path
    before it (an app of its own may print only that), gives blocks named ``describe() 1``, …
    """
    summary: dict[str, dict[str, str | int]] = {}
    current: dict[str, str | int] | None = None
    for line in text.splitlines():
        match = _ROW.match(line)
        if match and (current is None or match.group(1) in current):
            current = summary.setdefault(f"describe() {len(summary) + 1}", {})
        if match:
            name, value = match.groups()
            current[name] = int(value) if name != "top" and value.isdigit() else value
        elif line.strip() and not line.startswith(("Name:", "dtype:")) and not match:
            current = summary.setdefault(line.strip(), {})
    return {path: fields for path, fields in summary.items() if fields}


_NAME = re.compile(r"^Name: (.+), dtype: \w+$")


def described_column(text: str) -> str | None:
    """The column the app's first ``describe()`` block describes (its ``Name:`` line), if any."""
    for line in text.split("\n"):
        match = _NAME.match(line.rstrip("\r"))
        if match:
            return match.group(1)
    return None


_COUNTS_HEADER = re.compile(r"^most frequent values of (\S+) in (.+):$")
_COUNT_ROW = re.compile(r"^\s*(\d+)  (.+?)\s*$")
_ESCAPED = re.compile(r"\\([\\nr])")


def _unescape(value: str) -> str:
    """Undo the app's escaping of a value (``\\\\``, ``\\n``, ``\\r``, see
    ``enclave_image/describe.py``)."""
    return _ESCAPED.sub(lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), "\\"), value)


def _count_blocks(text: str):
    """``(column, path, value, count)`` for each row of the app's "most frequent values"
    blocks. Lines end at LF only: a value may hold other separators (U+2028 …)."""
    block = None
    for line in text.split("\n"):
        line = line.rstrip("\r")
        header = _COUNTS_HEADER.match(line)
        if header:
            block = header.groups()
            continue
        match = _COUNT_ROW.match(line) if block else None
        if match:
            yield block[0], block[1], _unescape(match.group(2)), int(match.group(1))
        else:
            block = None


def value_counts(text: str) -> dict[str, int]:
    """The "most frequent values" blocks the tutorial's app prints after ``describe()``,
    added up over the input files: ``{value: count}``, each value as the CSV holds it (the
    app writes a value's backslashes, line feeds and carriage returns escaped, one value a
    line; this undoes it)."""
    counts: dict[str, int] = {}
    for _, _, value, count in _count_blocks(text):
        counts[value] = counts.get(value, 0) + count
    return counts


def counted_columns(text: str) -> list[tuple[str, str]]:
    """The ``(column, path)`` of each "most frequent values" block of the app's output, in
    order (e.g. ``[("DESCRIPTION", "input/cxhcfxdvl")]``)."""
    seen: list[tuple[str, str]] = []
    for column, path, _, _ in _count_blocks(text):
        if (column, path) not in seen:
            seen.append((column, path))
    return seen
