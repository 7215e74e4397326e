"""The local S3 endpoint keeps its buckets and objects across `down`/`up` and across a crash.

Real processes over HTTP: the endpoint is started with ``nitronb.local.stack.up`` in a temporary
workspace and driven with boto3 and ``nitronb.s3.client``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest
import requests

from nitronb.local import stack as local
from nitronb.s3 import client as storage
from nitronb.s3 import transfers
from nitronb.local.s3store import data_dir

MiB = 1024 * 1024
ODD_KEYS = [
    "input/données chiffrées.enc",
    "a+b=c&d e.txt",
    "../escape/../attempt",
    "deep/dir/",
    "emoji-🔐/clé%20.bin",
    "q?x=1#frag",
]


@pytest.fixture
def workspace(s3_only_workspace):
    return s3_only_workspace


def _client(ws: Path):
    return storage.client_for(workspace=ws)


def _restart(ws: Path) -> None:
    assert local.down(ws)["s3"]["state"] == "stopped"
    assert local.up(ws)["s3"]["state"] == "running"


def _seen(client, key: str, bucket: str = "nitronb") -> dict:
    head = client.head_object(Bucket=bucket, Key=key)
    return {name: head.get(name) for name in ("ETag", "ContentLength", "ContentType",
                                              "Metadata", "LastModified")}


def _body(client, key: str, bucket: str = "nitronb") -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_objects_come_back_identical_after_down_and_up(workspace, tmp_path):
    client = _client(workspace)
    contents = {}
    for number, key in enumerate(ODD_KEYS):
        body = os.urandom(1000 + number)
        client.put_object(Bucket="nitronb", Key=key, Body=body, ContentType="application/x-test",
                          Metadata={"origin": f"case-{number}", "note": "kept"})
        contents[key] = body
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * MiB + 12345))
    big_uri = transfers.upload_file(big, "s3://nitronb/results/big.bin", workspace=workspace,
                                  part_size=8 * MiB, multipart_threshold=8 * MiB)
    client.create_bucket(Bucket="second-bucket")
    client.put_object(Bucket="second-bucket", Key="x", Body=b"in another bucket")
    before = {key: _seen(client, key) for key in [*ODD_KEYS, "results/big.bin"]}
    assert before["results/big.bin"]["ETag"].endswith('-3"')
    part_one = client.head_object(Bucket="nitronb", Key="results/big.bin", PartNumber=1)

    _restart(workspace)

    client = _client(workspace)
    for key, body in contents.items():
        assert _body(client, key) == body, key
    assert {key: _seen(client, key) for key in before} == before
    again = client.head_object(Bucket="nitronb", Key="results/big.bin", PartNumber=1)
    assert again["ContentLength"] == part_one["ContentLength"] == 8 * MiB
    assert again["PartsCount"] == 3
    for parallel in (False, True):
        copy = transfers.download_file(big_uri, tmp_path / f"copy-{parallel}.bin",
                                     workspace=workspace, parallel=parallel)
        assert copy.read_bytes() == big.read_bytes()
    assert _body(client, "x", bucket="second-bucket") == b"in another bucket"
    names = {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert {"nitronb", "second-bucket"} <= names
    listed = {o["Key"] for o in client.list_objects_v2(Bucket="nitronb")["Contents"]}
    assert listed == set(before)


def test_the_data_folder_is_private_and_names_no_key(workspace):
    client = _client(workspace)
    client.put_object(Bucket="nitronb", Key="../../outside", Body=b"contained")
    root = data_dir(workspace)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    files = [p for p in root.rglob("*") if p.is_file()]
    assert all(p.resolve().is_relative_to(root.resolve()) for p in files)
    assert not any("outside" in p.name for p in files)
    described = [json.loads(p.read_text()) for p in files if p.name.endswith(".json")
                 and p.name != "bucket.json"]
    assert [(d["key"], d["etag"], d["size"]) for d in described] == [
        ("../../outside", hashlib.md5(b"contained").hexdigest(), 9)]
    data = root / "buckets" / "nitronb" / "objects" / described[0]["data"]
    assert data.read_bytes() == b"contained"


def test_deletions_and_overwrites_are_kept(workspace):
    client = _client(workspace)
    for key in ("keep", "gone", "batch-1", "batch-2", "overwritten"):
        client.put_object(Bucket="nitronb", Key=key, Body=key.encode())
    client.put_object(Bucket="nitronb", Key="overwritten", Body=b"second version",
                      Metadata={"v": "2"})
    client.delete_object(Bucket="nitronb", Key="gone")
    client.delete_objects(Bucket="nitronb", Delete={"Objects": [{"Key": "batch-1"},
                                                                {"Key": "batch-2"}]})
    client.copy_object(Bucket="nitronb", Key="copied", CopySource={"Bucket": "nitronb",
                                                                   "Key": "keep"})
    client.create_bucket(Bucket="short-lived")
    client.delete_bucket(Bucket="short-lived")

    _restart(workspace)

    client = _client(workspace)
    listed = {o["Key"] for o in client.list_objects_v2(Bucket="nitronb")["Contents"]}
    assert listed == {"keep", "overwritten", "copied"}
    assert _body(client, "overwritten") == b"second version"
    assert client.head_object(Bucket="nitronb", Key="overwritten")["Metadata"] == {"v": "2"}
    assert _body(client, "copied") == b"keep"
    names = {b["Name"] for b in client.list_buckets()["Buckets"]}
    assert "short-lived" not in names and "nitronb" in names
    bins = list((data_dir(workspace) / "buckets" / "nitronb" / "objects").glob("*.bin"))
    assert len(bins) == 3  # nothing left behind by deletions and overwrites


def test_the_default_bucket_exists_after_a_restart_even_if_it_was_empty(workspace):
    _restart(workspace)
    client = _client(workspace)
    client.head_bucket(Bucket="nitronb")
    assert (data_dir(workspace) / "buckets" / "nitronb" / "bucket.json").is_file()


def test_a_presigned_url_made_before_a_restart_still_works(workspace):
    client = _client(workspace)
    client.put_object(Bucket="nitronb", Key="shared/input.enc", Body=b"sealed bytes")
    url = client.generate_presigned_url("get_object", ExpiresIn=600,
                                        Params={"Bucket": "nitronb", "Key": "shared/input.enc"})
    port = local.status(workspace)["s3"]["port"]

    _restart(workspace)

    assert local.status(workspace)["s3"]["port"] == port
    response = requests.get(url, timeout=30)
    assert (response.status_code, response.content) == (200, b"sealed bytes")


def test_an_acknowledged_put_survives_kill_9(workspace, tmp_path):
    client = _client(workspace)
    body = os.urandom(3 * MiB)
    etag = client.put_object(Bucket="nitronb", Key="crash/after-ack", Body=body)["ETag"]
    pid = local.status(workspace)["s3"]["pid"]
    os.kill(pid, signal.SIGKILL)
    while local.status(workspace)["s3"]["state"] != "stopped":
        time.sleep(0.05)

    assert local.up(workspace)["s3"]["state"] == "running"

    client = _client(workspace)
    assert client.head_object(Bucket="nitronb", Key="crash/after-ack")["ETag"] == etag
    target = transfers.download_file("s3://nitronb/crash/after-ack", tmp_path / "back.bin",
                                   workspace=workspace)
    assert target.read_bytes() == body


def test_sigterm_stops_the_endpoint_cleanly(workspace):
    log = Path(local.status(workspace)["s3"]["log"])
    local.down(workspace)
    assert "local S3 endpoint stopped" in log.read_text()
    assert "Traceback" not in log.read_text()


def test_damaged_bytes_are_set_aside_not_served(workspace):
    client = _client(workspace)
    client.put_object(Bucket="nitronb", Key="fragile", Body=b"original bytes")
    client.put_object(Bucket="nitronb", Key="sound", Body=b"sound bytes")
    local.down(workspace)
    objects = data_dir(workspace) / "buckets" / "nitronb" / "objects"
    for meta in objects.glob("*.json"):
        if json.loads(meta.read_text())["key"] == "fragile":
            (objects / json.loads(meta.read_text())["data"]).write_bytes(b"tampered bytes")

    local.up(workspace)

    client = _client(workspace)
    listed = {o["Key"] for o in client.list_objects_v2(Bucket="nitronb")["Contents"]}
    assert listed == {"sound"}
    assert len(list((data_dir(workspace) / "damaged").iterdir())) == 2
    log = Path(local.status(workspace)["s3"]["log"]).read_text()
    assert "could not be restored" in log


def test_leftovers_of_an_interrupted_write_are_cleared_at_start(workspace):
    client = _client(workspace)
    client.put_object(Bucket="nitronb", Key="kept", Body=b"kept bytes")
    local.down(workspace)
    objects = data_dir(workspace) / "buckets" / "nitronb" / "objects"
    (objects / ".0123abcd.aa.bin.tmp").write_bytes(b"half a write")
    (objects / "0123abcd.bb.bin").write_bytes(b"bytes no description names")

    local.up(workspace)

    assert _body(_client(workspace), "kept") == b"kept bytes"
    assert sorted(p.suffix for p in objects.iterdir()) == [".bin", ".json"]


def test_the_access_log_never_holds_a_presigned_query(tmp_path) -> None:
    import requests

    from nitronb.local import stack as local
    from nitronb.s3.presign import presign_download

    ws = tmp_path / "ws"
    local.up(ws, only=["s3"])
    try:
        (tmp_path / "f").write_bytes(b"rows")
        from nitronb.s3.transfers import upload_file

        upload_file(tmp_path / "f", "s3://nitronb/x/", workspace=ws)
        url = presign_download("local", "s3://nitronb/x/", "f", 60, workspace=ws).url
        assert requests.get(url, timeout=30).content == b"rows"
    finally:
        local.down(ws)
    log = (ws / "local" / "logs" / "s3.log").read_text()
    assert "GET /nitronb/x/f (query withheld)" in log
    assert "Signature" not in log and "X-Amz-Credential" not in log
