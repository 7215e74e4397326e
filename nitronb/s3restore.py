"""Loads an object the local S3 endpoint stored on disk (:mod:`nitronb.s3store`) back into
moto's backend, checking its bytes against the size and ETags it was stored with."""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


class RestoreError(Exception):
    """A stored object whose bytes do not match its recorded ETag or size."""


def parse_iso(text: str) -> datetime.datetime:
    """A naive UTC datetime from the ISO 8601 text the store writes (``…Z``)."""
    return datetime.datetime.fromisoformat(text.rstrip("Z"))


def load_object(backend: Any, bucket: str, header: dict[str, Any], data_path: Path) -> None:
    """Put the object ``header`` describes, its bytes read from ``data_path``, into the moto
    ``backend``'s ``bucket`` (replacing any object of that key); :class:`RestoreError` when
    the bytes do not match the recorded size, part ETags or ETag."""
    from moto.s3.models import FakeKey, FakeMultipart

    account, region = backend.account_id, backend.region_name
    parts = header.get("parts") or []
    with open(data_path, "rb") as fh:
        multipart = None
        if parts:
            multipart = FakeMultipart(header["key"], {}, account, region)
            part_md5s = b""
            for part in parts:
                piece = FakeKey(part["number"], b"", account, region)
                digest = _fill(piece, fh, part["size"])
                if digest.hexdigest() != part["etag"]:
                    raise RestoreError(f"part {part['number']} does not match its ETag")
                piece._etag = part["etag"]
                multipart.parts[part["number"]] = piece
                multipart.partlist.append(part["number"])
                part_md5s += digest.digest()
            computed = f"{hashlib.md5(part_md5s).hexdigest()}-{len(parts)}"
            fh.seek(0)
        key = FakeKey(header["key"], b"", account, region, multipart=multipart,
                      storage=header.get("storage_class"), bucket_name=bucket,
                      version_id="null", encryption=header.get("encryption"),
                      kms_key_id=header.get("kms_key_id"),
                      bucket_key_enabled=header.get("bucket_key_enabled"))
        digest = _fill(key, fh, header["size"])
        if fh.read(1):
            raise RestoreError("the stored bytes are longer than the recorded size")
    if not parts:
        computed = digest.hexdigest()
    if "-" not in header["etag"] and parts:
        computed = digest.hexdigest()
    if computed != header["etag"]:
        raise RestoreError(f"ETag {computed} does not match the recorded {header['etag']}")
    key._etag = header["etag"]
    key.last_modified = parse_iso(header["last_modified"])
    key.set_metadata(dict(header.get("metadata") or {}))
    checksum = header.get("checksum") or {}
    key.checksum_algorithm = checksum.get("algorithm")
    key.checksum_value = checksum.get("value")
    key.checksum_type = checksum.get("type")
    key.checksum_parts = checksum.get("parts")
    key.website_redirect_location = header.get("website_redirect_location")
    backend.buckets[bucket].keys.setlist(header["key"], [key])
    if header.get("tags"):
        backend.tagger.tag_resource(
            key.arn, [{"Key": k, "Value": v} for k, v in header["tags"].items()])


def _fill(fake: Any, source: Any, size: int) -> Any:
    """Stream ``size`` bytes of ``source`` into a fresh moto key; the MD5 of those bytes."""
    digest = hashlib.md5()
    buffer = fake._value_buffer
    buffer.seek(0)
    buffer.truncate()
    remaining = size
    while remaining > 0:
        chunk = source.read(min(_CHUNK, remaining))
        if not chunk:
            raise RestoreError("the stored bytes are shorter than the recorded size")
        buffer.write(chunk)
        digest.update(chunk)
        remaining -= len(chunk)
    fake.contentsize = size
    return digest
