"""The approvals panel: what waits for each party's decision (whitelisting tasks, workflow
approval requests), with Approve and Decline buttons; earlier versions of a workflow are listed
as superseded, never decided here. An approver can withdraw its approval of an approved version
(Withdraw approval, with a reason)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from nitronb.errors import NitronbError, ValidationError
from nitronb.notebook.widgets._base import (_DECLINED, _ERROR, _INFO, _OK, _Shown, _error_text,
                                            _ipywidgets)

TASK_TYPES = ("DOMAIN_WHITELIST", "BUILD_WHITELIST")


@dataclass
class PendingItem:
    """Something waiting for one party's decision, with its controls."""

    party: str
    kind: str               # "task" or "request"
    id: str
    title: str
    approve_button: Any
    decline_button: Any
    reason: Any             # the Text holding a decline's reason

    def approve(self) -> None:
        self.approve_button.click()

    def decline(self, reason: str) -> None:
        self.reason.value = reason
        self.decline_button.click()


@dataclass
class ApprovedItem:
    """An approved workflow version one approver may withdraw its approval of."""

    party: str
    id: str                 # the final workflow (version) id
    title: str
    withdraw_button: Any
    reason: Any             # the Text holding the withdrawal's reason

    def withdraw(self, reason: str) -> None:
        self.reason.value = reason
        self.withdraw_button.click()


@dataclass
class SupersededRequest:
    """A pending approval request for a workflow version older than the newest submitted."""

    id: str
    workflow: str           # the workflow's name
    version: int
    newest: int             # the version that supersedes it


