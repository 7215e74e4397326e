"""The enclave launcher's pieces: binding, APPCONFIG_ID, the envelope, the app-config folder,
the wipe, and a launch refused for want of its environment."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from nitronb.enclave_os import launcher


def test_binding_is_em_apps_rule_with_the_raw_config_id() -> None:
    import hashlib

    from nitronb.enclave.attestation import binding_user_data, config_id_from_user_data

    _, public = launcher.new_key_pair()
    config_id = hashlib.sha256(b"a configuration").hexdigest()
    raw = bytes.fromhex(config_id)
    bound = launcher.binding(public, config_id)
    assert len(public) == 32 and len(bound) == 64
    assert bound == hashlib.sha256(b"\x01" + hashlib.sha256(public).digest() + raw).digest() + raw
    assert bound == binding_user_data(public, config_id)
    assert config_id_from_user_data(bound) == config_id
    assert launcher.binding(public, "cd" * 32) != bound
    _, other = launcher.new_key_pair()
    assert launcher.binding(other, config_id) != bound
    for bad in ("ab" * 31, "zz" * 32, ""):
        with pytest.raises(launcher.LaunchError, match="not 64 hex"):
            launcher.binding(public, bad)


def test_config_id_of_equals_the_manager_rule() -> None:
    from nitronb.ccm import app_config_id

    config = {"app_config": {PREFIX + "a.txt": {"contents": "YQ=="}},
              "labels": {"domain": "é.local"}, "zone_ca": [],
              "workflow": {"workflow_id": "93156096-5ed4-41ad-ae23-19e8fab1e0af",
                           "app_name": "cxhcfxdvl", "port_map": {}}}
    assert launcher.config_id_of(config) == app_config_id(config)
    reordered = dict(reversed(list(config.items())))
    assert launcher.config_id_of(reordered) == app_config_id(reordered)
    assert launcher.config_id_of(reordered) != launcher.config_id_of(config)


def test_open_envelope_opens_what_the_manager_seals() -> None:
    from nitronb.ccm.provisioning import seal_envelope

    private, public = launcher.new_key_pair()
    payload = {"config": {"ports": {}}, "credentials": {"d": {"key": "00" * 32}}}
    envelope = seal_envelope(public, payload, "ef" * 32)
    assert launcher.open_envelope(private, envelope) == payload

    stranger, _ = launcher.new_key_pair()
    with pytest.raises(launcher.LaunchError, match="does not open with this enclave's key"):
        launcher.open_envelope(stranger, envelope)
    tampered = dict(envelope, config_id="00" * 32)
    with pytest.raises(launcher.LaunchError, match="does not open"):
        launcher.open_envelope(private, tampered)
    with pytest.raises(launcher.LaunchError, match="the release uses 'RSA-OAEP', not X25519"):
        launcher.open_envelope(private, dict(envelope, alg="RSA-OAEP"))


PREFIX = "/opt/fortanix/enclave-os/app-config/rw/"


def _release(node: str = "cxhcfxdvl", items: dict | None = None, port: str = "input") -> dict:
    """A release in the real CCM's shape: one dataset on ``port`` at ``node``."""
    dataset_id = "141c73d4-36f2-4185-bc75-40e2f7f4f235"
    return {"config": {"app_config": {path: {"contents": base64.b64encode(data).decode()}
                                      for path, data in (items or {}).items()},
                       "labels": {}, "zone_ca": [],
                       "workflow": {"workflow_id": "93156096-5ed4-41ad-ae23-19e8fab1e0af",
                                    "app_name": "stlw0qv3t",
                                    "port_map": {port: {node: {"dataset": {"id": dataset_id}}}}}},
            "extra": {"connections": {port: {node: {"dataset": {
                "location": "http://x/in", "credentials": {"encryption": {"key": "11" * 32}}}}}}}}


def test_write_app_config_names_dataset_folders_by_node(tmp_path) -> None:
    folder = tmp_path / "app-config"
    folder.mkdir()
    written = launcher.write_app_config(folder, _release(items={PREFIX + "settings/a.json":
                                                                b'{"x": 1}'}))
    base = folder / "input" / "cxhcfxdvl" / "dataset"
    assert sorted(written) == sorted([base / "credentials.bin", base / "location.txt",
                                      folder / "settings" / "a.json"])
    assert json.loads((base / "credentials.bin").read_text()) == {
        "encryption": {"key": "11" * 32}}
    assert (base / "location.txt").read_text() == "http://x/in"
    assert (folder / "settings" / "a.json").read_bytes() == b'{"x": 1}'
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "settings").stat().st_mode) == 0o700


