"""The manager and the node agent as HTTP servers, started as the local stack starts them
(``python -m MODULE --workspace WS --host 127.0.0.1 --port PORT``): body and nesting limits,
idle and slow clients, clients that reset, graceful SIGTERM, the generated OpenAPI documents,
many connections at once, and the manager on a full disk."""

from __future__ import annotations

import errno
import http.client
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {
    # name: (module, health path, a POST path that takes a JSON body, its body limit)
    "manager": ("nitronb.ccm.server", "/v1/sys/health", "/v1/datasets", 8 << 20),
    "node-agent": ("nitronb.enclave.node_agent_api", "/health", "/v1/enclaves", 1 << 20),
    "s3": ("nitronb.local.s3gate", "/_nitronb/health", "/nitronb/x", None),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Served:
    """One service in its own process, its output in ``log``."""

    def __init__(self, name: str, workspace: Path, env: dict[str, str]) -> None:
        self.name = name
        self.module, self.health, self.post_path, self.max_body = SERVICES[name]
        self.workspace = workspace
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workspace.parent / f"{name}-{self.port}.log"
        workspace.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "--workspace", str(workspace),
                 "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
                env={**os.environ, **env})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {self.log_text()[-2000:]}")
            try:
                if requests.get(self.url + self.health, timeout=2).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"{name} did not answer within 60 s")

    @property
    def token(self) -> str:
        if self.name == "manager":
            tokens = json.loads((self.workspace / "ccm" / "tokens.json").read_text("utf-8"))
            return tokens["data-owner"]
        if self.name == "s3":
            return "none"
        return (self.workspace / "node-agent" / "operator.token").read_text("utf-8").strip()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=20)

    def head(self, method: str, path: str, extra: str = "") -> bytes:
        return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {self.token}\r\n{extra}\r\n").encode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve(tmp_path):
    """``serve(name, **env)``: a started service; stopped at the end of the test."""
    started: list[Served] = []

    def start(name: str, workspace: Path | None = None, **env: str) -> Served:
        served = Served(name, workspace or tmp_path / f"ws-{name}-{len(started)}", env)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def _response(sock: socket.socket) -> tuple[int, dict]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    return response.status, json.loads(body) if body else {}


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closes ``sock`` (waits up to the socket's timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def _dataset_body() -> bytes:
    return json.dumps({"name": "in-flight", "location": "http://127.0.0.1:9/b/o",
                       "credentials": {"query_string": "YQ==",
                                       "encryption": {"key": "00" * 32}}}).encode()


both = pytest.mark.parametrize("name", ["manager", "node-agent"])


@both
def test_an_oversized_body_gets_413_even_without_a_length(serve, name) -> None:
    served = serve(name)
    with served.connect() as sock:
        sock.sendall(served.head("POST", served.post_path,
                                 f"Content-Length: {served.max_body + 1}\r\n"))
        status, body = _response(sock)
    assert status == 413 and "at most" in body["message"]
    with served.connect() as sock:  # chunked: no length to refuse up front
        sock.sendall(served.head("POST", served.post_path, "Transfer-Encoding: chunked\r\n"
                                                           "Content-Type: application/json\r\n"))
        chunk = b" " * (64 * 1024)
        sent = 0
        while sent <= served.max_body:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        status, body = _response(sock)
    assert status == 413, body
    assert set(body) == {"error", "message"} and "at most" in body["message"]


@both
def test_deep_nesting_gets_400_and_no_traceback(serve, name) -> None:
    served = serve(name)
    reply = requests.post(served.url + served.post_path, data=b"[" * 100_000, timeout=30,
                          headers={**served.auth, "Content-Type": "application/json"})
    assert reply.status_code == 400
    assert reply.json()["error"] == "ValidationError"
    assert "deep" in reply.json()["message"]
    assert requests.get(served.url + served.health, timeout=10).ok
    assert "Traceback" not in served.log_text()


@pytest.mark.parametrize("name", list(SERVICES))
def test_idle_connections_are_closed_after_the_idle_timeout(serve, name) -> None:
    served = serve(name, NITRONB_HTTP_IDLE_TIMEOUT="1")
    with served.connect() as silent:
        assert _closed_by_server(silent)
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=20)
    connection.request("GET", served.health)
    assert connection.getresponse().read()
    assert _closed_by_server(connection.sock)
    connection.close()
    with served.connect() as slow:  # a head sent a byte at a time is cut at the same deadline
        for byte in served.head("GET", served.health)[:10]:
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
        assert _closed_by_server(slow)


@both
def test_a_client_that_stops_mid_body_is_closed_after_the_read_timeout(serve, name) -> None:
    served = serve(name, NITRONB_HTTP_READ_TIMEOUT="1")
    with served.connect() as sock:
        sock.sendall(served.head("POST", served.post_path, "Content-Type: application/json\r\n"
                                                           "Content-Length: 1000\r\n") + b"{")
        assert _closed_by_server(sock)
    assert requests.get(served.url + served.health, timeout=10).ok
    assert "Traceback" not in served.log_text()


