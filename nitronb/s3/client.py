"""S3 paths (``s3://bucket/prefix/``), clients for a profile, and S3's errors as nitronb's.

The profile ``local`` is the embedded local endpoint (``nitronb local up``); any other name is a
boto3 profile; ``endpoint_url`` reaches any S3-compatible store. The integrity-checked transfers
built on these clients are in :mod:`nitronb.s3.transfers`, presigned URLs and dataset credentials
in :mod:`nitronb.s3.presign`.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nitronb.errors import (BadS3PathError, CredentialsMissingError, EndpointUnreachableError,
                            IntegrityError, LocalStackError, NoSuchBucketError, NoSuchObjectError,
                            PresignedURLExpiredError, SignatureMismatchError, StorageError)

LOCAL_PROFILE = "local"
MiB = 1024 * 1024
#: objects at least this big are sent as multipart uploads
MULTIPART_THRESHOLD = 16 * MiB
#: the part size of multipart uploads (grown for very large files: S3 allows 10,000 parts)
PART_SIZE = 8 * MiB
#: parts in flight at once
CONCURRENCY = 4
_CHUNK = 1 * MiB
_MAX_PARTS = 10000
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


# --- paths ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Dir:
    """An S3 "directory": a bucket and a key prefix (empty, or ending with ``/``)."""

    bucket: str
    prefix: str = ""

    def key(self, name: str) -> str:
        """The object key of ``name`` in this directory."""
        if not name or name.startswith("/"):
            raise BadS3PathError(f"object name {name!r} must be non-empty and relative.",
                                 hint="Give a name such as conditions.csv.enc.")
        return _checked_key(self.prefix + name, self.uri() + name)

    def uri(self, name: str | None = None) -> str:
        """``s3://bucket/prefix/`` or, with ``name``, the object's URI."""
        return f"s3://{self.bucket}/{self.prefix if name is None else self.key(name)}"

    def __str__(self) -> str:
        return self.uri()


def parse_s3_dir(text: str | S3Dir) -> S3Dir:
    """Parse ``s3://bucket``, ``s3://bucket/`` or ``s3://bucket/prefix[/]`` into an
    :class:`S3Dir`; the prefix is kept as written (a ``/`` is added at its end if missing).

    A prefix with an empty segment (``s3://b//x/``, ``s3://b/x//y/``, ``s3://b/x//``) raises
    :class:`~nitronb.errors.BadS3PathError`: S3 keeps every ``/`` of a key, so such a directory
    would hold keys such as ``/x/name`` that the same path without the double slash does not
    find, and nitronb rewrites no path silently. An object's own name or URI may hold ``//``
    (``a//b``): it is then the object's exact key.
    """
    if isinstance(text, S3Dir):
        return text
    bucket, key = _split_s3(text, what="S3 directory")
    prefix = key[:-1] if key.endswith("/") else key
    if key and "" in prefix.split("/"):
        raise BadS3PathError(
            f"{_shown(text)} has an empty path segment ('//' or a '/' right after the bucket): "
            "S3 would keep it in every key of the directory.",
            hint=f"Write the directory without it: {_shown(_without_empty(bucket, prefix))}.",
            url=text)
    return S3Dir(bucket, prefix + "/" if prefix else "")


def parse_s3_uri(text: str) -> tuple[str, str]:
    """Parse ``s3://bucket/key`` into ``(bucket, key)``; the key must name an object."""
    bucket, key = _split_s3(text, what="S3 object URI")
    if not key or key.endswith("/"):
        raise BadS3PathError(f"{_shown(text)} names a directory, not an object.",
                             hint="Write s3://BUCKET/PATH/OBJECT.", url=text)
    return bucket, key


def _split_s3(text: str, *, what: str) -> tuple[str, str]:
    if not isinstance(text, str) or not text.startswith("s3://"):
        raise BadS3PathError(f"{_shown(str(text))} is not an {what}: it must start with s3://.",
                             hint="Write s3://BUCKET/PREFIX/.", url=str(text))
    bucket, _, key = text[len("s3://"):].partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise BadS3PathError(
            f"{_shown(bucket)} in {_shown(text)} is not a valid bucket name (3–63 characters: "
            "lower-case letters, digits, '.', '-'; starting and ending with a letter or digit).",
            hint="Check the bucket name.", url=text)
    return bucket, _checked_key(key, text)


