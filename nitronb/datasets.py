"""Dataset definitions (DESIGN §2.4): what a data or output owner registers with the manager.

A definition holds the location (the presigned URL without its query) and the credentials JSON
(DESIGN §3.2: the base64 query string and the AES key). Saved definitions contain the key, so
they are written with mode 0600, and their display forms show the key redacted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from nitronb.s3.presign import credentials_json, split_url, url_from_credentials

from nitronb._files import write_atomic
from nitronb.errors import NitronbError, UnsafeNameError, ValidationError
from nitronb.keys import fingerprint, parse_key

MAX_LONG_DESCRIPTION = 256 * 1024


def check_name(name: str, *, what: str = "dataset name") -> str:
    """A name that becomes one folder of the enclave's app-config tree: no '/', '..', NUL."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name
            or "\\" in name or "\x00" in name or name.startswith("-") or len(name) > 128):
        raise UnsafeNameError(str(name), what=what)
    return name


SAMPLE_DATASET = {"name": "synthea-conditions",
                  "description": "Synthea synthetic conditions (April 2020 sample)",
                  "labels": {"source": "synthea"}}


def name_from_file(path: str | os.PathLike[str], *, fallback: str = "input") -> str:
    """A dataset name from a file's name: its stem, with every run of characters other than
    letters, digits, ``.``, ``_`` and ``-`` made one ``-`` (``my data (2024).csv`` →
    ``my-data-2024``), at most 64 characters; ``fallback`` if nothing is left."""
    import re

    name = re.sub(r"[^\w.-]+", "-", Path(path).stem).strip("-.")[:64].strip("-.")
    return check_name(name) if name else fallback


def input_defaults(path: str | os.PathLike[str], *, sample: bool = False,
                   avoid: tuple[str, ...] = ()) -> dict:
    """The input dataset's default ``name``, ``description`` and ``labels`` for the CSV at
    ``path``: the shipped sample's own (``synthea-conditions``) if ``sample``, else ones named
    after the file (see :func:`name_from_file`); a name in ``avoid`` gets ``-input`` added."""
    if sample:
        return {**SAMPLE_DATASET, "labels": dict(SAMPLE_DATASET["labels"])}
    name = name_from_file(path)
    if name in avoid:
        name = f"{name}-input"
    file_name = Path(path).name
    return {"name": name, "description": f"the data owner's {file_name}",
            "labels": {"file": file_name}}


def _http_location(url: str) -> str:
    """The location part of an http(s) URL; other schemes are refused."""
    location, _ = split_url(url)
    if urlsplit(location).scheme not in ("http", "https"):
        raise ValidationError(f"{location[:60]!r} is not an http(s) URL.")
    return location


@dataclass(repr=False)
class Dataset:
    """One dataset definition, as the manager receives it. Its ``repr`` and ``str`` show the
    name, the location, the key's fingerprint and the query string shortened, never whole."""

    name: str
    location: str
    credentials: dict
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    long_description: str = ""

    def __post_init__(self) -> None:
        check_name(self.name)
        for what, text in (("location", self.location), ("description", self.description),
                           ("long description", self.long_description)):
            if not isinstance(text, str):
                raise ValidationError(f"dataset {self.name}: the {what} must be text, not "
                                      f"{type(text).__name__}.")
        if "?" in self.location:
            raise ValidationError(f"dataset {self.name}: the location must not carry the query "
                                  "string; it travels in the credentials.")
        _http_location(self.location)
        creds = self.credentials
        encryption = creds.get("encryption") if isinstance(creds, dict) else None
        if (not isinstance(creds, dict) or not isinstance(creds.get("query_string"), str)
                or not isinstance(encryption, dict) or "key" not in encryption):
            raise ValidationError(f"dataset {self.name}: credentials must be "
                                  '{"query_string": …, "encryption": {"key": …}}.')
        parse_key(creds["encryption"]["key"], source=f"the key of dataset {self.name}")
        if not isinstance(self.labels, dict):
            raise ValidationError(f"dataset {self.name}: labels are text keys and values.")
        for k, v in self.labels.items():
            if not isinstance(k, str) or not isinstance(v, str) or not k:
                raise ValidationError(f"dataset {self.name}: labels are text keys and values.")

    @classmethod
    def from_url(cls, name: str, url: str, key: str, **fields) -> "Dataset":
        """A definition from a presigned URL and the dataset's key."""
        return cls(name=name, location=_http_location(url), credentials=credentials_json(url, key),
                   **fields)

    @property
    def url(self) -> str:
        return url_from_credentials(self.location, self.credentials)

    def payload(self) -> dict:
        """What the manager's ``POST /v1/datasets`` takes (credentials included)."""
        return {"name": self.name, "description": self.description, "labels": dict(self.labels),
                "location": self.location, "long_description": self.long_description,
                "credentials": self.credentials}

    def redacted(self) -> dict:
        """A display form: the key's fingerprint only, the query string shortened."""
        shown = self.payload()
        shown["credentials"] = {
            "query_string": _shorten(self.credentials["query_string"]),
            "encryption": {"key": "<redacted>",
                           "key_fingerprint": fingerprint(self.credentials["encryption"]["key"])}}
        return shown

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, location={self.location!r}, "
                f"key_fingerprint={fingerprint(self.credentials['encryption']['key'])!r}, "
                f"query_string={_shorten(self.credentials['query_string'])!r})")

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the definition as JSON, mode 0600 (it holds the key), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(self.payload(), indent=2).encode("utf-8"), mode=0o600)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Dataset":
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NitronbError(f"dataset definition {path} does not exist.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValidationError(f"dataset definition {path} is not JSON: {exc}.") from None
        known = {f.name for f in fields(cls)}
        if not isinstance(doc, dict) or not {"name", "location", "credentials"} <= set(doc):
            raise ValidationError(f"dataset definition {path} is not a JSON object with name, "
                                  "location and credentials.")
        if set(doc) - known:
            raise ValidationError(f"dataset definition {path} has unknown fields "
                                  f"{', '.join(sorted(set(doc) - known))}.")
        return cls(**doc)


def _shorten(query: str) -> str:
    """A query string for display: its first 8 and last 4 characters, never the whole."""
    query = str(query)
    return f"{query[:8]}…{query[-4:]}" if len(query) > 16 else "…"


def parse_labels(text: str | dict) -> dict[str, str]:
    """Labels from a dict, a JSON object, or ``key=value`` pairs (one a line, or ``;``-separated);
    blank entries are skipped."""
    if isinstance(text, str) and text.strip().startswith("{"):
        try:
            text = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"the labels are not a JSON object: {exc}.") from None
    if isinstance(text, dict):
        if not all(isinstance(k, str) and k and isinstance(v, str) for k, v in text.items()):
            raise ValidationError("labels are text keys and text values.")
        return dict(text)
    labels: dict[str, str] = {}
    for pair in (p for line in str(text).splitlines() for p in line.split(";")):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValidationError(f"label {pair.strip()!r} is not key=value.",
                                  hint="Write one label per line, like source=synthea.")
        if key in labels:
            raise ValidationError(f"label {key!r} is given twice.")
        labels[key] = value
    return labels


