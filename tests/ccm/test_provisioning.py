"""Releasing a runtime configuration only to an attested enclave (test-only verifier)."""

from __future__ import annotations

import base64

import pytest

from ccm_fake_nsm import make_document
from ccm_flow import PCRS, approve_all, build_world
from nitronb.ccm import CCMClient, new_enclave_key, open_envelope
from nitronb.errors import DecryptionError, NotFoundError, ProvisioningRefusedError


def _attest(manager, config_id, *, pcrs=PCRS, bound_to=None, nonce=None):
    enclave = CCMClient(manager.url)
    if nonce is None:
        nonce = base64.b64decode(enclave.issue_nonce()["nonce"])
    private, public = new_enclave_key()
    document = make_document(manager.workspace, pcrs=pcrs, public_key=public,
                             config_id=bound_to or config_id, nonce=nonce)
    return enclave, private, document, nonce


def test_an_attested_enclave_receives_config_and_credentials_sealed_to_its_key(manager):
    world = build_world(manager)
    config_id = approve_all(world)["app_config_ids"]["app"]
    enclave, private, document, nonce = _attest(manager, config_id)
    released = enclave.provision(config_id, document, nonce)
    assert released["app_config_id"] == config_id
    assert world.keys["input"] not in str(released)
    opened = open_envelope(private, released["envelope"])
    served = world.clients["admin"].get_runtime_config(config_id)
    assert set(opened) == {"config", "extra"} and opened["config"] == served["config"]
    connections = opened["extra"]["connections"]
    assert connections["input"]["input"]["dataset"]["credentials"]["encryption"]["key"] == \
        world.keys["input"]
    assert connections["output"]["output"]["dataset"]["credentials"]["encryption"]["key"] == \
        world.keys["output"]
    assert connections["input"]["input"]["dataset"]["location"] == \
        served["extra"]["connections"]["input"]["input"]["dataset"]["location"]
    other, _ = new_enclave_key()
    with pytest.raises(DecryptionError):
        open_envelope(other, released["envelope"])
    # the same document again is a replay
    with pytest.raises(ProvisioningRefusedError, match="already used"):
        enclave.provision(config_id, document, nonce)
    actions = [r["action"] for r in world.clients["admin"].audit_log(object_id=config_id)]
    assert actions == ["provision.release", "provision.refused"]


def test_refusals_name_their_reason(manager):
    world = build_world(manager)
    config_id = approve_all(world)["app_config_ids"]["app"]
    enclave, _, document, nonce = _attest(manager, config_id,
                                          pcrs={**PCRS, 0: b"\x01" * 48})
    with pytest.raises(ProvisioningRefusedError, match="pcrs"):
        enclave.provision(config_id, document, nonce)
    enclave, _, document, nonce = _attest(manager, config_id, bound_to="f" * 64)
    with pytest.raises(ProvisioningRefusedError, match="binding"):
        enclave.provision(config_id, document, nonce)
    enclave, _, document, _ = _attest(manager, config_id, nonce=b"\x07" * 32)
    with pytest.raises(ProvisioningRefusedError, match="not issued"):
        enclave.provision(config_id, document)
    with pytest.raises(NotFoundError):
        enclave.provision("0" * 64, document)


def test_an_unapproved_build_task_blocks_the_workflow_from_running(manager):
    world = build_world(manager, approve_tasks=False)
    admin = world.clients["admin"]
    domain = next(t for t in world.ids["tasks"] if admin.get_task(t)["task_type"] ==
                  "DOMAIN_WHITELIST")
    admin.approve_task(domain)
    config_id = approve_all(world)["app_config_ids"]["app"]
    enclave, _, document, nonce = _attest(manager, config_id)
    with pytest.raises(ProvisioningRefusedError, match=r"build task .* is PENDING"):
        enclave.provision(config_id, document, nonce)
    build_task = next(t for t in world.ids["tasks"] if t != domain)
    admin.approve_task(build_task)
    enclave, _, document, nonce = _attest(manager, config_id)
    assert enclave.provision(config_id, document, nonce)["app_config_id"] == config_id


def test_a_workflow_that_is_not_approved_releases_nothing(manager):
    world = build_world(manager)
    final = approve_all(world)
    config_id = final["app_config_ids"]["app"]
    # approved version 1 keeps releasing; a denied workflow never gets a config id at all
    ao = world.clients["app-owner"]
    ao.update_workflow(world.ids["draft"], {"description": "v2"})
    request = ao.request_approval(world.ids["draft"])
    world.clients["output-owner"].deny_request(request["id"], "no")
    assert ao.get_final_workflow(request["workflow_id"])["app_config_ids"] == {}
    enclave, _, document, nonce = _attest(manager, config_id)
    assert enclave.provision(config_id, document, nonce)["app_config_id"] == config_id


