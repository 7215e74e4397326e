"""Unauthenticated load is bounded: nonces per client and time, refused provisions counted."""

from __future__ import annotations

import base64

import requests

from ccm_flow import approve_all, build_world
from nitronb.ccm.limits import AUDITED_REFUSALS_PER_MINUTE, NonceLimits, take_nonce
from nitronb.ccm.store import Store
from nitronb.errors import TooManyRequestsError

SMALL = NonceLimits(outstanding=3, per_window=5, window=60, total=7)


def _rows(store_or_manager, sql: str) -> int:
    return store_or_manager.execute(sql)[0][0] if isinstance(store_or_manager, Store) \
        else store_or_manager.sql(sql)[0][0]


def _refused(call) -> str:
    try:
        call()
    except TooManyRequestsError as exc:
        assert exc.status == 429
        return exc.message
    raise AssertionError("not refused")


def test_a_client_holds_a_bounded_number_of_unused_nonces(store_url):
    store = Store(store_url)
    for i in range(3):
        take_nonce(store, f"a{i}", client="10.0.0.1", ttl=300, limits=SMALL, now=1000)
    assert "holds 3 unused nonces" in _refused(
        lambda: take_nonce(store, "a3", client="10.0.0.1", ttl=300, limits=SMALL, now=1000))
    take_nonce(store, "b0", client="10.0.0.2", ttl=300, limits=SMALL, now=1000)  # another client
    assert store.consume_nonce("a0", 1001) == "ok"  # a used nonce frees its place
    take_nonce(store, "a3", client="10.0.0.1", ttl=300, limits=SMALL, now=1001)


def test_a_client_takes_a_bounded_number_of_nonces_per_window(store_url):
    store = Store(store_url)
    for i in range(5):
        take_nonce(store, f"a{i}", client="c", ttl=300, limits=SMALL, now=1000 + i)
        assert store.consume_nonce(f"a{i}", 1000 + i) == "ok"
    assert "took 5 nonces in the last 60 seconds" in _refused(
        lambda: take_nonce(store, "a5", client="c", ttl=300, limits=SMALL, now=1030))
    take_nonce(store, "a5", client="c", ttl=300, limits=SMALL, now=1061)


def test_all_clients_together_hold_a_bounded_number(store_url):
    store = Store(store_url)
    for i in range(7):
        take_nonce(store, f"n{i}", client=f"10.0.0.{i}", ttl=300, limits=SMALL, now=1000)
    assert "7 nonces are waiting" in _refused(
        lambda: take_nonce(store, "n7", client="10.0.1.1", ttl=300, limits=SMALL, now=1000))


def test_expired_nonces_are_dropped_when_one_is_issued(store_url):
    store = Store(store_url)
    for i in range(3):
        take_nonce(store, f"old{i}", client="c", ttl=300, limits=SMALL, now=1000)
    assert store.consume_nonce("old0", 1001) == "ok"
    take_nonce(store, "new", client="c", ttl=300, limits=SMALL, now=1301)
    assert _rows(store, "SELECT COUNT(*) FROM nonces") == 1
    assert store.consume_nonce("old1", 1302) == "unknown"  # gone, and still refused


def test_the_limits_are_shared_by_managers_on_one_database(store_url):
    first, second = Store(store_url), Store(store_url)
    for i in range(3):
        take_nonce(first, f"a{i}", client="c", ttl=300, limits=SMALL, now=1000)
    _refused(lambda: take_nonce(second, "a3", client="c", ttl=300, limits=SMALL, now=1000))


def test_a_nonce_flood_over_http_is_answered_429_and_stores_a_bounded_number(manager):
    limit = NonceLimits().outstanding
    answers = [requests.post(f"{manager.url}/v1/runtime/nonces", json={}, timeout=30)
               for _ in range(limit + 5)]
    assert [a.status_code for a in answers] == [201] * limit + [429] * 5
    body = answers[-1].json()
    assert body["error"] == "TooManyRequestsError" and "unused nonces" in body["message"]
    assert _rows(manager, "SELECT COUNT(*) FROM nonces") == limit
    assert _rows(manager, "SELECT COUNT(DISTINCT client) FROM nonces") == 1
    assert _rows(manager, "SELECT client FROM nonces LIMIT 1") == "127.0.0.1"


def test_refused_provisions_are_counted_not_each_logged(manager):
    world = build_world(manager)
    config_id = approve_all(world)["app_config_ids"]["app"]
    admin = world.clients["admin"]
    refusals = 3 * AUDITED_REFUSALS_PER_MINUTE
    for _ in range(refusals):
        reply = requests.post(f"{manager.url}/v1/runtime/app_configs/{config_id}/provision",
                              json={"attestation_document": base64.b64encode(b"junk").decode(),
                                    "nonce": base64.b64encode(b"n" * 32).decode()}, timeout=30)
        assert reply.status_code == 403 and set(reply.json()) >= {"error", "message"}
    logged = [r for r in admin.audit_log(object_id=config_id)
              if r["action"] == "provision.refused"]
    counted = _rows(manager, "SELECT SUM(count) FROM provision_refusals")
    assert counted == refusals
    # one minute, or two if the loop crossed a minute's end
    assert AUDITED_REFUSALS_PER_MINUTE <= len(logged) <= 2 * AUDITED_REFUSALS_PER_MINUTE
    assert "attestation document was refused" in logged[0]["details"]["reason"]
    assert "counted in provision_refusals" in logged[AUDITED_REFUSALS_PER_MINUTE - 1][
        "details"]["note"]
    assert admin.verify_audit()["ok"]


def test_huge_integers_and_ids_are_answered_without_echoing_them(manager):
    headers = {"Authorization": f"Bearer {manager.tokens['data-owner']}",
               "Content-Type": "application/json"}
    body = '{"name": "n", "location": "http://127.0.0.1:9/b/o", "x": ' + "9" * 5000 + "}"
    reply = requests.post(manager.url + "/v1/datasets", data=body, headers=headers, timeout=10)
    assert reply.status_code == 400
    assert "integer of more than" in reply.json()["message"]
    long_id = "d" * 10_000
    for path in ("/v1/datasets/" + long_id, "/v1/nothing/" + long_id):
        reply = requests.get(manager.url + path, headers=headers, timeout=10)
        assert reply.status_code in (404, 422), path
        assert reply.json()["error"] in ("ValidationError", "NotFoundError")
        assert len(reply.text) < 1000, path