#: S3's longest object key, in bytes of UTF-8
MAX_KEY_BYTES = 1024


def _checked_key(key: str, text: str) -> str:
    """``key`` if it is a key S3 stores and an HTTP client sends unchanged in a URL's path.

    BadS3PathError (one line, the path shortened) if it holds a control character (Unicode
    category Cc: newline, tab, escape …) or text that is not UTF-8, if it is longer than
    :data:`MAX_KEY_BYTES` bytes of UTF-8 (S3's limit), or if it has a ``.`` or ``..`` segment,
    which clients resolve away (RFC 3986 §5.2.4), so that a presigned URL for it would name
    another object and never match its signature."""
    control = next((c for c in key if unicodedata.category(c) in ("Cc", "Cs")), None)
    if control is not None:
        what = ("a control character" if unicodedata.category(control) == "Cc"
                else "text that is not UTF-8")
        raise BadS3PathError(
            f"{_shown(text)} has {what} ({control!r}) in its object name.",
            hint="Name the object with printable characters only.", url=text)
    size = len(key.encode("utf-8"))
    if size > MAX_KEY_BYTES:
        raise BadS3PathError(
            f"{_shown(text)} names an object key of {size} bytes (UTF-8); S3 keys are at most "
            f"{MAX_KEY_BYTES} bytes.", hint="Use a shorter object name or directory.",
            url=text)
    dots = next((part for part in key.split("/") if part in (".", "..")), None)
    if dots is not None:
        raise BadS3PathError(
            f"{_shown(text)} has a {dots!r} path segment, which HTTP clients remove from URLs, "
            "so a presigned URL for it could never be used.",
            hint="Name the object without '.' or '..' segments.", url=text)
    return key


def _without_empty(bucket: str, prefix: str) -> str:
    segments = "/".join(part for part in prefix.split("/") if part)
    return f"s3://{bucket}/{segments + '/' if segments else ''}"


