"""Payload checks shared by the service's verbs: each failure is a ValidationError (422)."""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from typing import Any
from urllib.parse import urlsplit

from nitronb.enclave_os.launcher import PORT_NAME as _PORT
from nitronb.errors import ValidationError

_PCR = re.compile(r"^[0-9a-f]{96}$")
_HEX64 = re.compile(r"^[0-9A-Fa-f]{64}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9*]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*$")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: the Unicode categories no stored name, label, reason or description may hold: controls
#: (escape, newline, NUL…), invisible format characters (right-to-left override, zero-width
#: space…) and surrogates
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
#: the controls a multi-line text (a description, a reason) keeps
_MULTILINE_KEEPS = frozenset("\n\t")
#: the longest reason a decline or a withdrawal may give, in characters
REASON_LIMIT = 1000


def unicode_text(value: Any, where: str = "the request body") -> None:
    """Refuse a lone surrogate anywhere in ``value`` (strings, keys, nested lists and objects):
    JSON lets ``"\\ud800"`` through, but no UTF-8 text can hold it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise ValidationError(f"{where} holds a lone UTF-16 surrogate, which is not "
                                      "text; send valid Unicode.")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def plain(value: str, where: str, *, multiline: bool = False) -> str:
    """``value`` unchanged if it holds no control, format or surrogate character (Unicode
    categories Cc, Cf, Cs): the one rule for every name, label, reason and description the
    manager stores and shows to other parties. ``multiline`` text (descriptions, reasons) may
    also hold newlines (``\\n``, ``\\r\\n``) and tabs. ValidationError (422) naming the first
    such character otherwise."""
    for position, char in enumerate(value):
        category = unicodedata.category(char)
        if category not in _UNSAFE_CATEGORIES or multiline and (
                char in _MULTILINE_KEEPS or value.startswith("\r\n", position)):
            continue
        kind = {"Cc": "a control", "Cf": "an invisible format"}.get(category, "a surrogate")
        allowed = " (newlines and tabs are allowed)" if multiline else ""
        raise ValidationError(
            f"{where} holds {kind} character (U+{ord(char):04X} at position {position}); "
            f"write it as visible text{allowed}.",
            hint="Names and labels are one line of visible text; descriptions and reasons may "
                 "also hold newlines and tabs.")
    return value


def body(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ValidationError("the request body must be a JSON object.")
    unicode_text(payload)
    return payload


def reason(value: Any, *, what: str = "a decline", required: bool = True) -> str | None:
    """A decline's or a withdrawal's reason: text of at most :data:`REASON_LIMIT` characters,
    without control or invisible format characters (tab and newline allowed, see
    :func:`plain`) or lone surrogates; stripped."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationError(f"{what} needs a reason ('reason').")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"'reason' must be a string, not {type(value).__name__}.")
    unicode_text(value, "'reason'")
    plain(value, "'reason'", multiline=True)
    value = value.strip()
    if len(value) > REASON_LIMIT:
        raise ValidationError(f"'reason' is {len(value)} characters long; at most "
                              f"{REASON_LIMIT}.")
    return value


def text(payload: dict[str, Any], key: str, *, required: bool = True, default: str = "",
         limit: int = 256, multiline: bool = False) -> str:
    """``payload[key]``: a string of at most ``limit`` characters that passes :func:`plain`
    (``multiline`` for descriptions); ``default`` when absent and not ``required``."""
    value = payload.get(key)
    if value is None or value == "":
        if required:
            raise ValidationError(f"'{key}' is required.")
        return default
    if not isinstance(value, str):
        raise ValidationError(f"'{key}' must be a string, not {type(value).__name__}.")
    if len(value) > limit:
        raise ValidationError(f"'{key}' is {len(value)} characters long; at most {limit}.")
    return plain(value, f"'{key}'", multiline=multiline)


def folder_name(payload: dict[str, Any], key: str = "name", *,
                what: str = "dataset name") -> str:
    """A name that becomes a folder in the enclave's app-config tree: no '/', '..' or NUL."""
    from nitronb.datasets import check_name
    from nitronb.errors import UnsafeNameError

    value = text(payload, key, limit=128)
    try:
        return check_name(value, what=what)
    except UnsafeNameError as exc:
        raise ValidationError(str(exc), hint="Choose a name of letters, digits, '-', '_' and "
                                             "'.'.") from None