@pytest.mark.parametrize("node", ["../x", "..", "a/../../x", "/etc/x", "x\x00y", "a..b",
                                  "x\x1b[31m", ""])
def test_write_app_config_refuses_an_unsafe_node_name(tmp_path, node) -> None:
    folder = tmp_path / "inner" / "app-config"
    folder.mkdir(parents=True)
    with pytest.raises(launcher.LaunchError, match="unsafe node name"):
        launcher.write_app_config(folder, _release(node))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("path, message", [
    ("settings/a", "must be an absolute path below"),
    ("/etc/passwd", "must be an absolute path below"),
    ("/opt/fortanix/enclave-os/app-config/rwx/a", "must be an absolute path below"),
    (PREFIX + "../escape", "no '..'"),
    (PREFIX + "a/../../escape", "no '..'"),
    (PREFIX, "no '..'"),
    (PREFIX + "a\x00b", "NUL"),
    (PREFIX + "input/cxhcfxdvl/dataset/credentials.bin", "folder of port 'input'"),
])
def test_write_app_config_refuses_an_item_path_trick(tmp_path, path, message) -> None:
    folder = tmp_path / "inner" / "app-config"
    folder.mkdir(parents=True)
    with pytest.raises(launcher.LaunchError, match="unsafe configuration item path") as caught:
        launcher.write_app_config(folder, _release(items={path: b"x"}))
    assert message in str(caught.value)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_write_app_config_follows_no_symbolic_link(tmp_path) -> None:
    folder = tmp_path / "app-config"
    outside = tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (folder / "settings").symlink_to(outside)
    with pytest.raises(launcher.LaunchError, match="settings is a symbolic link"):
        launcher.write_app_config(folder, _release(items={PREFIX + "settings/a.txt": b"x"}))
    (folder / "settings").unlink()
    (folder / "settings").mkdir()
    (folder / "settings" / "a.txt").symlink_to(outside / "a.txt")
    with pytest.raises(launcher.LaunchError, match="exists already"):
        launcher.write_app_config(folder, _release(items={PREFIX + "settings/a.txt": b"x"}))
    assert list(outside.iterdir()) == []


def test_write_app_config_needs_a_connection_for_each_dataset(tmp_path) -> None:
    release = _release()
    release["extra"] = {"connections": {}}
    with pytest.raises(launcher.LaunchError, match="no location and credentials for node "
                                                   "'cxhcfxdvl' on port 'input'"):
        launcher.write_app_config(tmp_path, release)