def _shown(text: str, limit: int = 80) -> str:
    """``text`` quoted for a one-line message (control characters escaped), cut to ``limit``."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _target(s3dir_or_uri: str | S3Dir, path: Path, key_name: str | None) -> tuple[str, str]:
    """(bucket, key) of an upload: a directory (trailing ``/``, bucket only, or ``key_name``
    given) receives the object under ``key_name`` or the file's name; otherwise the URI names
    the object itself."""
    if isinstance(s3dir_or_uri, S3Dir):
        return s3dir_or_uri.bucket, s3dir_or_uri.key(key_name or path.name)
    bucket, key = _split_s3(s3dir_or_uri, what="S3 directory or object URI")
    if key_name is not None or not key or key.endswith("/"):
        return bucket, parse_s3_dir(s3dir_or_uri).key(key_name or path.name)
    return bucket, key


# --- clients --------------------------------------------------------------------------------


def client_for(profile: str = LOCAL_PROFILE, *, endpoint_url: str | None = None,
               workspace: str | os.PathLike[str] | None = None, region: str | None = None,
               signature_version: str = "s3v4") -> Any:
    """A boto3 S3 client for ``profile`` (``local`` = the embedded endpoint).

    ``signature_version`` is ``s3v4`` (SigV4) or ``s3`` (the legacy query form of presigned URLs).
    """
    import boto3
    import botocore.exceptions
    from botocore.config import Config

    s3_options: dict[str, Any] = {}
    if profile == LOCAL_PROFILE:
        from nitronb.local import stack as local
        from nitronb.local.s3auth import load_credentials
        from nitronb.workspace import workspace_dir

        ws = workspace_dir(workspace)
        if endpoint_url is None:
            try:
                endpoint_url = local.url("s3", ws)
            except LocalStackError:
                raise EndpointUnreachableError(
                    "the local S3 endpoint is not running.",
                    hint="Start it with `nitronb local up`.") from None
        creds = load_credentials(ws)
        session = boto3.session.Session(aws_access_key_id=creds["access_key_id"],
                                        aws_secret_access_key=creds["secret_access_key"],
                                        region_name=region or creds["region"])
        s3_options["addressing_style"] = "path"
    else:
        try:
            session = boto3.session.Session(profile_name=profile, region_name=region)
        except botocore.exceptions.ProfileNotFound:
            raise CredentialsMissingError(
                f"there is no AWS profile named {profile!r}.",
                hint="Create it with `aws configure --profile NAME`, or use the profile local "
                     "for the embedded endpoint.") from None
        if session.get_credentials() is None:
            raise CredentialsMissingError(
                f"the AWS profile {profile!r} has no credentials.",
                hint=f"Run `aws configure --profile {profile}` (or `aws sso login`).")
        if endpoint_url is not None:
            s3_options["addressing_style"] = "path"
    config = Config(signature_version=signature_version, s3=s3_options or None,
                    retries={"max_attempts": 3, "mode": "standard"},
                    max_pool_connections=max(10, CONCURRENCY * 2))
    client = session.client("s3", endpoint_url=endpoint_url, config=config)
    client.meta.nitronb_profile = profile  # type: ignore[attr-defined]
    return client


def _describe_profile(profile: str) -> str:
    return "the local endpoint" if profile == LOCAL_PROFILE else f"profile {profile!r}"


def storage_error(exc: BaseException, *, bucket: str | None = None, key: str | None = None,
                  profile: str = LOCAL_PROFILE) -> StorageError:
    """The :class:`~nitronb.errors.StorageError` (with what to do) for a botocore failure."""
    import botocore.exceptions as bce

    where = f"s3://{bucket}/{key or ''}" if bucket else "the store"
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return CredentialsMissingError(f"no credentials for {_describe_profile(profile)}.",
                                       hint="Configure the profile (`aws configure`).")
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectionClosedError,
                        bce.ConnectTimeoutError, bce.ReadTimeoutError)):
        hint = ("Start it with `nitronb local up`." if profile == LOCAL_PROFILE
                else "Check the network and the endpoint URL.")
        return EndpointUnreachableError(f"the object store does not answer ({exc}).", hint=hint)
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", ""))
        if code == "NoSuchBucket":
            return NoSuchBucketError(f"the bucket {bucket!r} does not exist.", url=where,
                                     hint="Check the S3 directory, or create the bucket.")
        if code in ("NoSuchKey", "404", "NotFound"):
            return NoSuchObjectError(f"there is no object {where}.", url=where,
                                     hint="Check the object name and directory (upload it first?).")
        if code == "AccessDenied" and "expired" in message.lower():
            return PresignedURLExpiredError(f"the request to {where} has expired.", url=where,
                                            hint="Presign a new URL.")
        if code == "SignatureDoesNotMatch":
            return SignatureMismatchError(
                f"the store rejected the signature of the request to {where}.", url=where,
                hint=f"Check the secret key of {_describe_profile(profile)}.")
        if code in ("BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"):
            return IntegrityError(
                f"what reached {where} does not match the file sent: the store refused it "
                f"({code}): the bytes changed on the way or while being read.", url=where,
                hint="Upload it again.")
        if code in ("InvalidAccessKeyId", "ExpiredToken", "InvalidToken"):
            return CredentialsMissingError(
                f"the store does not accept the credentials of {_describe_profile(profile)} "
                f"({code}).", hint="Refresh or reconfigure the profile's credentials.")
        return StorageError(f"{code or 'error'} on {where}: {message or exc}", url=where)
    return StorageError(f"transfer with {where} failed: {exc}", url=where)


def _call(fn: Callable[..., Any], *, bucket: str, key: str | None, profile: str,
          **kwargs: Any) -> Any:
    import botocore.exceptions as bce

    try:
        return fn(**kwargs)
    except (bce.BotoCoreError, bce.ClientError) as exc:
        raise storage_error(exc, bucket=bucket, key=key, profile=profile) from exc


def _resolve(client: Any, profile: str, endpoint_url: str | None,
             workspace: str | os.PathLike[str] | None) -> tuple[Any, str]:
    if client is not None:
        return client, getattr(client.meta, "nitronb_profile", profile)
    return client_for(profile, endpoint_url=endpoint_url, workspace=workspace), profile


def delete_object(s3uri: str, *, profile: str = LOCAL_PROFILE, endpoint_url: str | None = None,
                  workspace: str | os.PathLike[str] | None = None, client: Any = None) -> None:
    """Delete an object (no error if it does not exist)."""
    bucket, key = parse_s3_uri(s3uri)
    client, profile = _resolve(client, profile, endpoint_url, workspace)
    _call(client.delete_object, bucket=bucket, key=key, profile=profile, Bucket=bucket, Key=key)


__all__ = ["S3Dir", "parse_s3_dir", "parse_s3_uri", "client_for", "storage_error", "delete_object",
           "LOCAL_PROFILE"]
