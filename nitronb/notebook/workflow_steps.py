"""Every party's steps on the workflow: the workflow and its approvals (07) and the run (08)."""

from __future__ import annotations

from typing import Any

from nitronb.errors import NitronbError, StepOrderError, ValidationError
from nitronb.notebook import checks
from nitronb.notebook.walkthrough import (WORKFLOW_NAME, Record, Walkthrough,
                                         as_walkthrough, find_named, start_local_stack)


# --- 07 workflow and approvals --------------------------------------------------------------


def create_workflow(workspace=None, *, name: str = WORKFLOW_NAME) -> Record:
    """Draft the workflow graph (input → app → output) and request every owner's approval."""
    wt = as_walkthrough(workspace)
    state = wt.state()
    app_config_id = wt.need("app_config_id", "06_app_and_configuration")
    graph = _workflow_graph(wt, name, app_config_id, state)
    owner = wt.client("app-owner")
    draft = find_named(owner.list_workflows(), name)
    draft = owner.update_workflow(draft["id"], graph) if draft else owner.create_workflow(graph)
    request = owner.request_approval(draft["id"])
    wt.update(workflow_draft_id=draft["id"], approval_request_id=request["id"],
              final_workflow_id=request["workflow_id"], appconfig_id=None, workflow_graph=graph,
              workflow_status={"status": request["status"]})
    return Record("workflow drafted, approval requested", [
        ("workflow", name), ("version", str(request.get("version", draft.get("version", "")))),
        ("approvers", ", ".join(request["approvers"])), ("status", request["status"])],
        {"draft": draft, "request": request, "graph": graph})


def _workflow_graph(wt: Walkthrough, name: str, app_config_id: str,
                    state: dict[str, Any]) -> dict[str, Any]:
    """The graph input → app → output, its objects keyed by node names as the real CCM's user
    interface draws them (short generated ids); a graph drafted earlier in this workspace over the
    same app configuration and datasets keeps its node names, so that drafting it again changes
    nothing the enclave sees."""
    from nitronb.ccm import workflow_graph

    inputs, outputs = state["input_dataset_id"], state["output_dataset_id"]
    wanted = sorted([("app", app_config_id), ("dataset", inputs), ("dataset", outputs)])
    earlier = state.get("workflow_graph") or {}
    refs = sorted((o.get("type"), o.get("app_config_id") or o.get("dataset_id"))
                  for o in (earlier.get("objects") or {}).values())
    if refs == wanted:
        return {**earlier, "name": name}
    return workflow_graph(name, app_config_id, inputs={"input": inputs},
                          outputs={"output": outputs},
                          description=f"describe() of {state.get('input_dataset', 'the input')}")


def approve_workflow(workspace=None, *, decline: dict[str, str] | None = None,
                     in_panel: bool = False) -> Record:
    """Every approver approves (or, for a party in ``decline``, declines with the reason).

    With ``in_panel`` nothing is decided here (``decline`` is not used): the record says who
    is still to approve, for people who decide by clicking in :func:`approvals_panel`.
    Raises :class:`~nitronb.errors.ValidationError` for a ``decline`` by a non-approver.
    """
    wt = as_walkthrough(workspace)
    request_id = wt.need("approval_request_id", "07_workflow_and_approvals")
    if in_panel:
        status = approval_status(wt)
        return Record("approvals", [
            ("decide", "in the approvals panel below: each approver clicks Approve (or types "
                       "a reason and clicks Decline)"),
            *status.rows[2:]], status.data)
    decline = dict(decline or {})
    rows = []
    request = wt.client("admin").get_approval_request(request_id)
    strangers = sorted(set(decline) - set(request["approvers"]))
    if strangers:
        raise ValidationError(f"{', '.join(strangers)} cannot decline: the approvers of this "
                              f"workflow are {', '.join(request['approvers'])}.")
    for party in list(request["waiting_for"]):
        client = wt.client(party)
        if party in decline:
            request = client.deny_request(request_id, decline[party])
            rows.append((party, f"declined: {decline[party]}"))
            break
        request = client.approve_request(request_id)
        rows.append((party, "approved"))
    status = approval_status(wt)
    rows.append(("workflow status", status["status"]))
    if status["appconfig_id"]:
        rows.append(("APPCONFIG_ID", status["appconfig_id"]))
    return Record("approvals", rows, {"request": status["request"], "final": status["final"],
                                      "app_config_ids": status["app_config_ids"]})


