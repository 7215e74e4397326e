"""``nitronb presign -o FILE``: the presigned URL (a bearer token) written to a private file."""

from __future__ import annotations

import json
import stat

from nitronb.cli import main
from nitronb.s3.presign import url_from_credentials

PRESIGN = ["presign", "local", "download", "s3://nitronb/presign-cli/", "input.enc", "600"]


def test_json_output_goes_to_a_private_file(local_stack, tmp_path, capsys):
    out = tmp_path / "input-url.json"
    assert main([*PRESIGN, "--json", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert set(doc) == {"url", "location", "query_string"}
    assert url_from_credentials(doc["location"], {"query_string": doc["query_string"]}) \
        == doc["url"]
    assert doc["query_string"] not in captured.err and doc["url"] not in captured.err
    assert str(out) in captured.err and "0600" in captured.err


def test_text_output_to_a_file_and_stdout_with_dash(local_stack, tmp_path, capsys):
    out = tmp_path / "url.txt"
    assert main([*PRESIGN, "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("URL: http") and "query string (base64): " in text
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    capsys.readouterr()
    assert main([*PRESIGN, "-o", "-"]) == 0
    assert capsys.readouterr().out.startswith("URL: http")


def test_an_existing_file_is_kept_unless_force(local_stack, tmp_path, capsys):
    out = tmp_path / "input-url.json"
    out.write_text("kept\n", encoding="utf-8")
    out.chmod(0o644)
    assert main([*PRESIGN, "--json", "-o", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already exists" in err and "--force" in err
    assert out.read_text(encoding="utf-8") == "kept\n"
    assert main([*PRESIGN, "--json", "-o", str(out), "--force"]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["url"].startswith("http")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".*.part"))
