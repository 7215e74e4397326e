"""What the walk-through's notebooks show beside each step: pictures, summaries and, for
people stepping through by hand, the widgets. Re-exported by :mod:`nitronb.notebook.steps`."""

from __future__ import annotations

from nitronb.errors import ValidationError
from nitronb.notebook.walkthrough import PARTIES, Record, as_walkthrough
from nitronb.notebook.workflow_steps import approval_status, run_workflow


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
    from nitronb.notebook.pictures import annotate_workflow, workflow_svg

    wt = as_walkthrough(workspace)
    client = wt.client("app-owner")
    draft = client.get_workflow(wt.need("workflow_draft_id", "07_workflow_and_approvals"))
    status = approval_status(wt)
    return Picture(workflow_svg(annotate_workflow(client, draft), status["request"],
                                final=status["final"]),
                   title=f"workflow {draft['name']}: {status['status']}")


def run_workflow_live(workspace=None, *, timeout: float = 900):
    """:func:`nitronb.notebook.steps.run_workflow`, with a live :class:`~nitronb.notebook.widgets.RunMonitor`
    (state, step indicator, the enclave's log as it grows) displayed first when a notebook
    frontend can show widgets; elsewhere it just runs. Returns the run's ``RunOutcome``; raises
    what ``run_workflow`` raises (the monitor shows the failure first). When the run ends, the
    monitor's display is updated, so that a notebook saved without widget state (papermill)
    keeps its last state as text ("run finished — app exited with code 0; …")."""
    shown = _live_monitor()
    if shown is None:
        return run_workflow(workspace, timeout=timeout)
    monitor, handle = shown
    try:
        return monitor.follow(lambda on_log: run_workflow(workspace, timeout=timeout,
                                                          on_log=on_log))
    finally:
        handle.update(monitor)


def _live_monitor():
    """A RunMonitor and its display handle, displayed, when running in a kernel that has
    ipywidgets; else None."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    from nitronb.errors import WidgetsUnavailableError
    from nitronb.notebook.widgets import RunMonitor

    try:
        monitor = RunMonitor()
    except WidgetsUnavailableError:
        return None
    return monitor, display(monitor, display_id=True)


def run_summary(outcome) -> Record:
    """How the run went, step by step, from the enclave's log."""
    from nitronb.notebook.run_state import RunState

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
    from nitronb.notebook.run_state import RUN_STEPS

    return RUN_STEPS.index(name)


def result_table(result) -> Picture:
    """The describe() figures of the run result as a table, a row per input dataset (named as
    the workflow names it), titled with the column and the datasets; for an app that failed,
    or printed no describe() figures, a line saying so."""
    from nitronb.notebook.pictures import describe_table_html
    from nitronb.results import described_column, describe_summary

    inputs = getattr(result, "inputs", None) or {}
    datasets = ", ".join(dict.fromkeys(inputs.values())) or "the input"
    column = described_column(result.text) or "DESCRIPTION"
    if not result.ok:
        return _failed(result, f"describe() of {column} in {datasets}: the app failed")
    summary = describe_summary(result.text)
    if not summary:
        return _note("the app printed no describe() figures to show as a table.",
                     f"describe() of {column} in {datasets}: no figures")
    rows = {inputs.get(path, path): fields for path, fields in summary.items()}
    return Picture(describe_table_html(rows), kind="html",
                   title=f"describe() of {column} in {datasets}")


def result_chart(result, *, top: int = 10) -> Picture:
    """A bar chart of the most frequent values the app reported, titled with the column and
    the input datasets ("most frequent DESCRIPTION values in synthea-conditions"); for an app
    that failed, or printed no value counts, a line saying so."""
    from nitronb.notebook.pictures import bar_chart_svg
    from nitronb.results import counted_columns, value_counts

    inputs = getattr(result, "inputs", None) or {}
    blocks = counted_columns(result.text)
    columns = ", ".join(dict.fromkeys(column for column, _ in blocks))
    datasets = ", ".join(dict.fromkeys(inputs.get(path, path) for _, path in blocks)
                         or dict.fromkeys(inputs.values())) or "the input"
    what = f"most frequent {columns + ' ' if columns else ''}values in {datasets}"
    if not result.ok:
        return _failed(result, f"{what}: the app failed")
    counts = value_counts(result.text)
    if not counts:
        return _note("the app printed no value counts to chart (only describe()).",
                     f"{what}: no counts")
    return Picture(bar_chart_svg(counts, what, top=top), title=f"the {top} {what}")


def _failed(result, title: str) -> Picture:
    return _note(result.error_line(), title)