def test_the_manager_refuses_when_the_workflow_is_not_approved(tmp_path):
    """Service level: a runtime config whose workflow is no longer APPROVED is refused."""
    from ccm_fake_nsm import FakeVerifier
    from ccm_flow import ServiceManager

    manager = ServiceManager(tmp_path, verifier=FakeVerifier(tmp_path))
    service = manager.service
    world = build_world(manager)
    config_id = approve_all(world)["app_config_ids"]["app"]
    final = service.store.get("final_workflow",
                              service.store.get_runtime_config(config_id)[0])
    final.status = "DENIED"
    service.store.put(final)
    nonce = base64.b64decode(service.issue_nonce()["nonce"])
    _, public = new_enclave_key()
    document = make_document(tmp_path, pcrs=PCRS, public_key=public, config_id=config_id,
                             nonce=nonce)
    with pytest.raises(ProvisioningRefusedError, match="is not approved: it is DENIED"):
        service.provision(config_id, base64.b64encode(document).decode())


def test_the_default_verifier_trusts_the_local_nsm_root_of_the_workspace(nitro_manager):
    nsm = pytest.importorskip("nitronb.enclave.nsm", reason="the local NSM is not installed")
    from nitronb.enclave.attestation import binding_user_data

    world = build_world(nitro_manager)
    config_id = approve_all(world)["app_config_ids"]["app"]
    enclave = CCMClient(nitro_manager.url)
    module = nsm.LocalNSM(nitro_manager.workspace / "nsm")
    private, public = new_enclave_key()

    def document(pcrs, nonce):
        return module.attest(pcrs=pcrs, public_key=public, nonce=nonce,
                             user_data=binding_user_data(public, config_id))

    nonce = base64.b64decode(enclave.issue_nonce()["nonce"])
    with pytest.raises(ProvisioningRefusedError, match=r"\(pcrs\)"):
        enclave.provision(config_id, document({**PCRS, 2: b"\x00" * 48}, nonce), nonce)
    nonce = base64.b64decode(enclave.issue_nonce()["nonce"])
    released = enclave.provision(config_id, document(PCRS, nonce), nonce)
    assert open_envelope(private, released["envelope"])["extra"]["connections"]["input"][
        "input"]["dataset"]["credentials"]["encryption"]["key"] == world.keys["input"]
    stranger = nsm.LocalNSM(nitro_manager.workspace / "other-nsm")
    nonce = base64.b64decode(enclave.issue_nonce()["nonce"])
    forged = stranger.attest(pcrs=PCRS, public_key=public, nonce=nonce,
                             user_data=binding_user_data(public, config_id))
    with pytest.raises(ProvisioningRefusedError, match="refused"):
        enclave.provision(config_id, forged, nonce)


def test_a_document_binding_the_id_as_hex_text_is_refused(nitro_manager):
    """em-app binds the APPCONFIG_ID's 32 raw bytes; the 96-byte form with its hex text is not
    a binding the manager accepts."""
    import hashlib

    nsm = pytest.importorskip("nitronb.enclave.nsm", reason="the local NSM is not installed")
    world = build_world(nitro_manager)
    config_id = approve_all(world)["app_config_ids"]["app"]
    enclave = CCMClient(nitro_manager.url)
    module = nsm.LocalNSM(nitro_manager.workspace / "nsm")
    _, public = new_enclave_key()
    text = config_id.encode()
    as_text = hashlib.sha256(b"\x01" + hashlib.sha256(public).digest() + text).digest() + text
    assert len(as_text) == 96
    nonce = base64.b64decode(enclave.issue_nonce()["nonce"])
    document = module.attest(pcrs=PCRS, public_key=public, nonce=nonce, user_data=as_text)
    with pytest.raises(ProvisioningRefusedError, match=r"\(binding\).*96 bytes, not the 64"):
        enclave.provision(config_id, document, nonce)
    raw = bytes.fromhex(config_id)
    em_app = hashlib.sha256(b"\x01" + hashlib.sha256(public).digest() + raw).digest() + raw
    document = module.attest(pcrs=PCRS, public_key=public, nonce=nonce, user_data=em_app)
    assert enclave.provision(config_id, document, nonce)["app_config_id"] == config_id


# --- the manager's own checks, whatever its verifier lets through -------------------------------


class _UncheckingVerifier:
    """Decodes a real Nitro document and returns it as the real verifier does, checking nothing:
    what the manager refuses then, it refuses by its own comparison."""

    def verify(self, document, *, expected_pcrs, public_key, config_id, nonce):
        from nitronb.enclave.attestation import parse_document

        return parse_document(document)


