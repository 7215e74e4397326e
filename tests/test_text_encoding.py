"""Every text file nitronb reads or writes names its encoding: the locale's is never used.

Under ``LC_ALL=C`` (a container, a CI runner, a cron job) Python's default text encoding is
ASCII, so a notebook, a README or a log line with one ``…`` or ``é`` would fail to read or write.
The rule, checked on the syntax tree of every module under ``nitronb/``:

- ``open``, ``io.open``, ``codecs.open``, ``os.fdopen`` and a ``.open()`` method (``Path.open``)
  in text mode need ``encoding=``; a mode given as a string constant containing ``b`` is binary
  and fine. ``.open()`` of ``tarfile``, ``zipfile``, ``os`` (file descriptors) and of a class
  (``Service.open``) is not a text file and is not checked.
- ``Path.read_text`` and ``Path.write_text`` need an encoding (keyword or positional).
- ``subprocess.run``/``Popen``/``check_output``/``call``/``check_call`` in text mode
  (``text=True``, ``universal_newlines=True`` or ``errors=``) need ``encoding=``;
  ``subprocess.getoutput``/``getstatusoutput`` always decode with the locale and are refused.
- ``io.TextIOWrapper``, ``tempfile.*TemporaryFile`` in a text mode and ``logging.FileHandler``
  need ``encoding=``.
- An encoding given as the constant ``None`` or ``"locale"`` is the locale's and is refused.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nitronb

PACKAGE = Path(nitronb.__file__).resolve().parent
MODULES = sorted(PACKAGE.rglob("*.py"))

_NOT_TEXT_OPENERS = {"os", "tarfile", "zipfile", "webbrowser", "gzip", "bz2", "lzma", "shelve",
                     "dbm", "wave", "sqlite3"}
_SUBPROCESS = {"run", "Popen", "check_output", "call", "check_call"}
_TEMPFILES = {"TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile"}


def _name(node: ast.AST) -> str | None:
    """``a.b.c`` for a dotted name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _name(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def _has_kwargs(call: ast.Call) -> bool:
    return any(keyword.arg is None for keyword in call.keywords)  # **options: not decidable


def _argument(call: ast.Call, position: int, name: str) -> ast.expr | None:
    if len(call.args) > position:
        return call.args[position]
    return _keyword(call, name)


def _encoding_problem(value: ast.expr | None) -> str | None:
    if value is None:
        return "no encoding"
    if isinstance(value, ast.Constant) and (value.value is None or value.value == "locale"):
        return f"encoding={value.value!r} is the locale's"
    return None


def _text_mode(mode: ast.expr | None, default: str) -> bool:
    """True unless the mode is known to be binary (a constant containing ``b``)."""
    if mode is None:
        return "b" not in default
    if isinstance(mode, ast.Constant) and isinstance(mode.value, str):
        return "b" not in mode.value
    return True  # a mode computed at run time: name the encoding to be sure


def _is_true(value: ast.expr | None) -> bool:
    return value is not None and not (isinstance(value, ast.Constant) and not value.value)


def _problem(call: ast.Call) -> str | None:
    """What is wrong with ``call``, or None."""
    func = call.func
    dotted = _name(func) or ""
    method = func.attr if isinstance(func, ast.Attribute) else None
    receiver = _name(func.value) if isinstance(func, ast.Attribute) else None
    if _has_kwargs(call):
        return None

    if dotted in ("open", "io.open", "codecs.open"):
        if not _text_mode(_argument(call, 1, "mode"), "r"):
            return None
        problem = _encoding_problem(_argument(call, 3, "encoding") if dotted != "codecs.open"
                                    else _argument(call, 2, "encoding"))
        return problem and f"{dotted}() in text mode: {problem}"
    if dotted == "os.fdopen":
        if not _text_mode(_argument(call, 1, "mode"), "r"):
            return None
        problem = _encoding_problem(_argument(call, 3, "encoding"))
        return problem and f"os.fdopen() in text mode: {problem}"
    if method == "open" and receiver is not None and (
            receiver.split(".")[0] in _NOT_TEXT_OPENERS or receiver.split(".")[-1][:1].isupper()):
        return None
    if method == "open":
        if not _text_mode(_argument(call, 0, "mode"), "r"):
            return None
        problem = _encoding_problem(_argument(call, 2, "encoding"))
        return problem and f".open() in text mode: {problem}"
    if method == "read_text":
        problem = _encoding_problem(_argument(call, 0, "encoding"))
        return problem and f".read_text(): {problem}"
    if method == "write_text":
        problem = _encoding_problem(_argument(call, 1, "encoding"))
        return problem and f".write_text(): {problem}"
    if dotted in ("subprocess.getoutput", "subprocess.getstatusoutput"):
        return f"{dotted}() decodes with the locale; use subprocess.run(..., encoding=...)"
    if dotted.startswith("subprocess.") and dotted.split(".", 1)[1] in _SUBPROCESS:
        text = (_is_true(_keyword(call, "text")) or _is_true(_keyword(call, "universal_newlines"))
                or _keyword(call, "errors") is not None)
        if not text and _keyword(call, "encoding") is None:
            return None
        problem = _encoding_problem(_keyword(call, "encoding"))
        return problem and f"{dotted}() in text mode: {problem}"
    if dotted in ("io.TextIOWrapper", "TextIOWrapper"):
        problem = _encoding_problem(_argument(call, 1, "encoding"))
        return problem and f"{dotted}(): {problem}"
    if dotted.split(".")[-1] in _TEMPFILES and dotted.split(".")[0] in ("tempfile",
                                                                        *_TEMPFILES):
        if not _text_mode(_argument(call, 0 if "Spooled" not in dotted else 1, "mode"), "w+b"):
            return None
        problem = _encoding_problem(_keyword(call, "encoding"))
        return problem and f"{dotted}() in text mode: {problem}"
    if dotted in ("logging.FileHandler", "FileHandler"):
        problem = _encoding_problem(_argument(call, 2, "encoding"))
        return problem and f"{dotted}(): {problem}"
    return None


def violations(source: str, filename: str = "<source>") -> list[str]:
    """``file:line: what`` for each text-file call in ``source`` that leaves the encoding
    implicit, in line order."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call):
            problem = _problem(node)
            if problem:
                found.append((node.lineno, node.col_offset, f"{filename}:{node.lineno}: {problem}"))
    return [text for _, _, text in sorted(found)]


@pytest.mark.parametrize("module", MODULES, ids=lambda path: path.relative_to(PACKAGE).as_posix())
def test_every_text_file_names_its_encoding(module):
    found = violations(module.read_text(encoding="utf-8"), module.relative_to(PACKAGE.parent)
                       .as_posix())
    assert not found, "text files opened with the locale's encoding:\n" + "\n".join(found)


# --- the rule itself ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [
    "open(path)",
    "open(path, 'w')",
    "open(path, mode='a+')",
    "open(path, mode)",
    "open(path, 'r', encoding=None)",
    "io.open(path, 'rt')",
    "codecs.open(path, 'r')",
    "os.fdopen(fd, 'w')",
    "Path(p).open()",
    "path.open('w')",
    "path.read_text()",
    "path.read_text(errors='replace')",
    "path.write_text(text)",
    "path.write_text(text, encoding='locale')",
    "subprocess.run(argv, text=True)",
    "subprocess.run(argv, universal_newlines=True)",
    "subprocess.check_output(argv, errors='replace')",
    "subprocess.Popen(argv, text=True, stdout=subprocess.PIPE)",
    "subprocess.getoutput('ls')",
    "io.TextIOWrapper(raw)",
    "tempfile.NamedTemporaryFile('w')",
    "tempfile.SpooledTemporaryFile(100, 'w+')",
    "logging.FileHandler(path)",
])
def test_the_rule_refuses_the_locale(code):
    assert violations(code)


@pytest.mark.parametrize("code", [
    "open(path, 'rb')",
    "open(path, mode='ab', buffering=0)",
    "open(path, 'xb')",
    "open(path, encoding='utf-8')",
    "open(path, 'w', encoding='utf-8', newline='')",
    "open(path, 'r', -1, 'utf-8')",
    "os.fdopen(fd, 'wb')",
    "os.open(path, os.O_RDONLY)",
    "path.open('rb')",
    "path.open(encoding='utf-8')",
    "path.read_text(encoding='utf-8')",
    "path.read_text('utf-8')",
    "path.write_text(text, encoding='utf-8')",
    "path.write_text(text, 'ascii')",
    "path.read_bytes().decode()",
    "subprocess.run(argv, capture_output=True)",
    "subprocess.run(argv, text=True, encoding='utf-8')",
    "subprocess.run(argv, text=False)",
    "subprocess.run(argv, encoding='utf-8', errors='replace')",
    "tarfile.open(fileobj=spool, mode='w')",
    "Service.open(workspace)",
    "io.TextIOWrapper(raw, encoding='utf-8')",
    "tempfile.NamedTemporaryFile()",
    "tempfile.SpooledTemporaryFile(max_size=10)",
    "tempfile.NamedTemporaryFile('w', encoding='utf-8')",
    "logging.FileHandler(path, encoding='utf-8')",
    "open(path, **options)",
])
def test_the_rule_accepts_explicit_encodings_and_binary_modes(code):
    assert violations(code) == []


# --- the notebooks' sanitize file ---------------------------------------------------------------

SANITIZE = PACKAGE.parent / "notebooks" / "sanitize.cfg"


def test_the_sanitize_file_reads_the_same_in_any_locale():
    SANITIZE.read_bytes().decode("ascii")  # nbval opens it with the locale's encoding


@pytest.mark.parametrize("shown, sanitized", [
    ("key 63F0\u2026D24A saved", "key XXXX...XXXX saved"),
    ("PCR0 e72a46ca80a260fb\u20269dd54e7c", "PCR0 PCR..."),
    ("query WC1BbXotQWxn\u2026ZW5kIQ== (212 characters)", "query BASE64... (N characters)"),
])
def test_the_sanitize_file_still_matches_the_ellipsis(shown, sanitized):
    import re

    from nbval.plugin import get_sanitize_patterns

    text = shown
    for regex, replace in get_sanitize_patterns(SANITIZE.read_text(encoding="ascii")):
        text = re.sub(regex, replace, text)
    assert text == sanitized
