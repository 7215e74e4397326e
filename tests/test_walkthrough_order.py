"""Steps run again or skipped: each step checks that what it builds on is still what its
predecessors made (the input's encryption, the keys, the presigned URLs, the build), and says in
one line which steps to run again, instead of running on stale products. Real manager, node
agent and S3 endpoint on 127.0.0.1; the process backend."""

from __future__ import annotations

import re
import time

import pytest

from nitronb.errors import PresignedURLExpiredError, RunError
from nitronb.notebook.steps import StepOrderError


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from nitronb.local import stack as local

    workspace = tmp_path_factory.mktemp("order-ws")
    try:
        local.up(workspace)
        yield workspace
    finally:
        local.down(workspace)


@pytest.fixture
def wt(stack):
    """The walk-through approved on the shipped sample (steps 01 to 07), whatever a test before
    left: keys kept, every later product made again."""
    from nitronb.notebook import steps

    return steps.through_approval(stack, backend="process")


def _refused(step, *args, **kwargs) -> StepOrderError:
    with pytest.raises(StepOrderError) as info:
        step(*args, **kwargs)
    assert "\n" not in str(info.value) and info.value.hint
    return info.value


def _described(wt) -> dict:
    from nitronb.notebook import steps
    from nitronb.results import describe_summary

    result = steps.decrypt_output(wt)
    assert result.ok, result.report()
    (summary,) = describe_summary(result.text).values()
    return summary


def test_an_input_encrypted_again_is_not_run_on_the_old_upload(wt, tmp_path):
    """02 with another CSV, then 08 and 09 skipping 03 and 04: both refuse, naming the steps;
    run as the hints say, the result describes the new CSV."""
    from nitronb.notebook import steps

    steps.run_workflow(wt, timeout=300)
    other = tmp_path / "visits.csv"
    other.write_text("ID,DESCRIPTION\n1,Headache\n2,Headache\n3,Sprain\n", encoding="utf-8")
    steps.encrypt_input(wt, other)
    error = _refused(steps.run_workflow, wt)
    assert (error.message, error.hint) == ("the input was encrypted again after 03 uploaded it.",
                                           "Run 03 and 04 again, then 08.")
    assert _refused(steps.decrypt_output, wt).hint == "Run 03 and 04 again, then 08 and 09."
    assert _refused(steps.create_datasets, wt).hint == "Run 03 again, then 04."
    record = steps.upload_and_presign(wt)
    assert record["input_uri"].endswith("/visits.csv.enc")  # named after the CSV
    error = _refused(steps.run_workflow, wt)
    assert (error.message, error.hint) == (
        "the input was uploaded and presigned again after 04 registered the datasets.",
        "Run 04 again, then 08.")
    steps.create_datasets(wt)  # a new dataset, "visits": the workflow names the old one
    error = _refused(steps.run_workflow, wt)
    assert error.hint == "Run 07 again, then 08."
    steps.create_workflow(wt)
    steps.approve_workflow(wt)
    steps.run_workflow(wt, timeout=300)
    assert _described(wt) == {"count": 3, "unique": 2, "top": "Headache", "freq": 2}


def test_keys_replaced_after_the_datasets_are_registered(wt):
    """01 with replace_keys after 04: 08 and 09 refuse instead of running with the old keys
    and failing to decrypt; 02, 03 and 04 again make the run readable."""
    from nitronb.notebook import steps

    steps.run_workflow(wt, timeout=300)
    steps.generate_keys(wt, replace=True)
    error = _refused(steps.run_workflow, wt)
    assert (error.message, error.hint) == (
        "the input key was replaced after 02 encrypted the input.",
        "Run 02, 03 and 04 again, then 08.")
    assert _refused(steps.upload_and_presign, wt).hint == "Run 02 again, then 03."
    assert _refused(steps.decrypt_output, wt).hint == "Run 02, 03 and 04 again, then 08 and 09."
    steps.encrypt_input(wt)
    steps.upload_and_presign(wt)
    steps.create_datasets(wt)
    steps.run_workflow(wt, timeout=300)
    assert _described(wt)["count"] == 8376


def test_an_output_key_replaced_alone(wt):
    from nitronb.notebook import steps
    from nitronb.keys import write_key_file

    steps.run_workflow(wt, timeout=300)
    write_key_file(wt.state()["output_key"], overwrite=True)
    error = _refused(steps.run_workflow, wt)
    assert (error.message, error.hint) == (
        "the output key was replaced after 04 registered the output dataset.",
        "Run 04 again (results encrypted with the old key stay unreadable), then 08.")
    error = _refused(steps.decrypt_output, wt)
    assert error.message.startswith("the output key was replaced after 04 registered")
    steps.create_datasets(wt)
    error = _refused(steps.decrypt_output, wt)
    assert error.message == ("the output key was replaced after 08's run encrypted its result "
                             "with the key the output dataset had; that result stays unreadable.")
    assert error.hint == "Run 08 again, then 09."
    steps.run_workflow(wt, timeout=300)
    assert _described(wt)["count"] == 8376


