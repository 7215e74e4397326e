"""Loads an object the local S3 endpoint stored on disk (:mod:`nitronb.local.s3store`) back into
moto's backend, checking its bytes against the size and ETags it was stored with. The object's
bytes stay in its data files (a :class:`~nitronb.local.s3files.FileValue`): they are read once, in
pieces, to be checked, never held in memory nor copied."""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path
from typing import Any

from nitronb.local.s3files import FileValue, install, share_parts


class RestoreError(Exception):
    """A stored object whose bytes do not match its recorded ETag or size."""


def parse_iso(text: str) -> datetime.datetime:
    """A naive UTC datetime from the ISO 8601 text the store writes (``…Z``)."""
    return datetime.datetime.fromisoformat(text.rstrip("Z"))


def data_names(header: dict[str, Any]) -> list[str]:
    """The data file names an object's description names, in order (format 1: one name;
    format 2: one name or a list of them)."""
    data = header["data"]
    names = [data] if isinstance(data, str) else list(data) if isinstance(data, list) else []
    if not names or not all(isinstance(n, str) and n and "/" not in n and n not in (".", "..")
                            for n in names):
        raise ValueError(f"the description names no valid data file: {data!r}")
    return names


def load_object(backend: Any, bucket: str, header: dict[str, Any], folder: Path) -> None:
    """Put the object ``header`` describes, its bytes in its data files in ``folder``, into
    the moto ``backend``'s ``bucket`` (replacing any object of that key); :class:`RestoreError`
    when the bytes do not match the recorded size, part ETags or ETag."""
    from moto.s3.models import FakeKey, FakeMultipart

    install()
    account, region = backend.account_id, backend.region_name
    files = [(Path(folder) / n, os.stat(Path(folder) / n).st_size) for n in data_names(header)]
    value = FileValue(files, None)
    if value.size != header["size"]:
        raise RestoreError(f"the stored bytes are {value.size} bytes long, not the recorded "
                           f"{header['size']}")
    parts = header.get("parts") or []
    multipart = None
    whole = hashlib.md5(usedforsecurity=False)
    plain_etag = "-" not in header["etag"]
    if parts:
        if sum(int(p["size"]) for p in parts) != value.size:
            raise RestoreError("the parts' sizes do not add up to the object's")
        multipart = FakeMultipart(header["key"], {}, account, region)
        part_md5s, offset = b"", 0
        for part in parts:
            digest = hashlib.md5(usedforsecurity=False)
            for piece in value.pieces(offset, offset + int(part["size"])):
                digest.update(piece)
                if plain_etag:
                    whole.update(piece)
            if digest.hexdigest() != part["etag"]:
                raise RestoreError(f"part {part['number']} does not match its ETag")
            piece_key = FakeKey(part["number"], b"", account, region)
            piece_key._etag = part["etag"]
            piece_key.contentsize = int(part["size"])
            multipart.parts[part["number"]] = piece_key
            multipart.partlist.append(part["number"])
            part_md5s += digest.digest()
            offset += int(part["size"])
        computed = f"{hashlib.md5(part_md5s, usedforsecurity=False).hexdigest()}-{len(parts)}"
        if plain_etag:
            computed = whole.hexdigest()
    else:
        for piece in value.pieces(0, value.size):
            whole.update(piece)
        computed = whole.hexdigest()
    if computed != header["etag"]:
        raise RestoreError(f"ETag {computed} does not match the recorded {header['etag']}")
    value.md5 = whole.hexdigest() if plain_etag else None
    key = FakeKey(header["key"], value, account, region, multipart=multipart,
                  storage=header.get("storage_class"), bucket_name=bucket,
                  version_id="null", encryption=header.get("encryption"),
                  kms_key_id=header.get("kms_key_id"),
                  bucket_key_enabled=header.get("bucket_key_enabled"))
    key._etag = header["etag"]
    key.last_modified = parse_iso(header["last_modified"])
    key.set_metadata(dict(header.get("metadata") or {}))
    checksum = header.get("checksum") or {}
    key.checksum_algorithm = checksum.get("algorithm")
    key.checksum_value = checksum.get("value")
    key.checksum_type = checksum.get("type")
    key.checksum_parts = checksum.get("parts")
    key.website_redirect_location = header.get("website_redirect_location")
    share_parts(key)
    backend.buckets[bucket].keys.setlist(header["key"], [key])
    if header.get("tags"):
        backend.tagger.tag_resource(
            key.arn, [{"Key": k, "Value": v} for k, v in header["tags"].items()])
