"""Finding and starting a container engine; building, converting and running images in it.

The tests marked ``engine`` need an engine speaking the Docker Engine API (``DOCKER_HOST``, Docker's
socket, or the Podman service that ``scripts/provision-podman.sh`` starts) and a local base image
with python3 (``localhost/nitronb-python-base`` from that script, or ``python:3.11-slim``); they
skip, saying so, without them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from nitronb.enclave import engine as engine_mod
from nitronb.errors import EngineUnavailableError, ImageBuildError
from nitronb.enclave.image import (build_app_image, convert_to_enclave_image, image_measurements,
                                   verify_container_image)
from nitronb.enclave.process_image import prepare_process_image
from nitronb.enclave.measure import measure_build_context

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "enclave_image"
#: an app written for the real enclave OS: ``FROM python:3.11``, CMD an executable script
BYO_APP_DIR = ROOT / "tests" / "data" / "byo_app"
BYO_BASE = "python:3.11"
SCRIPT = ROOT / "scripts" / "provision-podman.sh"


def _app_tests():
    spec = importlib.util.spec_from_file_location("_enclave_app_tests",
                                                  Path(__file__).with_name("test_enclave_app.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app_tests = _app_tests()


# --- finding an engine ---------------------------------------------------------------------


class _PingHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        status = 200 if self.path == "/_ping" else 404
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        request, _ = super().get_request()
        return request, ("local", 0)

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up early
            super().handle_error(request, client_address)


@pytest.fixture
def ping_server(tmp_path):
    path = tmp_path / "api.sock"
    server = _UnixHTTPServer(str(path), _PingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()


def test_candidates_come_in_order(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
    urls = engine_mod.engine_candidates(tmp_path)
    assert urls == ["tcp://127.0.0.1:2375", "unix:///var/run/docker.sock",
                    f"unix://{tmp_path}/podman/podman.sock", "unix:///run/podman/podman.sock"]
    monkeypatch.delenv("DOCKER_HOST")
    assert engine_mod.engine_candidates(tmp_path)[0] == "unix:///var/run/docker.sock"


def test_ping_socket_speaks_http_over_a_unix_socket(ping_server, tmp_path):
    assert engine_mod.ping_socket(ping_server)
    assert not engine_mod.ping_socket(tmp_path / "missing.sock")
    (tmp_path / "plain").write_text("")
    assert not engine_mod.ping_socket(tmp_path / "plain")


def test_no_engine_is_explained(monkeypatch, tmp_path):
    monkeypatch.setattr(engine_mod, "engine_candidates",
                        lambda workspace=None: [f"unix://{tmp_path}/none.sock"])
    assert engine_mod.find_engine(tmp_path) is None
    with pytest.raises(EngineUnavailableError, match="provision-podman.sh"):
        engine_mod.require_engine(tmp_path)


def test_containers_conf_is_the_same_from_python_and_the_script(tmp_path):
    env = engine_mod.podman_env(tmp_path)
    conf = Path(env["CONTAINERS_CONF"])
    assert conf == tmp_path / "podman" / "containers.conf"
    assert 'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]' in conf.read_text()
    assert 'runtime = "runc"' in conf.read_text()
    script_conf = re.search(r"WANT_CONF='(.*?)'", SCRIPT.read_text(), re.S).group(1)
    assert script_conf + "\n" == conf.read_text()
    assert ",".join(engine_mod.BASE_PACKAGES) in SCRIPT.read_text()


@pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed; "
                    "scripts/provision-podman.sh installs it")
def test_podman_service_starts_once_and_stops(tmp_path):
    workspace = tmp_path / "ws"
    try:
        sock = engine_mod.start_podman_service(workspace)
        assert sock == workspace / "podman" / "podman.sock"
        assert engine_mod.ping_socket(sock)
        pid = (sock.parent / "service.pid").read_text()
        assert engine_mod.start_podman_service(workspace) == sock  # idempotent
        assert (sock.parent / "service.pid").read_text() == pid
        client = engine_mod._connect(f"unix://{sock}", 30)
        assert client is not None and client.version()["Version"]
        client.close()
    finally:
        stopped = engine_mod.stop_podman_service(workspace)
    assert stopped and not engine_mod.ping_socket(sock)


@pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed; "
                    "scripts/provision-podman.sh installs it")
def test_base_image_is_imported_from_the_cached_tarball(tmp_path):
    import subprocess
    import tarfile

    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "marker").write_text("nitronb test\n")
    cache = tmp_path / "cache"
    cache.mkdir()
    with tarfile.open(cache / f"base-{engine_mod.BASE_SUITE}.tar", "w") as tar:
        tar.add(rootfs, arcname=".")
    name = f"localhost/nitronb-test-base:{secrets.token_hex(4)}"
    try:
        assert engine_mod.ensure_base_image(name, cache, workspace=tmp_path / "ws") == name
        assert subprocess.run(["podman", "image", "exists", name]).returncode == 0
        (cache / f"base-{engine_mod.BASE_SUITE}.tar").unlink()  # present: no import, no build
        assert engine_mod.ensure_base_image(name, cache, workspace=tmp_path / "ws") == name
    finally:
        subprocess.run(["podman", "rmi", "-f", name], capture_output=True)


# --- building, converting and running (needs an engine) ------------------------------------


@pytest.fixture(scope="module")
def engine():
    client = engine_mod.find_engine()
    if client is None:
        pytest.skip("no container engine answers (tried "
                    f"{', '.join(engine_mod.engine_candidates())}); run "
                    "scripts/provision-podman.sh to start Podman")
    yield client
    client.close()


@pytest.fixture(scope="module")
def base_image(engine):
    import docker.errors

    wanted = os.environ.get("NITRONB_TEST_BASE_IMAGE")
    for name in ([wanted] if wanted else [engine_mod.BASE_IMAGE_NAME, "python:3.11-slim"]):
        try:
            engine.images.get(name)
            return name
        except docker.errors.ImageNotFound:
            continue
    pytest.skip(f"no local base image ({engine_mod.BASE_IMAGE_NAME} or python:3.11-slim); "
                "run scripts/provision-podman.sh to make one")


@pytest.fixture(scope="module")
def tags(engine):
    made: list[str] = []

    def tag(kind: str) -> str:
        made.append(f"localhost/nitronb-test-{kind}:{secrets.token_hex(4)}")
        return made[-1]

    yield tag
    for name in reversed(made):
        try:
            engine.images.remove(name, force=True)
        except Exception:  # already gone, or never built
            pass


@pytest.fixture(scope="module")
def app_image(engine, base_image, tags):
    tag = tags("app")
    started = time.monotonic()
    image_id = build_app_image(APP_DIR, tag, base_image=base_image, engine=engine)
    print(f"app image built in {time.monotonic() - started:.1f} s")
    assert image_id.startswith("sha256:")
    return tag


@pytest.fixture
def store():
    server = app_tests.ObjectStore()
    yield server
    server.close()


def run_container(engine, image: str, config_dir: Path, **env: str) -> tuple[int, str]:
    container = engine.containers.run(
        image, detach=True, network_mode="host",
        environment={"APP_CONFIG_DIR": "/config", "APP_HTTP_BACKOFF": "0.01", **env},
        volumes={str(config_dir): {"bind": "/config", "mode": "ro"}})
    try:
        status = container.wait(timeout=300)["StatusCode"]
        return status, container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)


def sample_bytes() -> bytes:
    from nitronb import sample_path

    return sample_path().read_bytes()


@pytest.mark.engine
def test_app_image_runs_the_analysis(engine, app_image, store, tmp_path):
    setup = app_tests.Setup(tmp_path, store, sample_bytes())
    started = time.monotonic()
    status, logs = run_container(engine, app_image, setup.config_dir)
    print(f"app container ran in {time.monotonic() - started:.1f} s")
    assert status == 0, logs
    result = setup.result()
    assert result["returncode"] == 0
    stdout = app_tests.decoded(result, "stdout")
    assert stdout.splitlines()[0] == f"input/{setup.input_node}"
    assert re.search(r"^count\s+8376$", stdout, re.M)
    assert re.search(r"^top\s+Viral sinusitis \(disorder\)$", stdout, re.M)
    assert re.search(r"^freq\s+1248$", stdout, re.M)


@pytest.mark.engine
def test_app_image_fails_when_the_upload_fails(engine, app_image, store, tmp_path):
    setup = app_tests.Setup(tmp_path, store, app_tests.SMALL_CSV)
    store.put_status = 500
    status, logs = run_container(engine, app_image, setup.config_dir)
    assert status != 0
    assert "HTTP 500" in logs


@pytest.mark.engine
def test_converted_image_carries_the_pcrs_of_its_inputs(engine, app_image, base_image, tags,
                                                        store, tmp_path):
    launcher_src = tmp_path / "launcher"
    (launcher_src / "demo").mkdir(parents=True)
    (launcher_src / "demo" / "__init__.py").write_text("")
    (launcher_src / "demo" / "launcher.py").write_text(
        "import os, sys\nprint('launcher starts', sys.argv[1:], file=sys.stderr, flush=True)\n"
        "os.execvp(sys.argv[1], sys.argv[1:])\n")
    launcher = {"demo/__init__.py": launcher_src / "demo" / "__init__.py",
                "demo/launcher.py": launcher_src / "demo" / "launcher.py"}
    enclave_tag = tags("enclave")
    started = time.monotonic()
    image = convert_to_enclave_image(app_image, enclave_tag, app_dir=APP_DIR,
                                     launcher_files=launcher, launcher_module="demo.launcher",
                                     engine=engine)
    print(f"enclave image converted in {time.monotonic() - started:.1f} s")
    expected = measure_build_context(APP_DIR, launcher, base_image,
                                     launcher_module="demo.launcher")
    assert image.backend == "container" and image.measurements == expected
    assert image_measurements(enclave_tag, engine) == expected
    assert verify_container_image(enclave_tag, engine) == expected
    process = prepare_process_image(APP_DIR, launcher, base_image,
                                    launcher_module="demo.launcher", workspace=tmp_path / "ws")
    assert process.measurements == expected  # same PCRs whatever the backend
    config = engine.images.get(enclave_tag).attrs["Config"]
    assert config["Cmd"] == ["python3", "/app/start.py"]
    assert config["Entrypoint"][:2] == ["python3", "-I"]
    assert config["Labels"]["nitronb.launcher_module"] == "demo.launcher"
    # the launcher starts first and is handed the app's command
    setup = app_tests.Setup(tmp_path, store, app_tests.SMALL_CSV)
    status, logs = run_container(engine, enclave_tag, setup.config_dir)
    assert status == 0, logs
    assert "launcher starts ['python3', '/app/start.py']" in logs
    assert setup.result()["returncode"] == 0


@pytest.mark.engine
def test_an_enclave_image_altered_after_conversion_is_detected(engine, app_image, tags,
                                                               tmp_path):
    enclave_tag, altered_tag = tags("enclave"), tags("altered")
    image = convert_to_enclave_image(app_image, enclave_tag, app_dir=APP_DIR, engine=engine)
    assert verify_container_image(enclave_tag, engine) == image.measurements
    (tmp_path / "Dockerfile").write_text(
        f"FROM {enclave_tag}\nRUN echo 'print(1)' >> /opt/nitronb/app/describe.py\n")
    build_app_image(tmp_path, altered_tag, base_image="unused", engine=engine)
    assert image_measurements(altered_tag, engine) == image.measurements  # the labels still claim
    with pytest.raises(ImageBuildError, match="altered"):
        verify_container_image(altered_tag, engine)
    with pytest.raises(ImageBuildError, match="not an enclave image"):
        verify_container_image(app_image, engine)


@pytest.mark.engine
def test_a_new_command_on_top_of_an_enclave_image_is_not_what_runs(engine, app_image, tags,
                                                                   tmp_path):
    """Re-tagging or a new ENTRYPOINT/CMD cannot choose what runs: the launch uses the measured
    image's id, the launcher and the measured Dockerfile's command."""
    from nitronb.enclave.image import inspect_container_image, launcher_command

    enclave_tag, other_tag = tags("enclave"), tags("other-cmd")
    image = convert_to_enclave_image(app_image, enclave_tag, app_dir=APP_DIR, engine=engine)
    (tmp_path / "Dockerfile").write_text(
        f"FROM {enclave_tag}\nENTRYPOINT [\"python3\", \"-c\", \"print('not measured')\"]\n"
        "CMD []\n")
    build_app_image(tmp_path, other_tag, base_image="unused", engine=engine)
    measurements, launch = inspect_container_image(other_tag, engine)
    assert measurements == image.measurements
    assert launch["entrypoint"] == launcher_command()
    assert launch["command"] == ["python3", "/app/start.py"]
    assert launch["image_id"] == engine.images.get(other_tag).id


@pytest.mark.engine
def test_convert_refuses_an_app_dir_the_image_was_not_built_from(engine, app_image, tags,
                                                                 tmp_path):
    other = tmp_path / "app"
    shutil.copytree(APP_DIR, other, ignore=shutil.ignore_patterns("__pycache__"))
    (other / "describe.py").write_text((other / "describe.py").read_text() + "# changed\n")
    with pytest.raises(ImageBuildError, match="was not built from"):
        convert_to_enclave_image(app_image, tags("refused"), app_dir=other, engine=engine)


@pytest.mark.engine
def test_build_failure_names_the_failing_step(engine, base_image, tags, tmp_path):
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo preparing\n"
        "RUN echo about-to-fail && exit 3\n")
    lines: list[str] = []
    dangling = {image.id for image in engine.images.list(filters={"dangling": True})}
    try:
        with pytest.raises(ImageBuildError) as caught:
            build_app_image(tmp_path, tags("broken"), base_image=base_image, engine=engine,
                            on_log=lines.append)
    finally:  # the steps that succeeded leave untagged layers behind
        for image in engine.images.list(filters={"dangling": True}):
            if image.id not in dangling:
                engine.images.remove(image.id, force=True)
    message = str(caught.value)
    assert "about-to-fail" in message and "exit 3" in message
    assert "preparing" not in message.split("failed:", 1)[1].split("\n", 1)[1]
    assert any("preparing" in line for line in lines)


@pytest.fixture(scope="module")
def byo_base(engine, base_image):
    """The provisioned base image tagged as ``python:3.11``, the base the app brought names
    (no registry is assumed reachable); the tag is removed afterwards if it was made here."""
    yield from tagged_as(engine, base_image, BYO_BASE)


def tagged_as(engine, source: str, name: str):
    import docker.errors

    try:
        engine.images.get(name)
        made = False
    except docker.errors.ImageNotFound:
        repository, _, tag = name.rpartition(":")
        assert engine.images.get(source).tag(repository, tag)
        made = True
    yield name
    if made:
        engine.images.remove(name)


@pytest.fixture(scope="module")
def byo_app_image(engine, byo_base, tags):
    tag = tags("byo-app")
    lines: list[str] = []
    started = time.monotonic()
    build_app_image(BYO_APP_DIR, tag, base_image=engine_mod.BASE_IMAGE_NAME, engine=engine,
                    on_log=lines.append)
    print(f"the app brought was built in {time.monotonic() - started:.1f} s")
    return tag, lines


@pytest.mark.engine
def test_an_app_brought_is_measured_with_the_base_its_dockerfile_names(engine, byo_app_image,
                                                                       tags, tmp_path):
    """Its Dockerfile says ``FROM python:3.11`` and declares no ``ARG BASE_IMAGE``: the image is
    labelled and measured with ``python:3.11``, whatever default base nitronb has."""
    from nitronb.enclave.image import APP_LABEL_BASE, inspect_container_image

    tag, lines = byo_app_image
    assert not [line for line in lines if "BASE_IMAGE" in line]  # no unused build argument
    labels = engine.images.get(tag).attrs["Config"]["Labels"]
    assert labels[APP_LABEL_BASE] == BYO_BASE
    image = convert_to_enclave_image(tag, tags("byo-enclave"), app_dir=BYO_APP_DIR,
                                     engine=engine)
    assert image.base_image == BYO_BASE
    assert image.measurements == measure_build_context(BYO_APP_DIR, None, BYO_BASE)
    assert image.measurements != measure_build_context(BYO_APP_DIR, None,
                                                       engine_mod.BASE_IMAGE_NAME)
    measurements, launch = inspect_container_image(image.reference, engine)
    assert measurements == image.measurements
    assert launch["command"] == ["/demo/start.py"]


@pytest.mark.engine
def test_a_base_the_engine_lacks_is_named_with_the_command_that_provides_it(engine, tmp_path):
    missing = f"localhost/nitronb-test-absent:{secrets.token_hex(4)}"
    (tmp_path / "Dockerfile").write_text(f"FROM {missing}\nCMD [\"python3\"]\n")
    with pytest.raises(ImageBuildError) as caught:
        build_app_image(tmp_path, "localhost/nitronb-test-never:1", engine=engine)
    message = str(caught.value)
    assert "\n" not in message
    assert f"the base image {missing} (FROM in {tmp_path / 'Dockerfile'}) is not in the " \
           f"container engine, and it cannot be pulled." in message
    assert f"tag {engine_mod.BASE_IMAGE_NAME} {missing}`" in message


@pytest.mark.engine
def test_a_new_command_on_top_of_an_app_brought_is_not_what_runs(engine, byo_app_image, tags,
                                                                   tmp_path):
    from nitronb.enclave.image import inspect_container_image, launcher_command

    enclave_tag, other_tag = tags("byo-enclave"), tags("byo-other-cmd")
    image = convert_to_enclave_image(byo_app_image[0], enclave_tag, app_dir=BYO_APP_DIR,
                                     engine=engine)
    (tmp_path / "Dockerfile").write_text(
        f"FROM {enclave_tag}\nCMD [\"/usr/bin/python3\", \"-c\", \"print('not measured')\"]\n")
    build_app_image(tmp_path, other_tag, engine=engine)
    measurements, launch = inspect_container_image(other_tag, engine)
    assert measurements == image.measurements
    assert launch["entrypoint"] == launcher_command()
    assert launch["command"] == ["/demo/start.py"]
    assert launch["image_id"] == engine.images.get(other_tag).id


def test_build_without_dockerfile_is_refused(tmp_path):
    (tmp_path / "start.py").write_text("")
    with pytest.raises(ImageBuildError, match="no Dockerfile"):
        build_app_image(tmp_path, "x", base_image="b")


def test_measurement_labels_survive_json(tmp_path):
    m = measure_build_context(APP_DIR, None, "b")
    assert json.loads(json.dumps(m.as_labels()))["nitronb.pcr2"] == m.pcr2