class ApprovalsPanel(_Shown):
    """For each party (name → :class:`~nitronb.ccm.client.CCMClient`), what waits for its
    decision: whitelisting tasks for administrators, workflow approval requests for approvers.

    Of each workflow only the newest submitted version can be decided here: a pending request
    for an earlier version is listed once, under "superseded", without buttons, and
    :meth:`approve` and :meth:`decline` refuse it. Each approved version an approver approved is
    listed for it with a Withdraw approval button and a reason box (:attr:`approved`,
    :meth:`withdraw`). Every status line names the workflow and its version. After each
    decision the manager has accepted, ``on_decision(party, kind, result)`` is called (``kind``
    is "task", "request" or "withdrawal", ``result`` the manager's answer); a text it
    returns is shown under the status line, an error it raises is shown there too. The
    approval request ``current`` (an id), if pending, is listed first and marked "current".
    """

    def __init__(self, clients: Mapping[str, Any], *, auto_refresh: bool = True,
                 on_decision: Callable[[str, str, dict[str, Any]], str | None] | None = None,
                 current: str | None = None) -> None:
        w = _ipywidgets()
        self._w = w
        self.clients = dict(clients)
        self.on_decision = on_decision
        self.current = current
        self.items: list[PendingItem] = []
        #: approved versions each approver may withdraw its approval of, as of the last refresh
        self.approved: list[ApprovedItem] = []
        #: pending requests for earlier versions, as of the last refresh
        self.superseded: list[SupersededRequest] = []
        self.status = w.HTML()
        self.note = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _button: self.refresh())
        self.sections = w.VBox()
        self.widget = w.VBox([w.HBox([self.refresh_button, self.status]), self.note,
                              self.sections])
        self._users: dict[str, dict[str, Any]] = {}
        self._finals: dict[str, dict[str, Any]] = {}   # final workflow id → what it is
        self._labels: dict[str, str] = {}              # request id → "name version N"
        self._newest: dict[str, int] = {}              # draft id → newest version (per refresh)
        if auto_refresh:
            self.refresh()

    def summary(self) -> str:
        waiting = len(self.items)
        text = f"approvals panel: {waiting} decision{'s' if waiting != 1 else ''} waiting"
        if self.superseded:
            text += f", {len(self.superseded)} superseded version(s) not decidable"
        return text

    # plain verbs ------------------------------------------------------------------------------

    def pending(self, party: str | None = None) -> list[PendingItem]:
        """What is waiting (for ``party`` only, if given), as of the last refresh."""
        return [i for i in self.items if party is None or i.party == party]

    def approve(self, party: str, kind: str, item_id: str) -> dict[str, Any]:
        """``party`` approves a task or an approval request; the panel is refreshed.

        Raises :class:`~nitronb.errors.ValidationError` for a request the last refresh found
        superseded, and what the manager raises."""
        client = self.clients[party]
        what = self._what(client, kind, item_id)
        self._refuse_superseded(party, "approve", kind, item_id)
        try:
            result = (client.approve_task(item_id) if kind == "task"
                      else client.approve_request(item_id))
        except Exception as exc:
            self._say(_ERROR, f"{party} could not approve {what}: {_error_text(exc)}")
            raise
        self.refresh()
        self._say(_OK, f"{party} approved {what}{self._now(kind, result)}.")
        self._decided(party, kind, result)
        return result

    def decline(self, party: str, kind: str, item_id: str, reason: str) -> dict[str, Any]:
        """``party`` declines a task or an approval request, with a reason; then refreshes.

        Raises :class:`~nitronb.errors.ValidationError` without a reason or for a superseded
        request, and what the manager raises."""
        client = self.clients[party]
        what = self._what(client, kind, item_id)
        if not reason or not reason.strip():
            self._say(_ERROR, f"a decline needs a reason: type it in the box beside Decline "
                              f"({what}).")
            raise ValidationError("a decline needs a reason.")
        self._refuse_superseded(party, "decline", kind, item_id)
        try:
            result = (client.deny_task(item_id, reason.strip()) if kind == "task"
                      else client.deny_request(item_id, reason.strip()))
        except Exception as exc:
            self._say(_ERROR, f"{party} could not decline {what}: {_error_text(exc)}")
            raise
        self.refresh()
        self._say(_DECLINED, f"{party} declined {what}: {reason.strip()}")
        self._decided(party, kind, result)
        return result

    def withdraw(self, party: str, final_id: str, reason: str) -> dict[str, Any]:
        """``party`` withdraws its approval of the approved version ``final_id``, with a
        reason: its APPCONFIG_ID is refused from then on; then refreshes. Raises
        :class:`~nitronb.errors.ValidationError` without a reason, and what the manager
        raises."""
        client = self.clients[party]
        what = self._labels.get(final_id, f"workflow {final_id[:8]}")
        if not reason or not reason.strip():
            self._say(_ERROR, f"a withdrawal needs a reason: type it in the box beside "
                              f"Withdraw approval ({what}).")
            raise ValidationError("a withdrawal needs a reason.")
        try:
            result = client.revoke_workflow(final_id, reason.strip())
        except Exception as exc:
            self._say(_ERROR, f"{party} could not withdraw its approval of {what}: "
                              f"{_error_text(exc)}")
            raise
        self.refresh()
        self._say(_DECLINED, f"{party} withdrew its approval of {what}: {reason.strip()}; "
                             "it no longer runs.")
        self._decided(party, "withdrawal", result)
        return result

    def refresh(self) -> None:
        """Ask the manager again what waits for each party, and redraw."""
        w = self._w
        self.items, self.approved, self._newest = [], [], {}
        superseded: dict[str, SupersededRequest] = {}
        sections = []
        for party, client in self.clients.items():
            rows: list[Any] = [w.HTML(f"<b>{html.escape(party)}</b>")]
            try:
                found = self._pending_for(party, client, superseded)
            except Exception as exc:  # noqa: BLE001 - one party's failure is shown in its place
                rows.append(w.HTML(_ERROR.format(html.escape(_error_text(exc)))))
                found = []
            for kind, item_id, title in found:
                rows.append(self._row(party, kind, item_id, title))
            if len(rows) == 1:
                rows.append(w.HTML(_INFO.format("nothing is waiting for this party")))
            try:
                for final_id, title in self._approved_for(party, client):
                    rows.append(self._approved_row(party, final_id, title))
            except Exception as exc:  # noqa: BLE001 - shown in its place, like the above
                rows.append(w.HTML(_ERROR.format(html.escape(_error_text(exc)))))
            sections.append(w.VBox(rows, layout=w.Layout(margin="0 0 8px 0")))
        self.superseded = list(superseded.values())
        if self.superseded:
            sections.append(self._superseded_section())
        self.sections.children = tuple(sections)
        waiting = len(self.items)
        self._say(_INFO, f"{waiting} decision{'s' if waiting != 1 else ''} waiting.")

    # internals --------------------------------------------------------------------------------

    def _say(self, template: str, text: str) -> None:
        self.status.value = template.format(html.escape(text))

    def _decided(self, party: str, kind: str, result: dict[str, Any]) -> None:
        if self.on_decision is None:
            return
        try:
            said = self.on_decision(party, kind, result)
        except Exception as exc:  # noqa: BLE001 - the decision stands; the follow-up is shown
            self.note.value = _ERROR.format(html.escape(_error_text(exc)))
            return
        self.note.value = _INFO.format(html.escape(said)) if said else ""

    def _user(self, party: str, client: Any) -> dict[str, Any]:
        if party not in self._users:
            self._users[party] = client.whoami()["user"]
        return self._users[party]

    def _app_name(self, client: Any, app_id: str) -> str:
        key = f"app:{app_id}"
        if key not in self._labels:
            try:
                self._labels[key] = str(client.get_app(app_id).get("name") or app_id)
            except NitronbError:
                return app_id
        return self._labels[key]

    def _final(self, client: Any, request: Mapping[str, Any]) -> dict[str, Any]:
        """The workflow version a request is about: ``name``, ``version`` (None when the
        manager does not say), ``draft_id`` and ``label`` ("name version N")."""
        final_id = str(request.get("workflow_id") or "")
        if final_id not in self._finals:
            try:
                final = client.get_final_workflow(final_id)
            except NitronbError:
                return {"name": f"workflow {final_id[:8]}", "version": None,
                        "draft_id": request.get("draft_id"), "label": f"workflow {final_id[:8]}"}
            name, version = str(final.get("name") or final_id[:8]), final.get("version")
            self._finals[final_id] = {
                "name": name, "version": version,
                "draft_id": final.get("draft_id") or request.get("draft_id"),
                "label": f"{name} version {version}" if version is not None else name}
        return self._finals[final_id]

    def _newest_version(self, client: Any, draft_id: str, pending: list[int]) -> int:
        """The newest version submitted from the draft ``draft_id`` (its pending versions
        ``pending`` at least), asked once per refresh."""
        if draft_id not in self._newest:
            try:
                versions = [int(f["version"]) for f in
                            client.get_workflow(draft_id).get("final_versions") or []]
            except (NitronbError, KeyError, TypeError, ValueError):
                versions = []
            self._newest[draft_id] = max(versions, default=0)
        return max([self._newest[draft_id], *pending])

    def _pending_for(self, party: str, client: Any, superseded: dict[str, "SupersededRequest"]
                     ) -> list[tuple[str, str, str]]:
        user = self._user(party, client)
        found = []
        if "admin" in (user.get("roles") or []):
            for task in client.list_tasks("PENDING"):
                if task.get("task_type") not in TASK_TYPES:
                    continue
                app = self._app_name(client, task.get("app_id", ""))
                what = ("whitelist the domain of app" if task["task_type"] == TASK_TYPES[0]
                        else "whitelist a build of app")
                self._labels[task["id"]] = f"task {task['task_type']} of app {app}"
                found.append(("task", task["id"], f"{task['task_type']}: {what} {app} "
                                                  f"(asked by {task.get('owner')})"))
        requests = client.list_approval_requests("PENDING")
        finals = [self._final(client, r) for r in requests]
        pending: dict[str, list[int]] = {}
        for final in finals:
            if final["draft_id"] and final["version"] is not None:
                pending.setdefault(final["draft_id"], []).append(int(final["version"]))
        for request, final in zip(requests, finals):
            self._labels[request["id"]] = final["label"]
            if final["draft_id"] and final["version"] is not None:
                newest = self._newest_version(client, final["draft_id"],
                                              pending[final["draft_id"]])
                if newest > int(final["version"]):
                    superseded.setdefault(request["id"], SupersededRequest(
                        request["id"], final["name"], int(final["version"]), newest))
                    continue
            if user.get("name") not in (request.get("waiting_for") or []):
                continue
            done = sorted(request.get("approvals") or {})
            mark = "current: " if request["id"] == self.current else ""
            found.append(("request", request["id"],
                          f"{mark}approve workflow {final['label']} (approvers: "
                          f"{', '.join(request.get('approvers') or [])}; approved so far: "
                          f"{', '.join(done) or 'nobody'})"))
        # the current request first; the rest keep the manager's order
        found.sort(key=lambda entry: entry[1] != self.current)
        return found

    def _approved_for(self, party: str, client: Any) -> list[tuple[str, str]]:
        """``(final workflow id, title)`` of each APPROVED version ``party`` approved."""
        name = self._user(party, client).get("name")
        found = []
        for request in client.list_approval_requests("APPROVED"):
            if name not in (request.get("approvers") or []):
                continue
            final = client.get_final_workflow(request["workflow_id"])
            if final.get("status") != "APPROVED":
                continue
            label = f"{final.get('name')} version {final.get('version')}"
            self._labels[final["id"]] = label
            found.append((final["id"], f"approved: workflow {label} runs with your consent"))
        return found

    def _approved_row(self, party: str, final_id: str, title: str) -> Any:
        w = self._w
        withdraw = w.Button(description="Withdraw approval", button_style="warning",
                            icon="undo", layout=w.Layout(width="170px"))
        reason = w.Text(placeholder="reason for withdrawing", layout=w.Layout(width="220px"))
        self.approved.append(ApprovedItem(party, final_id, title, withdraw, reason))
        withdraw.on_click(lambda _b: self._quietly(self.withdraw, party, final_id,
                                                   reason.value))
        return w.HBox([w.HTML(html.escape(title), layout=w.Layout(width="55%")),
                       withdraw, reason])

    def _superseded_section(self) -> Any:
        """One line per workflow: its earlier versions still pending, and the newest."""
        w = self._w
        by_workflow: dict[tuple[str, int], list[int]] = {}
        for old in self.superseded:
            by_workflow.setdefault((old.workflow, old.newest), []).append(old.version)
        rows = [w.HTML("<b>superseded</b>")]
        for (workflow, newest), versions in by_workflow.items():
            shown = ", ".join(str(v) for v in sorted(versions))
            rows.append(w.HTML(_INFO.format(html.escape(
                f"{workflow} version{'s' if len(versions) > 1 else ''} {shown}: superseded by "
                f"version {newest}; still pending at the manager, not decided here"))))
        return w.VBox(rows, layout=w.Layout(margin="0 0 8px 0"))

    def _refuse_superseded(self, party: str, verb: str, kind: str, item_id: str) -> None:
        old = next((s for s in self.superseded if s.id == item_id), None) \
            if kind == "request" else None
        if old is None:
            return
        message = (f"{old.workflow} version {old.version} is superseded by version "
                   f"{old.newest}; decide on version {old.newest} instead.")
        self._say(_ERROR, f"{party} cannot {verb}: {message}")
        raise ValidationError(message, hint="Refresh the panel to see the newest version.")

    def _what(self, client: Any, kind: str, item_id: str) -> str:
        """A request's "name version N", a task's "task TYPE of app NAME" (for status lines)."""
        if item_id not in self._labels and kind == "request":
            try:
                self._labels[item_id] = self._final(
                    client, client.get_approval_request(item_id))["label"]
            except NitronbError:
                pass
        return self._labels.get(item_id, f"{kind} {item_id[:8]}")

    @staticmethod
    def _now(kind: str, result: Mapping[str, Any]) -> str:
        if kind == "task":
            return ""
        waiting = result.get("waiting_for") or []
        if result.get("status") == "PENDING" and waiting:
            return f"; still waiting for {', '.join(waiting)}"
        return f"; it is now {result.get('status')}"

    def _row(self, party: str, kind: str, item_id: str, title: str) -> Any:
        w = self._w
        approve = w.Button(description="Approve", button_style="success", icon="check")
        decline = w.Button(description="Decline", button_style="danger", icon="times")
        reason = w.Text(placeholder="reason for declining", layout=w.Layout(width="220px"))
        item = PendingItem(party, kind, item_id, title, approve, decline, reason)
        approve.on_click(lambda _b: self._quietly(self.approve, party, kind, item_id))
        decline.on_click(lambda _b: self._quietly(self.decline, party, kind, item_id,
                                                  reason.value))
        self.items.append(item)
        return w.HBox([w.HTML(html.escape(title), layout=w.Layout(width="55%")),
                       approve, decline, reason])

    @staticmethod
    def _quietly(action: Callable[..., Any], *args: Any) -> None:
        try:
            action(*args)
        except Exception:  # noqa: BLE001 - already shown in the status line
            pass


__all__ = ["ApprovalsPanel", "ApprovedItem", "PendingItem", "SupersededRequest", "TASK_TYPES"]