def test_a_result_that_does_not_decrypt_is_named_in_the_workspace(wt, tmp_path):
    """A result the output key does not open (here: one encrypted with another key, put in the
    output object): the error names it as $WORKSPACE/…, never by its absolute path."""
    from nitronb.notebook import steps
    from nitronb.s3 import transfers
    from nitronb.crypto import encrypt_bytes
    from nitronb.errors import DecryptionError
    from nitronb.keys import generate_key
    from nitronb.results import RunResult

    steps.run_workflow(wt, timeout=300)
    forged = tmp_path / "describe-result.json.enc"
    forged.write_bytes(encrypt_bytes(generate_key(), RunResult(0, b"x", b"").to_json()))
    state = wt.state()
    transfers.upload_file(forged, state["s3_dir"], key_name="describe-result.json.enc",
                        workspace=wt.workspace, progress=False)
    with pytest.raises(DecryptionError) as info:
        steps.decrypt_output(wt)
    text = str(info.value)
    assert text.startswith("cannot decrypt $WORKSPACE/walkthrough/describe-result.json.enc: "
                           "authentication failed.")
    assert str(wt.workspace) not in text and info.value.hint and "\n" not in text


def test_an_image_built_again_after_the_configuration(wt, tmp_path):
    import shutil

    from nitronb.notebook import steps
    from nitronb.enclave.image import default_app_dir

    steps.run_workflow(wt, timeout=300)
    app = tmp_path / "app"
    shutil.copytree(default_app_dir(), app)
    (app / "describe.py").write_text((app / "describe.py").read_text(encoding="utf-8")
                                     + "# another build\n", encoding="utf-8")
    steps.build_enclave_image(wt, backend="process", app_dir=app)
    error = _refused(steps.run_workflow, wt)
    assert (error.message, error.hint) == (
        "the enclave image was built again after 06 made the application configuration.",
        "Run 06 and 07 again, then 08.")
    assert _refused(steps.decrypt_output, wt).hint == "Run 06 and 07 again, then 08 and 09."
    steps.build_enclave_image(wt, backend="process")  # the same app: the same build as before
    steps.run_workflow(wt, timeout=300)


def test_expired_urls_are_refused_by_04_with_when(wt):
    from nitronb.notebook import steps

    steps.upload_and_presign(wt, expiry=1)
    time.sleep(2)
    with pytest.raises(PresignedURLExpiredError) as info:
        steps.create_datasets(wt)
    assert re.fullmatch(r"the presigned download \(GET\) URL that 03 made expired at "
                        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\.", info.value.message)
    assert info.value.hint == "Run 03 again (it presigns new URLs), then 04."
    steps.upload_and_presign(wt, expiry=30)
    with pytest.raises(PresignedURLExpiredError, match=r"expires at .* UTC, in less than 60 s"):
        steps.create_datasets(wt)


def test_urls_that_expire_before_the_run_say_so_in_08(wt):
    """04 takes URLs that live a minute more; the run comes after they expired: the run's error
    says when they expired and what to run again, and that works."""
    from nitronb.notebook import steps
    from nitronb.s3.presign import url_expiry

    steps.upload_and_presign(wt, expiry=62)
    steps.create_datasets(wt)
    end = url_expiry(wt.state()["input_url"])
    time.sleep(max(0.0, end.timestamp() - time.time()) + 2)
    with pytest.raises(RunError) as info:
        steps.run_workflow(wt, timeout=300)
    assert "HTTP 403 (AccessDenied)" in info.value.message
    assert info.value.hint == (f"The presigned URLs expired at {end:%Y-%m-%d %H:%M:%S} UTC (03 "
                               "made them for 62 s); run 03 and 04 again, then 08.")
    steps.upload_and_presign(wt)
    steps.create_datasets(wt)
    steps.run_workflow(wt, timeout=300)
    assert _described(wt)["count"] == 8376


def test_a_run_that_times_out_says_what_to_do(wt):
    from nitronb.notebook import steps

    with pytest.raises(RunError) as info:
        steps.run_workflow(wt, timeout=0.01)
    assert "did not finish within" in info.value.message
    assert info.value.hint.startswith("Give it longer (the timeout parameter of 08")


def test_a_revoked_build_is_not_ok_in_05(wt, tmp_path):
    import shutil

    from nitronb.notebook import steps
    from nitronb.errors import ConflictError
    from nitronb.enclave.image import default_app_dir

    app = tmp_path / "app"
    shutil.copytree(default_app_dir(), app)
    (app / "describe.py").write_text((app / "describe.py").read_text(encoding="utf-8")
                                     + "# a build to revoke\n", encoding="utf-8")
    record = steps.build_enclave_image(wt, backend="process", app_dir=app)
    wt.client("admin").revoke_task(record["build"]["task_id"], "a flaw in this build")
    with pytest.raises(ConflictError) as info:
        steps.build_enclave_image(wt, backend="process", app_dir=app)
    assert "build whitelist task" in info.value.message and "REVOKED" in info.value.message
    assert "a flaw in this build" in info.value.message and "\n" not in info.value.message
    assert "run 05 again" in info.value.hint



def test_a_revoked_build_gets_the_managers_advice_in_08(wt):
    from nitronb.notebook import steps

    task_id = wt.client("admin").get_build(wt.state()["build_id"])["task_id"]
    wt.client("admin").revoke_task(task_id, "the input URL expired, 403")
    with pytest.raises(RunError) as info:
        steps.run_workflow(wt, timeout=300)
    assert "was revoked by admin" in info.value.message
    assert "administrator revoked" in info.value.hint and "presigned" not in info.value.hint
