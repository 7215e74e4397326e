"""The enclave launcher's pieces: binding, APPCONFIG_ID, the envelope, the app-config folder,
the wipe, and a launch refused for want of its environment."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from nitronb.enclave import launcher


def test_binding_is_em_apps_rule_with_the_raw_config_id() -> None:
    import hashlib

    from nitronb.attestation import binding_user_data, config_id_from_user_data

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
    with pytest.raises(launcher.LaunchError, match="not X25519"):
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
    assert "[enclave-os] refused: missing environment: NODE_AGENT" in err
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
