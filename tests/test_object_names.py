"""Object names S3 cannot store or clients would change are refused where S3 paths are parsed,
in one line, before any request: names with ``.`` or ``..`` path segments (HTTP clients resolve
them away, so a presigned URL for the object could never match its signature), names with a
control character, and keys over 1,024 bytes of UTF-8 (S3's limit). Empty segments in an
object's name or URI (``a//b``) are kept by clients and stay the object's exact key; a
directory with an empty segment (``s3://nitronb//x/``) is refused rather than rewritten."""

from __future__ import annotations

import pytest

from nitronb.s3 import client as storage
from nitronb.s3 import transfers
from nitronb.cli import main
from nitronb.errors import BadS3PathError
from nitronb.s3.presign import presign_download, presign_upload

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
    for call in (lambda: transfers.upload_file(source, directory, key_name=name),
                 lambda: transfers.upload_file(source, f"s3://nitronb/names/{name}"),
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
        transfers.upload_file(source, "s3://nitronb/names-ok/", key_name=name)
        url = presign_download("local", "s3://nitronb/names-ok/", name, 60).url
        assert requests.get(url, timeout=30).content == b"ciphertext"


CONTROL = ["a\nb", "tab\there", "esc\x1b[2Jclear", "nul\x00", "del\x7f", "c1\x85"]


@pytest.mark.parametrize("name", CONTROL)
def test_the_cli_refuses_a_name_with_a_control_character_in_one_line(local_stack, tmp_path,
                                                                      capsys, name):
    source = tmp_path / "x.enc"
    source.write_bytes(b"ciphertext")
    assert main(["upload", "--name", name, str(source), "s3://nitronb/ctl/"]) != 0
    assert main(["presign", "local", "download", "s3://nitronb/ctl/", name, "60"]) != 0
    assert main(["presign", "local", "upload", "s3://nitronb/ctl/", name, "60"]) != 0
    assert main(["download", f"s3://nitronb/ctl/{name}", str(tmp_path / "out.enc")]) != 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 4 and captured.out == ""
    for line in lines:
        assert line.startswith("nitronb: error: ") and "control character" in line
        assert "no object" not in line and "upload it first" not in line
        assert "\x1b" not in line and "\x00" not in line
    assert _keys("ctl/") == [] and not (tmp_path / "out.enc").exists()


def test_keys_longer_than_1024_bytes_of_utf8_are_refused(local_stack, tmp_path, capsys):
    source = tmp_path / "x.enc"
    source.write_bytes(b"ciphertext")
    prefix = "long/"
    longest = prefix + "/".join(["é" * 100] * 5) + "/" + "a" * (1024 - len(prefix) - 1005)
    assert len(longest.encode("utf-8")) == 1024
    uri = transfers.upload_file(source, f"s3://nitronb/{longest}")
    assert _keys(prefix) == [longest] and uri == f"s3://nitronb/{longest}"
    too_long = longest + "b"
    directory = storage.parse_s3_dir("s3://nitronb/long/")
    for call in (lambda: transfers.upload_file(source, f"s3://nitronb/{too_long}"),
                 lambda: transfers.upload_file(source, directory, key_name=too_long[len(prefix):]),
                 lambda: presign_download("local", directory, too_long[len(prefix):], 60),
                 lambda: presign_upload("local", directory, too_long[len(prefix):], 60),
                 lambda: transfers.download_file(f"s3://nitronb/{too_long}", tmp_path / "o")):
        with pytest.raises(BadS3PathError, match="1025 bytes .*at most 1024 bytes") as info:
            call()
        assert "\n" not in str(info.value) and len(str(info.value)) < 300
    assert main(["upload", str(source), f"s3://nitronb/{too_long}"]) != 0
    assert capsys.readouterr().err.count("\n") == 1
    assert _keys(prefix) == [longest]


@pytest.mark.parametrize("directory", ["s3://nitronb//x/", "s3://nitronb/x//y/",
                                       "s3://nitronb/x//", "s3://nitronb//"])
def test_a_directory_with_an_empty_segment_is_refused_not_rewritten(local_stack, tmp_path,
                                                                     capsys, directory):
    source = tmp_path / "x.enc"
    source.write_bytes(b"ciphertext")
    with pytest.raises(BadS3PathError, match="empty path segment"):
        storage.parse_s3_dir(directory)
    assert main(["upload", str(source), directory]) != 0
    assert main(["upload", "--name", "n.enc", str(source), directory]) != 0
    assert main(["presign", "local", "upload", directory, "n.enc", "60"]) != 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 3 and captured.out == ""
    assert all("empty path segment" in line for line in lines)
    listing = storage.client_for().list_objects_v2(Bucket="nitronb")
    assert not [item["Key"] for item in listing.get("Contents", [])
                if item["Key"].startswith(("/", "x/"))]


def test_an_object_uri_keeps_its_empty_segments_as_its_key(local_stack, tmp_path):
    source = tmp_path / "x.enc"
    source.write_bytes(b"ciphertext")
    assert storage.parse_s3_dir("s3://nitronb/slashes") == storage.S3Dir("nitronb", "slashes/")
    transfers.upload_file(source, "s3://nitronb/slashes//a//b.enc")
    assert _keys("slashes/") == ["slashes//a//b.enc"]
    transfers.download_file("s3://nitronb/slashes//a//b.enc", tmp_path / "back.enc")
    assert (tmp_path / "back.enc").read_bytes() == b"ciphertext"