@pytest.fixture
def unchecked(tmp_path):
    """``(service, config_id, attempt)``: an approved workflow at a manager whose verifier checks
    nothing; ``attempt(**changes)`` provisions with a local NSM document."""
    nsm = pytest.importorskip("nitronb.enclave.nsm", reason="the local NSM is not installed")
    from ccm_flow import ServiceManager

    from nitronb.enclave.attestation import binding_user_data

    manager = ServiceManager(tmp_path, verifier=_UncheckingVerifier())
    world = build_world(manager)
    config_id = approve_all(world)["app_config_ids"]["app"]
    service, module = manager.service, nsm.LocalNSM(tmp_path / "nsm")

    def attempt(*, pcrs=PCRS, bound_to=config_id, nonce=b"", sent=b"", user_data=None,
                key_of_binding=None):
        if nonce == b"":
            nonce = base64.b64decode(service.issue_nonce()["nonce"])
        sent = nonce if sent == b"" else sent
        private, public = new_enclave_key()
        if user_data is None:
            user_data = binding_user_data(key_of_binding or public, bound_to)
        document = module.attest(pcrs=pcrs, public_key=public, user_data=user_data, nonce=nonce)
        released = service.provision(config_id, base64.b64encode(document).decode(),
                                     None if sent is None else base64.b64encode(sent).decode())
        assert released["app_config_id"] == released["envelope"]["config_id"] == config_id
        return open_envelope(private, released["envelope"])

    def audit():
        return [(r["action"], r["details"].get("reason", "")) for r in
                world.clients["admin"].audit_log(object_id=config_id)]

    attempt.world = world
    return service, config_id, attempt, audit


def test_a_release_and_a_refusal_are_audited_with_what_was_released(unchecked):
    service, config_id, attempt, _ = unchecked
    world = attempt.world
    issued = service.issue_nonce()
    assert issued["expires_in"] == 300 and len(base64.b64decode(issued["nonce"])) == 32
    attempt(nonce=base64.b64decode(issued["nonce"]))
    with pytest.raises(ProvisioningRefusedError):
        attempt(pcrs={**PCRS, 1: b"\x02" * 48})
    released, refused = world.clients["admin"].audit_log(object_id=config_id)
    final_id = service.store.get_runtime_config(config_id)[0]
    assert {k: released[k] for k in ("actor", "action", "object_type", "details")} == {
        "actor": "enclave", "action": "provision.release", "object_type": "runtime_config",
        "details": {"workflow_id": final_id, "pcr0": PCRS[0].hex(),
                    "datasets": ["conditions", "describe-result"]}}
    assert {k: refused[k] for k in ("actor", "action", "object_type")} == {
        "actor": "enclave", "action": "provision.refused", "object_type": "runtime_config"}
    assert refused["details"]["reason"].startswith("PCR1 of the enclave")


def test_fields_that_are_not_base64_are_named(unchecked):
    from nitronb.errors import ValidationError

    service, config_id, _, _ = unchecked
    with pytest.raises(ValidationError, match="'attestation_document' is not valid base64"):
        service.provision(config_id, "not base64!")
    with pytest.raises(ValidationError, match="'nonce' is not valid base64"):
        service.provision(config_id, "AAAA", "not base64!")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_the_manager_compares_each_pcr_with_the_whitelisted_build_itself(unchecked, index):
    _, config_id, attempt, audit = unchecked
    with pytest.raises(ProvisioningRefusedError,
                       match=f"PCR{index} of the enclave .* does not match the whitelisted build"):
        attempt(pcrs={**PCRS, index: b"\x01" * 48})
    assert audit() == [("provision.refused", audit()[0][1])]
    assert audit()[0][1].startswith(f"PCR{index} of the enclave")
    assert attempt()["config"]["workflow"]["port_map"]  # the right PCRs are released to


def test_the_manager_checks_the_binding_itself(unchecked):
    import hashlib

    _, config_id, attempt, audit = unchecked
    _, stranger = new_enclave_key()
    for changes in ({"bound_to": "f" * 64}, {"key_of_binding": stranger},
                    {"bound_to": config_id[::-1]},
                    {"user_data": hashlib.sha512(b"x").digest()}, {"user_data": b""}):
        with pytest.raises(ProvisioningRefusedError, match="does not bind its public key to "
                                                           f"APPCONFIG_ID {config_id[:12]}"):
            attempt(**changes)
    assert [a for a, _ in audit()] == ["provision.refused"] * 5
    assert attempt()["extra"]["connections"]