def test_wipe_removes_every_file_and_the_folder(tmp_path) -> None:
    folder = tmp_path / "app-config"
    folder.mkdir()
    launcher.write_app_config(folder, _release())
    (folder / "extra").mkdir()
    (folder / "extra" / "plain.csv").write_text("DESCRIPTION\nsecret\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("kept")
    os.symlink(outside, folder / "link")
    launcher.wipe(folder)
    assert not folder.exists()
    assert outside.read_text() == "kept"
    launcher.wipe(folder)  # idempotent


def test_main_without_environment_is_refused(monkeypatch, tmp_path, capsys) -> None:
    for name in ("NODE_AGENT", "CCM_BACKEND", "APPCONFIG_ID", "NITRONB_ENCLAVE_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APP_CONFIG_DIR", str(tmp_path / "app-config"))
    assert launcher.main(["true"]) == 70
    err = capsys.readouterr().err
    assert ("[enclave-os] refused: missing environment: NODE_AGENT, CCM_BACKEND, APPCONFIG_ID, "
            "NITRONB_ENCLAVE_ID; start the enclave with `nitronb run`, which sets them.") in err
    assert not (tmp_path / "app-config").exists()


def test_main_reports_an_unreachable_manager(monkeypatch, tmp_path, capsys) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("NODE_AGENT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CCM_BACKEND", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("APPCONFIG_ID", "ab" * 32)
    monkeypatch.setenv("NITRONB_ENCLAVE_ID", "enc-test")
    monkeypatch.setenv("APP_CONFIG_DIR", str(tmp_path / "app-config"))
    assert launcher.main(["true"]) == 70
    assert "refused: asking the manager for a nonce failed: cannot reach" in capsys.readouterr().err


def test_take_token_reads_the_token_file_and_keeps_its_name_from_the_app(monkeypatch,
                                                                        tmp_path) -> None:
    path = tmp_path / "token"
    path.write_text("s3cret-token\n", encoding="utf-8")
    monkeypatch.setenv("NITRONB_ENCLAVE_TOKEN_FILE", str(path))
    env = {"NITRONB_ENCLAVE_TOKEN_FILE": str(path), "APPCONFIG_ID": "ab" * 32}
    assert launcher.take_token(env) == "s3cret-token"
    assert env == {"APPCONFIG_ID": "ab" * 32}
    assert "NITRONB_ENCLAVE_TOKEN_FILE" not in os.environ


def test_take_token_names_a_token_file_it_cannot_read(tmp_path) -> None:
    missing = tmp_path / "gone" / "token"
    with pytest.raises(launcher.LaunchError, match=f"cannot read the enclave token from "
                                                   f"{missing}"):
        launcher.take_token({"NITRONB_ENCLAVE_TOKEN_FILE": str(missing)})


# --- a whole launch against a counterpart that serves any release ------------------------------


class _Counterpart:
    """The node agent and the manager as one HTTP server on 127.0.0.1 that serves ``release``,
    sealed to whatever key the enclave attests: the launcher's own checks are all that stands
    between such a release and the app. It checks the protocol (the routes, the token, the
    nonce, the binding of the key to the APPCONFIG_ID, the document sent back) and lists what
    was wrong in ``problems``; ``refusal`` is ``(status, body bytes)`` to answer the provision
    with instead."""

    def __init__(self, release: dict, config_id: str, refusal=None) -> None:
        import http.server
        import threading

        from nitronb.enclave.attestation import binding_user_data
        from nitronb.ccm.provisioning import seal_envelope

        self.release, self.refusal = release, refusal
        self.problems: list[str] = []
        self.calls: list[str] = []
        counterpart = self
        nonce = base64.b64encode(os.urandom(32)).decode()
        document = base64.b64encode(os.urandom(16)).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                counterpart.calls.append(self.path)
                if self.headers.get("Content-Type") != "application/json":
                    counterpart.problems.append(f"{self.path}: no JSON content type")
                status, reply = 200, None
                if self.path == "/v1/runtime/nonces":
                    if body != {}:
                        counterpart.problems.append(f"nonce request {body!r}")
                    reply = {"nonce": nonce, "expires_in": 300}
                elif self.path == "/v1/enclaves/enc-1/attestation":
                    public = base64.b64decode(body.get("public_key", ""))
                    counterpart.public_key = public
                    if self.headers.get("Authorization") != "Bearer t0ken":
                        counterpart.problems.append("attestation without the enclave's token")
                    if body.get("nonce") != nonce:
                        counterpart.problems.append("attestation without the issued nonce")
                    if base64.b64decode(body.get("user_data", "")) != \
                            binding_user_data(public, config_id):
                        counterpart.problems.append("user_data does not bind the key")
                    reply = {"document": document}
                elif self.path == f"/v1/runtime/app_configs/{config_id}/provision":
                    if body != {"attestation_document": document, "nonce": nonce}:
                        counterpart.problems.append(f"provision body {body!r}")
                    if counterpart.refusal:
                        status, data = counterpart.refusal
                    else:
                        reply = {"app_config_id": config_id,
                                 "envelope": seal_envelope(counterpart.public_key,
                                                           counterpart.release, config_id)}
                else:
                    counterpart.problems.append(f"unknown route {self.path}")
                    status, reply = 404, {"error": "NotFound", "message": "no such route"}
                if reply is not None:
                    data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


#: the app of these launches: it records the files it finds in the app-config folder, which
#: must be the one the launcher was given
_APP = ("import json, os, sys; folder = os.environ['APP_CONFIG_DIR']; "
        "assert folder == sys.argv[2], folder; "
        "json.dump(sorted(os.path.relpath(os.path.join(d, n), folder) "
        "for d, _, names in os.walk(folder) for n in names), open(sys.argv[1], 'w')); "
        "sys.exit(7)")


@pytest.fixture
def launch(monkeypatch, tmp_path):
    """``launch(release, config_id, capsys, refusal=None)``: run the launcher's ``main``
    against a counterpart serving ``release``; returns ``(exit code, the files the app saw or
    None if it never ran, stderr)``. Every launch must follow the protocol."""
    import signal
    import sys

    servers = []
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own handlers

    def run(release: dict, config_id: str, capsys, refusal=None):
        counterpart = _Counterpart(release, config_id, refusal)
        servers.append(counterpart)
        folder = tmp_path / "enclave" / "app-config"
        seen = tmp_path / "seen.json"
        for name, value in (("NODE_AGENT", counterpart.url + "/"),
                            ("CCM_BACKEND", counterpart.url + "/"),
                            ("APPCONFIG_ID", config_id), ("NITRONB_ENCLAVE_ID", "enc-1"),
                            ("NITRONB_ENCLAVE_TOKEN", "t0ken"), ("APP_CONFIG_DIR", str(folder))):
            monkeypatch.setenv(name, value)
        code = launcher.main([sys.executable, "-c", _APP, str(seen), str(folder)])
        assert not folder.exists(), "the app-config folder outlives the launch"
        assert counterpart.problems == []
        assert counterpart.calls == ["/v1/runtime/nonces", "/v1/enclaves/enc-1/attestation",
                                     f"/v1/runtime/app_configs/{config_id}/provision"]
        files = json.loads(seen.read_text()) if seen.exists() else None
        return code, files, capsys.readouterr().err

    yield run
    for server in servers:
        server.close()


def test_a_launch_writes_the_release_runs_the_app_and_passes_its_code(launch, capsys) -> None:
    release = _release(items={PREFIX + "settings/column.txt": b"DESCRIPTION"})
    code, files, err = launch(release, launcher.config_id_of(release["config"]), capsys)
    assert code == 7
    assert files == ["input/cxhcfxdvl/dataset/credentials.bin",
                     "input/cxhcfxdvl/dataset/location.txt", "settings/column.txt"]
    assert "provisioned: credentials for 1 dataset(s)" in err
    assert "app exited with code 7; credentials wiped" in err


@pytest.mark.parametrize("change", ["labels", "port_map", "item", "reordered"])
def test_a_release_that_does_not_hash_to_its_id_starts_nothing(launch, capsys, tmp_path,
                                                               change) -> None:
    release = _release(items={PREFIX + "settings/column.txt": b"DESCRIPTION"})
    config_id = launcher.config_id_of(release["config"])
    config = release["config"]
    if change == "labels":
        config["labels"] = {"domain": "elsewhere"}
    elif change == "port_map":
        config["workflow"]["port_map"]["input"]["other"] = {"dataset": {"id": "x"}}
    elif change == "item":
        config["app_config"][PREFIX + "settings/column.txt"]["contents"] = "T1RIRVI="
    else:
        release["config"] = dict(reversed(list(config.items())))
    code, files, err = launch(release, config_id, capsys)
    assert code == 70
    assert files is None, "the app ran on a configuration nobody approved"
    assert (f"refused: the released configuration does not hash to APPCONFIG_ID "
            f"{config_id[:12]}…") in err
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("port", ["..", "../x", "a/b", "/x", ".", "a..b", "", "x\n", ".hidden",
                                  "in put", "x" * 65])
def test_a_release_with_an_unsafe_port_name_writes_nothing(launch, capsys, tmp_path,
                                                           port) -> None:
    release = _release(port=port)
    code, files, err = launch(release, launcher.config_id_of(release["config"]), capsys)
    assert code == 70 and files is None
    assert f"refused: unsafe port name {port!r}" in err
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("port", ["input", "output", "input2", "in.put", "a-b_c", "x" * 64])
def test_a_safe_port_name_is_the_folder_of_its_datasets(tmp_path, port) -> None:
    launcher.write_app_config(tmp_path, _release(port=port))
    assert (tmp_path / port / "cxhcfxdvl" / "dataset" / "location.txt").is_file()


@pytest.mark.parametrize("status, body, says", [
    (403, b'{"error": "ProvisioningRefused", "message": "PCR0 differs"}', "PCR0 differs"),
    (502, b"bad gateway", "bad gateway"),
    (500, b'["not an object"]', '["not an object"]'),
    (403, b"\xff\xfe not UTF-8", "\ufffd\ufffd not UTF-8"),
])
def test_a_refused_provision_starts_nothing_and_says_why(launch, capsys, tmp_path, status, body,
                                                        says) -> None:
    release = _release()
    code, files, err = launch(release, launcher.config_id_of(release["config"]), capsys,
                              refusal=(status, body))
    assert code == 70 and files is None
    assert f"[enclave-os] refused: provisioning by the manager refused (HTTP {status}): " \
        f"{says}\n" in err
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("node", ["a b", "\u00e9t\u00e9", "x~", "Conditions_Data-2.csv"])
def test_write_app_config_takes_a_node_name_that_is_one_folder(tmp_path, node) -> None:
    launcher.write_app_config(tmp_path, _release(node))
    assert (tmp_path / "input" / node / "dataset" / "credentials.bin").is_file()


@pytest.mark.parametrize("node", [".", "a\\b", "x\x7f", "x\x1f"])
def test_write_app_config_refuses_one_more_unsafe_node_name(tmp_path, node) -> None:
    with pytest.raises(launcher.LaunchError, match="unsafe node name"):
        launcher.write_app_config(tmp_path, _release(node))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path, message", [
    (PREFIX + "a\\b", "no NUL, control characters or '\\'"),
    (PREFIX + "a\x7fb", "no NUL, control characters"),
    (PREFIX + "a/./b", "no '..', '.' or empty parts"),
    (PREFIX + "a//b", "no '..', '.' or empty parts"),
])
def test_write_app_config_refuses_one_more_item_path(tmp_path, path, message) -> None:
    with pytest.raises(launcher.LaunchError, match="unsafe configuration item path") as caught:
        launcher.write_app_config(tmp_path, _release(items={path: b"x"}))
    assert message in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_write_app_config_takes_an_item_path_with_a_space(tmp_path) -> None:
    launcher.write_app_config(tmp_path, _release(items={PREFIX + "my settings/a b.txt": b"x"}))
    assert (tmp_path / "my settings" / "a b.txt").read_bytes() == b"x"


