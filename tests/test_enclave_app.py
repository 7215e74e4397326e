"""The enclave app (enclave_image/) run as plain Python processes against a loopback HTTP store."""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from nitronb import crypto, sample_path
from nitronb.keys import generate_key

APP_DIR = Path(__file__).resolve().parents[1] / "enclave_image"
QUERY = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=600&X-Amz-Signature=ab%2Fcd"
SMALL_CSV = b"ID,DESCRIPTION\n1,Cough\n2,Cough\n3,Fever\n"


def load_utils():
    """The app's utils module, imported from enclave_image/ (it is not part of nitronb)."""
    if str(APP_DIR) not in sys.path:
        sys.path.insert(0, str(APP_DIR))
    import utils

    return utils


# --- a loopback object store ---------------------------------------------------------------


class ObjectStore:
    """A threaded HTTP server on 127.0.0.1 that serves GET and accepts PUT, like presigned URLs."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str]] = []  # method, path, query
        self.put_status: int | None = None
        store = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                store.requests.append(("GET", parts.path, parts.query))
                body = store.objects.get(parts.path)
                if body is None:
                    self._reply(404, b"<Error><Code>NoSuchKey</Code></Error>")
                else:
                    self._reply(200, body)

            def do_PUT(self) -> None:
                parts = urlsplit(self.path)
                store.requests.append(("PUT", parts.path, parts.query))
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if store.put_status is not None:
                    self._reply(store.put_status, b"<Error><Code>InternalError</Code></Error>")
                    return
                store.objects[parts.path] = body
                self._reply(200, b"")

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def store():
    server = ObjectStore()
    yield server
    server.close()


def write_dataset(config_dir: Path, port: str, node: str, location: str, key: str,
                  query: str = QUERY) -> Path:
    """Write a dataset into the app-config folder the way the enclave OS does:
    ``<port>/<node>/dataset/``."""
    folder = config_dir / port / node / "dataset"
    folder.mkdir(parents=True)
    credentials = {"query_string": base64.b64encode(query.encode()).decode(),
                   "encryption": {"key": key}}
    (folder / "credentials.bin").write_bytes(json.dumps(credentials).encode())
    (folder / "location.txt").write_text(location + "\n", encoding="utf-8")
    return folder


class Setup:
    """An app-config folder with one input and one output dataset on a loopback store."""

    def __init__(self, tmp_path: Path, store: ObjectStore, plaintext: bytes,
                 input_node: str = "cxhcfxdvl") -> None:
        self.store = store
        self.input_node = input_node
        self.config_dir = tmp_path / "app-config"
        self.tmpdir = tmp_path / "tmp"
        self.tmpdir.mkdir()
        self.input_key, self.output_key = generate_key(), generate_key()
        self.store.objects["/in-bucket/conditions.csv.enc"] = crypto.encrypt_bytes(
            self.input_key, plaintext)
        write_dataset(self.config_dir, "input", input_node,
                      f"{store.base_url}/in-bucket/conditions.csv.enc", self.input_key)
        write_dataset(self.config_dir, "output", "bzbrs5dr0",
                      f"{store.base_url}/out-bucket/result.enc", self.output_key)

    def run(self, **env: str) -> subprocess.CompletedProcess:
        environ = dict(os.environ, APP_CONFIG_DIR=str(self.config_dir), TMPDIR=str(self.tmpdir),
                       APP_HTTP_ATTEMPTS="3", APP_HTTP_BACKOFF="0.01", **env)
        return subprocess.run([sys.executable, str(APP_DIR / "start.py")], env=environ,
                              capture_output=True, text=True, timeout=300)

    def result(self) -> dict:
        blob = self.store.objects["/out-bucket/result.enc"]
        return json.loads(crypto.decrypt_bytes(self.output_key, blob))


def decoded(result: dict, field: str) -> str:
    return base64.b64decode(result[field]).decode()


# --- full runs -----------------------------------------------------------------------------


def test_describe_of_the_synthea_sample(tmp_path, store):
    setup = Setup(tmp_path, store, sample_path().read_bytes())
    done = setup.run()
    assert done.returncode == 0, done.stderr
    result = setup.result()
    assert set(result) == {"returncode", "stdout", "stderr"}
    assert result["returncode"] == 0
    lines = decoded(result, "stdout").splitlines()
    assert lines[0] == "input/cxhcfxdvl"
    assert "downloaded the input dataset 'cxhcfxdvl'" in done.stderr
    assert re.fullmatch(r"count\s+8376", lines[1])
    assert re.fullmatch(r"unique\s+129", lines[2])
    assert re.fullmatch(r"top\s+Viral sinusitis \(disorder\)", lines[3])
    assert re.fullmatch(r"freq\s+1248", lines[4])
    # the URL was rebuilt as location + "?" + query string, byte for byte
    assert ("GET", "/in-bucket/conditions.csv.enc", QUERY) in store.requests
    assert ("PUT", "/out-bucket/result.enc", QUERY) in store.requests
    assert list(setup.tmpdir.iterdir()) == []  # no plaintext left behind


def test_analysis_is_overridable_and_its_failure_is_reported(tmp_path, store):
    script = tmp_path / "analysis.py"
    script.write_text("import sys\nprint(open(sys.argv[1]).read().count('Cough'))\n"
                      "print('oops', file=sys.stderr)\nsys.exit(3)\n", encoding="utf-8")
    setup = Setup(tmp_path, store, SMALL_CSV)
    done = setup.run(ANALYSIS_SCRIPT=str(script))
    assert done.returncode != 0
    result = setup.result()
    assert result["returncode"] == 3
    assert decoded(result, "stdout") == "2\n"
    assert decoded(result, "stderr") == "oops\n"


def test_tampered_ciphertext_fails_the_run(tmp_path, store):
    setup = Setup(tmp_path, store, SMALL_CSV)
    blob = bytearray(store.objects["/in-bucket/conditions.csv.enc"])
    blob[20] ^= 0x01
    store.objects["/in-bucket/conditions.csv.enc"] = bytes(blob)
    done = setup.run()
    assert done.returncode != 0
    assert "authentication failed" in done.stderr
    result = setup.result()  # the output owner learns why, and gets no data
    assert result["returncode"] != 0 and result["stdout"] == ""
    assert "authentication failed" in decoded(result, "stderr")
    assert list(setup.tmpdir.iterdir()) == []


def test_wrong_key_fails_the_run(tmp_path, store):
    setup = Setup(tmp_path, store, SMALL_CSV)
    store.objects["/in-bucket/conditions.csv.enc"] = crypto.encrypt_bytes(generate_key(),
                                                                           SMALL_CSV)
    done = setup.run()
    assert done.returncode != 0
    assert "authentication failed" in done.stderr


def test_failed_upload_fails_the_run(tmp_path, store):
    setup = Setup(tmp_path, store, SMALL_CSV)
    store.put_status = 500
    done = setup.run()
    assert done.returncode != 0
    assert "HTTP 500" in done.stderr and "InternalError" in done.stderr
    assert [r[0] for r in store.requests].count("PUT") == 3  # retried, then gave up
    assert "/out-bucket/result.enc" not in store.objects


def test_missing_input_object_fails_the_run(tmp_path, store):
    setup = Setup(tmp_path, store, SMALL_CSV)
    del store.objects["/in-bucket/conditions.csv.enc"]
    done = setup.run()
    assert done.returncode != 0
    assert "HTTP 404" in done.stderr and "NoSuchKey" in done.stderr
    assert [r[0] for r in store.requests].count("GET") == 1  # a 4xx is not retried
    assert QUERY not in done.stderr  # the signature never reaches a log


def test_no_output_dataset_fails_without_running(tmp_path, store):
    setup = Setup(tmp_path, store, SMALL_CSV)
    for path in sorted((setup.config_dir / "output").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    done = setup.run()
    assert done.returncode != 0
    assert "no output dataset" in done.stderr
    assert store.requests == []


def test_dataset_folder_escaping_the_config_dir_is_refused(tmp_path, store):
    setup = Setup(tmp_path, store, SMALL_CSV)
    outside = tmp_path / "outside"
    write_dataset(outside, "x", "stolen", f"{store.base_url}/in-bucket/conditions.csv.enc",
                  setup.input_key)
    (setup.config_dir / "input" / "evil").symlink_to(outside / "x" / "stolen")
    done = setup.run()
    assert done.returncode != 0
    assert "outside" in done.stderr


def test_the_app_reads_every_node_folder_of_a_port_and_nothing_else(tmp_path, store):
    """``input/*/dataset/``: two nodes are two inputs; a file, or a node folder of another kind
    of connection (no ``dataset/``), is not a dataset; configuration items sit elsewhere."""
    setup = Setup(tmp_path, store, SMALL_CSV)
    store.objects["/in-bucket/more.enc"] = crypto.encrypt_bytes(setup.input_key, SMALL_CSV)
    write_dataset(setup.config_dir, "input", "a7k2m9q4z",
                  f"{store.base_url}/in-bucket/more.enc", setup.input_key)
    (setup.config_dir / "input" / "vzq7onk9x").mkdir()
    (setup.config_dir / "input" / "vzq7onk9x" / "application.json").write_text("{}")
    (setup.config_dir / "input" / "README").write_text("not a dataset")
    (setup.config_dir / "settings").mkdir()
    (setup.config_dir / "settings" / "column.txt").write_text("DESCRIPTION")
    done = setup.run()
    assert done.returncode == 0, done.stderr
    stdout = decoded(setup.result(), "stdout")
    assert [line for line in stdout.splitlines() if line.startswith("input/")] == [
        "input/a7k2m9q4z", "input/cxhcfxdvl"]
    utils = load_utils()
    assert [d.node for d in utils.list_datasets("input", str(setup.config_dir))] == [
        "a7k2m9q4z", "cxhcfxdvl"]


# --- the helpers themselves ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "/etc", "a\0b", "", "a\\b"])
def test_unsafe_names_are_refused(name, tmp_path):
    utils = load_utils()
    with pytest.raises(utils.AppError, match="unsafe"):
        utils.safe_join(str(tmp_path), "input", name)
    with pytest.raises(utils.AppError, match="unsafe"):
        utils.read_dataset("input", name, str(tmp_path))


def test_safe_join_uses_a_separator(tmp_path):
    utils = load_utils()
    assert utils.safe_join(str(tmp_path), "input", "data") == str(tmp_path / "input" / "data")


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 63, 64, 65, 80, 200, 1000])
def test_app_crypto_is_byte_compatible_with_nitronb(size, monkeypatch):
    utils = load_utils()
    monkeypatch.setattr(utils, "CHUNK_SIZE", 64)  # exercise the chunk and tag boundaries
    key = generate_key()
    plaintext = os.urandom(size)
    encrypted = io.BytesIO()
    utils.encrypt_stream(bytes.fromhex(key), io.BytesIO(plaintext), encrypted)
    assert crypto.decrypt_bytes(key, encrypted.getvalue()) == plaintext
    decrypted = io.BytesIO()
    n = utils.decrypt_stream(bytes.fromhex(key), io.BytesIO(crypto.encrypt_bytes(key, plaintext)),
                             decrypted)
    assert decrypted.getvalue() == plaintext and n == size


def test_app_decrypt_file_releases_nothing_on_failure(tmp_path):
    utils = load_utils()
    key = generate_key()
    blob = bytearray(crypto.encrypt_bytes(key, b"secret rows" * 100))
    blob[-1] ^= 0x80
    (tmp_path / "in.enc").write_bytes(bytes(blob))
    with pytest.raises(utils.AppError, match="authentication failed"):
        utils.decrypt_file(bytes.fromhex(key), str(tmp_path / "in.enc"), str(tmp_path / "out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.enc"]
    (tmp_path / "short.enc").write_bytes(b"\0" * 27)
    with pytest.raises(utils.AppError, match="shorter"):
        utils.decrypt_file(bytes.fromhex(key), str(tmp_path / "short.enc"), str(tmp_path / "o"))


def test_bad_credentials_are_explained(tmp_path):
    utils = load_utils()
    folder = write_dataset(tmp_path, "input", "d", "http://127.0.0.1:9/x", "AB" * 31)
    with pytest.raises(utils.AppError, match="64 hex"):
        utils.read_dataset("input", "d", str(tmp_path))
    (folder / "credentials.bin").write_text("{not json", encoding="utf-8")
    with pytest.raises(utils.AppError, match="not JSON"):
        utils.read_dataset("input", "d", str(tmp_path))


def test_app_imports_only_the_standard_library_and_its_three_packages():
    allowed = set(sys.stdlib_module_names) | {"cryptography", "requests", "pandas", "utils",
                                              "__future__"}
    for path in APP_DIR.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_a_long_download_reports_its_progress(tmp_path, store, monkeypatch):
    utils = load_utils()
    store.objects["/in-bucket/big.enc"] = os.urandom(3 * 1024 * 1024 + 5)
    monkeypatch.setattr(utils, "REPORT_EVERY", 0.0)
    reports: list[tuple[int, int | None]] = []
    size = utils.download(f"{store.base_url}/in-bucket/big.enc", str(tmp_path / "big.enc"),
                          report=lambda done, total: reports.append((done, total)))
    assert size == 3 * 1024 * 1024 + 5
    assert reports and all(total == size for _, total in reports)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
    assert reports[-1][0] <= size


def test_the_app_logs_progress_while_it_downloads(tmp_path, store, monkeypatch):
    setup = Setup(tmp_path, store, SMALL_CSV * 1)
    # the reports' period, made zero through a wrapper that the app imports first
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import sys\nsys.path.insert(0, %r)\nimport utils\nutils.REPORT_EVERY = 0.0\n"
        % str(APP_DIR), encoding="utf-8")
    run = setup.run(PYTHONPATH=str(shim))
    assert run.returncode == 0, run.stderr
    assert "downloading the input dataset 'cxhcfxdvl': 0 MiB of 0 MiB" in run.stderr