def test_the_manager_checks_the_nonce_itself(unchecked):
    service, config_id, attempt, audit = unchecked
    with pytest.raises(ProvisioningRefusedError, match="carries no nonce"):
        attempt(nonce=None, sent=None)
    issued = base64.b64decode(service.issue_nonce()["nonce"])
    with pytest.raises(ProvisioningRefusedError, match="not the one sent with the request"):
        attempt(nonce=issued, sent=b"\x05" * 32)
    with pytest.raises(ProvisioningRefusedError, match="not issued by this manager"):
        attempt(nonce=b"\x06" * 32)
    assert attempt(nonce=issued, sent=None)["config"]  # the issued nonce is still unused
    with pytest.raises(ProvisioningRefusedError, match="already used"):
        attempt(nonce=issued)
    assert [a for a, _ in audit()] == ["provision.refused"] * 3 + ["provision.release",
                                                                   "provision.refused"]


def test_an_expired_nonce_is_refused_and_audited(unchecked):
    import time

    service, config_id, attempt, audit = unchecked
    expired = b"\x09" * 32
    service.store.add_nonce(expired.hex(), time.time() - 1)
    with pytest.raises(ProvisioningRefusedError, match="nonce expired; take a fresh one"):
        attempt(nonce=expired)
    assert audit() == [("provision.refused",
                        "the attestation document's nonce expired; take a fresh one.")]


def test_an_expired_nonce_is_refused_over_http_with_403(manager):
    import time

    world = build_world(manager)
    config_id = approve_all(world)["app_config_ids"]["app"]
    expired = b"\x0a" * 32
    store = manager.store()
    store.add_nonce(expired.hex(), time.time() - 1)
    store.close()
    enclave, _, document, _ = _attest(manager, config_id, nonce=expired)
    with pytest.raises(ProvisioningRefusedError, match="expired") as caught:
        enclave.provision(config_id, document, expired)
    assert caught.value.status == 403
    assert [(r["action"], r["details"]["reason"]) for r in
            world.clients["admin"].audit_log(object_id=config_id)] == [
        ("provision.refused", "the attestation document's nonce expired; take a fresh one.")]


def test_a_whitelisting_task_not_approved_or_gone_blocks_the_release(unchecked):
    from nitronb.ccm.store import _TABLES

    service, config_id, attempt, audit = unchecked
    world = attempt.world
    for task_id in world.ids["tasks"]:
        task = service.store.get("task", task_id)
        task.status = "PENDING"
        service.store.put(task)
        with pytest.raises(ProvisioningRefusedError, match=r"task .* is PENDING; an "
                                                           "administrator must approve it"):
            attempt()
        task.status = "APPROVED"
        service.store.put(task)
    attempt()
    service.store.execute(f"DELETE FROM {_TABLES['task']} WHERE id = :id",
                          {"id": world.ids["tasks"][0]})
    with pytest.raises(ProvisioningRefusedError, match=r"task .* is missing"):
        attempt()


def test_the_nitro_verifier_gets_the_build_the_binding_and_the_nonce(tmp_path):
    """In the manager's own process: its default verifier is asked for the whitelisted PCRs,
    the APPCONFIG_ID and the nonce, and its reasons reach the enclave."""
    nsm = pytest.importorskip("nitronb.enclave.nsm", reason="the local NSM is not installed")
    from ccm_flow import ServiceManager

    from nitronb.enclave.attestation import binding_user_data
    from nitronb.ccm.provisioning import NitroVerifier

    module = nsm.LocalNSM(tmp_path / "nsm")
    manager = ServiceManager(tmp_path, verifier=NitroVerifier([module.root_path]))
    service = manager.service
    config_id = approve_all(build_world(manager))["app_config_ids"]["app"]
    _, public = new_enclave_key()

    def provision(*, pcrs=PCRS, bound_to=config_id, sent=None):
        nonce = base64.b64decode(service.issue_nonce()["nonce"])
        document = module.attest(pcrs=pcrs, public_key=public, nonce=nonce,
                                 user_data=binding_user_data(public, bound_to))
        return service.provision(config_id, base64.b64encode(document).decode(),
                                 base64.b64encode(sent or nonce).decode())

    for changes, reason in (({"pcrs": {**PCRS, 2: b"\0" * 48}}, "pcrs"),
                            ({"bound_to": "ab" * 32}, "binding"),
                            ({"sent": b"\1" * 32}, "nonce")):
        with pytest.raises(ProvisioningRefusedError,
                           match=rf"the attestation document was refused \({reason}\)"):
            provision(**changes)
    assert provision()["app_config_id"] == config_id
