"""Presigned URLs and dataset credentials (DESIGN §2.3, §3.2).

A presigned URL is split into its **location** (scheme, host, path) and its **query string**;
the query string travels base64-encoded in the dataset credentials
``{"query_string": …, "encryption": {"key": …}}``, from which the enclave rebuilds the URL as
``location + "?" + base64decode(query_string)``.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from typing import Any
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit, urlunsplit

from nitronb.errors import PresignedURLExpiredError, SignatureMismatchError, StorageError

#: the longest a SigV4 presigned URL may live (S3's rule: seven days)
MAX_EXPIRY_SECONDS = 604800


@dataclass(frozen=True)
class PresignedURL:
    """A presigned URL, its location and its base64-encoded query string."""

    url: str
    location: str
    query_string_b64: str
    method: str = "GET"
    expires_in: int = 0

    @property
    def query_string(self) -> str:
        """The query string itself (decoded)."""
        return base64.b64decode(self.query_string_b64).decode()

    def as_dict(self) -> dict[str, str]:
        """``{"url", "location", "query_string"}`` (the query string base64-encoded)."""
        return {"url": self.url, "location": self.location, "query_string": self.query_string_b64}

    def __str__(self) -> str:
        return self.url


def split_url(url: str) -> tuple[str, str]:
    """Split a URL into its location (scheme, host, path) and its raw query string; StorageError
    for what is no absolute URL (the message never shows the query, which holds the signature)."""
    try:
        parts = urlsplit(url)
    except (TypeError, ValueError, AttributeError):  # not text, or a malformed host
        parts = None
    if parts is None or not parts.scheme or not parts.netloc:
        shown = (url.split("?", 1)[0] + ("?…" if "?" in url else "")) if isinstance(url, str) \
            else type(url).__name__
        raise StorageError(f"{shown!r} is not an absolute URL.", hint="Give the whole presigned URL.")
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), parts.query


def credentials_json(url: str, key_hex: str) -> dict[str, Any]:
    """The dataset credentials for a presigned URL and an encryption key (DESIGN §3.2)."""
    from nitronb.keys import parse_key

    _, query = split_url(url)
    return {"query_string": base64.b64encode(query.encode()).decode(),
            "encryption": {"key": parse_key(key_hex)}}


def url_from_credentials(location: str, credentials: dict[str, Any] | str | bytes) -> str:
    """Rebuild a presigned URL from a dataset's location and credentials (dict or JSON text).

    Raises StorageError when the credentials are not a JSON object with a base64
    ``query_string``."""
    if isinstance(credentials, (str, bytes)):
        try:
            credentials = json.loads(credentials)
        except ValueError as exc:  # not JSON, or bytes that are not UTF-8
            raise StorageError(f"the dataset credentials are not JSON ({exc}).",
                               hint="Rebuild them with credentials_json(url, key).") from None
    try:
        query = base64.b64decode(credentials["query_string"], validate=True).decode()
    except (KeyError, TypeError, ValueError) as exc:
        raise StorageError(f"the dataset credentials have no valid base64 query_string ({exc}).",
                           hint="Rebuild them with credentials_json(url, key).") from None
    return f"{location}?{query}" if query else location


def _presign(operation: str, method: str, profile: str, s3dir: Any, object_name: str,
             expiry_seconds: int, *, legacy: bool, endpoint_url: str | None,
             workspace: str | os.PathLike[str] | None, client: Any) -> PresignedURL:
    from nitronb.s3.client import client_for, parse_s3_dir, storage_error

    expiry = int(expiry_seconds)
    if expiry <= 0 or (not legacy and expiry > MAX_EXPIRY_SECONDS):
        raise StorageError(f"an expiry of {expiry_seconds} seconds is not allowed; a presigned URL "
                           f"lives 1 to {MAX_EXPIRY_SECONDS} seconds (seven days).",
                           hint="Choose an expiry in that range.")
    directory = parse_s3_dir(s3dir)
    key = directory.key(object_name)
    if client is None:
        client = client_for(profile, endpoint_url=endpoint_url, workspace=workspace,
                            signature_version="s3" if legacy else "s3v4")
    try:
        url = client.generate_presigned_url(operation, Params={"Bucket": directory.bucket,
                                                               "Key": key},
                                            ExpiresIn=expiry, HttpMethod=method)
    except Exception as exc:  # botocore: credentials, parameters
        raise storage_error(exc, bucket=directory.bucket, key=key, profile=profile) from exc
    location, query = split_url(url)
    return PresignedURL(url, location, base64.b64encode(query.encode()).decode(), method, expiry)


def presign_download(profile: str, s3dir: Any, object_name: str, expiry_seconds: int, *,
                     legacy: bool = False, endpoint_url: str | None = None,
                     workspace: str | os.PathLike[str] | None = None,
                     client: Any = None) -> PresignedURL:
    """A presigned GET URL for ``object_name`` in ``s3dir``, valid ``expiry_seconds``.

    SigV4 by default; ``legacy`` gives the ``AWSAccessKeyId``/``Signature``/``Expires`` form.
    """
    return _presign("get_object", "GET", profile, s3dir, object_name, expiry_seconds,
                    legacy=legacy, endpoint_url=endpoint_url, workspace=workspace, client=client)


def presign_upload(profile: str, s3dir: Any, object_name: str, expiry_seconds: int, *,
                   legacy: bool = False, endpoint_url: str | None = None,
                   workspace: str | os.PathLike[str] | None = None,
                   client: Any = None) -> PresignedURL:
    """A presigned PUT URL for ``object_name`` in ``s3dir``, valid ``expiry_seconds``."""
    return _presign("put_object", "PUT", profile, s3dir, object_name, expiry_seconds,
                    legacy=legacy, endpoint_url=endpoint_url, workspace=workspace, client=client)


def url_expiry(url: str) -> datetime | None:
    """When the presigned ``url`` stops working, as an aware UTC datetime: ``X-Amz-Date`` plus
    ``X-Amz-Expires`` seconds (SigV4), or ``Expires`` (the legacy form: seconds since the
    epoch). None for a URL that carries neither, or carries them malformed."""
    query = parse_qs(urlsplit(url).query)
    try:
        if "X-Amz-Date" in query and "X-Amz-Expires" in query:
            signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")
            return (signed.replace(tzinfo=timezone.utc)
                    + timedelta(seconds=int(query["X-Amz-Expires"][0])))
        if "Expires" in query:
            return datetime.fromtimestamp(int(query["Expires"][0]), tz=timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def url_lifetime(url: str) -> int | None:
    """The seconds a SigV4 presigned ``url`` was made to live (``X-Amz-Expires``); None for
    the legacy form, which carries only its end."""
    value = parse_qs(urlsplit(url).query).get("X-Amz-Expires")
    try:
        return int(value[0]) if value else None
    except ValueError:
        return None


def error_from_response(status: int, body: bytes | str, url: str) -> StorageError:
    """The :class:`~nitronb.errors.StorageError` for an S3 error answer to a presigned request."""
    from nitronb.errors import NoSuchBucketError, NoSuchObjectError

    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    code = _xml_field(text, "Code") or str(status)
    message = _xml_field(text, "Message") or text[:200]
    shown, _ = split_url(url)
    if code == "AccessDenied" and "expired" in message.lower():
        return PresignedURLExpiredError(f"the presigned URL for {shown} has expired "
                                        f"({_xml_field(text, 'Expires') or 'time passed'}).",
                                        url=shown, hint="Ask its owner for a new URL.")
    if code == "SignatureDoesNotMatch":
        return SignatureMismatchError(f"the store rejected the signature of the URL for {shown}.",
                                      url=shown, hint="Use the URL exactly as presigned, with the "
                                      "method it was presigned for.")
    if code == "NoSuchKey":
        return NoSuchObjectError(f"there is no object at {shown}.", url=shown,
                                 hint="Check that it was uploaded.")
    if code == "NoSuchBucket":
        return NoSuchBucketError(f"the bucket of {shown} does not exist.", url=shown)
    return StorageError(f"the store answered {status} {code} for {shown}: {message}", url=shown)


def _xml_field(text: str, name: str) -> str | None:
    match = re.search(rf"<{name}>(.*?)</{name}>", text, re.S)
    return match.group(1) if match else None


__all__ = ["PresignedURL", "presign_download", "presign_upload", "split_url", "credentials_json",
           "url_from_credentials", "error_from_response", "url_expiry", "url_lifetime"]
