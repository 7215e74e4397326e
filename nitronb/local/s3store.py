"""Keeps the local S3 endpoint's buckets and objects on disk, so they outlive the process.

moto keeps S3 state in memory, each object's bytes in the data files below (a
:class:`~nitronb.local.s3files.FileValue`, never a copy in memory). :class:`S3Store` mirrors the state
into ``<workspace>/local/s3-data/`` (mode 0700) as objects change, and loads it back into moto's
backend when the endpoint starts (each object through :func:`nitronb.local.s3restore.load_object`).

Layout (format 2; format 1 is the same with ``data`` always one file name)::

    s3-data/
      buckets/<bucket>/bucket.json            {"format", "name", "region", "created"}
      buckets/<bucket>/objects/<h>.json       the object's description (below)
      buckets/<bucket>/objects/<h>.<t>.bin    its bytes, exactly as stored (or one part of them)

``<bucket>`` is the bucket's name when it is a plain S3 name, else ``b-`` and a hash of it;
``<h>`` is the SHA-256 of the object key (keys never become paths) and ``<t>`` a random token,
new for every version of the bytes. A data file is written once and never changed; an object
received through the gate's data path (:mod:`nitronb.local.s3stream`) is linked in from where its
body was received, a multipart object keeps its parts' files as they were received. The
``.json`` file is the commit point: it is replaced atomically (temporary file, fsync, rename)
after the ``.bin`` files it names are complete on disk, so a crash leaves either the previous or
the new object, never a mix. Files no ``.json`` names are leftovers and are removed at start.

A change the disk refuses (full, or any other write error) changes nothing: a request that
clearly needs more room than the disk has is refused before moto sees it
(:meth:`S3Store.check_room`), and a change moto made that cannot be written is undone in the
backend from what the disk holds, so the previous object stays served and stored.

An object's ``.json`` holds: ``bucket``, ``key``, ``data`` (the ``.bin`` name, or the list of
them, one per part, whose bytes follow each other), ``size``, ``etag`` (without quotes: an MD5,
or ``md5-of-md5s-N`` for a multipart object), ``last_modified`` (ISO 8601, UTC), ``metadata``
(content type, ``x-amz-meta-*`` …), ``storage_class``, ``tags``, ``checksum``, ``encryption``
and, for a multipart object, ``parts`` (``number``, ``size``, ``etag`` of each part, in order).
Object versions, bucket settings other than existence, and multipart uploads not yet completed
are not kept.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote

from nitronb.local.s3files import (FileValue, adopt_into, fsync_dir as _fsync_dir, new_file,
                                   share_parts, write_all)
from nitronb.local.s3restore import RestoreError, data_names, load_object, parse_iso

FORMAT = 2
_CHUNK = 1 << 20
_STRIPES = 64
_PLAIN_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
#: room kept free beyond a request's bytes, for the descriptions and the folders (bytes)
ROOM_RESERVE = 256 * 1024
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """The data folder has not room for a change (``needed`` and ``free`` in bytes)."""

    def __init__(self, folder: Path, needed: int, free: int) -> None:
        super().__init__(errno.ENOSPC, f"the disk holding {folder} is full: the change needs "
                         f"{needed} bytes and {free} are free")
        self.needed = needed
        self.free = free


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the disk or the quota is full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def data_dir(workspace: Path) -> Path:
    """Where the local S3 endpoint keeps its buckets and objects."""
    return Path(workspace) / "local" / "s3-data"


def _private(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    return folder


def _bucket_folder_name(bucket: str) -> str:
    if _PLAIN_BUCKET.fullmatch(bucket) and ".." not in bucket:
        return bucket
    return "b-" + hashlib.sha256(bucket.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=True, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _iso(moment: datetime.datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


class S3Store:
    """The on-disk mirror of one moto S3 backend."""

    def __init__(self, root: Path, backend: Any) -> None:
        self.root = Path(root)
        self._backend = backend
        self._buckets_dir = self.root / "buckets"
        #: bucket -> key -> the description last written (with its "data" file name)
        self._index: dict[str, dict[str, dict[str, Any]]] = {}
        self._index_lock = threading.Lock()
        self._bucket_lock = threading.RLock()
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]
        self._active = 0
        self._idle = threading.Condition()

    # --- start ----------------------------------------------------------------------------

    def restore(self) -> dict[str, int]:
        """Load every stored bucket and object into the backend; ``{"buckets", "objects"}``.

        An object whose bytes no longer match its ETag is moved to ``s3-data/damaged/`` and
        reported on stderr instead of being served.
        """
        _private(self.root)
        _private(self._buckets_dir)
        counts = {"buckets": 0, "objects": 0}
        for folder in sorted(p for p in self._buckets_dir.iterdir() if p.is_dir()):
            try:
                info = json.loads((folder / "bucket.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                print(f"s3-data: {folder} has no readable bucket.json; skipped", file=sys.stderr)
                continue
            name = info["name"]
            if name not in self._backend.buckets:
                bucket = self._backend.create_bucket(name, info.get("region") or "us-east-1")
                if info.get("created"):
                    created = parse_iso(info["created"]).replace(tzinfo=datetime.timezone.utc)
                    bucket.creation_date = created
            counts["buckets"] += 1
            self._index[name] = {}
            counts["objects"] += self._restore_objects(name, folder / "objects")
        return counts

    def _restore_objects(self, bucket: str, folder: Path) -> int:
        if not folder.is_dir():
            return 0
        referenced: set[str] = set()
        restored = 0
        for meta_path in sorted(folder.glob("*.json")):
            try:
                header = json.loads(meta_path.read_text(encoding="utf-8"))
                load_object(self._backend, bucket, header, folder)
            except (OSError, ValueError, KeyError, RestoreError) as exc:
                self._set_aside(meta_path, exc)
                continue
            referenced.update(data_names(header))
            self._index[bucket][header["key"]] = header
            restored += 1
        for leftover in folder.iterdir():
            if leftover.suffix in (".bin", ".tmp") and leftover.name not in referenced:
                leftover.unlink(missing_ok=True)
        return restored

    def _set_aside(self, meta_path: Path, reason: BaseException) -> None:
        damaged = _private(self.root / "damaged")
        stamp = time.strftime("%Y%m%dT%H%M%S")
        print(f"s3-data: {meta_path} could not be restored ({reason}); moved to {damaged}",
              file=sys.stderr, flush=True)
        try:
            names = data_names(json.loads(meta_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, AttributeError):
            names = []
        for path in [meta_path] + [meta_path.parent / n for n in names if "/" not in n]:
            if path.exists():
                os.replace(path, damaged / f"{stamp}-{path.name}")

    # --- write-through --------------------------------------------------------------------

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Mark a request that may change the store as in flight (see :meth:`close`)."""
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def close(self, timeout: float = 8.0) -> None:
        """Wait (up to ``timeout`` s) for changes in flight, then write whatever differs."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._active and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))
        self.sync_all()

    def record(self, method: str, raw_path: str, params: set[str]) -> None:
        """Write what a successful path-style request (``/bucket/key`` percent-encoded, the
        names of its query parameters) changed in the backend."""
        if "uploadId" in params and method in ("PUT", "DELETE"):
            return  # a part uploaded or an upload aborted: no object changed
        if "uploads" in params:
            return  # a multipart upload started
        head, _, rest = raw_path.lstrip("/").partition("/")
        bucket, key = unquote(head), unquote(rest)
        try:
            if not bucket or bucket not in self.known_buckets():
                self.sync_all()  # another addressing style, or an unknown bucket: check all
            elif not key:
                self.sync_bucket(bucket)
            elif not self.sync_object(bucket, key) and method != "DELETE":
                self.sync_bucket(bucket)  # the object is not where the path says: the bucket
        except BaseException:
            self.undo(bucket, key)
            raise

    def check_room(self, method: str, raw_path: str, query: list[tuple[str, str]],
                   headers: dict[str, str]) -> None:
        """Raise :class:`DiskFull` if the data folder has clearly not room for what a request
        (path-style ``/bucket/key``, its decoded query pairs and lower-case headers) may write:
        its body, the parts it completes or the object it copies, and :data:`ROOM_RESERVE`."""
        names = {name for name, _ in query}
        if method in ("GET", "HEAD", "OPTIONS", "DELETE") or names & {"delete", "uploads"}:
            return  # writes nothing (deletions free room): never refused for want of room
        try:
            needed = ROOM_RESERVE + max(0, int(headers.get("content-length") or 0))
        except ValueError:
            needed = ROOM_RESERVE
        bucket = unquote(raw_path.lstrip("/").partition("/")[0])
        live = self._backend.buckets.get(bucket)
        upload = next((value for name, value in query if name == "uploadId"), None)
        if live is not None and method == "POST" and upload is not None:
            multipart = live.multiparts.get(upload)  # completing: the parts become one object
            if multipart is not None:
                needed += sum(int(part.size) for part in list(multipart.parts.values()))
        source = headers.get("x-amz-copy-source")
        if source:
            needed += self._source_size(source)
        folder = self.root if self.root.exists() else self.root.parent
        stats = os.statvfs(folder)
        free = stats.f_bavail * stats.f_frsize
        if needed > free:
            raise DiskFull(self.root, needed, free)

    def _source_size(self, source: str) -> int:
        path = unquote(source.split("?", 1)[0]).lstrip("/")
        bucket, _, key = path.partition("/")
        live = self._backend.buckets.get(bucket)
        fake = live.keys.get(key) if live is not None else None
        return int(getattr(fake, "size", 0) or 0)

    def undo(self, bucket: str, key: str) -> None:
        """Make the backend match the disk again for one object (``key``) or, with no key, for
        a bucket's existence: what a change that could not be written left in memory."""
        if not bucket:
            return
        if bucket not in self._backend.buckets:
            return  # nothing in memory to take back (a deleted bucket stays deleted)
        with self._bucket_lock:
            with self._index_lock:
                stored = bucket in self._index
            folder = self._buckets_dir / _bucket_folder_name(bucket)
            if not stored or not (folder / "bucket.json").exists():
                live = self._backend.buckets.get(bucket)
                if live is not None and not _snapshot(live.keys):
                    self._backend.buckets.pop(bucket, None)
                    with self._index_lock:
                        self._index.pop(bucket, None)
                    shutil.rmtree(folder, ignore_errors=True)
                return
        if key:
            with self._stripes[hash((bucket, key)) % _STRIPES]:
                self._undo_object(bucket, key, folder / "objects")

    def _undo_object(self, bucket: str, key: str, objects: Path) -> None:
        live = self._backend.buckets.get(bucket)
        if live is None:
            return
        with self._index_lock:
            header = self._index.get(bucket, {}).get(key)
        current = live.keys.get(key)
        if current is not None:
            self._backend.tagger.delete_all_tags_for_resource(current.arn)
        if header is None:
            if key in live.keys:
                del live.keys[key]
            return
        try:
            load_object(self._backend, bucket, header, objects)
        except (OSError, ValueError, KeyError, RestoreError) as exc:
            print(f"s3-data: could not take back the unsaved change of {bucket}/{key} ({exc!r}); "
                  "the object on disk is served again after a restart", file=sys.stderr,
                  flush=True)

    def known_buckets(self) -> set[str]:
        """The buckets the backend has or the disk holds."""
        with self._index_lock:
            return _snapshot(self._backend.buckets) | set(self._index)

    def sync_all(self) -> None:
        """Make the disk match the backend: every bucket and object."""
        with self._bucket_lock:
            names = self.known_buckets()
            for name in sorted(names):
                self.sync_bucket(name)

    def sync_bucket(self, bucket: str) -> None:
        """Make the disk match the backend for one bucket and all its objects."""
        with self._bucket_lock:
            live = self._backend.buckets.get(bucket)
            folder = self._buckets_dir / _bucket_folder_name(bucket)
            if live is None:
                with self._index_lock:
                    self._index.pop(bucket, None)
                if folder.exists():
                    shutil.rmtree(folder)
                    _fsync_dir(self._buckets_dir)
                return
            self._write_bucket(bucket, live, folder)
            with self._index_lock:
                stored = set(self._index.get(bucket, {}))
            present = _snapshot(live.keys)
            for key in sorted(stored | present):
                self.sync_object(bucket, key)

    def _write_bucket(self, bucket: str, live: Any, folder: Path) -> None:
        with self._index_lock:
            known = bucket in self._index
        if known and (folder / "bucket.json").exists():
            return
        fresh = not folder.exists()
        try:
            _private(self._buckets_dir)
            _private(folder)
            _private(folder / "objects")
            _write_json(folder / "bucket.json", {
                "format": FORMAT, "name": bucket, "region": live.region_name,
                "created": _iso(live.creation_date)})
        except BaseException:
            if fresh:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._index_lock:
            self._index.setdefault(bucket, {})

    def sync_object(self, bucket: str, key: str) -> bool:
        """Make the disk match the backend for one object; whether the object exists."""
        if bucket not in self._backend.buckets:
            self.sync_bucket(bucket)
            return False
        with self._stripes[hash((bucket, key)) % _STRIPES]:
            return self._sync_object(bucket, key)

    def _sync_object(self, bucket: str, key: str) -> bool:
        from moto.s3.models import FakeKey

        live_bucket = self._backend.buckets.get(bucket)
        if live_bucket is None:
            return False
        folder = self._buckets_dir / _bucket_folder_name(bucket)
        if bucket not in self._index or not (folder / "bucket.json").exists():
            self._write_bucket(bucket, live_bucket, folder)
        objects = folder / "objects"
        name = _key_hash(key)
        previous = self._index[bucket].get(key)
        fake = live_bucket.keys.get(key)
        if not isinstance(fake, FakeKey):
            if previous is not None:
                (objects / f"{name}.json").unlink(missing_ok=True)
                self._drop(live_bucket, key, objects, data_names(previous))
                with self._index_lock:
                    self._index[bucket].pop(key, None)
            return False
        header = self._describe(bucket, key, fake)
        value = fake._value_buffer
        if isinstance(value, FileValue):
            stored = adopt_into(value, objects, name, lambda: secrets.token_hex(6))
        elif previous is not None and _same_bytes(previous, header):
            stored = FileValue([(objects / n, os.stat(objects / n).st_size)
                                for n in data_names(previous)], header["etag"])
        else:
            stored = self._write_bytes(fake, objects, name)
        names = stored.names_in(objects) or []
        header["data"] = names[0] if len(names) == 1 else names
        if stored is not value:
            fake._value_buffer = stored  # the bytes now come from the store's files
            share_parts(fake)
        old = set(data_names(previous)) if previous is not None else set()
        if header == previous:
            return True
        try:
            _write_json(objects / f"{name}.json", header)
        except BaseException:
            for fresh in set(names) - old:
                (objects / fresh).unlink(missing_ok=True)
            raise
        self._drop(live_bucket, key, objects, old - set(names))
        with self._index_lock:
            self._index[bucket][key] = header
        return True

    @staticmethod
    def _drop(live_bucket: Any, key: str, objects: Path, names: Any) -> None:
        """Remove data files no longer stored, unless a version moto keeps still reads them."""
        for version in list(live_bucket.keys.getlist(key, [])):
            value = getattr(version, "_value_buffer", None)
            if isinstance(value, FileValue):
                names = set(names) - set(value.names_in(objects) or [])
        for stale in names:
            (objects / stale).unlink(missing_ok=True)

    def _describe(self, bucket: str, key: str, fake: Any) -> dict[str, Any]:
        header: dict[str, Any] = {
            "format": FORMAT, "bucket": bucket, "key": key, "size": int(fake.size),
            "etag": fake.etag.strip('"'), "last_modified": _iso(fake.last_modified),
            "metadata": {str(k): str(v) for k, v in dict(fake.metadata).items()},
            "storage_class": fake.storage_class,
            "tags": {t["Key"]: t["Value"] for t in
                     self._backend.tagger.list_tags_for_resource(fake.arn).get("Tags", [])},
        }
        checksum = {"algorithm": fake.checksum_algorithm, "value": fake.checksum_value,
                    "type": fake.checksum_type, "parts": fake.checksum_parts}
        if any(v is not None for v in checksum.values()):
            header["checksum"] = checksum
        for field in ("encryption", "kms_key_id", "bucket_key_enabled",
                      "website_redirect_location"):
            value = getattr(fake, field, None)
            if value is not None:
                header[field] = value
        multipart = fake.multipart
        if multipart is not None and multipart.partlist:
            parts = [{"number": int(n), "size": int(multipart.parts[n].size),
                      "etag": multipart.parts[n].etag.strip('"')} for n in multipart.partlist]
            if sum(p["size"] for p in parts) == header["size"]:
                header["parts"] = parts
        return header

    @staticmethod
    def _write_bytes(fake: Any, objects: Path, name: str) -> FileValue:
        """Copy the object's bytes from moto's buffer into a new data file."""
        _private(objects)
        path = objects / f"{name}.{secrets.token_hex(6)}.bin"
        with new_file(path) as fd, fake.lock:
            buffer = fake._value_buffer
            buffer.seek(0)
            for chunk in iter(lambda: buffer.read(_CHUNK), b""):
                write_all(fd, chunk)
        return FileValue([(path, int(fake.size))], fake.etag.strip('"'))


def _snapshot(mapping: Any) -> set[str]:
    """The keys of a dict other threads may be changing."""
    while True:
        try:
            return set(mapping.keys())
        except RuntimeError:  # changed size while being copied: copy again
            continue


def _same_bytes(previous: dict[str, Any], header: dict[str, Any]) -> bool:
    return all(previous.get(f) == header.get(f) for f in ("etag", "size", "parts"))