@both
def test_clients_that_reset_leave_no_traceback(serve, name) -> None:
    served = serve(name)
    path = "/v1/audit" if name == "manager" else "/v1/enclaves"
    for _ in range(20):
        sock = served.connect()
        sock.sendall(served.head("GET", path))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    assert requests.get(served.url + served.health, timeout=10).ok
    time.sleep(0.5)
    log = served.log_text()
    assert "Traceback" not in log and "BrokenPipe" not in log and "ConnectionReset" not in log


@both
def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(serve, name) -> None:
    served = serve(name)
    body = _dataset_body() if name == "manager" else json.dumps({"image": ""}).encode()
    with served.connect() as sock:
        sock.sendall(served.head("POST", served.post_path,
                                 f"Content-Type: application/json\r\n"
                                 f"Content-Length: {len(body)}\r\n") + body[:5])
        time.sleep(0.3)
        served.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert served.proc.poll() is None  # waiting for the request in flight
        sock.sendall(body[5:])
        status, answer = _response(sock)
    assert status == (201 if name == "manager" else 422), answer
    assert served.proc.wait(timeout=30) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(served.url + served.health, timeout=5)


_MANAGER_ROUTES = {
    ("get", "/v1/sys/health"), ("get", "/v1/sys/auth"), ("post", "/v1/sys/auth"),
    ("get", "/v1/users"), ("post", "/v1/users"), ("get", "/v1/datasets"),
    ("post", "/v1/datasets"), ("get", "/v1/datasets/{id}"), ("patch", "/v1/datasets/{id}"),
    ("get", "/v1/apps"), ("post", "/v1/apps"), ("get", "/v1/apps/{id}"),
    ("get", "/v1/builds"), ("post", "/v1/builds"), ("get", "/v1/builds/{id}"),
    ("get", "/v1/tasks"), ("get", "/v1/tasks/{id}"), ("post", "/v1/tasks/{id}/approve"),
    ("post", "/v1/tasks/{id}/deny"), ("post", "/v1/tasks/{id}/revoke"), ("get", "/v1/app_configs"), ("post", "/v1/app_configs"),
    ("get", "/v1/app_configs/{id}"), ("get", "/v1/workflows/draft/graphs"),
    ("post", "/v1/workflows/draft/graphs"), ("get", "/v1/workflows/draft/graphs/{id}"),
    ("put", "/v1/workflows/draft/graphs/{id}"), ("get", "/v1/workflows/final/graphs"),
    ("get", "/v1/workflows/final/graphs/{id}"),
    ("post", "/v1/workflows/final/graphs/{id}/revoke"), ("get", "/v1/approval_requests"),
    ("post", "/v1/approval_requests"), ("get", "/v1/approval_requests/{id}"),
    ("post", "/v1/approval_requests/{id}/approve"), ("post", "/v1/approval_requests/{id}/deny"),
    ("get", "/v1/runtime/app_configs"), ("get", "/v1/runtime/app_configs/{id}"),
    ("post", "/v1/runtime/nonces"), ("post", "/v1/runtime/app_configs/{id}/provision"),
    ("get", "/v1/audit"), ("get", "/v1/audit/verify"),
}


def test_the_openapi_documents_are_generated_from_the_routes(serve) -> None:
    manager, agent = serve("manager"), serve("node-agent")
    doc = requests.get(manager.url + "/openapi.json", timeout=10).json()
    listed = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert listed == _MANAGER_ROUTES
    schemas = doc["components"]["schemas"]
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if "requestBody" in op:  # a body described by its model
                ref = op["requestBody"]["content"]["application/json"]["schema"]
                names = [r["$ref"].rsplit("/", 1)[1] for r in ref.get("anyOf", [ref])
                         if "$ref" in r]
                assert names and all(n in schemas for n in names), (method, path)
            anonymous = path in ("/v1/sys/health", "/v1/runtime/nonces") or \
                path.endswith("/provision")
            assert ("security" in op) != anonymous, (method, path)
    assert {"DatasetIn", "WorkflowIn", "ProvisionIn"} <= set(schemas)
    assert "name" in schemas["DatasetIn"]["properties"]
    agent_doc = requests.get(agent.url + "/openapi.json", timeout=10).json()
    assert set(agent_doc["paths"]) == {"/health", "/v1/enclaves", "/v1/enclaves/{id}",
                                       "/v1/enclaves/{id}/log",
                                       "/v1/enclaves/{id}/attestation",
                                       "/v1/enclaves/{id}/stop"}
    assert "LaunchIn" in agent_doc["components"]["schemas"]


