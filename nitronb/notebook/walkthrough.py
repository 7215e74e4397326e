"""The walk-through's shared ground: its folder in a workspace and the state the steps hand on
(``<workspace>/walkthrough/state.json``, mode 0600: it holds presigned URLs), the record each
step returns, and the names the walk-through gives what it creates.

A :class:`Record` displays no secret: a key appears as its fingerprint only, presigned query
strings redacted, and nothing machine-specific (paths are shown relative to the workspace).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nitronb.errors import StepOrderError
from nitronb.notebook import checks

PARTIES = ("data-owner", "output-owner", "app-owner", "admin")
INPUT_OBJECT = "conditions.csv.enc"
OUTPUT_OBJECT = "describe-result.json.enc"
APP_NAME = "describe-app"
APP_DOMAIN = "describe.nitronb.local"
IMAGE_NAME = "nitronb/describe-app-enclave:1"
WORKFLOW_NAME = "describe-conditions"
#: the backends 05 builds for
BACKENDS = checks.BACKENDS


@dataclass
class Record:
    """What a step did, as rows of (what, value) for display."""

    title: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict, repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def _repr_markdown_(self) -> str:
        lines = [f"**{_cell(self.title)}**", "", "| | |", "|---|---|"]
        lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in self.rows]
        return "\n".join(lines)

    def __repr__(self) -> str:
        width = max((len(k) for k, _ in self.rows), default=0)
        return "\n".join([self.title, *(f"  {k.ljust(width)}  {v}" for k, v in self.rows)])


def _cell(value: Any) -> str:
    """Text for a Markdown table cell: HTML escaped (names and reasons come from other parties
    and outputs are exported as HTML), on one line, with ``|`` and link brackets inert."""
    import html

    text = html.escape(" ".join(str(value).split()), quote=False)
    for mark in ("\\", "|", "[", "]"):
        text = text.replace(mark, f"&#{ord(mark)};")
    return text


class Walkthrough:
    """The walk-through's folder in a workspace and the state its steps hand on."""

    def __init__(self, workspace: str | os.PathLike[str] | None = None, run: str | None = None):
        from nitronb.workspace import private_dir, walkthrough_dir, workspace_dir

        self.workspace = workspace_dir(workspace)  # run: one of a batch's (walkthrough_dir)
        self.folder = private_dir(walkthrough_dir(self.workspace, run))
        self._state_path = self.folder / "state.json"
        self._stack_checked = False

    # state: small JSON, mode 0600 (it holds presigned URLs)
    def state(self) -> dict[str, Any]:
        try:
            return json.loads(self._state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def update(self, **values: Any) -> dict[str, Any]:
        from nitronb._files import write_atomic

        state = {**self.state(), **values}
        write_atomic(self._state_path, json.dumps(state, indent=2).encode("utf-8"), mode=0o600)
        return state

    def need(self, key: str, step: str) -> Any:
        value = self.state().get(key)
        if value is None:
            raise StepOrderError(f"this step needs {key.replace('_', ' ')} from {step}, which has "
                                 f"not run in the workspace {self.shown(self.workspace)}.",
                                 hint=f"Run {step} first (or the whole walk-through).")
        return value

    def path(self, name: str) -> Path:
        return self.folder / name

    def shown(self, path: str | os.PathLike[str]) -> str:
        """A path for display: relative to the workspace (``$WORKSPACE/…``)."""
        path = Path(path)
        try:
            inside = path.resolve().relative_to(self.workspace)
            return "$WORKSPACE" if inside == Path(".") else f"$WORKSPACE/{inside}"
        except ValueError:
            if path.resolve() == sample_csv():
                return f"(shipped sample) {path.name}"
            return path.name

    def client(self, party: str):
        """The manager's client for ``party``; starts the local stack if it is down."""
        from nitronb.ccm import CCMClient

        if not self._stack_checked:
            start_local_stack(self)
            self._stack_checked = True
        return CCMClient.for_party(party, self.workspace)


def sample_csv() -> Path:
    from nitronb import sample_path

    return sample_path().resolve()


def as_walkthrough(workspace) -> Walkthrough:
    return workspace if isinstance(workspace, Walkthrough) else Walkthrough(workspace)


def start_local_stack(workspace=None) -> Record:
    """Start the embedded local stack if it is not running (S3 endpoint, manager, node agent)."""
    from nitronb.local import stack as local

    wt = as_walkthrough(workspace)
    status = local.ensure_up(wt.workspace)
    wt._stack_checked = True
    rows = [(name, entry["state"]) for name, entry in status.items()]
    return Record("local stack", rows, {"status": status})


def find_named(items: list[dict], name: str) -> dict | None:
    """The first of the manager's ``items`` (apps, configurations, workflows …) named ``name``."""
    return next((item for item in items if item.get("name") == name), None)
