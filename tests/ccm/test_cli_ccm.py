"""``nitronb ccm --as PARTY …`` against a real manager."""

from __future__ import annotations

import json

import pytest

from ccm_flow import approve_all, build_world
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
    manager.sql("UPDATE audit SET details = '{}' WHERE id = 2")
    code, out, _ = cli("--as", "data-owner", "verify-audit", "--json")
    assert code == 1 and json.loads(out)["bad_row"] == 2


def test_who_acts_must_be_said(manager, cli):
    code, _, err = cli("whoami")
    assert code == 1 and "--as PARTY" in err
    code, _, err = cli("--as", "nobody", "whoami")
    assert code == 1 and "no token for party 'nobody'" in err
    code, out, _ = cli("--as", "admin", "whoami")
    assert code == 0 and out.startswith("admin (roles:")


def test_revoke_from_the_terminal_shows_revoked_and_superseded(manager, cli):
    world = build_world(manager)
    name = "conditions-describe"
    approve_all(world)
    ao = world.clients["app-owner"]
    ao.update_workflow(world.ids["draft"], {"description": "version 2"})
    request = ao.request_approval(world.ids["draft"])
    for party in request["approvers"]:
        world.clients[party].approve_request(request["id"])
    code, out, _ = cli("--as", "app-owner", "workflow", name)
    assert code == 0 and "version 1: SUPERSEDED (by version 2; no longer runs)" in out
    assert "version 2: APPROVED" in out

    code, _, err = cli("--as", "admin", "revoke", name, "--reason", "not a party")
    assert code == 1 and "only an approver" in err
    code, out, _ = cli("--as", "output-owner", "revoke", name, "--reason", "bucket moved")
    assert code == 0 and "version 2: REVOKED by output-owner: bucket moved" in out
    code, out, _ = cli("--as", "data-owner", "workflow", name)
    assert "version 2: REVOKED (approval withdrawn by output-owner at " in out
    assert "bucket moved" in out
    code, _, err = cli("--as", "data-owner", "revoke", name, "--version", "1", "--reason", "x")
    assert code == 1 and "SUPERSEDED" in err
    code, _, err = cli("--as", "data-owner", "revoke", name, "--reason", "x")
    assert code == 1 and "no APPROVED version" in err

    build_task = world.clients["admin"].get_build(world.ids["build"])["task_id"]
    code, _, err = cli("--as", "app-owner", "revoke-task", build_task, "--reason", "x")
    assert code == 1 and "administrator" in err
    code, out, _ = cli("--as", "admin", "revoke-task", build_task, "--reason", "CVE-2026-1")
    assert code == 0 and "REVOKED by admin: CVE-2026-1" in out
    code, out, _ = cli("--as", "admin", "list", "tasks", "--status", "REVOKED")
    assert build_task in out


def test_the_app_owner_drafts_with_the_ids_other_owners_hand_on(manager, cli, tmp_path):
    """As the README's terminal walk-through does: each owner registers its dataset and hands
    its id on; the app owner, who cannot see it, drafts the workflow with the id (a name it may
    not see finds nothing); the output shows the key's fingerprint, none of its digits."""
    from nitronb.keys import fingerprint, write_key_file

    world = build_world(manager)
    key = write_key_file(tmp_path / "key.hex")
    presigned = tmp_path / "url.txt"
    presigned.write_text("http://127.0.0.1:9/nitronb/t/in.csv.enc?X-Amz-Signature=abc",
                         encoding="utf-8")
    code, out, _ = cli("--as", "data-owner", "create-dataset", "terminal-in", "--presigned",
                       str(presigned), "-K", str(tmp_path / "key.hex"))
    assert code == 0 and f"key fingerprint {fingerprint(key)}" in out
    assert key[:4] + "…" not in out and "…" + key[-4:] not in out
    dataset_id = out.split("(", 1)[1].split(")", 1)[0]
    code, _, err = cli("--as", "app-owner", "show", "dataset", "terminal-in")
    assert code == 1 and "no dataset 'terminal-in'" in err
    argv = ("--as", "app-owner", "create-workflow", "terminal-wf", "--app-config",
            "describe-conditions", "--output", "describe-result", "--input")
    code, _, err = cli(*argv, "terminal-in")
    assert code == 1 and "no dataset 'terminal-in'" in err
    code, out, err = cli(*argv, dataset_id)
    assert code == 0, err
    assert "waiting for app-owner, data-owner, output-owner" in out
    code, out, _ = cli("--as", "app-owner", "show", "dataset", "terminal-in")
    assert code == 0 and "key_fingerprint" in out and fingerprint(key) in out