def test_write_app_config_refuses_a_file_where_a_folder_goes(tmp_path) -> None:
    (tmp_path / "settings").write_bytes(b"a file")
    with pytest.raises(launcher.LaunchError,
                       match="cannot write settings/a.txt: settings is a symbolic link or not "
                             "a folder"):
        launcher.write_app_config(tmp_path, _release(items={PREFIX + "settings/a.txt": b"x"}))
    assert (tmp_path / "settings").read_bytes() == b"a file"


def test_write_app_config_names_the_part_that_is_not_a_folder(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b").write_bytes(b"a file")
    with pytest.raises(launcher.LaunchError,
                       match="cannot write a/b/c.txt: a/b is a symbolic link or not a folder"):
        launcher.write_app_config(tmp_path, _release(items={PREFIX + "a/b/c.txt": b"x"}))


def test_write_app_config_skips_app_nodes_and_writes_every_dataset(tmp_path) -> None:
    release = _release()
    port_map = release["config"]["workflow"]["port_map"]["input"]
    release["config"]["workflow"]["port_map"]["input"] = {"app2": {"app": {"id": "x"}},
                                                         **port_map}
    written = launcher.write_app_config(tmp_path, release)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "input/cxhcfxdvl/dataset/credentials.bin", "input/cxhcfxdvl/dataset/location.txt"]


