"""Deciding in the approvals panel has the effect of ``steps.approve_workflow``: the manager is
the source of truth for the walk-through's later steps (07's runtime configuration, 08's run).
Real local stack, real manager, the panel's own buttons."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

from nitronb import steps  # noqa: E402
from nitronb.errors import RunError  # noqa: E402
from nitronb.steps import StepOrderError  # noqa: E402

APPROVERS = ["app-owner", "data-owner", "output-owner"]


@pytest.fixture(scope="module")
def wt(tmp_path_factory):
    """A walk-through through step 06 (process backend) in a workspace of its own."""
    from nitronb import local

    workspace = tmp_path_factory.mktemp("panel-ws")
    try:
        local.up(workspace)
        walkthrough = steps.Walkthrough(workspace)
        for step in (steps.generate_keys, steps.encrypt_input, steps.upload_and_presign,
                     steps.create_datasets):
            step(walkthrough)
        steps.build_enclave_image(walkthrough, backend="process")
        steps.create_app_configuration(walkthrough)
        yield walkthrough
    finally:
        local.down(workspace)


def item(panel, party: str, request_id: str):
    found = [i for i in panel.pending(party) if i.id == request_id]
    return found[0] if found else None


def test_approving_every_party_by_clicking_lets_07_and_08_go_on(wt):
    steps.create_workflow(wt)
    with pytest.raises(StepOrderError) as info:
        steps.runtime_configuration(wt)
    message = str(info.value)
    assert "waiting for approvals by app-owner, data-owner, output-owner" in message
    assert "\n" not in message and "approvals panel" in message

    panel = steps.approvals_panel(wt)
    request_id = wt.state()["approval_request_id"]
    assert sorted(p for p in APPROVERS if item(panel, p, request_id)) == APPROVERS
    for done, party in enumerate(APPROVERS, 1):
        item(panel, party, request_id).approve_button.click()
        assert f"{party} approved" in panel.status.value
        assert item(panel, party, request_id) is None
        if done < len(APPROVERS):
            assert "waiting for approvals by " + ", ".join(APPROVERS[done:]) in panel.note.value
    assert "is approved; its APPCONFIG_ID is" in panel.note.value
    # the panel's decisions reached the workspace state, as approve_workflow's do
    state = wt.state()
    assert state["workflow_status"]["status"] == "APPROVED" and state["appconfig_id"]
    assert state["appconfig_id"] in panel.note.value

    served = steps.runtime_configuration(wt)
    assert served["recomputed"] == served["appconfig_id"] == state["appconfig_id"]
    picture = steps.workflow_picture(wt)
    assert picture.title.endswith("APPROVED")

    outcome = steps.run_workflow_live(wt, timeout=300)  # no notebook here: a plain run
    assert outcome.ok, outcome.log
    assert "credentials wiped" in outcome.log


def test_a_decline_clicked_in_the_panel_stops_the_run_naming_who_and_why(wt):
    steps.create_workflow(wt)
    panel = steps.approvals_panel(wt)
    request_id = wt.state()["approval_request_id"]
    item(panel, "app-owner", request_id).approve()
    declining = item(panel, "output-owner", request_id)
    declining.decline("not this quarter")
    assert "output-owner declined" in panel.status.value and "⊘" in panel.status.value
    assert "declined by output-owner: not this quarter" in panel.note.value
    assert wt.state()["appconfig_id"] is None
    assert item(panel, "data-owner", request_id) is None  # one decline decides

    with pytest.raises(RunError, match="declined by output-owner: not this quarter") as info:
        steps.run_workflow(wt)
    assert "\n" not in str(info.value)
    with pytest.raises(StepOrderError, match="declined by output-owner: not this quarter"):
        steps.runtime_configuration(wt)
    assert steps.workflow_picture(wt).title.endswith("DENIED")


def test_the_manager_decides_whatever_the_workspace_state_says(wt):
    """A stale APPCONFIG_ID in the state (an earlier version's) runs nothing while the new
    version waits; approving outside the panel and the notebook (another user's client) is
    seen by the next step."""
    steps.create_workflow(wt)
    request_id = wt.state()["approval_request_id"]
    wt.update(appconfig_id="ab" * 32, workflow_status={"status": "APPROVED"})
    with pytest.raises(RunError, match="waiting for approvals by app-owner, data-owner, "
                                       "output-owner"):
        steps.run_workflow(wt)
    assert wt.state()["appconfig_id"] is None

    for party in APPROVERS:
        wt.client(party).approve_request(request_id)
    served = steps.runtime_configuration(wt)
    assert served["recomputed"] == served["appconfig_id"] == wt.state()["appconfig_id"]


def test_approving_in_the_panel_is_what_the_code_cell_says_when_asked(wt):
    steps.create_workflow(wt)
    record = steps.approve_workflow(wt, decline={"data-owner": "ignored"}, in_panel=True)
    assert record.rows[0][0] == "decide" and "approvals panel" in record.rows[0][1]
    assert ("status", "PENDING") in record.rows
    assert ("waiting for", ", ".join(APPROVERS)) in record.rows
    request = wt.client("admin").get_approval_request(wt.state()["approval_request_id"])
    assert request["status"] == "PENDING" and request["approvals"] == {}


def test_notebook_07_lets_people_approve_by_clicking(wt):
    """07 with ``approve_in_panel = True`` in a real kernel: the code cell decides nothing, the
    cells after the panel say who is still to approve; once every approver clicked Approve in
    the panel, the same cells run."""
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    folder = Path(__file__).resolve().parents[1] / "notebooks"
    nb = nbformat.read(folder / "07_workflow_and_approvals.ipynb", as_version=4)
    nb.cells.insert(1, nbformat.v4.new_code_cell(
        f"workspace = {str(wt.workspace)!r}\napprove_in_panel = True"))
    client = NotebookClient(nb, kernel_name=nb.metadata["kernelspec"]["name"], timeout=300,
                            allow_errors=True, resources={"metadata": {"path": str(folder)}})

    def source(cell) -> str:
        return "".join(cell.source)

    def errors(cell) -> list:
        return [o for o in cell.outputs if o.output_type == "error"]

    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                client.execute_cell(cell, index)
        decide = next(c for c in nb.cells if "approve_workflow" in source(c))
        assert "approvals panel" in str(decide.outputs[0]["data"]["text/plain"])
        panel = next(c for c in nb.cells if "approvals_panel" in source(c))
        assert "application/vnd.jupyter.widget-view+json" in panel.outputs[0]["data"]
        picture = next(c for c in nb.cells if "workflow_picture" in source(c))
        assert errors(picture) == [] and "PENDING" in str(picture.outputs[0]["data"])
        check = next(c for c in nb.cells if "runtime_configuration" in source(c))
        [error] = errors(check)
        assert error.ename == "StepOrderError"
        assert "waiting for approvals by app-owner, data-owner, output-owner" in error.evalue
        assert len(error.traceback) == 2

        # what a person does: in each party's section, click Approve on the first row (the
        # walk-through's current version comes first, marked; an earlier test's version waits too)
        clicks = nbformat.v4.new_code_cell(
            f"panel = Out[{panel.execution_count}]\n"
            "for party in ('app-owner', 'data-owner', 'output-owner'):\n"
            "    first = panel.pending(party)[0]\n"
            "    print(first.title)\n"
            "    first.approve_button.click()\n"
            "print(panel.note.value)")
        nb.cells.append(clicks)
        client.execute_cell(clicks, len(nb.cells) - 1)
        assert errors(clicks) == []
        printed = "".join(o["text"] for o in clicks.outputs).splitlines()
        assert all(line.startswith("current: approve workflow describe-conditions version")
                   for line in printed[:3])
        assert "is approved" in printed[3]

        for cell in (picture, check):  # the cells after the panel, run again
            cell.outputs = []
            client.execute_cell(cell, nb.cells.index(cell))
        assert errors(picture) == [] and "APPROVED" in str(picture.outputs[0]["data"])
        assert errors(check) == [] and check.outputs[0]["data"]["text/plain"] == "True"
    assert wt.state()["workflow_status"]["status"] == "APPROVED"
