"""The input dataset is named after the data owner's CSV (steps 02 to 04 on the local stack)."""

from __future__ import annotations

import pytest

from nitronb.datasets import input_defaults, name_from_file


@pytest.mark.parametrize("path, name", [
    ("my.csv", "my"), ("/data/my data (2024).csv", "my-data-2024"), ("Café.csv", "Café"),
    (".hidden.csv", "hidden"), ("---.csv", "input"), ("a.b.csv", "a.b"),
])
def test_a_dataset_name_from_a_file_name(path, name):
    assert name_from_file(path) == name


def test_input_defaults():
    assert input_defaults("x/conditions.csv", sample=True) == {
        "name": "synthea-conditions",
        "description": "Synthea synthetic conditions (April 2020 sample)",
        "labels": {"source": "synthea"}}
    assert input_defaults("x/visits.csv") == {
        "name": "visits", "description": "the data owner's visits.csv",
        "labels": {"file": "visits.csv"}}
    assert input_defaults("describe-result.csv", avoid=("describe-result",))["name"] == \
        "describe-result-input"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A workspace and local stack of this module's own: the steps here register datasets under
    the walk-through's default names, which the session's workspace keeps for the notebooks."""
    from nitronb.local import stack as local

    ws = tmp_path_factory.mktemp("datasets") / "ws"
    local.up(ws)
    try:
        yield ws
    finally:
        local.down(ws)


def _through_datasets(workspace, csv=None, **dataset_options):
    from nitronb.notebook import steps

    steps.generate_keys(workspace)
    steps.encrypt_input(workspace, csv)
    steps.upload_and_presign(workspace, s3_dir="s3://nitronb/datasets-test/")
    steps.create_datasets(workspace, **dataset_options)
    return steps.Walkthrough(workspace)


def test_the_input_dataset_is_named_after_the_csv(workspace, tmp_path):
    csv = tmp_path / "clinic visits.csv"
    csv.write_text("START,DESCRIPTION\n2020-01-01,Headache\n", encoding="utf-8")
    wt = _through_datasets(workspace, csv)
    state = wt.state()
    assert state["input_dataset"] == "clinic-visits"
    assert state["input_csv"] == str(csv.resolve())
    dataset = wt.client("data-owner").get_dataset("clinic-visits")
    assert dataset["description"] == "the data owner's clinic visits.csv"
    assert dataset["labels"] == {"file": "clinic visits.csv"}


def test_the_shipped_sample_and_an_explicit_name(workspace):
    wt = _through_datasets(workspace)
    assert wt.state()["input_dataset"] == "synthea-conditions"
    assert wt.client("data-owner").get_dataset("synthea-conditions")["labels"] == {
        "source": "synthea"}
    wt = _through_datasets(workspace, input_name="mine", input_labels="a=b")
    assert wt.state()["input_dataset"] == "mine"
    assert wt.client("data-owner").get_dataset("mine")["labels"] == {"a": "b"}


def test_datasets_registered_again_follow_a_new_s3_directory(workspace):
    """03 run again with another S3 directory, then 04: the datasets move with their URLs (a
    location left behind would pair the new signature with the old object: 403 at the run)."""
    from nitronb.notebook import steps

    _through_datasets(workspace)
    steps.upload_and_presign(workspace, s3_dir="s3://nitronb/datasets-moved/")
    steps.create_datasets(workspace)
    wt = steps.Walkthrough(workspace)
    for party, name in (("data-owner", wt.state()["input_dataset"]),
                        ("output-owner", wt.state()["output_dataset"])):
        location = wt.client(party).get_dataset(name)["location"]
        assert "/nitronb/datasets-moved/" in location, (party, location)