@pytest.mark.parametrize("dataset", [{"location": "http://x/in"},
                                     {"credentials": {"encryption": {"key": "11" * 32}}},
                                     {"location": "http://x/in", "credentials": "a string"}])
def test_write_app_config_needs_both_location_and_credentials(tmp_path, dataset) -> None:
    release = _release()
    release["extra"]["connections"]["input"]["cxhcfxdvl"]["dataset"] = dataset
    with pytest.raises(launcher.LaunchError, match="no location and credentials"):
        launcher.write_app_config(tmp_path, release)
    assert list(tmp_path.iterdir()) == []


def test_configuration_item_contents_are_strict_base64(tmp_path) -> None:
    release = _release(items={PREFIX + "empty.txt": b""})
    release["config"]["app_config"][PREFIX + "empty.txt"] = {}
    (tmp_path / "one").mkdir()
    launcher.write_app_config(tmp_path / "one", release)
    assert (tmp_path / "one" / "empty.txt").read_bytes() == b""
    for contents in ("YQ==!", "YQ", "not base64 at all"):
        bad = _release(items={PREFIX + "a.txt": b""})
        bad["config"]["app_config"][PREFIX + "a.txt"] = {"contents": contents}
        with pytest.raises(launcher.LaunchError,
                           match=f"configuration item '{PREFIX}a.txt': contents are not base64"):
            launcher.write_app_config(tmp_path, bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one"]
