"""Notebook parameters as papermill's command line takes them (-p, -r, -y, -f), checked against
each notebook's defaults, and paths read from the caller's folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nitronb.errors import NotebookError
from nitronb.notebook.runner import (absolute_paths, check_parameters, cli_parameters,
                                     declared_parameters, prepare_parameters, resolve_type,
                                     walkthrough_notebooks)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def declared_by():
    return {nb: declared_parameters(nb) for nb in walkthrough_notebooks()}


def _prepared(declared_by, **given):
    parameters, texts = cli_parameters(**given)
    return prepare_parameters(parameters, declared_by, texts=texts)


@pytest.mark.parametrize("text", ["True", "False", "None", "true", "600", "-3", "1_000", "6.5",
                                  "1e3", "nan", "inf", "0x10", "container", "", " 7 ", "[1]"])
def test_values_read_as_papermills_command_line_reads_them(text):
    from papermill.cli import _resolve_type  # the reference, not used by nitronb itself

    mine, theirs = resolve_type(text), _resolve_type(text)
    assert type(mine) is type(theirs)
    assert mine == theirs or (mine != mine and theirs != theirs)  # nan


def test_defaults_are_the_literals_of_the_parameters_cells(declared_by):
    by_stem = {nb.stem: declared for nb, declared in declared_by.items()}
    assert by_stem["01_generate_keys"]["replace_keys"] is False
    assert by_stem["02_encrypt_input"]["required_columns"] == ["DESCRIPTION"]
    assert by_stem["03_upload_and_presign"]["expiry"] == 3600
    assert by_stem["04_create_datasets"]["output_labels"] == {"kind": "result"}
    assert by_stem["05_build_enclave_image"]["app_dir"] == ""


def test_an_app_folder_is_a_parameter_of_the_walkthrough(tmp_path, declared_by, monkeypatch):
    """``nitronb walkthrough -p app_dir DIR`` reaches notebook 05, as an absolute path; a folder
    that does not exist is refused before anything runs."""
    (tmp_path / "my-app").mkdir()
    monkeypatch.chdir(tmp_path)
    assert _prepared(declared_by, values=[("app_dir", "my-app")])["app_dir"] == str(
        tmp_path / "my-app")
    assert absolute_paths({"app_dir": "other"}, cwd=tmp_path)["app_dir"] == str(
        tmp_path / "other")
    with pytest.raises(NotebookError, match="app_dir of 05_build_enclave_image names .*other, "
                                            "which does not exist"):
        _prepared(declared_by, values=[("app_dir", "other")])


def test_booleans_take_true_or_false_only(declared_by):
    assert _prepared(declared_by, values=[("replace_keys", "False")]) == {"replace_keys": False}
    with pytest.raises(NotebookError) as info:
        _prepared(declared_by, values=[("replace_keys", "yes")])
    assert str(info.value).startswith(
        "parameter replace_keys of 01_generate_keys takes True or False (papermill's -p syntax), "
        "not 'yes'.")
    assert "\n" not in str(info.value)
    with pytest.raises(NotebookError, match="replace_keys .* as text .*-r passes text"):
        _prepared(declared_by, raw=[("replace_keys", "False")])


def test_numbers_and_text(declared_by):
    assert _prepared(declared_by, values=[("expiry", "600")]) == {"expiry": 600}
    with pytest.raises(NotebookError, match="parameter expiry of 03_upload_and_presign takes a "
                                            "whole number, not '6.5'"):
        _prepared(declared_by, values=[("expiry", "6.5")])
    with pytest.raises(NotebookError, match="takes a whole number, not 'soon'"):
        _prepared(declared_by, values=[("timeout", "soon")])
    # a number typed for a text parameter stays the text as typed
    assert _prepared(declared_by, values=[("input_name", "2024")]) == {"input_name": "2024"}
    assert _prepared(declared_by, values=[("input_name", "007")]) == {"input_name": "007"}
    assert _prepared(declared_by, raw=[("backend", "container")]) == {"backend": "container"}
    with pytest.raises(NotebookError, match="input_name of 04_create_datasets takes text"):
        _prepared(declared_by, yaml_texts=["input_name: 2024"])


def test_a_float_default_takes_ints_as_floats():
    declared = {Path("x/10_demo.ipynb"): {"ratio": 0.5}}
    assert check_parameters({"ratio": 2}, declared) == {"ratio": 2.0}
    assert isinstance(check_parameters({"ratio": 2}, declared)["ratio"], float)
    with pytest.raises(NotebookError, match="ratio of 10_demo takes a number"):
        check_parameters({"ratio": True}, declared)


def test_mappings_and_lists(declared_by):
    assert _prepared(declared_by, values=[("required_columns", "[]")]) == {"required_columns": []}
    assert _prepared(declared_by, yaml_texts=["required_columns: [A, B]"]) == {
        "required_columns": ["A", "B"]}
    with pytest.raises(NotebookError, match="required_columns of 02_encrypt_input takes a list"):
        _prepared(declared_by, values=[("required_columns", "DESCRIPTION")])
    assert _prepared(declared_by, values=[("output_labels", "{kind: out}")]) == {
        "output_labels": {"kind": "out"}}
    assert _prepared(declared_by, values=[("output_labels", "kind=out;year=2024")]) == {
        "output_labels": {"kind": "out", "year": "2024"}}
    with pytest.raises(NotebookError, match="output_labels of 04_create_datasets takes a mapping"):
        _prepared(declared_by, values=[("output_labels", "result")])
    # a None default takes anything; labels text becomes a mapping
    assert _prepared(declared_by, values=[("input_labels", "source=mine")]) == {
        "input_labels": {"source": "mine"}}


def test_merge_order_is_papermills(tmp_path, declared_by):
    """-f files, then -y, then -p, then -r: a later one wins."""
    params = tmp_path / "params.yaml"
    params.write_text("expiry: 60\ntop: 3\nbackend: container\ninput_name: from-file\n",
                      encoding="utf-8")
    given = cli_parameters(files=[params], yaml_texts=["top: 4\nbackend: auto"],
                           values=[("backend", "process"), ("input_name", "from-p")],
                           raw=[("input_name", "from-r")])
    assert given[0] == {"expiry": 60, "top": 4, "backend": "process", "input_name": "from-r"}
    with pytest.raises(NotebookError, match="cannot read the parameters file"):
        cli_parameters(files=[tmp_path / "missing.yaml"])
    with pytest.raises(NotebookError, match="must be a YAML mapping"):
        cli_parameters(yaml_texts=["- a\n- b"])


def test_unknown_names_are_refused(declared_by):
    with pytest.raises(NotebookError, match="no notebook declares the parameter.*colour"):
        _prepared(declared_by, values=[("colour", "red")])
    with pytest.raises(NotebookError) as info:
        _prepared(declared_by, values=[("replace_key", "True")])
    assert str(info.value).startswith("no notebook declares the parameter(s) replace_key; did you "
                                      "mean replace_keys? ")


def test_values_are_checked_against_their_choices_before_anything_runs(tmp_path, declared_by):
    from nitronb.errors import InputDataError

    with pytest.raises(NotebookError) as info:
        _prepared(declared_by, values=[("backend", "kubernetes")])
    assert str(info.value).startswith("parameter backend of 05_build_enclave_image takes auto, "
                                      "process or container, not 'kubernetes'.")
    with pytest.raises(NotebookError, match="decline_party of 07_workflow_and_approvals takes "
                                            "data-owner, output-owner, app-owner or admin"):
        _prepared(declared_by, values=[("decline_party", "output_owner")])
    with pytest.raises(NotebookError, match="expiry of 03_upload_and_presign takes 1 to 604800"):
        _prepared(declared_by, values=[("expiry", "0")])
    assert _prepared(declared_by, values=[("expiry", "999999"), ("legacy_presign", "True")])
    with pytest.raises(NotebookError, match="top of 09_decrypt_output takes a number of at least"):
        _prepared(declared_by, values=[("top", "0")])
    with pytest.raises(InputDataError, match="unknown encoding 'klingon'"):
        _prepared(declared_by, values=[("encoding", "klingon")])
    with pytest.raises(InputDataError, match=r"missing\.csv does not exist"):
        _prepared(declared_by, values=[("input_csv", str(tmp_path / "missing.csv"))])
    with pytest.raises(InputDataError, match="is a folder"):
        _prepared(declared_by, values=[("input_csv", str(tmp_path))])
    (tmp_path / "ws").write_text("", encoding="utf-8")
    with pytest.raises(NotebookError, match="which is a file, not a folder"):
        _prepared(declared_by, values=[("workspace", str(tmp_path / "ws"))])
    assert _prepared(declared_by, values=[("backend", "container"), ("decline_party", "")]) == {
        "backend": "container", "decline_party": ""}


def test_relative_paths_are_read_from_the_callers_folder(tmp_path):
    (tmp_path / "notes.md").write_text("# notes", encoding="utf-8")
    made = absolute_paths({"input_csv": "my.csv", "workspace": "ws", "expiry": 5,
                           "long_description": "notes.md", "app_dir": str(tmp_path / "app")},
                          cwd=tmp_path)
    assert made == {"input_csv": str(tmp_path / "my.csv"), "workspace": str(tmp_path / "ws"),
                    "expiry": 5, "long_description": str(tmp_path / "notes.md"),
                    "app_dir": str(tmp_path / "app")}
    # Markdown text and URLs are not paths
    for text in ("# A title", "https://example.org/notes.md", "missing.md", ""):
        assert absolute_paths({"long_description": text}, cwd=tmp_path) == {
            "long_description": text}


def _nitronb(*args: str, cwd: Path, workspace: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NITRONB_WORKSPACE": str(workspace)}
    return subprocess.run([sys.executable, "-m", "nitronb", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_walkthrough_refuses_a_wrong_type_before_starting_anything(tmp_path):
    done = _nitronb("walkthrough", "-p", "replace_keys", "yes", "--out", "run",
                    cwd=tmp_path, workspace=tmp_path / "ws")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "nitronb: error: parameter replace_keys of 01_generate_keys takes True or False "
        "(papermill's -p syntax), not 'yes'. See `nitronb walkthrough --help` for the "
        "parameters and their defaults.")
    assert not (tmp_path / "ws" / "local").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, said", [
    (["-p", "backend", "kubernetes"], "nitronb: error: parameter backend of "
                                      "05_build_enclave_image takes auto, process or container, "
                                      "not 'kubernetes'."),
    (["-p", "input_csv", "missing.csv"], "nitronb: error: the input CSV {cwd}/missing.csv does "
                                         "not exist."),
    (["-p", "replace_key", "True"], "nitronb: error: no notebook declares the parameter(s) "
                                    "replace_key; did you mean replace_keys?"),
])
def test_walkthrough_refuses_bad_values_before_starting_anything(tmp_path, args, said):
    from nitronb.local import stack as local

    try:
        done = _nitronb("walkthrough", *args, "--out", "run", cwd=tmp_path,
                        workspace=tmp_path / "ws")
        assert done.returncode == 1
        assert done.stderr.startswith(said.format(cwd=tmp_path)) and done.stderr.count("\n") == 1
        assert not (tmp_path / "ws" / "local").exists() and not (tmp_path / "run").exists()
    finally:
        if (tmp_path / "ws" / "local").exists():
            local.down(tmp_path / "ws")


def test_walkthrough_false_keeps_the_keys_and_reads_paths_from_the_callers_folder(tmp_path):
    """`-p replace_keys False` keeps the keys (the text "False" would replace them), and
    `-p input_csv mine.csv` reads ./mine.csv of the folder the command runs in."""
    from nitronb.local import stack as local
    from nitronb.notebook import steps

    workspace = tmp_path / "ws"
    steps.generate_keys(workspace)
    keys = {name: (workspace / "walkthrough" / name).read_bytes()
            for name in ("input_key.hex", "output_key.hex")}
    here = tmp_path / "here"
    here.mkdir()
    (here / "mine.csv").write_text("START,CODE\n2020-01-01,1\n", encoding="utf-8")
    try:
        done = _nitronb("walkthrough", "-p", "replace_keys", "False", "-p", "input_csv",
                        "mine.csv", "--out", "run", cwd=here, workspace=workspace)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("starting the local stack …\n")
        # 01 ran and kept the keys; 02 read ./mine.csv and refused it before any approval
        assert "01_generate_keys             … ok" in done.stderr
        assert "mine.csv has no column DESCRIPTION (its header: START, CODE)" in done.stderr
        assert {name: (workspace / "walkthrough" / name).read_bytes() for name in keys} == keys
        assert "(kept, mode 0600)" in (here / "run" / "01_generate_keys.ipynb").read_text(
            encoding="utf-8")
        done = _nitronb("walkthrough", "-p", "replace_keys", "True", "-p", "input_csv",
                        "mine.csv", "--out", "run2", cwd=here, workspace=workspace)
        assert done.stderr.startswith("using the running local stack\n")
        assert "01_generate_keys             … ok" in done.stderr
        assert (workspace / "walkthrough" / "input_key.hex").read_bytes() != keys["input_key.hex"]
    finally:
        local.down(workspace)


@pytest.mark.parametrize("yaml_text, kind", [
    ('required_columns: !!pairs [{"DESCRIPTION\\"+__import__(\\"os\\").system(\\"id\\")+\\"": x}]',
     "tuple"),
    ("required_columns: !!set {DESCRIPTION: null}", "set"),
    ("input_labels: !!binary aGVsbG8=", "bytes"),
    ("input_labels: {1: one}", "key of type int"),
])
def test_values_of_types_json_has_not_are_refused_before_they_reach_a_cell(declared_by, yaml_text,
                                                                            kind):
    """papermill writes a value of another type as its str(): a tuple from YAML's !!pairs would
    end the string and run code in the kernel."""
    parameters, texts = cli_parameters(yaml_texts=[yaml_text])
    with pytest.raises(NotebookError, match=kind):
        check_parameters(parameters, declared_by, texts=texts)
