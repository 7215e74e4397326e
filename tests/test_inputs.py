"""The input CSV check before encryption (nitronb.inputs), on real files, and what the enclave's
app (enclave_image/describe.py) then reads from the encrypted plaintext."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nitronb.crypto import decrypt_file
from nitronb.errors import InputDataError
from nitronb.inputs import SAMPLE_BYTES, check_csv, encrypt_csv
from nitronb.keys import generate_key
from nitronb.results import describe_summary, value_counts

DESCRIBE = Path(__file__).resolve().parents[1] / "enclave_image" / "describe.py"


def _csv(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _app_reads(tmp_path: Path, path: Path, **check) -> str:
    """Encrypt the checked CSV, decrypt it as the enclave does, run the app on it: its stdout."""
    key = generate_key()
    encrypt_csv(key, check_csv(path, **check), tmp_path / "input.enc")
    plain = tmp_path / "input" / "data"
    plain.parent.mkdir(exist_ok=True)
    decrypt_file(key, tmp_path / "input.enc", plain)
    # the environment an enclave gives its app (see nitronb/enclave/backends.py), whatever the host's
    done = subprocess.run([sys.executable, str(DESCRIBE), "input/data"], cwd=tmp_path,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
                          capture_output=True, text=True, encoding="utf-8")
    assert done.returncode == 0, done.stderr
    return done.stdout


def _one_line(error: InputDataError) -> str:
    text = str(error)
    assert "\n" not in text and error.hint
    return text


def test_a_csv_without_the_column_the_app_reads_is_refused(tmp_path):
    path = _csv(tmp_path, "codes.csv", b"START,CODE\n2020-01-01,1\n")
    with pytest.raises(InputDataError) as info:
        check_csv(path)
    assert _one_line(info.value).startswith(
        "codes.csv has no column DESCRIPTION (its header: START, CODE).")
    assert check_csv(path, required_columns=[]).columns == ("START", "CODE")
    assert check_csv(path, required_columns=["CODE"]).columns == ("START", "CODE")


def test_a_semicolon_separated_file_is_told_the_app_reads_commas(tmp_path):
    path = _csv(tmp_path, "semi.csv", b"START;DESCRIPTION\n2020;Headache\n")
    with pytest.raises(InputDataError, match="reads comma-separated values; this header has no "
                                             "comma"):
        check_csv(path)


@pytest.mark.parametrize("data", [b"", b"\n\n  \n"])
def test_an_empty_file_is_refused(tmp_path, data):
    with pytest.raises(InputDataError) as info:
        check_csv(_csv(tmp_path, "empty.csv", data))
    assert _one_line(info.value).startswith("the input CSV empty.csv is empty.")


def test_a_header_without_rows_is_refused_before_approval(tmp_path):
    """Decided: no rows is an error here, rather than an empty describe() after approvals."""
    path = _csv(tmp_path, "header.csv", b"START,DESCRIPTION\n\n")
    with pytest.raises(InputDataError) as info:
        check_csv(path)
    assert _one_line(info.value).startswith("header.csv has a header but no rows")


def test_a_missing_file_or_a_folder_is_refused(tmp_path):
    with pytest.raises(InputDataError, match="missing.csv does not exist"):
        check_csv(tmp_path / "missing.csv")
    with pytest.raises(InputDataError, match="is a folder"):
        check_csv(tmp_path)
    with pytest.raises(InputDataError, match="unknown encoding 'klingon'"):
        check_csv(_csv(tmp_path, "a.csv", b"DESCRIPTION\nx\n"), encoding="klingon")


def test_cp1252_is_transcoded_when_declared_and_named_when_not(tmp_path):
    path = _csv(tmp_path, "cafe.csv",
                "START,DESCRIPTION\n2020,Café allergy\n2021,Café allergy\n2022,Naïve\n"
                .encode("cp1252"))
    with pytest.raises(InputDataError) as info:
        check_csv(path)
    assert _one_line(info.value) == (
        "cafe.csv is not utf-8 text: byte 26 (line 2) is 0xE9, which utf-8 cannot decode. Set "
        "the encoding parameter of 02_encrypt_input to the file's encoding (e.g. -p encoding "
        "cp1252), or save the file as UTF-8.")
    check = check_csv(path, encoding="cp1252")
    assert check.encoding == "cp1252" and check.transcoded
    out = _app_reads(tmp_path, path, encoding="cp1252")
    assert describe_summary(out)["input/data"]["top"] == "Café allergy"
    assert value_counts(out) == {"Café allergy": 2, "Naïve": 1}


def test_a_bad_byte_past_the_header_sample_is_found_while_encrypting(tmp_path):
    """The header check reads 1 MiB; the rest is checked as it streams, and a failure leaves
    the previous encrypted file in place."""
    row = b"2020,Headache\n"
    body = b"START,DESCRIPTION\n" + row * (SAMPLE_BYTES // len(row) + 10)
    path = _csv(tmp_path, "big.csv", body + b"2021,Caf\xe9\n" + row)
    check = check_csv(path)
    target = tmp_path / "input.enc"
    target.write_bytes(b"previous")
    lines = body.count(b"\n") + 1
    with pytest.raises(InputDataError, match=rf"byte {len(body) + 8:,} \(line {lines}\) is 0xE9"):
        encrypt_csv(generate_key(), check, target)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_utf8_byte_order_mark_is_dropped(tmp_path):
    path = _csv(tmp_path, "bom.csv", b"\xef\xbb\xbfDESCRIPTION,START\nHeadache,2020\n"
                                     b"Headache,2021\n")
    check = check_csv(path)
    assert check.bom and check.columns == ("DESCRIPTION", "START")
    summary = describe_summary(_app_reads(tmp_path, path))["input/data"]
    assert summary == {"count": 2, "unique": 1, "top": "Headache", "freq": 2}


def test_quoted_fields_with_newlines_are_counted_as_one_row_each(tmp_path):
    path = _csv(tmp_path, "quoted.csv", b'START,DESCRIPTION\n2020,"Sprain\nof ankle"\n'
                                        b'2021,"Sprain\nof ankle"\n2022,"a, b"\n')
    check = check_csv(path)
    assert not check.transcoded
    key = generate_key()
    assert encrypt_csv(key, check, tmp_path / "q.enc") == path.stat().st_size
    summary = describe_summary(_app_reads(tmp_path, path))["input/data"]
    assert summary["count"] == 3 and summary["unique"] == 2 and summary["freq"] == 2


def test_the_shipped_sample_passes(tmp_path):
    from nitronb import sample_path

    check = check_csv(sample_path())
    assert "DESCRIPTION" in check.columns and not check.transcoded


def test_column_names_as_papermills_p_passes_them():
    from nitronb.inputs import column_names

    assert column_names("[]") == [] and column_names("") == []
    assert column_names("DESCRIPTION") == ["DESCRIPTION"]
    assert column_names('["A", "B"]') == ["A", "B"] == column_names("[A, B]") == column_names("A,B")


def test_a_quote_that_never_closes_is_refused_while_encrypting(tmp_path):
    """RFC 4180: quotes inside a field are doubled, so a well-formed file holds an even number
    of '"'. An odd number is refused in one line naming the last quote's line, and the
    previous encrypted file stays."""
    path = _csv(tmp_path, "badquote.csv", b'ID,DESCRIPTION\n1,"unterminated\n2,b\n')
    check = check_csv(path)  # the header and first record look fine
    target = tmp_path / "input.enc"
    target.write_bytes(b"previous")
    with pytest.raises(InputDataError) as info:
        encrypt_csv(generate_key(), check, target)
    assert _one_line(info.value).startswith(
        "badquote.csv has a quoted field that never closes: it holds an odd number of '\"' (1), "
        "the last on line 2.")
    assert info.value.path == str(path)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_quotes_are_counted_past_the_header_sample_and_in_other_encodings(tmp_path):
    row = b'2020,"a ""quoted"" word"\n'
    body = b"START,DESCRIPTION\n" + row * (SAMPLE_BYTES // len(row) + 10)
    fine = _csv(tmp_path, "fine.csv", body)
    assert encrypt_csv(generate_key(), check_csv(fine), tmp_path / "fine.enc") == len(body)
    broken = _csv(tmp_path, "broken.csv", body + b'2021,"Caf\xe9\n2022,x\n')
    lines = body.count(b"\n") + 1
    with pytest.raises(InputDataError, match=rf"the last on line {lines:,}\."):
        encrypt_csv(generate_key(), check_csv(broken, encoding="cp1252"), tmp_path / "b.enc")


def test_a_multi_line_value_is_listed_on_one_line_and_counted_right(tmp_path):
    """The app escapes line feeds, carriage returns and backslashes in its list of most
    frequent values; value_counts gives back each value as the CSV holds it."""
    path = _csv(tmp_path, "multi.csv",
                b'ID,DESCRIPTION\n1,"Sprain\nof ankle"\n2,"Sprain\nof ankle"\n3,Headache\n'
                b'4,"dos\r\nline"\n5,C:\\temp\\new\n6,"Sprain\nof ankle"\n')
    out = _app_reads(tmp_path, path)
    summary = describe_summary(out)["input/data"]
    assert (summary["count"], summary["unique"], summary["freq"]) == (6, 4, 3)
    assert value_counts(out) == {"Sprain\nof ankle": 3, "Headache": 1, "dos\r\nline": 1,
                                 "C:\\temp\\new": 1}
    listed = out.split("most frequent values of DESCRIPTION in input/data:\n", 1)[1]
    assert listed.splitlines() == ["       3  Sprain\\nof ankle", "       1  Headache",
                                   "       1  dos\\r\\nline", "       1  C:\\\\temp\\\\new"]
