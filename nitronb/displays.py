"""What the walk-through's notebooks show beside each step: pictures, summaries and, for
people stepping through by hand, the widgets. Re-exported by :mod:`nitronb.steps`."""

from __future__ import annotations

from nitronb.errors import NitronbError
from nitronb.steps import PARTIES, Record, _wt


class Picture:
    """SVG or HTML that a notebook shows as a picture (and as its title in plain text)."""

    def __init__(self, content: str, *, kind: str = "svg", title: str = "picture") -> None:
        self.content, self.kind, self.title = content, kind, title

    def _repr_svg_(self) -> str | None:
        return self.content if self.kind == "svg" else None

    def _repr_html_(self) -> str | None:
        return self.content if self.kind == "html" else None

    def __repr__(self) -> str:
        return f"<{self.title}>"


def workflow_picture(workspace=None) -> Picture:
    """The workflow graph with its approval state (SVG)."""
    from nitronb.pictures import annotate_workflow, workflow_svg

    wt = _wt(workspace)
    client = wt.client("app-owner")
    draft = client.get_workflow(wt.need("workflow_draft_id", "07_workflow_and_approvals"))
    request = client.get_approval_request(wt.state()["approval_request_id"])
    return Picture(workflow_svg(annotate_workflow(client, draft), request),
                   title=f"workflow {draft['name']}: {request['status']}")


def run_summary(outcome) -> Record:
    """How the run went, step by step, from the enclave's log."""
    from nitronb.widgets import RunState

    state = RunState()
    reached = []
    for line in outcome.log.splitlines():
        before = state.state
        state.line(line)
        if state.state != before:
            reached.append(state.state)
    state.end(outcome.exit_code)
    rows = [("backend", outcome.backend)]
    for step, label in (("attesting", "attested by the node agent's NSM"),
                        ("provisioned", "provisioned by the manager"),
                        ("running app", "app started with its app-config folder")):
        rows.append((label, "yes" if step in reached or state.step > _step(step) else "no"))
    rows.append(("app exit code", str(outcome.exit_code)))
    if outcome.refused:
        rows.append(("refused", outcome.refused))
    rows.append(("credentials wiped", "yes" if "credentials wiped" in outcome.log else "no"))
    rows.append(("state", state.state))
    return Record("run", rows, {"outcome": outcome})


def _step(name: str) -> int:
    from nitronb.widgets import RUN_STEPS

    return RUN_STEPS.index(name)


def result_table(result) -> Picture:
    """The describe() figures of the run result as a table."""
    from nitronb.pictures import describe_table_html
    from nitronb.results import describe_summary

    return Picture(describe_table_html(describe_summary(result.text)), kind="html",
                   title="describe() of DESCRIPTION")


def result_chart(result, *, top: int = 10) -> Picture:
    """A bar chart of the most frequent values the app reported."""
    from nitronb.pictures import bar_chart_svg
    from nitronb.results import value_counts

    counts = value_counts(result.text)
    if not counts:
        raise NitronbError("the run result has no value counts to chart; the app printed only "
                           "describe().")
    return Picture(bar_chart_svg(counts, "most frequent conditions", top=top),
                   title=f"the {top} most frequent conditions")


def dataset_form(workspace=None, party: str = "data-owner"):
    """The dataset form for people, filled from this walk-through's presigned URL and key."""
    from nitronb.keys import read_key_file
    from nitronb.widgets import DatasetForm

    wt = _wt(workspace)
    state = wt.state()
    url = wt.need("input_url" if party == "data-owner" else "output_url", "03_upload_and_presign")
    key = read_key_file(state["input_key" if party == "data-owner" else "output_key"])
    return DatasetForm(wt.client(party), url=url, key=key)


def approvals_panel(workspace=None):
    """Each party's pending tasks and workflow approvals, with Approve / Decline buttons."""
    from nitronb.widgets import ApprovalsPanel

    wt = _wt(workspace)
    return ApprovalsPanel({party: wt.client(party) for party in PARTIES})
