"""The process backend's sandbox (bubblewrap): an app laid out at the Dockerfile's destinations
sees only the measured image, the stand-in Python and its app-config folder; it cannot find the
enclave's node-agent token; what it writes is gone when the enclave ends; a CMD outside the image
is refused; without bubblewrap only nitronb's own app runs, unsandboxed, with a warning. Real
node agent, manager and S3 endpoint on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
import requests

from nitronb.errors import ImageBuildError
from nitronb.enclave.measure import tree_files
from nitronb.enclave.sandbox import find_bwrap, read_layout

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "tests" / "data" / "probe_app"
needs_bwrap = pytest.mark.skipif(find_bwrap() is None,
                                 reason="bubblewrap is not installed (apt-get install bubblewrap)")


def _app(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "app"
    folder.mkdir(exist_ok=True)
    (folder / "Dockerfile").write_text(dockerfile, encoding="utf-8")
    for name, text in (files or {}).items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


# --- the Dockerfile as a layout -------------------------------------------------------------


def test_the_layout_follows_copy_workdir_env_and_mkdir() -> None:
    layout = read_layout(tree_files(PROBE))
    assert layout.files == {"/demo/probe.py": "probe.py"}
    assert layout.workdir == "/demo" and layout.env == {"PROBE_MODE": "sandbox"}
    assert layout.dirs == ["/opt/fortanix/enclave-os/app-config/rw", "/demo/code", "/demo/input"]
    assert layout.not_run == ["apt-get update && apt-get install -y python3-requests"]
    assert layout.command == ["/demo/probe.py"]


def test_copy_of_a_folder_and_of_the_whole_context(tmp_path) -> None:
    app = _app(tmp_path, "FROM x\nWORKDIR /srv\nCOPY . ./\nCOPY lib /opt/lib\n"
                         'CMD ["python3", "main.py"]\n', {"main.py": ""})
    (app / "lib").mkdir()
    (app / "lib" / "a.py").write_text("", encoding="utf-8")
    files = read_layout(tree_files(app)).files
    assert files["/srv/main.py"] == "main.py" and files["/srv/lib/a.py"] == "lib/a.py"
    assert files["/opt/lib/a.py"] == "lib/a.py"


def test_prepare_lists_the_run_lines_not_run_and_pcr2_measures_them(tmp_path) -> None:
    import json

    from nitronb.enclave.image import HOST_PYTHON
    from nitronb.enclave.process_image import prepare_process_image

    image = prepare_process_image(PROBE, None, HOST_PYTHON, workspace=tmp_path / "ws")
    record = json.loads((Path(image.reference) / "image.json").read_text(encoding="utf-8"))
    assert record["not_run_by_process_backend"] == [
        "apt-get update && apt-get install -y python3-requests"]
    changed = tmp_path / "changed"
    shutil.copytree(PROBE, changed)
    dockerfile = changed / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text(encoding="utf-8").replace(
        "python3-requests", "python3-pandas"), encoding="utf-8")
    other = prepare_process_image(changed, None, HOST_PYTHON, workspace=tmp_path / "ws")
    assert other.measurements.pcr2 != image.measurements.pcr2


# --- what runs is what was measured ---------------------------------------------------------


@pytest.mark.parametrize("cmd, named", [
    ('["python3", "/tmp/evil.py"]', "/tmp/evil.py"),
    ('["/usr/bin/python3", "-u", "/home/evil.py"]', "/home/evil.py"),
    ('["/usr/local/bin/evil"]', "/usr/local/bin/evil"),
    ('["python3", "missing.py"]', "missing.py"),
])
def test_a_cmd_outside_the_image_is_refused_before_launch(tmp_path, monkeypatch, cmd, named
                                                          ) -> None:
    from nitronb.enclave.backends import ProcessBackend
    from nitronb.enclave.image import HOST_PYTHON
    from nitronb.enclave.process_image import prepare_process_image

    marker = tmp_path / "ran"
    evil = Path("/tmp/evil.py")
    app = _app(tmp_path, f"FROM x\nCOPY app.py /app/\nWORKDIR /app\nCMD {cmd}\n",
               {"app.py": ""})
    image = prepare_process_image(app, None, HOST_PYTHON, workspace=tmp_path / "ws")
    folder = tmp_path / "enclave"
    folder.mkdir()
    for bwrap in (None, "/nonexistent/bwrap"):
        if bwrap:
            monkeypatch.setenv("NITRONB_BWRAP", bwrap)
        with pytest.raises(ImageBuildError, match="refusing to run it") as caught:
            ProcessBackend().prepare(image.reference, folder)
        assert named in str(caught.value)
        shutil.rmtree(folder / "private", ignore_errors=True)
    assert not marker.exists() and not evil.exists()


# --- without bubblewrap ---------------------------------------------------------------------


@pytest.fixture()
def agent(tmp_path):
    """A node agent served in-process on a free loopback port."""
    from nitronb.enclave.node_agent import NodeAgent
    from nitronb.enclave.node_agent_api import make_server

    node = NodeAgent(tmp_path / "agent-ws")
    server = make_server(node)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield node
    finally:
        for enclave in list(node.enclaves.values()):
            if enclave.handle is not None and enclave.exit_code is None:
                enclave.handle.stop()
        server.shutdown()
        server.server_close()


def _launch(agent, image: str, ccm_url: str) -> requests.Response:
    return requests.post(f"{agent.url}/v1/enclaves", timeout=30,
                         headers={"Authorization": f"Bearer {agent.operator_token}"},
                         json={"image": image, "appconfig_id": "ab" * 32, "ccm_url": ccm_url,
                               "backend": "process"})


def test_without_bubblewrap_nitronbs_app_runs_unsandboxed_with_a_warning(agent, monkeypatch
                                                                         ) -> None:
    from nitronb.enclave.image import HOST_PYTHON, default_app_dir
    from nitronb.enclave.process_image import prepare_process_image
    from nitronb.enclave.runner import run_enclave

    monkeypatch.setenv("NITRONB_BWRAP", "/nonexistent/bwrap")
    image = prepare_process_image(default_app_dir(), None, HOST_PYTHON,
                                  workspace=agent.workspace).reference
    outcome = run_enclave(image, "ab" * 32, node_agent=agent.url, ccm=_dead_url(),
                          workspace=agent.workspace, backend="process", timeout=60)
    first = outcome.log.splitlines()[0]
    assert first.startswith("[enclave-os] warning: bubblewrap is not installed")
    assert "unsandboxed" in first and "apt-get install bubblewrap" in first
    assert outcome.exit_code == 70 and "cannot reach" in (outcome.refused or "")


def test_without_bubblewrap_an_app_on_the_canonical_paths_is_refused(agent, monkeypatch) -> None:
    from nitronb.enclave.image import HOST_PYTHON
    from nitronb.enclave.process_image import prepare_process_image

    monkeypatch.setenv("NITRONB_BWRAP", "/nonexistent/bwrap")
    image = prepare_process_image(PROBE, None, HOST_PYTHON, workspace=agent.workspace)
    reply = _launch(agent, image.reference, _dead_url())
    assert reply.status_code == 422
    message = reply.json()["message"]
    assert "needs the bubblewrap sandbox" in message and "/demo/probe.py" in message


@needs_bwrap
def test_the_enclave_token_is_in_no_environment_on_the_host(agent, tmp_path) -> None:
    """While the launcher waits on the manager, no process's environment or command line holds
    the token."""
    from nitronb.enclave.image import HOST_PYTHON, default_app_dir
    from nitronb.enclave.process_image import prepare_process_image

    image = prepare_process_image(default_app_dir(), None, HOST_PYTHON,
                                  workspace=agent.workspace).reference
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        reply = _launch(agent, image, f"http://127.0.0.1:{silent.getsockname()[1]}")
        assert reply.status_code == 200
        enclave = agent.get(reply.json()["id"])
        token = enclave.token.encode()
        silent.settimeout(60)
        connection, _ = silent.accept()  # the launcher is running: it asks for a nonce
        seen = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            for name in ("environ", "cmdline"):
                try:
                    data = (entry / name).read_bytes()
                except OSError:
                    continue
                seen += 1
                assert token not in data, f"the enclave token is in /proc/{entry.name}/{name}"
        assert seen > 2
        connection.close()
        agent.stop(enclave.id)


# --- a whole run of an app on the canonical paths -------------------------------------------


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """The walk-through (process backend) run with the probe app; its outcome and workspace."""
    from nitronb.local import stack as local
    from nitronb.notebook import steps
    from nitronb.enclave.runner import run_enclave

    if find_bwrap() is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    workspace = tmp_path_factory.mktemp("sandbox-ws")
    app = tmp_path_factory.mktemp("probe") / "app"
    shutil.copytree(PROBE, app)
    hidden = [workspace / "node-agent", ROOT / "README.md", ROOT / "nitronb", Path.home()
              / ".bash_history", Path("/etc/shadow")]
    with open(app / "Dockerfile", "a", encoding="utf-8") as dockerfile:
        dockerfile.write("ENV PROBE_HOST_PATHS=" + ":".join(map(str, hidden)) + "\n")
    try:
        local.up(workspace)
        steps.generate_keys(workspace)
        steps.encrypt_input(workspace)
        steps.upload_and_presign(workspace)
        steps.create_datasets(workspace)
        steps.build_enclave_image(workspace, backend="process", app_dir=app)
        steps.create_app_configuration(workspace)
        steps.create_workflow(workspace)
        steps.approve_workflow(workspace)
        state = steps.Walkthrough(workspace).state()
        outcome = run_enclave(state["image_reference"], state["appconfig_id"], backend="process",
                              workspace=workspace, timeout=300)
        yield outcome, workspace, [p for p in hidden if p.exists()]
    finally:
        local.down(workspace)


@needs_bwrap
def test_the_sandboxed_app_runs_at_the_canonical_paths(probe_run) -> None:
    outcome, _, _ = probe_run
    assert outcome.ok, outcome.log
    assert "probe: credentials files at the canonical path: 2" in outcome.log
    assert "probe: cwd /demo; PROBE_MODE sandbox" in outcome.log
    assert "probe: made folders: ['/demo/code', '/demo/input']" in outcome.log
    for command in ("/usr/bin/python3 -c", "/usr/bin/env python3", "python3 -c"):
        assert f"probe: {command}: exit 0" in outcome.log, outcome.log


@needs_bwrap
def test_the_app_cannot_find_the_enclave_token(probe_run) -> None:
    outcome, _, _ = probe_run
    line = next(x for x in outcome.log.splitlines() if "candidate tokens" in x)
    assert line.endswith("accepted: none"), line
    assert "probe: open descriptors: [0, 1, 2, 3]" in outcome.log  # 3: the listing itself


@needs_bwrap
def test_the_app_sees_no_host_path(probe_run) -> None:
    outcome, _, existing = probe_run
    assert existing, "the probe checks host paths that exist"
    assert "probe: host paths visible: none" in outcome.log


@needs_bwrap
def test_what_the_app_wrote_anywhere_is_gone(probe_run) -> None:
    outcome, workspace, _ = probe_run
    assert outcome.ok
    for path in ("/opt/fortanix/enclave-os/app-config/rwNAME", "/demo/x", "/tmp/probe-x"):
        assert not os.path.exists(path), path
    enclave = workspace / "node-agent" / "enclaves" / outcome.enclave_id
    assert not (enclave / "private").exists()
    for path in workspace.rglob("*"):
        if path.is_file():
            assert b"probe-plaintext-marker" not in path.read_bytes(), path



def test_without_bubblewrap_the_walkthrough_still_gives_its_result(tmp_path) -> None:
    """The README's demo where bubblewrap is missing: nitronb's app runs unsandboxed."""
    from nitronb.local import stack as local
    from nitronb.notebook import steps
    from nitronb.results import describe_summary

    workspace = tmp_path / "ws"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NITRONB_BWRAP", "/nonexistent/bwrap")  # the node agent inherits it
        try:
            local.up(workspace)
            wt = steps.through_approval(workspace, backend="process")
            outcome = steps.run_workflow(wt, timeout=300)
            result = steps.decrypt_output(wt)
        finally:
            local.down(workspace)
    assert outcome.ok, outcome.log
    assert outcome.log.startswith("[enclave-os] warning: bubblewrap is not installed")
    assert list(describe_summary(result.text).values()) == [
        {"count": 8376, "unique": 129, "top": "Viral sinusitis (disorder)", "freq": 1248}]