def _note(text: str, title: str) -> Picture:
    import html

    return Picture(f"<p><strong>{html.escape(title)}</strong>: {html.escape(text)}</p>",
                   kind="html", title=f"{title}: {text}")


def dataset_form(workspace=None, party: str = "data-owner"):
    """The dataset form for people, filled from this walk-through's presigned URL and key
    (``party`` is "data-owner" for the input dataset, "output-owner" for the output).

    The name, description, labels and long description are those of the dataset step 04
    registered (the workspace state's ``input_dataset`` / ``output_dataset``, read back from
    the manager); before step 04, the ones it would register. Create on the form as filled
    updates that dataset; another name registers another dataset beside it (the walk-through
    goes on with step 04's). Raises :class:`~nitronb.notebook.steps.StepOrderError` before step 03.
    """
    from nitronb.keys import read_key_file
    from nitronb.notebook.widgets import DatasetForm

    if party not in ("data-owner", "output-owner"):
        raise ValidationError(f"{party} owns no dataset of the walk-through.",
                              hint='Use party="data-owner" or party="output-owner".')
    side = "input" if party == "data-owner" else "output"
    wt = as_walkthrough(workspace)
    url = wt.need(f"{side}_url", "03_upload_and_presign")
    key = read_key_file(wt.need(f"{side}_key", "01_generate_keys"))
    client = wt.client(party)
    fields, registered = _dataset_fields(wt, client, side)

    def created(result: dict) -> str | None:
        ours = next(iter(registered), None)
        if ours is None or result.get("name") == ours:
            return None
        return f"the walk-through goes on with dataset {ours} (step 04)."

    return DatasetForm(client, url=url, key=key, registered=registered, on_created=created,
                       **fields)


def _dataset_fields(wt, client, side: str) -> tuple[dict, dict[str, str]]:
    """The form's fields for the walk-through's ``side`` ("input" or "output") dataset, and
    ``{name: "registered by step 04"}`` when this party registered it at the manager."""
    import inspect
    from pathlib import Path

    from nitronb import sample_path
    from nitronb.datasets import input_defaults
    from nitronb.errors import NotFoundError
    from nitronb.notebook.data_steps import create_datasets

    state = wt.state()
    name = state.get(f"{side}_dataset")
    if name:
        try:
            found = client.get_dataset(name)
        except NotFoundError:
            found = None
        if found is not None and found.get("owner") == client.whoami()["user"]["name"]:
            return ({"name": name, "description": found.get("description") or "",
                     "labels": found.get("labels") or {},
                     "long_description": found.get("long_description") or ""},
                    {name: "registered by step 04"})
    # step 04 has not registered it (yet): what step 04 would register by default (its
    # parameters' defaults, read from its signature so that the two never differ)
    defaults = {k: p.default for k, p in inspect.signature(create_datasets).parameters.items()}
    if side == "output":
        return {"name": name or defaults["output_name"],
                "description": defaults["output_description"],
                "labels": {"kind": "result"}}, {}
    sample = sample_path().resolve()
    source = Path(state["input_csv"]) if state.get("input_csv") else sample
    derived = input_defaults(source, sample=source.resolve() == sample,
                             avoid=(defaults["output_name"],))
    return {"name": name or derived["name"], "description": derived["description"],
            "labels": derived["labels"]}, {}


def approvals_panel(workspace=None):
    """Each party's pending tasks and workflow approvals, with Approve / Decline buttons.

    A decision clicked here has the effect of :func:`nitronb.notebook.steps.approve_workflow`: after
    each one the workspace state follows the manager (:func:`nitronb.notebook.steps.approval_status`),
    and the panel says where the walk-through's workflow stands. Only the newest version of
    a workflow can be decided; earlier versions still pending (07 run again) are listed once
    as superseded.
    """
    from nitronb.notebook.widgets import ApprovalsPanel

    wt = as_walkthrough(workspace)

    def decided(party: str, kind: str, result: dict) -> str | None:
        if not wt.state().get("approval_request_id"):
            return None  # no workflow drafted yet: nothing to follow
        status = approval_status(wt)
        then = {"APPROVED": "Run the cells below (again).",
                "DENIED": "To try again, run this notebook from the top: it drafts a new "
                          "version.",
                "REVOKED": "To run again, run this notebook from the top: it drafts a new "
                           "version."}.get(status["status"], "")
        return f"{status['summary']} {then}".strip()

    return ApprovalsPanel({party: wt.client(party) for party in PARTIES}, on_decision=decided,
                          current=wt.state().get("approval_request_id"))