def test_approving_an_older_request_after_a_newer_version_says_superseded(manager, cli):
    world = build_world(manager)
    ao = world.clients["app-owner"]
    older = ao.request_approval(world.ids["draft"])
    ao.update_workflow(world.ids["draft"], {"description": "version 2"})
    newer = ao.request_approval(world.ids["draft"])
    for party in newer["approvers"]:
        world.clients[party].approve_request(newer["id"])
    *firsts, last = older["approvers"]
    for party in firsts:
        world.clients[party].approve_request(older["id"])
    code, out, _ = cli("--as", last, "approve", older["id"])
    assert code == 0
    assert "APPROVED, but superseded by version 2: it will not run" in out
    assert "APPCONFIG_ID" not in out
    answer = world.clients["admin"].get_approval_request(older["id"])
    assert answer["workflow_status"] == "SUPERSEDED" and answer["superseded_by"] == 2


def test_a_wrong_kind_of_id_says_which_kind_is_expected(manager, cli):
    world = build_world(manager)
    final = approve_all(world)
    request_id = final["approval"]["id"]
    code, _, err = cli("--as", "data-owner", "approve", final["id"])
    assert code == 1
    assert "is not an approval request id or a workflow draft's id or name" in err
    code, _, err = cli("--as", "data-owner", "revoke", request_id, "--reason", "x")
    assert code == 1
    assert "is not a final workflow id (one version) or a workflow draft's id or name" in err
    assert "no workflow draft" not in err

    foreign = final["app_config_ids"]["app"]
    token = world.clients["admin"].create_user("stranger")["token"]
    code, _, err = cli("--token", token, "show", "runtime-config", foreign)
    assert code == 1 and f"no approved configuration '{foreign}' visible to you" in err
    assert "not approved (yet)" not in err


def test_workflow_shows_withdrawn_and_build_revoked_and_show_omits_none(manager, cli):
    world = build_world(manager)
    name = "conditions-describe"
    approve_all(world)
    task = world.clients["admin"].get_build(world.ids["build"])["task_id"]
    code, out, _ = cli("--as", "admin", "show", "task", task)
    assert code == 0 and "reason: None" not in out and "revoked_by" not in out
    world.clients["admin"].revoke_task(task, "CVE-2026-1")
    code, out, _ = cli("--as", "app-owner", "workflow", name)
    assert "version 1: APPROVED, build revoked: it will not run (" in out
    assert "CVE-2026-1" in out

    world2 = build_world(manager, suffix="-2")
    final = approve_all(world2)
    world2.clients["output-owner"].revoke_workflow(final["id"], "bucket moved")
    code, out, _ = cli("--as", "data-owner", "workflow", "conditions-describe-2")
    assert "  output-owner: withdrawn" in out
    assert "  data-owner: approved" in out and "  app-owner: approved" in out


def test_serve_names_an_unreachable_database_without_its_password(tmp_path, capsys):
    url = "postgresql://nitronb:s3cr3t-pw@127.0.0.1:1/nitronb"
    code = main(["ccm", "--workspace", str(tmp_path), "serve", "--database-url", url])
    out, err = capsys.readouterr()
    assert code == 1
    assert "cannot open the manager's database postgresql://nitronb:***@127.0.0.1:1/nitronb" in err
    assert "s3cr3t-pw" not in out + err
    assert not (tmp_path / "ccm" / "ccm.sqlite3").exists()


def test_registering_a_dataset_again_moves_its_location_with_its_credentials(manager, cli,
                                                                             tmp_path):
    """A second ``create-dataset`` of one name updates it: the new URL's location and query
    go together, else the enclave would sign for one object and fetch the other."""
    from nitronb.keys import write_key_file

    write_key_file(tmp_path / "key.hex")
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("http://127.0.0.1:9/nitronb/upd-a/in.csv.enc?X-Amz-Signature=aa",
                     encoding="utf-8")
    second.write_text("http://127.0.0.1:9/nitronb/upd-b/in.csv.enc?X-Amz-Signature=bb",
                      encoding="utf-8")
    for presigned in (first, second):
        code, out, err = cli("--as", "data-owner", "create-dataset", "moving", "--presigned",
                             str(presigned), "-K", str(tmp_path / "key.hex"))
        assert code == 0, err
    assert "updated" in out and "/nitronb/upd-b/in.csv.enc" in out
    code, out, _ = cli("--as", "data-owner", "show", "dataset", "moving", "--json")
    assert code == 0 and json.loads(out)["location"].endswith("/nitronb/upd-b/in.csv.enc")
