"""Object names with ``.`` or ``..`` path segments are refused where S3 paths are parsed:
HTTP clients resolve such segments away, so a presigned URL for the object could never match
its signature. Empty segments (``a//b``) are kept by clients and stay allowed."""

from __future__ import annotations

import pytest

from nitronb import storage
from nitronb.cli import main
from nitronb.errors import BadS3PathError
from nitronb.presign import presign_download, presign_upload

DOTTED = ["sub/../x.enc", "./x.enc", "dir/.", "..", "a/./b.enc"]


def _keys(prefix: str) -> list[str]:
    listing = storage.client_for().list_objects_v2(Bucket="nitronb", Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


@pytest.mark.parametrize("name", DOTTED)
def test_the_cli_refuses_to_upload_or_presign_a_dotted_name(local_stack, tmp_path, capsys, name):
    source = tmp_path / "x.enc"
    source.write_bytes(b"ciphertext")
    assert main(["upload", "--name", name, str(source), "s3://nitronb/names/"]) != 0
    assert main(["presign", "local", "download", "s3://nitronb/names/", name, "60"]) != 0
    assert main(["presign", "local", "upload", "s3://nitronb/names/", name, "60"]) != 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 3 and captured.out == ""
    for line in lines:
        assert line.startswith("nitronb: error: ") and "path segment" in line
        assert "HTTP clients remove" in line and "could never be used" in line
    assert _keys("names/") == []


@pytest.mark.parametrize("target", ["s3://nitronb/names/sub/../", "s3://nitronb/names/./x.enc",
                                    "s3://nitronb/names/.."])
def test_the_cli_refuses_a_dotted_directory_or_uri(local_stack, tmp_path, capsys, target):
    source = tmp_path / "x.enc"
    source.write_bytes(b"ciphertext")
    assert main(["upload", str(source), target]) != 0
    assert main(["download", target, str(tmp_path / "out.enc")]) != 0
    err = capsys.readouterr().err
    assert err.count("path segment") == 2
    assert _keys("names/") == [] and not (tmp_path / "out.enc").exists()


@pytest.mark.parametrize("name", DOTTED)
def test_the_api_refuses_dotted_names(local_stack, tmp_path, name):
    source = tmp_path / "x.enc"
    source.write_bytes(b"ciphertext")
    directory = storage.parse_s3_dir("s3://nitronb/names/")
    for call in (lambda: storage.upload_file(source, directory, key_name=name),
                 lambda: storage.upload_file(source, f"s3://nitronb/names/{name}"),
                 lambda: presign_download("local", directory, name, 60),
                 lambda: presign_upload("local", "s3://nitronb/names/", name, 60),
                 lambda: storage.parse_s3_uri(f"s3://nitronb/{name}"),
                 lambda: directory.key(name)):
        with pytest.raises(BadS3PathError, match="could never be used"):
            call()
    assert _keys("names/") == []


def test_names_clients_send_unchanged_still_work(local_stack, tmp_path):
    import requests

    source = tmp_path / "x.enc"
    source.write_bytes(b"ciphertext")
    for name in ("a//b.enc", "...", "x..enc", ".hidden.enc", "%2e%2e"):
        storage.upload_file(source, "s3://nitronb/names-ok/", key_name=name)
        url = presign_download("local", "s3://nitronb/names-ok/", name, 60).url
        assert requests.get(url, timeout=30).content == b"ciphertext"