def runtime_configuration(workspace=None) -> dict:
    """The runtime configuration the manager serves for APPCONFIG_ID, and the id recomputed."""
    from nitronb.ccm import app_config_id

    wt = as_walkthrough(workspace)
    config_id = approved_config_id(wt)
    served = wt.client("app-owner").get_runtime_config(config_id)
    return {"appconfig_id": config_id, "recomputed": app_config_id(served["config"]),
            "config": served["config"]}


def approval_status(workspace=None) -> Record:
    """The workflow's approval as the manager has it now; the workspace state follows it.

    The manager is the source of truth, whoever decided and however (in code, by clicking in
    the approvals panel, with ``nitronb ccm``): this reads the approval request and the final
    workflow and writes ``appconfig_id`` (None unless approved: an earlier version's is
    forgotten) and ``workflow_status`` to the workspace state. The record's data holds
    ``status`` ("PENDING", "APPROVED", "DENIED", or "REVOKED" / "SUPERSEDED" for an approved
    version that no longer runs), ``waiting_for`` (parties), ``denied_by``,
    ``reason``, ``version``, ``appconfig_id``, ``app_config_ids``, ``request``, ``final``
    and ``summary`` (one sentence). Raises :class:`StepOrderError` before
    :func:`create_workflow`.
    """
    wt = as_walkthrough(workspace)
    request_id = wt.need("approval_request_id", "07_workflow_and_approvals")
    client = wt.client("app-owner")
    request = client.get_approval_request(request_id)
    final = client.get_final_workflow(request["workflow_id"])
    ids = final.get("app_config_ids") or {}
    status = request["status"]
    if final.get("status") in ("REVOKED", "SUPERSEDED"):
        status = final["status"]
    appconfig_id = next(iter(ids.values()), None) if status == "APPROVED" else None
    waiting = list(request.get("waiting_for") or []) if status == "PENDING" else []
    decided = {"status": status, "version": final.get("version"),
               "denied_by": request.get("denied_by"), "reason": request.get("reason"),
               "waiting_for": waiting}
    wt.update(appconfig_id=appconfig_id, workflow_status=decided)
    workflow = f"the workflow {final.get('name') or WORKFLOW_NAME} version {decided['version']}"
    if status == "APPROVED":
        summary = f"{workflow} is approved; its APPCONFIG_ID is {appconfig_id}."
    elif status == "DENIED":
        summary = f"{workflow} was declined by {decided['denied_by']}: {decided['reason']}."
    elif status == "REVOKED":
        summary = (f"{workflow} no longer runs: {final.get('revoked_by')} withdrew its "
                   f"approval: {final.get('revoke_reason')}.")
    elif status == "SUPERSEDED":
        summary = (f"{workflow} no longer runs: it was superseded by version "
                   f"{final.get('superseded_by')}.")
    else:
        summary = f"{workflow} is waiting for approvals by {', '.join(waiting) or 'nobody'}."
    rows = [("workflow", str(final.get("name") or "")), ("version", str(decided["version"])),
            ("status", status)]
    if waiting:
        rows.append(("waiting for", ", ".join(waiting)))
    if status == "DENIED":
        rows.append(("declined by", f"{decided['denied_by']}: {decided['reason']}"))
    if appconfig_id:
        rows.append(("APPCONFIG_ID", appconfig_id))
    return Record("workflow approval", rows, {
        **decided, "appconfig_id": appconfig_id, "app_config_ids": ids, "request": request,
        "final": final, "summary": summary})


