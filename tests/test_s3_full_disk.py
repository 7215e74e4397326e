"""A change the local S3 endpoint cannot write to disk changes nothing, in memory or on disk.

The workspace lives on a small real tmpfs (mounting needs root: the tests are skipped, saying
so, where it is not permitted). A full disk is made by filling the tmpfs with a file; a full
inode table (the tmpfs mounted with few inodes, then filled with empty files) fails the write
itself, after the endpoint's own check for room has let it through, and shows that what moto
already changed in memory is taken back.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from botocore.exceptions import ClientError

from nitronb.local import stack as local
from nitronb.s3 import client as storage
from nitronb.local.s3store import data_dir

MiB = 1024 * 1024


class Disk:
    """A tmpfs mounted at ``root`` holding the workspace ``root/ws``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ws = root / "ws"
        self._filler = root / "filler"

    def fill(self) -> None:
        """Write a file until the tmpfs has no byte left."""
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (MiB, 4096, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError:
                    pass
        finally:
            os.close(fd)
        assert self.free() == 0

    def use_every_inode(self) -> None:
        """Create empty files until the tmpfs has no inode left."""
        crowd = self.root / "crowd"
        crowd.mkdir()
        number = 0
        try:
            while True:
                (crowd / str(number)).touch()
                number += 1
        except OSError:
            pass
        assert number > 0

    def free(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def release(self) -> None:
        subprocess.run(["rm", "-rf", str(self._filler), str(self.root / "crowd")], check=True)


def _mount(root: Path, options: str) -> None:
    root.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(root)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a small tmpfs is not permitted here (needs root): "
                    f"{done.stderr.strip()}")


def _disk(monkeypatch, tmp_path: Path, options: str) -> Iterator[Disk]:
    monkeypatch.setattr(local, "SERVICES", {"s3": local.SERVICES["s3"]})
    disk = Disk(tmp_path / "disk")
    _mount(disk.root, options)
    monkeypatch.setenv("NITRONB_WORKSPACE", str(disk.ws))
    try:
        local.up(disk.ws)
        yield disk
    finally:
        try:
            disk.release()
            local.down(disk.ws)
        finally:
            subprocess.run(["umount", "-l", str(disk.root)], check=False)


@pytest.fixture
def small_disk(monkeypatch, tmp_path) -> Iterator[Disk]:
    """The S3 endpoint with its workspace on a 20 MB tmpfs."""
    yield from _disk(monkeypatch, tmp_path, "size=20m,mode=0700")


@pytest.fixture
def few_inodes(monkeypatch, tmp_path) -> Iterator[Disk]:
    """The S3 endpoint with its workspace on a 20 MB tmpfs of 400 inodes."""
    yield from _disk(monkeypatch, tmp_path, "size=20m,nr_inodes=400,mode=0700")


def _client(ws: Path):
    return storage.client_for(workspace=ws)


def _restart(ws: Path) -> None:
    assert local.down(ws)["s3"]["state"] == "stopped"
    assert local.up(ws)["s3"]["state"] == "running"


def _state(client, key: str, bucket: str = "nitronb") -> tuple[bytes, str, dict, list]:
    got = client.get_object(Bucket=bucket, Key=key)
    tags = client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return got["Body"].read(), got["ETag"], got["Metadata"], tags


def _refused(call, *args, **kwargs) -> dict:
    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    return caught.value.response


def _assert_full_disk_answer(response: dict) -> None:
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 507
    assert response["Error"]["Code"] == "InsufficientStorage"
    assert "disk is full" in response["Error"]["Message"]


def _stored_files(ws: Path) -> list[str]:
    """Every file in the data folder, temporary ones included."""
    root = data_dir(ws)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_a_put_over_a_key_on_a_full_disk_keeps_the_previous_version(small_disk):
    ws = small_disk.ws
    client = _client(ws)
    client.put_object(Bucket="nitronb", Key="results/out.enc", Body=b"first version",
                      Metadata={"v": "1"})
    client.put_object(Bucket="nitronb", Key="old/a", Body=b"to delete")
    before = _state(client, "results/out.enc")
    files = _stored_files(ws)
    small_disk.fill()

    response = _refused(client.put_object, Bucket="nitronb", Key="results/out.enc",
                        Body=os.urandom(MiB), Metadata={"v": "2"})

    assert _state(client, "results/out.enc") == before
    _assert_full_disk_answer(response)
    assert _stored_files(ws) == files
    deleted = client.delete_objects(Bucket="nitronb", Delete={"Objects": [{"Key": "old/a"}]})
    assert [d["Key"] for d in deleted["Deleted"]] == ["old/a"]  # deleting frees room: allowed
    assert len(_stored_files(ws)) == len(files) - 2
    small_disk.release()
    _restart(ws)
    client = _client(ws)
    assert _state(client, "results/out.enc") == before
    client.put_object(Bucket="nitronb", Key="results/out.enc", Body=b"second version")
    assert client.get_object(Bucket="nitronb", Key="results/out.enc")["Body"].read() == (
        b"second version")


def test_a_multipart_upload_on_a_full_disk_is_refused_and_completes_once_there_is_room(
        small_disk):
    ws = small_disk.ws
    client = _client(ws)
    client.put_object(Bucket="nitronb", Key="big.bin", Body=b"small previous object")
    before = _state(client, "big.bin")
    parts = [os.urandom(5 * MiB), os.urandom(MiB)]
    upload = client.create_multipart_upload(Bucket="nitronb", Key="big.bin")["UploadId"]
    done = [{"PartNumber": 1, "ETag": client.upload_part(
        Bucket="nitronb", Key="big.bin", UploadId=upload, PartNumber=1, Body=parts[0])["ETag"]}]
    files = _stored_files(ws)
    small_disk.fill()

    _assert_full_disk_answer(_refused(
        client.upload_part, Bucket="nitronb", Key="big.bin", UploadId=upload, PartNumber=2,
        Body=parts[1]))
    small_disk.release()
    done.append({"PartNumber": 2, "ETag": client.upload_part(
        Bucket="nitronb", Key="big.bin", UploadId=upload, PartNumber=2, Body=parts[1])["ETag"]})
    small_disk.fill()
    _assert_full_disk_answer(_refused(
        client.complete_multipart_upload, Bucket="nitronb", Key="big.bin", UploadId=upload,
        MultipartUpload={"Parts": done}))

    assert _state(client, "big.bin") == before
    assert _stored_files(ws) == files
    small_disk.release()
    client.complete_multipart_upload(Bucket="nitronb", Key="big.bin", UploadId=upload,
                                     MultipartUpload={"Parts": done})
    _restart(ws)
    body = _client(ws).get_object(Bucket="nitronb", Key="big.bin")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(b"".join(parts)).digest()


def test_a_write_that_fails_after_moto_stored_it_is_taken_back(few_inodes):
    ws = few_inodes.ws
    client = _client(ws)
    client.put_object(Bucket="nitronb", Key="kept", Body=b"kept bytes", Metadata={"v": "1"})
    client.put_object_tagging(Bucket="nitronb", Key="kept",
                              Tagging={"TagSet": [{"Key": "owner", "Value": "data"}]})
    client.put_object(Bucket="nitronb", Key="source", Body=b"source bytes")
    upload = client.create_multipart_upload(Bucket="nitronb", Key="kept")["UploadId"]
    etag = client.upload_part(Bucket="nitronb", Key="kept", UploadId=upload, PartNumber=1,
                              Body=b"one part")["ETag"]
    before = _state(client, "kept")
    files = _stored_files(ws)
    few_inodes.use_every_inode()
    assert few_inodes.free() > 10 * MiB  # room in bytes: only the write itself fails

    refusals = [
        _refused(client.put_object, Bucket="nitronb", Key="kept", Body=b"new bytes"),
        _refused(client.put_object, Bucket="nitronb", Key="fresh", Body=b"a new object"),
        _refused(client.put_object_tagging, Bucket="nitronb", Key="kept",
                 Tagging={"TagSet": [{"Key": "owner", "Value": "someone else"}]}),
        _refused(client.copy_object, Bucket="nitronb", Key="kept",
                 CopySource={"Bucket": "nitronb", "Key": "source"}),
        _refused(client.copy_object, Bucket="nitronb", Key="kept", MetadataDirective="REPLACE",
                 Metadata={"v": "2"}, CopySource={"Bucket": "nitronb", "Key": "kept"}),
        _refused(client.complete_multipart_upload, Bucket="nitronb", Key="kept",
                 UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]}),
        _refused(client.create_bucket, Bucket="another-bucket"),
    ]

    assert _state(client, "kept") == before
    for response in refusals:
        _assert_full_disk_answer(response)
    listed = {o["Key"] for o in client.list_objects_v2(Bucket="nitronb")["Contents"]}
    assert listed == {"kept", "source"}
    assert {b["Name"] for b in client.list_buckets()["Buckets"]} == {"nitronb"}
    assert _stored_files(ws) == files
    few_inodes.release()
    _restart(ws)
    client = _client(ws)
    assert _state(client, "kept") == before
    assert {b["Name"] for b in client.list_buckets()["Buckets"]} == {"nitronb"}
    assert {o["Key"] for o in client.list_objects_v2(Bucket="nitronb")["Contents"]} == listed
