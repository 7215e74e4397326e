"""Deciding in the approvals panel has the effect of ``steps.approve_workflow``: the manager is
the source of truth for the walk-through's later steps (07's runtime configuration, 08's run).
Real local stack, real manager, the panel's own buttons."""

from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

from nitronb.notebook import steps  # noqa: E402
from nitronb.errors import RunError  # noqa: E402
from nitronb.notebook.steps import StepOrderError  # noqa: E402

APPROVERS = ["app-owner", "data-owner", "output-owner"]


@pytest.fixture(scope="module")
def wt(tmp_path_factory):
    """A walk-through through step 06 (process backend) in a workspace of its own."""
    from nitronb.local import stack as local

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


def test_an_approver_withdraws_its_approval_in_the_panel_and_the_run_stops(wt):
    from nitronb.errors import ValidationError

    steps.create_workflow(wt)
    steps.approve_workflow(wt)
    final_id = wt.state()["final_workflow_id"]
    panel = steps.approvals_panel(wt)
    for party in APPROVERS:
        assert [a.id for a in panel.approved if a.party == party] == [final_id], party
    assert not [a for a in panel.approved if a.party == "admin"]
    shown = texts(panel.widget)
    assert shown.count("Withdraw approval") == len(APPROVERS)
    mine = next(a for a in panel.approved if a.party == "data-owner")
    assert "approved: workflow describe-conditions version" in mine.title

    with pytest.raises(ValidationError, match="needs a reason"):
        panel.withdraw("data-owner", final_id, " ")
    assert "a withdrawal needs a reason" in panel.status.value
    mine.withdraw("the study ended")
    assert "data-owner withdrew its approval of describe-conditions version" in \
        panel.status.value and "the study ended" in panel.status.value
    assert "no longer runs: data-owner withdrew its approval: the study ended" in \
        panel.note.value
    assert panel.approved == []  # nothing approved is left to withdraw
    assert wt.state()["workflow_status"]["status"] == "REVOKED"
    assert wt.state()["appconfig_id"] is None
    with pytest.raises(RunError, match="data-owner withdrew its approval: the study ended"):
        steps.run_workflow(wt)
    picture = steps.workflow_picture(wt)
    assert picture.title.endswith("REVOKED")
    assert "approval withdrawn by data-owner: the study ended" in picture.content


def test_approving_in_the_panel_is_what_the_code_cell_says_when_asked(wt):
    steps.create_workflow(wt)
    record = steps.approve_workflow(wt, decline={"data-owner": "ignored"}, in_panel=True)
    assert record.rows[0][0] == "decide" and "approvals panel" in record.rows[0][1]
    assert ("status", "PENDING") in record.rows
    assert ("waiting for", ", ".join(APPROVERS)) in record.rows
    request = wt.client("admin").get_approval_request(wt.state()["approval_request_id"])
    assert request["status"] == "PENDING" and request["approvals"] == {}


def texts(widget) -> list[str]:
    """Every text a widget tree shows (values and descriptions)."""
    found = [v for v in (getattr(widget, "value", None), getattr(widget, "description", None))
             if isinstance(v, str)]
    for child in getattr(widget, "children", ()):
        found.extend(texts(child))
    return found


