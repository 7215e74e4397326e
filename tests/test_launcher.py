"""The enclave launcher's pieces: binding, APPCONFIG_ID, the envelope, the app-config folder,
the wipe, and a launch refused for want of its environment."""

from __future__ import annotations

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

    config = {"app_config_id": "c1", "app": {"name": "describe-app", "domain": "é.local"},
              "build": {"pcr0": "00" * 48}, "ports": {"input": [], "output": []},
              "config_items": {}, "workflow": {"version": 2}}
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


def _release(dataset: str = "synthea-conditions", items: dict | None = None) -> dict:
    return {"config": {"ports": {"input": [{"dataset": dataset, "location": "http://x/in"}]},
                       "config_items": items or {}},
            "credentials": {dataset: {"encryption": {"key": "11" * 32}}}}


def test_write_app_config_lays_out_private_files(tmp_path) -> None:
    folder = tmp_path / "app-config"
    written = launcher.write_app_config(folder, _release(items={"settings/a.json": {"x": 1}}))
    base = folder / "input" / "synthea-conditions" / "dataset"
    assert sorted(written) == sorted([base / "credentials.bin", base / "location.txt",
                                      folder / "settings" / "a.json"])
    assert json.loads((base / "credentials.bin").read_text()) == {
        "encryption": {"key": "11" * 32}}
    assert (base / "location.txt").read_text() == "http://x/in"
    assert stat.S_IMODE((base / "credentials.bin").stat().st_mode) == 0o600


@pytest.mark.parametrize("dataset", ["../x", "..", "a/../../x", "/etc/x", "x\x00y"])
def test_write_app_config_refuses_a_dataset_name_leaving_the_folder(tmp_path, dataset) -> None:
    folder = tmp_path / "inner" / "app-config"
    folder.mkdir(parents=True)
    with pytest.raises(launcher.LaunchError, match="unsafe dataset name"):
        launcher.write_app_config(folder, _release(dataset))
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/abs", ""])
def test_write_app_config_refuses_an_item_path_leaving_the_folder(tmp_path, path) -> None:
    folder = tmp_path / "inner" / "app-config"
    folder.mkdir(parents=True)
    with pytest.raises(launcher.LaunchError, match="unsafe configuration item path"):
        launcher.write_app_config(folder, {"config": {"ports": {}, "config_items": {path: "x"}},
                                           "credentials": {}})
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_write_app_config_needs_credentials_for_each_dataset(tmp_path) -> None:
    release = _release()
    release["credentials"] = {}
    with pytest.raises(launcher.LaunchError, match="no credentials for dataset"):
        launcher.write_app_config(tmp_path, release)


def test_wipe_removes_every_file_and_the_folder(tmp_path) -> None:
    folder = tmp_path / "app-config"
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