def load_long_description(source: str) -> str:
    """Markdown from a file path, an http(s) URL, or the text itself.

    Raises :class:`~nitronb.errors.NitronbError` with a one-line reason ("connection refused",
    "HTTP 404 Not Found", …) when the URL cannot be fetched, and
    :class:`~nitronb.errors.ValidationError` when its body is over
    :data:`MAX_LONG_DESCRIPTION` bytes. A path that exists is read by
    :func:`read_long_description_file` (same limits and errors). A URL's query string is never
    shown.
    """
    if source.startswith(("http://", "https://")):
        import requests

        shown = _url_shown(source)
        try:
            reply = requests.get(source, timeout=15, stream=True)
            reply.raise_for_status()
            body = reply.raw.read(MAX_LONG_DESCRIPTION + 1, decode_content=True)
        except requests.RequestException as exc:
            raise NitronbError(f"cannot fetch URL {shown}: {_fetch_failure(exc)}.",
                               hint="Check the URL, or save the Markdown to a file and load "
                                    "that.") from None
        if len(body) > MAX_LONG_DESCRIPTION:
            raise ValidationError(f"the long description at {shown} is over "
                                  f"{MAX_LONG_DESCRIPTION // 1024} KiB.")
        return body.decode("utf-8-sig", errors="replace")  # a leading BOM is no text
    if len(source) < 4096 and "\n" not in source and os.path.lexists(Path(source).expanduser()):
        return read_long_description_file(source)
    return source


def read_long_description_file(source: str) -> str:
    """The text of the Markdown file ``source`` (a path, ``~`` expanded): a regular file of at
    most :data:`MAX_LONG_DESCRIPTION` bytes, UTF-8 (a byte-order mark dropped).

    Raises :class:`~nitronb.errors.ValidationError`, one line naming the file, when it is
    missing, a folder, a pipe or a device, unreadable, over the limit, or not UTF-8.
    """
    path = Path(source).expanduser()
    hint = "Check the path (relative paths start in the notebook's folder), or paste the text."
    if path.is_dir():
        raise ValidationError(f"{source} is a folder, not a Markdown file.", hint=hint)
    if path.exists() and not path.is_file():  # a pipe or a device would block or never end
        raise ValidationError(f"{source} is not a regular file.", hint=hint)
    try:
        with open(path, "rb") as file:
            body = file.read(MAX_LONG_DESCRIPTION + 1)
    except FileNotFoundError:
        raise ValidationError(f"there is no file {source}.", hint=hint) from None
    except OSError as exc:
        raise ValidationError(f"cannot read {source}: {exc.strerror or exc}.", hint=hint) from None
    if len(body) > MAX_LONG_DESCRIPTION:
        raise ValidationError(f"{source} is over {MAX_LONG_DESCRIPTION // 1024} KiB, the limit "
                              "of a long description.")
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(f"{source} is not UTF-8 text.",
                              hint="Save it as UTF-8, or paste the text.") from None


def _url_shown(url: str) -> str:
    """``url`` without its query string (it may carry a signature), at most 120 characters."""
    location, _, query = url.split("#", 1)[0].partition("?")
    shown = location if len(location) <= 120 else f"{location[:119]}…"
    return f"{shown}?…" if query else shown


def _fetch_failure(exc: BaseException) -> str:
    """Why an HTTP request failed, in a few words (urllib3's nested messages left out)."""
    import socket
    import ssl

    import requests

    response = getattr(exc, "response", None)
    if isinstance(exc, requests.HTTPError) and response is not None:
        return f"HTTP {response.status_code} {response.reason or ''}".strip()
    causes, seen = [exc], set()
    while causes:  # the innermost OS error says what happened
        cause = causes.pop(0)
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host not found"
        if isinstance(cause, ssl.SSLError):
            return "TLS handshake failed (certificate not trusted?)"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the server"
        causes += [getattr(cause, "reason", None), cause.__cause__, cause.__context__,
                   *(a for a in cause.args if isinstance(a, BaseException))]
    if isinstance(exc, requests.Timeout):
        return "no answer within 15 s"
    if isinstance(exc, requests.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                        requests.exceptions.MissingSchema)):
        return "not a valid URL"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect"
    return type(exc).__name__