def test_the_node_agent_takes_many_connections_at_once(serve) -> None:
    served = serve("node-agent")
    listing = subprocess.run(["ss", "-ltnH", f"sport = :{served.port}"], capture_output=True,
                             text=True)
    if listing.returncode == 0 and listing.stdout.split():
        backlog = int(listing.stdout.split()[2])  # Send-Q of a listening socket: its backlog
        assert backlog >= 128, listing.stdout
    held: list[socket.socket] = []
    answers: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        sock = served.connect()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, _ = _response(sock)
        with lock:
            held.append(sock)
            answers.append(status)

    threads = [threading.Thread(target=client) for _ in range(300)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert answers.count(200) == 300
    finally:
        for sock in held:
            sock.close()


@pytest.fixture
def full_disk(tmp_path):
    """A 2 MiB tmpfs for the manager's workspace (needs the right to mount)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_the_manager_on_a_full_disk_says_so_with_507(serve, full_disk) -> None:
    manager = serve("manager", workspace=full_disk / "ws")
    before = requests.get(manager.url + "/v1/datasets", headers=manager.auth, timeout=10).json()
    filler = _fill(full_disk)
    answers = []
    for i in range(20):  # SQLite may still have room in pages it holds: write until it has not
        reply = requests.post(manager.url + "/v1/datasets", headers=manager.auth, timeout=30,
                              data=_dataset_body().replace(b"in-flight", b"full-%d" % i))
        answers.append(reply)
        if reply.status_code != 201:
            break
    refused = answers[-1]
    assert refused.status_code == 507, refused.text
    body = refused.json()
    assert body["error"] == "InsufficientStorageError"
    assert "disk is full" in body["message"] and str(full_disk / "ws" / "ccm") in body["message"]
    assert "Traceback" not in manager.log_text()
    filler.unlink()
    kept = requests.get(manager.url + "/v1/datasets", headers=manager.auth, timeout=10).json()
    assert len(kept) == len(before) + len(answers) - 1  # the refused one was not made
    again = requests.post(manager.url + "/v1/datasets", headers=manager.auth, timeout=30,
                          data=_dataset_body().replace(b"in-flight", b"after"))
    assert again.status_code == 201, again.text
    admin = json.loads((manager.workspace / "ccm" / "tokens.json").read_text("utf-8"))["admin"]
    assert requests.get(manager.url + "/v1/audit/verify", timeout=10,
                        headers={"Authorization": f"Bearer {admin}"}).json()["ok"] is True


@pytest.mark.parametrize("name", ["manager", "s3"])
def test_a_path_cannot_forge_a_line_of_the_access_log(serve, name) -> None:
    served = serve(name)
    forged = "2026-12-01 04:47:00,000 INFO nitronb.forged: FAKE"
    path = "/v1/x%0A" + forged.replace(" ", "%20") + "%00%1B%5B31m%E2%80%AE"
    if name == "s3":
        path = "/nitronb/x%0A" + forged.replace(" ", "%20") + "%00%1B%5B31m%E2%80%AE"
    with served.connect() as sock:
        sock.sendall(served.head("GET", path, "Connection: close\r\n"))
        response = http.client.HTTPResponse(sock)
        response.begin()
    assert response.status in (403, 404)
    deadline = time.monotonic() + 10
    while "FAKE" not in served.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = served.log.read_bytes().decode("utf-8")
    assert "\x00" not in text and "\x1b" not in text and "\u202e" not in text
    lines = [line for line in text.splitlines() if "FAKE" in line]
    assert len(lines) == 1 and not lines[0].startswith("2026-12-01 04:47")
    assert "\\n2026-12-01" in lines[0] and "\\x00\\x1b[31m\\u202e" in lines[0]


@pytest.mark.parametrize("name", ["manager", "s3"])
def test_a_head_over_64_kib_is_refused_whatever_the_reads(serve, name) -> None:
    served = serve(name)
    pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    start = served.head("GET", served.health).removesuffix(b"\r\n")
    with served.connect() as sock:  # 60 KiB, then the rest of a 100 KiB head in a later read
        sock.sendall(start + pad * 60)
        time.sleep(0.5)
        sock.sendall(pad * 40 + b"\r\n")
        assert _closed_by_server(sock)
    with served.connect() as sock:  # a head just under the limit is served
        sock.sendall(start + pad * 60 + b"\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 200


def test_connections_beyond_the_limit_get_a_json_503() -> None:
    from nitronb.http_server import Limits, Server

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    server = Server(app, limits=Limits(max_connections=2))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with socket.create_connection(("127.0.0.1", port), timeout=20) as idle:
            idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert idle.recv(100).startswith(b"HTTP/1.1 200")  # kept open: 1 of 2
            sock = socket.create_connection(("127.0.0.1", port), timeout=20)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            response = http.client.HTTPResponse(sock)
            response.begin()
            assert response.status == 503
            assert response.getheader("Content-Type").startswith("application/json")
            assert json.loads(response.read())["error"] == "ServiceUnavailable"
            sock.close()
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("name", ["manager", "node-agent"])
def test_head_on_health_answers_200(serve, name) -> None:
    served = serve(name)
    reply = requests.head(served.url + served.health, timeout=10)
    assert reply.status_code == 200 and reply.content == b""


@pytest.mark.parametrize("name", ["manager", "node-agent", "s3"])
def test_bytes_that_are_not_http_get_a_json_400(serve, name) -> None:
    served = serve(name)
    with served.connect() as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 400
        assert response.getheader("Content-Type").startswith("application/json")
        body = json.loads(response.read())
        assert body["error"] == "BadRequest" and "not valid HTTP" in body["message"]