def test_an_earlier_pending_version_is_shown_superseded_and_cannot_be_approved(wt):
    """07 run twice: two versions wait. Only the newest can be decided in the panel; the
    earlier one is listed once, without buttons, and every status line names the version."""
    from nitronb.errors import ValidationError

    steps.create_workflow(wt)
    older = wt.state()["approval_request_id"]
    steps.create_workflow(wt)
    newest = wt.state()["approval_request_id"]
    admin = wt.client("admin")
    version = admin.get_final_workflow(admin.get_approval_request(newest)["workflow_id"])[
        "version"]
    label = f"describe-conditions version {version}"

    panel = steps.approvals_panel(wt)
    for party in APPROVERS:
        assert [i.id for i in panel.pending(party)] == [newest], party
        assert label in panel.pending(party)[0].title
    assert older in {s.id for s in panel.superseded}
    assert all(s.newest == version and s.version < version for s in panel.superseded)
    shown = texts(panel.widget)
    assert shown.count("Approve") == len(APPROVERS)
    lines = [t for t in shown if "superseded by" in t]
    assert len(lines) == 1 and f"superseded by version {version}" in lines[0]
    assert f"{version - 1}: superseded by version {version}" in lines[0]
    bundle = panel._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"] == ("approvals panel: 3 decisions waiting, "
                                    f"{len(panel.superseded)} superseded version(s) not "
                                    "decidable")

    item(panel, "data-owner", newest).approve_button.click()
    assert panel.status.value.endswith(
        f"data-owner approved {label}; still waiting for app-owner, output-owner.</span>")
    assert panel.pending("data-owner") == []  # the earlier version is no row of its own
    data_owner = next(s for s in panel.sections.children if texts(s)[0] == "<b>data-owner</b>")
    assert "nothing is waiting for this party" in " ".join(texts(data_owner))

    with pytest.raises(ValidationError, match=f"superseded by version {version}"):
        panel.approve("data-owner", "request", older)
    assert "data-owner cannot approve: describe-conditions version" in panel.status.value
    assert admin.get_approval_request(older)["approvals"] == {}
    with pytest.raises(Exception):  # the manager refuses a second approval; the line says which
        panel.approve("data-owner", "request", newest)
    assert f"data-owner could not approve {label}: " in panel.status.value

    item(panel, "output-owner", newest).decline("not this version")
    assert f"output-owner declined {label}: not this version" in panel.status.value


def test_the_dataset_form_is_filled_with_the_walkthroughs_dataset(wt):
    """steps.dataset_form shows step 04's dataset; Update saves into it; a name taken by
    another dataset is said plainly, before and after clicking; another name registers a
    second dataset while the walk-through goes on with step 04's."""
    from nitronb.datasets import parse_labels

    state = wt.state()
    name = state["input_dataset"]
    client = wt.client("data-owner")
    registered = client.get_dataset(name)
    form = steps.dataset_form(wt)
    assert (form.name.value, form.description.value) == (name, registered["description"])
    assert parse_labels(form.labels.value) == registered["labels"] != {}
    assert f"dataset {name} exists already (registered by step 04)" in form.name_note.value
    assert form.create_button.description == "Update dataset"
    assert form._repr_mimebundle_()["text/plain"] == f"dataset form: updates dataset {name}"

    form.long_description.value = "# Conditions\n\nwritten in the form"
    form.create_button.click()
    assert "#00734F" in form.message.value and f"dataset {name} updated" in form.message.value
    after = client.get_dataset(name)
    assert after["id"] == state["input_dataset_id"]
    assert after["long_description"] == "# Conditions\n\nwritten in the form"
    assert steps.dataset_form(wt).long_description.value == after["long_description"]

    form.name.value = state["output_dataset"]  # the output owner's
    says = f"dataset {state['output_dataset']} exists already (registered by output-owner)"
    assert says in form.name_note.value and form.create_button.description == "Create dataset"
    form.create_button.click()
    assert "#B00020" in form.message.value and says in form.message.value
    assert "Change the name to register another." in form.message.value

    form.name.value = f"{name}-second"
    assert form.name_note.value == ""
    form.create_button.click()
    assert f"dataset {name}-second created" in form.message.value
    assert f"the walk-through goes on with dataset {name} (step 04)" in form.message.value
    assert wt.state()["input_dataset"] == name


def test_run_monitor_in_a_kernel_saves_its_last_state_as_text(wt):
    """In a kernel (as papermill runs 08) the monitor's output keeps the widget view and, as
    plain text, the run's last state rather than the widget tree."""
    import nbformat
    from nbclient import NotebookClient

    steps.create_workflow(wt)
    steps.approve_workflow(wt)
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "from nitronb import steps\n"
        f"outcome = steps.run_workflow_live({str(wt.workspace)!r}, timeout=300)"))
    NotebookClient(nb, kernel_name="nitronb", timeout=400).execute()
    [output] = nb.cells[0].outputs
    assert "application/vnd.jupyter.widget-view+json" in output["data"]
    assert output["data"]["text/plain"] == ("run finished — app exited with code 0; "
                                            "credentials wiped")


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
