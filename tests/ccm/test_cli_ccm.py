"""``nitronb ccm --as PARTY …`` against a real manager."""

from __future__ import annotations

import json
import sqlite3

import pytest

from ccm_flow import build_world
from nitronb.cli import main


@pytest.fixture
def cli(manager, monkeypatch, capsys):
    monkeypatch.setenv("NITRONB_WORKSPACE", str(manager.workspace))
    monkeypatch.setenv("NITRONB_CCM_URL", manager.url)
    monkeypatch.delenv("NITRONB_CCM_TOKEN", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["ccm", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_tasks_and_workflow_approval_from_the_terminal(manager, cli):
    world = build_world(manager, approve_tasks=False)
    code, out, _ = cli("--as", "admin", "list", "tasks", "--status", "PENDING", "--json")
    assert code == 0
    pending = json.loads(out)
    assert {t["task_type"] for t in pending} == {"DOMAIN_WHITELIST", "BUILD_WHITELIST"}
    code, _, err = cli("--as", "app-owner", "approve-task", pending[0]["id"])
    assert code == 1 and "administrator" in err
    for task in pending:
        code, out, _ = cli("--as", "admin", "approve-task", task["id"])
        assert code == 0 and "APPROVED" in out
    code, out, _ = cli("--as", "admin", "list", "tasks")
    assert "PENDING" not in out and "BUILD_WHITELIST" in out

    world.clients["app-owner"].request_approval(world.ids["draft"])
    name = "conditions-describe"
    code, _, err = cli("--as", "admin", "approve", name)
    assert code == 1 and "owns nothing" in err
    for party in ("data-owner", "output-owner"):
        code, out, _ = cli("--as", party, "approve", name)
        assert code == 0 and "PENDING" in out
    code, out, _ = cli("--as", "app-owner", "approve", name)
    assert code == 0 and "APPROVED" in out and "APPCONFIG_ID app:" in out
    code, out, _ = cli("--as", "data-owner", "workflow", name, "--json")
    shown = json.loads(out)
    assert shown["final_versions"][0]["status"] == "APPROVED"
    config_id = shown["final_versions"][0]["app_config_ids"]["app"]
    code, out, _ = cli("--as", "data-owner", "show", "runtime-config", config_id, "--json")
    assert json.loads(out)["config"]["workflow"]["workflow_id"] == \
        shown["final_versions"][0]["id"]


def test_a_decline_shows_with_its_reason(manager, cli):
    world = build_world(manager)
    world.clients["app-owner"].request_approval(world.ids["draft"])
    code, out, _ = cli("--as", "output-owner", "deny", "conditions-describe",
                       "--reason", "wrong output bucket")
    assert code == 0 and "DENIED" in out and "wrong output bucket" in out
    code, out, _ = cli("--as", "app-owner", "workflow", "conditions-describe")
    assert "version 1: DENIED" in out and "output-owner: declined" in out
    assert "reason: wrong output bucket" in out


def test_show_and_list_never_print_credentials(manager, cli):
    world = build_world(manager)
    for argv in (("list", "datasets", "--json"), ("show", "dataset", "conditions"),
                 ("show", "dataset", "conditions", "--json")):
        code, out, _ = cli("--as", "output-owner", *argv)
        assert code == 0 and "conditions" in out
        assert world.keys["input"] not in out and "<redacted>" in out


def test_verify_audit_exit_code_follows_the_chain(manager, cli):
    build_world(manager)
    code, out, _ = cli("--as", "data-owner", "verify-audit")
    assert code == 0 and "OK" in out
    with sqlite3.connect(manager.workspace / "ccm" / "ccm.sqlite3") as db:
        db.execute("UPDATE audit SET details = '{}' WHERE id = 2")
    code, out, _ = cli("--as", "data-owner", "verify-audit", "--json")
    assert code == 1 and json.loads(out)["bad_row"] == 2


def test_who_acts_must_be_said(manager, cli):
    code, _, err = cli("whoami")
    assert code == 1 and "--as PARTY" in err
    code, _, err = cli("--as", "nobody", "whoami")
    assert code == 1 and "no token for party 'nobody'" in err
    code, out, _ = cli("--as", "admin", "whoami")
    assert code == 0 and out.startswith("admin (roles:")
