"""The run result format (DESIGN §3.4) and the describe() summary."""

import json

import pytest

from nitronb.crypto import encrypt_bytes
from nitronb.errors import DecryptionError
from nitronb.keys import generate_key
from nitronb.results import RunResult, RunResultError, decrypt_run_result, describe_summary

DESCRIBE = """/data/input/conditions/conditions.csv
count                           8376
unique                           129
top       Viral sinusitis (disorder)
freq                            1248
Name: DESCRIPTION, dtype: object
"""


def test_round_trip_through_encryption(tmp_path):
    key = generate_key()
    result = RunResult(0, DESCRIBE.encode(), b"")
    (tmp_path / "result.enc").write_bytes(encrypt_bytes(key, result.to_json()))
    back = decrypt_run_result(key, tmp_path / "result.enc")
    assert back == result and back.ok and back.text == DESCRIBE
    with pytest.raises(DecryptionError):
        decrypt_run_result(generate_key(), tmp_path / "result.enc")


@pytest.mark.parametrize("doc", [b"not json", b"[]", b'{"returncode": 0}',
                                 b'{"returncode": "0", "stdout": "", "stderr": ""}',
                                 b'{"returncode": 0, "stdout": "***", "stderr": ""}',
                                 b'{"returncode": true, "stdout": "", "stderr": ""}',
                                 b'{"returncode": false, "stdout": "", "stderr": ""}',
                                 b'{"returncode": 0.0, "stdout": "", "stderr": ""}'])
def test_malformed_results_are_rejected(doc):
    with pytest.raises(RunResultError):
        RunResult.from_json(doc)


def test_describe_summary():
    assert describe_summary(DESCRIBE) == {"/data/input/conditions/conditions.csv": {
        "count": 8376, "unique": 129, "top": "Viral sinusitis (disorder)", "freq": 1248}}
    assert json.loads(RunResult(3, b"", b"boom").to_json())["stderr"] == "Ym9vbQ=="


def test_plain_describe_output_without_a_path_is_summarised():
    """An app of its own may print describe() alone, one block per input, and no path."""
    plain = DESCRIBE.split("\n", 1)[1]
    assert describe_summary(plain) == {"describe() 1": {
        "count": 8376, "unique": 129, "top": "Viral sinusitis (disorder)", "freq": 1248}}
    two = describe_summary(plain + plain.replace("8376", "5"))
    assert [v["count"] for v in two.values()] == [8376, 5]


def test_value_counts_are_parsed_and_added_up():
    from nitronb.results import value_counts

    text = DESCRIBE + (
        "most frequent values of DESCRIPTION in /data/input/conditions/conditions.csv:\n"
        "    1248  Viral sinusitis (disorder)\n"
        "     900  Acute viral pharyngitis (disorder)\n"
        "\n"
        "most frequent values of DESCRIPTION in /data/b.csv:\n"
        "       2  Viral sinusitis (disorder)\n")
    assert value_counts(text) == {"Viral sinusitis (disorder)": 1250,
                                  "Acute viral pharyngitis (disorder)": 900}
    assert describe_summary(text)["/data/input/conditions/conditions.csv"]["freq"] == 1248
    assert value_counts(DESCRIBE) == {}


TRACEBACK = b"""Traceback (most recent call last):
  File "describe.py", line 19, in main
    column = pd.read_csv(path, usecols=[COLUMN])[COLUMN]
ValueError: Usecols do not match columns, columns expected but not found: ['DESCRIPTION']

"""


def test_a_failed_result_says_why_in_one_line_then_its_stderr():
    failed = RunResult(1, b"input/codes\n", TRACEBACK)
    assert failed.error_line() == (
        "the enclave's app exited with code 1: ValueError: Usecols do not match columns, "
        "columns expected but not found: ['DESCRIPTION']")
    assert failed.stderr_tail(2) == TRACEBACK.decode().strip().splitlines()[-2].rstrip() + \
        "\n" + TRACEBACK.decode().strip().splitlines()[-1]
    report = failed.report()
    assert report.splitlines()[0] == failed.error_line()
    assert "its stderr (last lines):\nTraceback" in report
    assert report.endswith("its stdout:\ninput/codes")
    assert RunResult(3, b"", b"").error_line() == (
        "the enclave's app exited with code 3: it wrote nothing to stderr")
    assert RunResult(0, DESCRIBE.encode(), b"warning\n").report() == DESCRIBE


def test_value_counts_undo_the_apps_escaping_and_name_their_blocks():
    from nitronb.results import counted_columns, described_column, value_counts

    text = ("input/abc\ncount 4\nName: DESCRIPTION, dtype: object\n\n"
            "most frequent values of DESCRIPTION in input/abc:\n"
            "       2  Sprain\\nof ankle\n"
            "       1  dos\\r\\nline\n"
            "       1  C:\\\\temp\\\\new \\\\n not a line feed\n"
            "       1  line\u2028separator\n")
    assert value_counts(text) == {"Sprain\nof ankle": 2, "dos\r\nline": 1,
                                  "C:\\temp\\new \\n not a line feed": 1,
                                  "line\u2028separator": 1}
    assert counted_columns(text) == [("DESCRIPTION", "input/abc")]
    assert described_column(text) == "DESCRIPTION" and described_column("x\n") is None


def test_a_result_that_does_not_decrypt_is_named_as_asked(tmp_path):
    key = generate_key()
    (tmp_path / "result.enc").write_bytes(encrypt_bytes(key, RunResult(0, b"", b"").to_json()))
    with pytest.raises(DecryptionError, match=r"^cannot decrypt \$WORKSPACE/r\.enc: "):
        decrypt_run_result(generate_key(), tmp_path / "result.enc", name="$WORKSPACE/r.enc")


def test_the_chart_and_the_table_name_the_column_and_the_input_dataset():
    from nitronb.notebook.steps import result_chart, result_table

    text = ("input/abc\ncount 3\nunique 2\ntop x\nfreq 2\nName: DESCRIPTION, dtype: object\n\n"
            "most frequent values of DESCRIPTION in input/abc:\n       2  x\n       1  y\n")
    result = RunResult(0, text.encode(), b"", inputs={"input/abc": "my"})
    chart = result_chart(result)
    assert chart.title == "the 10 most frequent DESCRIPTION values in my"
    assert ">most frequent DESCRIPTION values in my</text>" in chart._repr_svg_()
    table = result_table(result)
    assert table.title == "describe() of DESCRIPTION in my"
    assert '<td style="text-align:left">my</td>' in table._repr_html_()
