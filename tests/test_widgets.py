"""The notebooks' widgets, driven from Python against a real manager."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")

from nitronb.errors import NitronbError, RunError, ValidationError  # noqa: E402
from nitronb.keys import fingerprint, generate_key  # noqa: E402
from nitronb.notebook.pictures import annotate_workflow, workflow_svg  # noqa: E402
from nitronb.notebook.widgets import (RUN_STEPS, ApprovalsPanel, DatasetForm, RunMonitor,  # noqa: E402
                                      RunState, parse_labels)

ROOT = Path(__file__).resolve().parents[1]
PARTIES = ("data-owner", "output-owner", "app-owner", "admin")
PRESIGNED = ("http://127.0.0.1:9/nitronb/input/{name}.csv.enc?X-Amz-Algorithm=AWS4-HMAC-SHA256"
             "&X-Amz-Expires=3600&X-Amz-Signature=0123456789abcdef0123456789abcdef")


# --- a real manager ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def manager(tmp_path_factory):
    """``python -m nitronb.ccm.server`` in a temporary workspace; yields party → CCMClient."""
    import requests

    from nitronb.ccm.client import CCMClient

    workspace = tmp_path_factory.mktemp("widgets-ws")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(workspace / "manager.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "nitronb.ccm.server", "--workspace",
                             str(workspace), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail("the manager exited: "
                            + (workspace / "manager.log").read_text()[-2000:])
            try:
                if requests.get(url + "/v1/sys/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the manager did not answer /v1/sys/health within 30 s")
            time.sleep(0.05)
        tokens = json.loads((workspace / "ccm" / "tokens.json").read_text())
        yield {party: CCMClient(url, tokens[party]) for party in PARTIES}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def measurements(seed: str) -> dict[str, str]:
    return {"hash_algorithm": "Sha384",
            **{f"pcr{i}": hashlib.sha384(f"{seed} {i}".encode()).hexdigest() for i in range(3)}}


def app_with_build(clients, suffix: str) -> tuple[dict, dict]:
    ao = clients["app-owner"]
    app = ao.create_app({"name": f"describe{suffix}", "image": "nitronb/describe",
                         "domain": f"describe{suffix}.nitronb.local"})
    build = ao.create_build({"app_id": app["id"], "image": f"nitronb/describe:{suffix}-enclave",
                             "measurements": measurements(suffix)})
    return app, build


def draft_workflow(clients, suffix: str) -> dict:
    """Two datasets, an approved app build, its configuration and a draft workflow."""
    def dataset(party, name):
        from nitronb.datasets import Dataset

        return clients[party].create_dataset(
            Dataset.from_url(name, PRESIGNED.format(name=name), generate_key()).payload())

    ds_in = dataset("data-owner", f"conditions{suffix}")
    ds_out = dataset("output-owner", f"result{suffix}")
    app, build = app_with_build(clients, suffix)
    for task in clients["admin"].list_tasks("PENDING"):
        if task["app_id"] == app["id"]:
            clients["admin"].approve_task(task["id"])
    config = clients["app-owner"].create_app_config({
        "name": f"describe-conditions{suffix}", "image": build["image"],
        "ports": ["input", "output"], "config_items": {}})
    return clients["app-owner"].create_workflow({
        "name": f"conditions-describe{suffix}",
        "objects": {"app": {"type": "app", "app_config_id": config["id"]},
                    "input": {"type": "dataset", "dataset_id": ds_in["id"]},
                    "output": {"type": "dataset", "dataset_id": ds_out["id"]}},
        "edges": [{"source": "input", "target": "app", "port": "input"},
                  {"source": "app", "target": "output", "port": "output"}]})


def all_values(widget) -> list[str]:
    """Every text a widget tree holds (values, descriptions, outputs)."""
    found = []
    for name in ("value", "description", "placeholder"):
        value = getattr(widget, name, None)
        if isinstance(value, str):
            found.append(value)
    found.extend(json.dumps(o) for o in getattr(widget, "outputs", ()))
    for child in getattr(widget, "children", ()):
        found.extend(all_values(child))
    return found


# --- DatasetForm -------------------------------------------------------------------------------


def test_dataset_form_creates_a_dataset_shown_redacted(manager):
    key = generate_key()
    created = []
    form = DatasetForm(manager["data-owner"], url=PRESIGNED.format(name="c"), key=key,
                       on_created=created.append)
    assert form.location.value == "http://127.0.0.1:9/nitronb/input/c.csv.enc"
    assert form.location.disabled
    assert f"key fingerprint {fingerprint(key)};" in form.credentials.value
    assert f"{key[:4]}…" not in form.credentials.value
    form.name.value = "form-conditions"
    form.description.value = "Synthea conditions, encrypted"
    form.labels.value = "source=synthea\nyear = 2020\n"
    form.long_description.value = "# Conditions\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    assert form.preview.value.startswith("<h1>Conditions</h1>\n<table>")
    assert not any(key in text for text in all_values(form.widget))

    form.create_button.click()

    assert "created" in form.message.value and "#B00020" not in form.message.value
    assert form.result is not None and created == [form.result]
    listed = {d["name"]: d for d in manager["data-owner"].list_datasets()}
    shown = listed["form-conditions"]
    assert shown["owner"] == "data-owner"
    assert shown["labels"] == {"source": "synthea", "year": "2020"}
    assert shown["location"] == "http://127.0.0.1:9/nitronb/input/c.csv.enc"
    assert shown["long_description"].startswith("# Conditions")
    assert shown["credentials"]["encryption"] == {"key": "<redacted>",
                                                  "key_fingerprint": fingerprint(key)}
    assert key not in json.dumps(listed) and "0123456789abcdef" not in json.dumps(listed)
    assert not any(key in text for text in all_values(form.widget))


SIGNATURE = "5e1f0c3d9b8a7f6e5d4c3b2a19080706f5e4d3c2b1a09f8e7d6c5b4a39281706"


def every_state(form) -> str:
    """Everything the form puts on screen or in a saved notebook: each widget's whole state
    (values, descriptions, placeholders, tooltips, outputs), its text and HTML forms."""
    import ipywidgets

    seen, texts, todo = set(), [], [form.widget]
    todo += [v for v in vars(form).values() if isinstance(v, ipywidgets.Widget)]
    while todo:
        widget = todo.pop()
        if id(widget) in seen:
            continue
        seen.add(id(widget))
        texts.append(json.dumps(widget.get_state(), default=str, ensure_ascii=False))
        todo += [c for c in getattr(widget, "children", ()) if isinstance(c, ipywidgets.Widget)]
    texts += [form.summary(), repr(form), json.dumps(form._repr_mimebundle_(), default=str)]
    return "\n".join(texts)


def test_the_dataset_form_never_shows_the_presigned_signature(manager, tmp_path):
    def url(name: str, signature: str = SIGNATURE) -> str:
        return (f"http://127.0.0.1:9/nitronb/input/{name}.csv.enc?X-Amz-Algorithm=AWS4-HMAC-"
                f"SHA256&X-Amz-Credential=test%2F20261201%2Fus-east-1%2Fs3%2Faws4_request"
                f"&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature={signature}")

    key = generate_key()
    form = DatasetForm(manager["data-owner"], url=url("sig"), key=key, name="sig-form",
                       description="d", long_description="# About")
    states = [every_state(form)]
    assert "X-Amz-Signature" in form.credentials.value  # the field names are shown
    form.set_source(url("sig2", SIGNATURE[::-1]), key)
    states.append(every_state(form))
    form.set_source(url("sig"), key)
    form.create_button.click()
    assert form.result is not None and "created" in form.message.value
    states.append(every_state(form))
    form.create_button.click()  # the name again: an inline error
    assert "#B00020" in form.message.value
    states.append(every_state(form))
    form.name.value = "../bad"
    form.create_button.click()
    assert "#B00020" in form.message.value
    states.append(every_state(form))
    form.source.value = f"http://127.0.0.1:{_free_port()}/about.md?X-Amz-Signature={SIGNATURE}"
    form.load_button.click()
    assert "#B00020" in form.load_message.value and SIGNATURE not in form.load_message.value
    form.source.value = ""  # what was typed there is the user's own
    states.append(every_state(form))
    form.set_source(url("sig").replace("http://", "ftp://"), key)
    form.name.value = "ftp-form"
    form.create_button.click()
    assert "#B00020" in form.message.value
    states.append(every_state(form))
    with pytest.raises(NitronbError, match="is not an absolute URL") as caught:
        DatasetForm(manager["data-owner"], url=url("x").split("://", 1)[1], key=key)
    assert SIGNATURE not in str(caught.value) and SIGNATURE not in caught.value.hint
    for i, state in enumerate(states):
        assert SIGNATURE not in state and SIGNATURE[::-1] not in state, i
        assert key not in state, i


def test_a_bad_name_shows_an_inline_error_creates_nothing_and_keeps_the_fields(manager):
    before = manager["data-owner"].list_datasets()
    form = DatasetForm(manager["data-owner"], url=PRESIGNED.format(name="x"), key=generate_key())
    form.name.value = "../escape"
    form.description.value = "kept"
    form.labels.value = "team=research"
    form.long_description.value = "Kept *too*."
    form.create_button.click()
    assert "#B00020" in form.message.value and "unsafe dataset name" in form.message.value
    assert form.result is None
    assert manager["data-owner"].list_datasets() == before
    assert (form.name.value, form.description.value, form.labels.value,
            form.long_description.value) == ("../escape", "kept", "team=research", "Kept *too*.")

    form.labels.value = "team research"
    form.name.value = "fixed-name"
    form.create_button.click()
    assert "not key=value" in form.message.value and form.result is None

    form.labels.value = "team=research"
    form.create_button.click()
    assert form.result["name"] == "fixed-name" and form.result["description"] == "kept"
    form.create_button.click()  # the same name again: the manager's conflict, said plainly
    assert "#B00020" in form.message.value
    assert ("dataset fixed-name exists already (registered by data-owner). Change the name to "
            "register another.") in form.message.value
    assert "409" not in form.message.value and "ConflictError" not in form.message.value


def test_a_form_without_url_or_client_explains_what_is_missing(manager, tmp_path):
    form = DatasetForm(None, url=PRESIGNED.format(name="y"), key=generate_key(), name="y")
    form.create_button.click()
    assert "no manager client" in form.message.value
    form = DatasetForm(manager["data-owner"], name="no-url")
    form.create_button.click()
    assert "no presigned URL" in form.message.value
    (tmp_path / "about.md").write_text("## Loaded\nfrom a file", encoding="utf-8")
    form.source.value = str(tmp_path / "about.md")
    form.load_button.click()
    assert form.long_description.value.startswith("## Loaded")
    assert form.preview.value.startswith("<h2>Loaded</h2>")


def test_loading_from_a_path_that_is_no_file_keeps_what_was_typed(manager, tmp_path):
    form = DatasetForm(manager["data-owner"], url=PRESIGNED.format(name="t"), key=generate_key(),
                       name="typed")
    typed = "# Typed by hand\n\nkept as it is"
    form.long_description.value = typed
    (tmp_path / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    for source, says in ((tmp_path / "missing.md", "there is no file"),
                         (tmp_path, "is a folder, not a Markdown file"),
                         (tmp_path / "latin1.md", "is not UTF-8 text"),
                         ("", "type a file path or an http(s) URL")):
        form.source.value = str(source)
        form.load_button.click()
        assert "#B00020" in form.load_message.value and says in form.load_message.value, source
        assert form.message.value == ""  # the area under Create is for Create
        assert form.source.value == str(source)
        assert form.long_description.value == typed
        assert form.preview.value.startswith("<h1>Typed by hand</h1>")
    assert form.result is None


def test_a_load_error_shows_under_the_load_row_in_one_line(manager, tmp_path):
    """A URL that cannot be fetched says why in a few words, right under Load from (not under
    the preview and the Create button), without urllib3's text or the URL's query string."""
    import http.server
    import threading
    from functools import partial

    (tmp_path / "about.md").write_text("# From the web\n\nfetched", encoding="utf-8")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    served = f"http://127.0.0.1:{server.server_port}"
    closed = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    form = DatasetForm(manager["data-owner"], url=PRESIGNED.format(name="w"), key=generate_key(),
                       name="web")
    row = next(i for i, child in enumerate(form.widget.children)
               if form.load_button in getattr(child, "children", ()))
    assert form.widget.children[row + 1] is form.load_message
    assert form.widget.children.index(form.preview) > row + 1
    try:
        for source, says in (
                (f"{closed}/about.md?X-Amz-Signature=s3cr3t",
                 f"cannot fetch URL {closed}/about.md?…: connection refused."),
                (f"{served}/missing.md", f"cannot fetch URL {served}/missing.md: HTTP 404")):
            form.source.value = source
            form.load_button.click()
            shown = form.load_message.value
            assert "#B00020" in shown and says in shown, shown
            assert "\n" not in shown and "s3cr3t" not in shown
            assert "HTTPConnectionPool" not in shown and "Max retries" not in shown
            assert form.long_description.value == "" and form.message.value == ""
        form.source.value = f"{served}/about.md"
        form.load_button.click()
    finally:
        server.shutdown()
        server.server_close()
    assert form.long_description.value.startswith("# From the web")
    assert "#00734F" in form.load_message.value
    assert f"loaded from {served}/about.md" in form.load_message.value


def test_parse_labels():
    assert parse_labels("a=1\n\n b = two words ;c=\n") == {"a": "1", "b": "two words", "c": ""}
    for bad in ("novalue", "=x", "a=1\na=2"):
        with pytest.raises(ValidationError):
            parse_labels(bad)


# --- ApprovalsPanel ----------------------------------------------------------------------------


def test_the_admin_approves_whitelisting_tasks_from_the_panel(manager):
    app, build = app_with_build(manager, "-tasks")
    panel = ApprovalsPanel(manager)
    mine = [i for i in panel.pending("admin") if i.kind == "task"
            and manager["admin"].get_task(i.id)["app_id"] == app["id"]]
    assert sorted(i.title.split(":")[0] for i in mine) == ["BUILD_WHITELIST",
                                                          "DOMAIN_WHITELIST"]
    assert all("describe-tasks" in i.title for i in mine)
    assert not any(i.kind == "task" for i in panel.pending("data-owner"))
    ids = [i.id for i in mine]
    for task_id in ids:
        item = next(i for i in panel.items if i.id == task_id)
        item.approve_button.click()
        assert "admin approved task" in panel.status.value
    assert [manager["admin"].get_task(t)["status"] for t in ids] == ["APPROVED", "APPROVED"]
    assert not {i.id for i in panel.items} & set(ids)


def test_a_workflow_declined_from_the_panel_ends_denied_with_its_reason(manager):
    draft = draft_workflow(manager, "-deny")
    request = manager["app-owner"].request_approval(draft["id"])
    panel = ApprovalsPanel({p: manager[p] for p in ("data-owner", "output-owner", "app-owner")})

    def item(party):
        found = [i for i in panel.pending(party) if i.id == request["id"]]
        return found[0] if found else None

    assert "conditions-describe-deny" in item("data-owner").title
    item("app-owner").approve()
    assert item("app-owner") is None
    assert manager["app-owner"].get_approval_request(request["id"])["approvals"].keys() == \
        {"app-owner"}

    item("data-owner").decline("")
    assert "needs a reason" in panel.status.value
    assert manager["data-owner"].get_approval_request(request["id"])["status"] == "PENDING"

    item("data-owner").decline("  not this quarter ")
    state = manager["data-owner"].get_approval_request(request["id"])
    assert (state["status"], state["reason"], state["denied_by"]) == \
        ("DENIED", "not this quarter", "data-owner")
    assert manager["app-owner"].get_final_workflow(request["workflow_id"])["status"] == "DENIED"
    assert "data-owner declined" in panel.status.value
    # a decline reads as one: its own sign and colour, not the green tick of an approval
    assert "⊘" in panel.status.value and "#B45309" in panel.status.value
    assert "✓" not in panel.status.value and "#00734F" not in panel.status.value
    assert item("output-owner") is None and item("data-owner") is None


def test_every_approver_approves_from_the_panel_and_the_picture_follows(manager):
    draft = draft_workflow(manager, "-ok")
    request = manager["app-owner"].request_approval(draft["id"])
    panel = ApprovalsPanel(manager)
    svg = workflow_svg(annotate_workflow(manager["app-owner"], draft),
                       manager["app-owner"].get_approval_request(request["id"]))
    shown = ["".join(t.itertext()) for t in ET.fromstring(svg).iter(
        "{http://www.w3.org/2000/svg}text")]
    assert {"conditions-ok", "result-ok", "describe-conditions-ok", "owner: data-owner",
            "… PENDING"} <= set(shown)
    for party in request["approvers"]:
        next(i for i in panel.pending(party) if i.id == request["id"]).approve()
    final = manager["app-owner"].get_final_workflow(request["workflow_id"])
    assert final["status"] == "APPROVED" and set(final["app_config_ids"]) == {"app"}
    shown = ["".join(t.itertext()) for t in ET.fromstring(workflow_svg(annotate_workflow(
        manager["app-owner"], final))).iter("{http://www.w3.org/2000/svg}text")]
    assert "✓ APPROVED" in shown


# --- RunMonitor --------------------------------------------------------------------------------

LOG = ("launching enclave\n"
       "[enclave-os] attested: public key and APPCONFIG_ID 0123456789ab… bound\n"
       "[enclave-os] provisioned: credentials for 2 dataset(s)\n"
       "[enclave-os] wrote 3 file(s) under the app-config folder; starting the app\n"
       "describe output\n"
       "[enclave-os] app exited with code 0; credentials wiped\n")


def test_run_monitor_follows_the_launcher_log():
    monitor = RunMonitor()
    assert monitor.state == "starting" and monitor.progress.value == 0
    seen = []
    for line in LOG.splitlines(keepends=True):
        monitor.feed(line)
        seen.append(monitor.state)
    assert seen == ["attesting", "attesting", "provisioned", "running app", "running app",
                    "finished"]
    assert monitor.progress.value == RUN_STEPS.index("finished")
    assert monitor.progress.bar_style == "success"
    assert "credentials wiped" in monitor.label.value
    assert "".join(o["text"] for o in monitor.output.outputs) == LOG == monitor.log


def test_run_state_across_chunks_and_failures():
    state = RunState()
    state.feed(LOG[:70])
    state.feed(LOG[70:130])
    assert state.state == "attesting"
    state.feed(LOG[130:])
    assert state.state == "finished" and state.exit_code == 0

    refused = RunState()
    refused.feed("[enclave-os] refused: provisioning by the manager refused (HTTP 403)\n"
                 "[enclave-os] app exited with code 70; credentials wiped\n")
    assert refused.state == "refused" and refused.done and "HTTP 403" in refused.detail

    failed = RunState()
    failed.feed(LOG.replace("code 0", "code 3"))
    assert (failed.state, failed.exit_code) == ("failed", 3)

    no_app = RunState()
    no_app.feed("[enclave-os] provisioned: x\n[enclave-os] cannot start the app ['x']: gone\n"
                "[enclave-os] app exited with code 71; credentials wiped")
    assert no_app.state == "failed"
    no_app.end(71)
    assert no_app.exit_code == 71 and no_app.state == "failed"

    silent = RunState()
    silent.end(0)
    assert silent.state == "finished"


def test_run_monitor_follows_any_run_that_reports_its_log():
    from nitronb.enclave import runner

    def run(on_log):
        for chunk in (LOG[:50], LOG[50:140], LOG[140:]):
            on_log(chunk)
        return runner.RunOutcome(enclave_id="e2", backend="process", exit_code=0,
                                 measurements={}, log=LOG, seconds=1.0)

    monitor = RunMonitor()
    outcome = monitor.follow(run)
    assert monitor.outcome is outcome and monitor.state == "finished" and monitor.log == LOG
    assert monitor.progress.bar_style == "success"

    def refused(on_log):
        on_log("[enclave-os] refused: provisioning by the manager refused (HTTP 403)\n")
        raise RunError("enclave e3 ended with exit code 70: provisioning refused")

    with pytest.raises(RunError):
        monitor.follow(refused)
    assert monitor.state == "refused" and "HTTP 403" in monitor.label.value
    assert monitor.log.startswith("[enclave-os] refused")


def test_run_monitor_run_follows_a_real_enclave_run(local_stack, tmp_path):
    """The monitor over a real launch (process backend, the local stack): the manager refuses
    an APPCONFIG_ID it never issued, and the monitor shows what the launcher logged."""
    from nitronb.enclave.image import HOST_PYTHON, default_app_dir
    from nitronb.enclave.process_image import prepare_process_image

    image = prepare_process_image(default_app_dir(), None, HOST_PYTHON,
                                  workspace=local_stack.workspace)
    monitor = RunMonitor()
    outcome = monitor.run(image.reference, "ab" * 32, backend="process",
                          workspace=local_stack.workspace, timeout=120)
    assert monitor.outcome is outcome and outcome.exit_code == 70
    assert monitor.log == outcome.log and "[enclave-os] refused:" in outcome.log
    assert "".join(o["text"] for o in monitor.output.outputs) == outcome.log
    whole = RunState()
    whole.feed(outcome.log)
    whole.end(outcome.exit_code)
    assert (monitor.state, monitor.run_state.detail) == (whole.state, whole.detail)
    assert monitor.state == "refused" and outcome.refused in monitor.run_state.detail
    assert "no approved configuration" in monitor.label.value
    assert monitor.progress.bar_style == "danger"

    closed = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(NitronbError, match="does not answer"):
        monitor.run(image.reference, "ab" * 32, node_agent=closed,
                    workspace=local_stack.workspace)
    assert monitor.state == "failed" and "does not answer" in monitor.label.value
    assert monitor.progress.bar_style == "danger" and monitor.log == ""


def test_widgets_are_not_needed_to_import_nitronb():
    code = ("import sys; sys.modules['ipywidgets'] = None; import nitronb.notebook.widgets as w; "
            "from nitronb.errors import WidgetsUnavailableError\n"
            "try:\n    w.RunMonitor()\nexcept WidgetsUnavailableError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "pip install ipywidgets" in out
