"""Several manager processes on one database (the SQLite file, or PostgreSQL with
``--database postgresql``): they start at once on an empty database, and parties approving
through different managers at the same moment end in one consistent state."""

from __future__ import annotations

import shutil
import threading

import pytest
from conftest import ManagerProcess

from ccm_flow import build_world
from nitronb.ccm.service import Service
from nitronb.errors import ConflictError, ManagerDatabaseError

PARTIES = ("data-owner", "output-owner", "app-owner", "admin")


@pytest.fixture
def two_managers(tmp_path):
    """Two manager processes on one workspace and database, launched at the same moment."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    managers = [ManagerProcess(workspace), ManagerProcess(workspace)]
    try:
        for manager in managers:
            manager.launch()
        for manager in managers:
            manager.wait_ready()
        yield managers
    finally:
        for manager in managers:
            manager.stop()


def test_managers_starting_at_once_on_an_empty_database_set_it_up_once(two_managers):
    first, second = two_managers
    for manager in two_managers:  # the tokens on file work with both
        for party in PARTIES:
            assert manager.client(party).whoami()["user"]["name"] == party
    users = first.client("admin").list_users()
    assert sorted(u["name"] for u in users) == sorted(PARTIES)
    log = second.client("admin").audit_log(limit=1000)
    assert [r["action"] for r in log] == ["user.create"] * 4
    assert first.client("admin").verify_audit()["ok"]


def test_parties_approving_through_two_managers_at_once_end_consistent(two_managers):
    first, second = two_managers
    worlds = [build_world(first, suffix=f"-{i}") for i in range(3)]
    requests = [w.clients["app-owner"].request_approval(w.ids["draft"]) for w in worlds]
    # every approver approves every request through both managers at the same moment
    calls = [(manager, party, request["id"]) for request in requests
             for party in request["approvers"] for manager in two_managers]
    barrier = threading.Barrier(len(calls))
    outcomes: list[tuple[str, str, str]] = []

    def approve(manager, party: str, request_id: str) -> None:
        client = manager.client(party)
        barrier.wait()
        try:
            client.approve_request(request_id)
            outcomes.append((party, request_id, "approved"))
        except ConflictError:
            outcomes.append((party, request_id, "conflict"))

    threads = [threading.Thread(target=approve, args=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(outcomes) == len(calls)
    for request in requests:  # one approval per approver, no approval lost
        for party in request["approvers"]:
            mine = sorted(o[2] for o in outcomes if o[:2] == (party, request["id"]))
            assert mine == ["approved", "conflict"]
    admin = second.client("admin")
    for request in requests:
        shown = first.client("app-owner").get_approval_request(request["id"])
        assert shown["status"] == "APPROVED"
        assert sorted(shown["approvals"]) == sorted(request["approvers"])
        final = second.client("app-owner").get_final_workflow(request["workflow_id"])
        assert final["status"] == "APPROVED" and final["app_config_ids"]
    log = admin.audit_log(limit=10_000)
    assert sum(r["action"] == "workflow.approved" for r in log) == len(requests)
    assert sum(r["action"] == "approval_request.approve" for r in log) == \
        sum(len(r["approvers"]) for r in requests)
    assert admin.verify_audit()["ok"] and first.client("admin").verify_audit()["ok"]


def test_a_manager_without_the_databases_key_refuses_to_start(manager, tmp_path,
                                                               manager_database):
    from nitronb.ccm.database import database_url

    url = manager_database or database_url(folder=manager.workspace / "ccm")
    other = tmp_path / "other"
    with pytest.raises(ManagerDatabaseError, match="sealed with another manager key") as caught:
        Service.open(other, database_url=url)
    assert "copy manager.key and tokens.json" in caught.value.hint
    (other / "ccm" / "manager.key").unlink(missing_ok=True)
    for name in ("manager.key", "tokens.json"):
        shutil.copy(manager.workspace / "ccm" / name, other / "ccm" / name)
    service = Service.open(other, database_url=url)  # the same key: it joins
    try:
        assert service.list_users(service._user_by_name("admin"))
    finally:
        service.store.close()
    assert manager.client("admin").whoami()["user"]["name"] == "admin"  # tokens kept


def test_workers_serve_one_port_together_and_stop_together(tmp_path):
    import psutil

    workspace = tmp_path / "ws"
    workspace.mkdir()
    manager = ManagerProcess(workspace, args=("--workers", "2"))
    manager.start()
    try:
        parent = psutil.Process(manager.proc.pid)
        workers = parent.children()
        assert len(workers) == 2
        world = build_world(manager)
        request = world.clients["app-owner"].request_approval(world.ids["draft"])
        threads = [threading.Thread(target=world.clients[p].approve_request,
                                    args=(request["id"],)) for p in request["approvers"]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        final = world.clients["app-owner"].get_final_workflow(request["workflow_id"])
        assert final["status"] == "APPROVED"
        assert manager.client("admin").verify_audit()["ok"]
        manager.proc.terminate()
        assert manager.proc.wait(30) == 0
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        manager.stop()


def test_a_manager_whose_database_stops_answers_503_then_recovers(tmp_path):
    """PostgreSQL stopped under a running manager: its health check and every request answer
    503 ``DatabaseUnavailable`` (no 500, no traceback in its log); once the server is back the
    manager serves again."""
    import os
    import time

    import pg_cluster
    import requests

    try:
        cluster = pg_cluster.Cluster().start()
    except pg_cluster.Unavailable as exc:
        if os.environ.get("NITRONB_TEST_REQUIRE_POSTGRESQL"):
            pytest.fail(f"PostgreSQL is required here: {exc}")
        pytest.skip(str(exc))
    manager = None
    try:
        url = pg_cluster.create_database(cluster.url)
        workspace = tmp_path / "ws"
        workspace.mkdir()
        manager = ManagerProcess(workspace, args=("--database-url", url))
        manager.start()
        admin = {"Authorization": f"Bearer {manager.tokens['admin']}"}
        assert requests.get(manager.url + "/v1/datasets", headers=admin,
                            timeout=10).status_code == 200
        cluster.halt()
        for path, headers in (("/v1/sys/health", {}), ("/v1/datasets", admin)):
            reply = requests.get(manager.url + path, headers=headers, timeout=30)
            assert reply.status_code == 503, reply.text
            assert reply.json()["error"] == "DatabaseUnavailable"
        assert "Traceback" not in manager.log.read_text(encoding="utf-8")
        cluster.serve()
        deadline = time.monotonic() + 60  # a pooled connection from before is dropped first
        while requests.get(manager.url + "/v1/datasets", headers=admin,
                           timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the manager did not recover"
            time.sleep(0.2)
        assert requests.get(manager.url + "/v1/sys/health", timeout=30).status_code == 200
    finally:
        if manager is not None:
            manager.stop()
        cluster.stop()
