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
                                 b'{"returncode": 0, "stdout": "***", "stderr": ""}'])
def test_malformed_results_are_rejected(doc):
    with pytest.raises(RunResultError):
        RunResult.from_json(doc)


def test_describe_summary():
    assert describe_summary(DESCRIBE) == {"/data/input/conditions/conditions.csv": {
        "count": 8376, "unique": 129, "top": "Viral sinusitis (disorder)", "freq": 1248}}
    assert json.loads(RunResult(3, b"", b"boom").to_json())["stderr"] == "Ym9vbQ=="