def labels(payload: dict[str, Any], key: str = "labels") -> dict[str, str]:
    value = payload.get(key) or {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValidationError(f"'{key}' must be an object of string keys and string values.")
    for name, label in value.items():
        plain(name, f"label name {name[:64]!r}")
        plain(label, f"label {name[:64]!r}")
    return dict(value)


def location(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationError(f"location {value!r} must be an http(s) URL with a host.")
    if parts.query or parts.fragment or "?" in value:
        raise ValidationError(
            f"location {value!r} must not carry a query string: the query goes, base64-encoded, "
            "into the credentials' 'query_string'.")
    return value


def credentials(value: Any) -> dict[str, Any]:
    """Check the DESIGN §3.2 shape: ``{"query_string": b64, "encryption": {"key": hex64}}``."""
    if not isinstance(value, dict):
        raise ValidationError("'credentials' must be an object {\"query_string\": base64, "
                              "\"encryption\": {\"key\": 64 hex}}.")
    query = value.get("query_string")
    if not isinstance(query, str):
        raise ValidationError("'credentials.query_string' (the base64 of the presigned URL's "
                              "query string) is required.")
    try:
        base64.b64decode(query, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("'credentials.query_string' is not valid base64.") from None
    encryption = value.get("encryption")
    key = encryption.get("key") if isinstance(encryption, dict) else None
    if not isinstance(key, str) or not _HEX64.match(key):
        raise ValidationError("'credentials.encryption.key' must be 64 hex characters "
                              "(an AES-256 key).")
    return value


def domain(value: str) -> str:
    if not _DOMAIN.match(value):
        raise ValidationError(f"domain {value!r} is not a host name.")
    return value.lower()


def measurements(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ValidationError("'measurements' must be an object {hash_algorithm, pcr0, pcr1, "
                              "pcr2}.")
    algorithm = value.get("hash_algorithm")
    if algorithm != "Sha384":
        raise ValidationError(f"'measurements.hash_algorithm' must be 'Sha384', not {algorithm!r}.")
    out = {"hash_algorithm": "Sha384"}
    for name in ("pcr0", "pcr1", "pcr2"):
        pcr = value.get(name)
        if not isinstance(pcr, str) or not _PCR.match(pcr.lower()):
            raise ValidationError(f"'measurements.{name}' must be 96 hex characters (SHA-384).")
        out[name] = pcr.lower()
    return out


def ports(value: Any) -> dict[str, str]:
    """Ports as ``{name: "in"|"out"}``; a plain list names them ``input…`` / ``output…``."""
    if isinstance(value, list):
        out = {}
        for name in value:
            if not isinstance(name, str):
                raise ValidationError("'ports' must list port names (strings).")
            if name.startswith("input"):
                out[name] = "in"
            elif name.startswith("output"):
                out[name] = "out"
            else:
                raise ValidationError(
                    f"port {name!r}: a listed port's name must begin with 'input' or 'output'; "
                    "otherwise give ports as an object {name: \"in\" | \"out\"}.")
    elif isinstance(value, dict):
        out = dict(value)
        for name, direction in out.items():
            if direction not in ("in", "out"):
                raise ValidationError(f"port {name!r} has direction {direction!r}; "
                                      "use \"in\" or \"out\".")
    else:
        raise ValidationError("'ports' is required: a list of names or {name: \"in\"|\"out\"}.")
    if not out:
        raise ValidationError("an application configuration needs at least one port.")
    for name in out:
        if not _PORT.fullmatch(name):
            raise ValidationError(f"port name {name!r} must be letters, digits, '.', '_' or "
                                  "'-', begin with a letter or digit and hold no '..' (it "
                                  "becomes a folder name in the enclave).")
    return out


def config_items(value: Any, port_names: set[str]) -> dict[str, str]:
    """Configuration items ``{path: text contents}`` keyed by absolute paths under
    ``/opt/fortanix/enclave-os/app-config/rw/`` (a relative path is taken below it); see
    :func:`nitronb.ccm.runtime.item_path` for what is refused."""
    from nitronb.ccm.runtime import item_path

    value = value or {}
    if not isinstance(value, dict):
        raise ValidationError("'config_items' must be an object {absolute path: contents}.")
    out: dict[str, str] = {}
    for path, contents in value.items():
        if not isinstance(contents, str):
            raise ValidationError(f"configuration item {path!r}: contents must be a string.")
        absolute = item_path(path, port_names)
        if absolute in out:
            raise ValidationError(f"configuration item {path!r} names the same file as another "
                                  f"item ({absolute}).")
        out[absolute] = contents
    return out