def approved_config_id(workspace=None, *,
                       error: type[NitronbError] = StepOrderError) -> str:
    """The APPCONFIG_ID of the approved workflow, as the manager has it now (see
    :func:`approval_status`). Raises ``error`` — one line naming who is still to approve, or
    who declined and why — when the workflow is not approved."""
    status = approval_status(workspace)
    if status["appconfig_id"]:
        return status["appconfig_id"]
    if status["status"] in ("DENIED", "REVOKED", "SUPERSEDED"):
        raise error(f"{status['summary'][:-1]}; no enclave can be provisioned for it.",
                    hint="Draft a new version (run 07_workflow_and_approvals again) and ask "
                         "for approval again.")
    raise error(f"{status['summary'][:-1]}; it has no APPCONFIG_ID yet.",
                hint="Approve it in the approvals panel of 07_workflow_and_approvals (or with "
                     "steps.approve_workflow), then run this cell again.")


# --- 08 run ---------------------------------------------------------------------------------


def run_workflow(workspace=None, *, timeout: float = 900, on_log=None):
    """Launch the enclave image through the node agent with APPCONFIG_ID; wait for the end.

    Returns the run's ``RunOutcome``. Raises :class:`~nitronb.errors.StepOrderError` when a
    product the run builds on changed after the step that consumed it (a key replaced, the
    input encrypted or uploaded again, the image built again: see
    :func:`nitronb.notebook.checks.check_products`), and :class:`~nitronb.errors.RunError`,
    with a hint, when the workflow is not approved or the enclave uploaded no result.
    """
    from nitronb.enclave.runner import run_enclave

    from nitronb.s3 import client as storage
    from nitronb.errors import RunError

    wt = as_walkthrough(workspace)
    config_id = approved_config_id(wt, error=RunError)
    state = wt.state()
    reference = wt.need("image_reference", "05_build_enclave_image")
    output_uri = wt.need("output_uri", "03_upload_and_presign")
    checks.check_products(state, "08")
    start_local_stack(wt)
    # a result left by an earlier run must not pass for this run's
    storage.delete_object(output_uri, profile=state.get("profile", "local"),
                          workspace=wt.workspace)
    wt.update(last_run=None)
    backend = wt.need("backend", "05_build_enclave_image")
    try:
        outcome = run_enclave(reference, config_id, backend=backend, workspace=wt.workspace,
                              timeout=timeout, on_log=on_log)
    except RunError as exc:
        if exc.hint:
            raise
        timed_out = "did not finish within" in exc.message
        raise RunError(exc.message, hint=(
            "Give it longer (the timeout parameter of 08, in seconds) and run 08 again."
            if timed_out else "Check the local stack (`nitronb local status`, its logs), then "
                              "run 08 again.")) from None
    # the object was deleted above: if it is there now, this run's app uploaded it
    uploaded = outcome.refused is None and _object_exists(
        output_uri, profile=state.get("profile", "local"), workspace=wt.workspace)
    wt.update(last_run={"enclave_id": outcome.enclave_id, "exit_code": outcome.exit_code,
                        "result_uploaded": uploaded,
                        "output_key": (state.get("registered") or {}).get("output_key"),
                        "products": checks.run_products(state)})
    if not outcome.ok and not uploaded:
        reason = outcome.reason or "it wrote no log"
        raise RunError(f"enclave {outcome.enclave_id} ended with exit code {outcome.exit_code} "
                       f"and uploaded no result: {reason}",
                       hint=checks.run_failure_hint(reason, state,
                                                    refused=outcome.refused is not None))
    return outcome


def _object_exists(uri: str, *, profile: str, workspace) -> bool:
    import botocore.exceptions as bce

    from nitronb.s3 import client as storage
    from nitronb.errors import NoSuchObjectError

    bucket, key = storage.parse_s3_uri(uri)
    client = storage.client_for(profile, workspace=workspace)
    try:
        client.head_object(Bucket=bucket, Key=key)
    except (bce.BotoCoreError, bce.ClientError) as exc:
        error = storage.storage_error(exc, bucket=bucket, key=key, profile=profile)
        if isinstance(error, NoSuchObjectError):
            return False
        raise error from None
    return True
