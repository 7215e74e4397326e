"""Dataset definitions and credentials JSON (DESIGN §2.4, §3.2)."""

import base64
import json
import stat

import pytest

from nitronb.datasets import Dataset, check_name, load_long_description
from nitronb.s3.presign import credentials_json as credentials_for, split_url, url_from_credentials
from nitronb.errors import UnsafeNameError, ValidationError, KeyFileError
from nitronb.keys import fingerprint, generate_key

URL = ("http://127.0.0.1:9000/nitronb/input/conditions.csv.enc?X-Amz-Algorithm=AWS4-HMAC-SHA256"
       "&X-Amz-Credential=AK%2F20261126%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Expires=600"
       "&X-Amz-Signature=abc123")


def test_credentials_round_trip_rebuilds_the_url():
    key = generate_key()
    creds = credentials_for(URL, key)
    assert set(creds) == {"query_string", "encryption"} and creds["encryption"] == {"key": key}
    assert base64.b64decode(creds["query_string"]).decode() == URL.split("?", 1)[1]
    location, _ = split_url(URL)
    assert location == "http://127.0.0.1:9000/nitronb/input/conditions.csv.enc"
    assert url_from_credentials(location, creds) == URL


def test_dataset_payload_and_redaction(tmp_path):
    key = generate_key()
    ds = Dataset.from_url("conditions", URL, key, description="Synthea conditions",
                          labels={"source": "synthea"}, long_description="# Conditions")
    assert ds.url == URL
    payload = ds.payload()
    assert payload["credentials"]["encryption"]["key"] == key
    shown = json.dumps(ds.redacted(), ensure_ascii=False)
    assert key not in shown and f"{key[:4]}…" not in shown and f"…{key[-4:]}" not in shown
    assert ds.redacted()["credentials"]["encryption"] == {"key": "<redacted>",
                                                         "key_fingerprint": fingerprint(key)}
    path = ds.save(tmp_path / "ds.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Dataset.load(path) == ds


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "", "a\x00b", "-rf", "x" * 200])
def test_unsafe_names_are_refused(name):
    with pytest.raises(UnsafeNameError):
        check_name(name)
    with pytest.raises(UnsafeNameError):
        Dataset.from_url(name, URL, generate_key())


def test_invalid_definitions():
    with pytest.raises(ValidationError, match="query"):
        Dataset("d", URL, credentials_for(URL, generate_key()))
    with pytest.raises(ValidationError, match="not an http"):
        Dataset.from_url("d", "ftp://host/x?a=b", generate_key())
    with pytest.raises(KeyFileError, match="dataset d"):
        Dataset("d", "http://h/x", {"query_string": "", "encryption": {"key": "12"}})
    with pytest.raises(ValidationError, match="credentials must be"):
        Dataset("d", "http://h/x", {"encryption": {}})


def test_long_description_from_file_or_text(tmp_path):
    (tmp_path / "long.md").write_text("# Title\n\nBody")
    assert load_long_description(str(tmp_path / "long.md")) == "# Title\n\nBody"
    assert load_long_description("plain *markdown*") == "plain *markdown*"


def test_labels_from_pairs_json_or_a_dict():
    from nitronb.datasets import parse_labels

    assert parse_labels("source=synthea; year = 2020\nkind=csv") == {
        "source": "synthea", "year": "2020", "kind": "csv"}
    assert parse_labels('{"source": "synthea"}') == {"source": "synthea"}
    assert parse_labels({"a": "b"}) == {"a": "b"}
    for bad in ("novalue", "a=1;a=2", '{"a": 1}', "{broken"):
        with pytest.raises(ValidationError):
            parse_labels(bad)


def _one_line_error(source: str) -> str:
    with pytest.raises(ValidationError) as caught:
        load_long_description(source)
    text = str(caught.value)
    assert "\n" not in text and source in text
    return text


def test_long_description_file_over_the_limit_or_not_utf8_is_one_line(tmp_path):
    from nitronb.datasets import MAX_LONG_DESCRIPTION

    big = tmp_path / "big.md"
    big.write_bytes(b"x" * (MAX_LONG_DESCRIPTION + 1))
    assert "KiB" in _one_line_error(str(big))
    latin = tmp_path / "latin.md"
    latin.write_bytes("café".encode("latin-1"))
    assert "UTF-8" in _one_line_error(str(latin))
    limit = tmp_path / "limit.md"
    limit.write_bytes(b"y" * MAX_LONG_DESCRIPTION)
    assert load_long_description(str(limit)) == "y" * MAX_LONG_DESCRIPTION


def test_long_description_from_a_folder_or_a_fifo_is_one_line(tmp_path):
    import os

    assert "folder" in _one_line_error(str(tmp_path))
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    assert "regular file" in _one_line_error(str(fifo))  # refused without opening (no block)


def test_repr_and_str_of_a_dataset_show_neither_key_nor_query_string():
    key = generate_key()
    ds = Dataset.from_url("conditions", URL, key)
    query = ds.credentials["query_string"]
    for shown in (repr(ds), str(ds), f"{ds}", repr([ds])):
        assert key not in shown and query not in shown
        assert "abc123" not in shown  # the signature, in the clear
        assert "conditions" in shown and ds.location in shown
        assert f"key_fingerprint={fingerprint(key)!r}" in shown and f"{key[:4]}…" not in shown
    assert query not in json.dumps(ds.redacted(), ensure_ascii=False)
