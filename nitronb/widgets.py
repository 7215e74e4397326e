"""Interactive forms for people stepping through the notebooks: a dataset form, the approvals of
every party, and a live view of an enclave run.

Each class builds its ipywidgets on construction (ipywidgets is imported then, never when nitronb
is imported), keeps them in ``.widget``, and is displayed like a widget. Every button has a plain
method behind it, so the same steps can be driven from Python. Scripts and the command line call
the library functions directly and need none of this. Markdown is rendered by
:mod:`nitronb.markdown` (sanitized), a run's state is followed by :mod:`nitronb.run_state`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl

from nitronb.datasets import parse_labels  # noqa: F401 - part of this module's API
from nitronb.errors import NitronbError, ValidationError, WidgetsUnavailableError
from nitronb.run_state import RUN_STEPS, RunState  # noqa: F401 - part of this module's API

_ERROR = '<span style="color:#B00020"><b>✗</b> {}</span>'
_OK = '<span style="color:#00734F"><b>✓</b> {}</span>'
_DECLINED = '<span style="color:#B45309"><b>⊘</b> {}</span>'
_INFO = '<span style="color:#555555">{}</span>'


def _ipywidgets():
    try:
        import ipywidgets
    except ImportError:
        raise WidgetsUnavailableError(
            "the interactive forms need ipywidgets, which is not installed.",
            hint="Install it with `pip install ipywidgets`, or call the nitronb functions "
                 "directly.") from None
    return ipywidgets


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, NitronbError) else f"{type(exc).__name__}: {exc}"


class _Shown:
    """Displays as its ``widget``."""

    widget: Any

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def _show_markdown(preview: Any, text: str) -> None:
    """Show ``text`` in the HTML widget ``preview`` as GitHub renders Markdown: sanitized, so
    that raw HTML in it (scripts, event handlers, ``javascript:`` links) never runs."""
    from nitronb.markdown import render_markdown

    try:
        preview.value = render_markdown(text)
    except NitronbError as exc:
        preview.value = _ERROR.format(html.escape(_error_text(exc)))


# --- dataset definitions -----------------------------------------------------------------------


class DatasetForm(_Shown):
    """The fields of a dataset definition (DESIGN §2.4) and a button that registers it.

    ``url`` is the presigned URL (its location is shown; of its query string, only the field
    names) and ``key`` the dataset's key (shown redacted). ``client`` is the owner's
    :class:`~nitronb.ccm.client.CCMClient`. After a successful creation ``result`` holds the
    manager's answer and ``on_created(result)`` is called.
    """

    def __init__(self, client: Any = None, *, url: str | None = None, key: str | None = None,
                 on_created: Callable[[dict[str, Any]], None] | None = None, name: str = "",
                 description: str = "", labels: Mapping[str, str] | None = None,
                 long_description: str = "") -> None:
        w = _ipywidgets()
        self.client = client
        self.on_created = on_created
        self.result: dict[str, Any] | None = None
        self._url, self._key = url, key
        wide = w.Layout(width="95%")
        self.name = w.Text(value=name, description="Name", placeholder="conditions",
                           layout=wide)
        self.description = w.Text(value=description, description="Description", layout=wide)
        self.labels = w.Textarea(
            value="\n".join(f"{k}={v}" for k, v in (labels or {}).items()),
            description="Labels", placeholder="one key=value per line", layout=wide)
        self.location = w.Text(description="Location", disabled=True, layout=wide)
        self.credentials = w.HTML()
        self.long_description = w.Textarea(
            value=long_description, description="Long description",
            placeholder="GitHub-flavoured Markdown", layout=w.Layout(width="95%", height="140px"))
        self.source = w.Text(description="Load from", placeholder="a Markdown file or URL",
                             layout=w.Layout(width="70%"))
        self.load_button = w.Button(description="Load", icon="download")
        self.preview = w.HTML(layout=w.Layout(border="1px solid #DDDDDD", padding="4px",
                                              width="95%"))
        self.create_button = w.Button(description="Create dataset", button_style="primary",
                                       icon="check")
        self.message = w.HTML()
        for field in (self.name, self.description, self.labels, self.location,
                      self.long_description, self.source):
            field.style.description_width = "120px"

        self.long_description.observe(lambda change: _show_markdown(self.preview, change["new"]),
                                      names="value")
        self.load_button.on_click(lambda _button: self._guard(self.load_long_description))
        self.create_button.on_click(lambda _button: self._guard(self.create))
        _show_markdown(self.preview, long_description)
        self.set_source(url, key)
        self.widget = w.VBox([
            self.name, self.description, self.labels, self.location,
            w.HBox([w.HTML('<div style="width:120px;text-align:right;padding-right:8px">'
                           "Credentials</div>"), self.credentials]),
            self.long_description, w.HBox([self.source, self.load_button]),
            w.HTML(_INFO.format("Preview of the long description:")), self.preview,
            self.create_button, self.message])

    def set_source(self, url: str | None, key: str | None) -> None:
        """Use another presigned URL and key (the location and the redacted credentials follow)."""
        from nitronb.keys import redact
        from nitronb.presign import split_url

        self._url, self._key = url, key
        self.location.value = split_url(url)[0] if url else ""
        if not url or not key:
            self.credentials.value = _INFO.format("set by the presigned URL and the key")
            return
        try:
            shown = redact(key)
        except NitronbError:
            shown = "not a valid key"
        fields = [k for k, _ in parse_qsl(split_url(url)[1], keep_blank_values=True)]
        self.credentials.value = _INFO.format(html.escape(
            f"key {shown}; query string with {', '.join(fields) or 'no fields'} "
            "(values hidden)"))

    def definition(self) -> Any:
        """The :class:`nitronb.datasets.Dataset` the fields describe (raises when invalid)."""
        from nitronb.datasets import Dataset, check_name

        name = self.name.value.strip()
        if not name:
            raise ValidationError("the dataset needs a name.", hint="Type it in the Name field.")
        check_name(name)
        if not self._url or not self._key:
            raise ValidationError("the form has no presigned URL or no key.",
                                  hint="Create it with DatasetForm(client, url=…, key=…).")
        return Dataset.from_url(name, self._url, self._key,
                                description=self.description.value.strip(),
                                labels=parse_labels(self.labels.value),
                                long_description=self.long_description.value)

    def create(self) -> dict[str, Any]:
        """Validate the fields and register the dataset; return the manager's answer."""
        if self.client is None:
            raise ValidationError("the form has no manager client.",
                                  hint="Create it with DatasetForm(CCMClient.for_party(…), …).")
        created = self.client.create_dataset(self.definition().payload())
        self.result = created
        self.message.value = _OK.format(html.escape(
            f"dataset {created.get('name')} created (id {created.get('id')}); the manager shows "
            "its credentials redacted."))
        if self.on_created is not None:
            self.on_created(created)
        return created

    def load_long_description(self) -> str:
        """Fill the long description from the Markdown file (UTF-8) or http(s) URL in
        ``source``; return the text.

        Raises :class:`~nitronb.errors.ValidationError` (the fields keep what was typed) when
        ``source`` is empty, names no readable UTF-8 file, or is over the size limit, and
        :class:`~nitronb.errors.NitronbError` when the URL cannot be fetched.
        """
        from nitronb.datasets import load_long_description

        source = self.source.value.strip()
        if not source:
            raise ValidationError("type a file path or an http(s) URL to load from.",
                                  hint="Type it in the Load from field, then click Load.")
        if source.startswith(("http://", "https://")):
            text = load_long_description(source)
        else:
            text = _read_markdown_file(source)
        self.long_description.value = text
        self.message.value = _INFO.format(html.escape(f"long description loaded from {source}"))
        return text

    def _guard(self, action: Callable[[], Any]) -> None:
        self.message.value = ""
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - shown inline; the fields are kept as typed
            self.message.value = _ERROR.format(html.escape(_error_text(exc)))


def _read_markdown_file(source: str) -> str:
    """The text of the Markdown file ``source`` (a path, ``~`` expanded)."""
    from pathlib import Path

    from nitronb.datasets import MAX_LONG_DESCRIPTION

    path = Path(source).expanduser()
    hint = "Check the path (relative paths start in the notebook's folder), or paste the text."
    if path.is_dir():
        raise ValidationError(f"{source} is a folder, not a Markdown file.", hint=hint)
    if path.exists() and not path.is_file():  # a pipe or a device would block or never end
        raise ValidationError(f"{source} is not a regular file.", hint=hint)
    try:
        with open(path, "rb") as file:
            body = file.read(MAX_LONG_DESCRIPTION + 1)
    except FileNotFoundError:
        raise ValidationError(f"there is no file {source}.", hint=hint) from None
    except OSError as exc:
        raise ValidationError(f"cannot read {source}: {exc.strerror or exc}.", hint=hint) from None
    if len(body) > MAX_LONG_DESCRIPTION:
        raise ValidationError(f"{source} is over {MAX_LONG_DESCRIPTION // 1024} KiB, the limit "
                              "of a long description.")
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValidationError(f"{source} is not UTF-8 text.",
                              hint="Save it as UTF-8, or paste the text.") from None


# --- approvals ---------------------------------------------------------------------------------

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


class ApprovalsPanel(_Shown):
    """For each party (name → :class:`~nitronb.ccm.client.CCMClient`), what waits for its
    decision: whitelisting tasks for administrators, workflow approval requests for approvers.

    After each decision the manager has accepted, ``on_decision(party, kind, result)`` is
    called (``kind`` is "task" or "request", ``result`` the manager's answer); a text it
    returns is shown under the status line, an error it raises is shown there too. The
    approval request ``current`` (an id), if pending, is listed first and marked "current":
    earlier versions of a workflow may still wait beside it.
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
        self.status = w.HTML()
        self.note = w.HTML()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _button: self.refresh())
        self.sections = w.VBox()
        self.widget = w.VBox([w.HBox([self.refresh_button, self.status]), self.note,
                              self.sections])
        self._users: dict[str, dict[str, Any]] = {}
        self._names: dict[tuple[str, str], str] = {}
        if auto_refresh:
            self.refresh()

    # plain verbs ------------------------------------------------------------------------------

    def pending(self, party: str | None = None) -> list[PendingItem]:
        """What is waiting (for ``party`` only, if given), as of the last refresh."""
        return [i for i in self.items if party is None or i.party == party]

    def approve(self, party: str, kind: str, item_id: str) -> dict[str, Any]:
        """``party`` approves a task or an approval request; the panel is refreshed."""
        client = self.clients[party]
        try:
            result = (client.approve_task(item_id) if kind == "task"
                      else client.approve_request(item_id))
        except Exception as exc:
            self._say(_ERROR, f"{party} could not approve: {_error_text(exc)}")
            raise
        self.refresh()
        self._say(_OK, f"{party} approved {self._describe(kind, result)}.")
        self._decided(party, kind, result)
        return result

    def decline(self, party: str, kind: str, item_id: str, reason: str) -> dict[str, Any]:
        """``party`` declines a task or an approval request, with a reason; then refreshes."""
        if not reason or not reason.strip():
            self._say(_ERROR, "a decline needs a reason: type it in the box beside Decline.")
            raise ValidationError("a decline needs a reason.")
        client = self.clients[party]
        try:
            result = (client.deny_task(item_id, reason.strip()) if kind == "task"
                      else client.deny_request(item_id, reason.strip()))
        except Exception as exc:
            self._say(_ERROR, f"{party} could not decline: {_error_text(exc)}")
            raise
        self.refresh()
        self._say(_DECLINED, f"{party} declined {self._describe(kind, result)}: "
                             f"{reason.strip()}")
        self._decided(party, kind, result)
        return result

    def refresh(self) -> None:
        """Ask the manager again what waits for each party, and redraw."""
        w = self._w
        self.items = []
        sections = []
        for party, client in self.clients.items():
            rows: list[Any] = [w.HTML(f"<b>{html.escape(party)}</b>")]
            try:
                found = self._pending_for(party, client)
            except Exception as exc:  # noqa: BLE001 - one party's failure is shown in its place
                rows.append(w.HTML(_ERROR.format(html.escape(_error_text(exc)))))
                found = []
            for kind, item_id, title in found:
                rows.append(self._row(party, kind, item_id, title))
            if len(rows) == 1:
                rows.append(w.HTML(_INFO.format("nothing is waiting for this party")))
            sections.append(w.VBox(rows, layout=w.Layout(margin="0 0 8px 0")))
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

    def _name(self, client: Any, kind: str, ref: str) -> str:
        if (kind, ref) not in self._names:
            try:
                record = (client.get_app(ref) if kind == "app"
                          else client.get_final_workflow(ref))
                name = str(record.get("name") or ref)
                if kind == "workflow" and record.get("version"):
                    name += f" version {record['version']}"
                self._names[(kind, ref)] = name
            except NitronbError:
                return ref
        return self._names[(kind, ref)]

    def _pending_for(self, party: str, client: Any) -> list[tuple[str, str, str]]:
        user = self._user(party, client)
        found = []
        if "admin" in (user.get("roles") or []):
            for task in client.list_tasks("PENDING"):
                if task.get("task_type") not in TASK_TYPES:
                    continue
                app = self._name(client, "app", task.get("app_id", ""))
                what = ("whitelist the domain of app" if task["task_type"] == TASK_TYPES[0]
                        else "whitelist a build of app")
                found.append(("task", task["id"], f"{task['task_type']}: {what} {app} "
                                                  f"(asked by {task.get('owner')})"))
        for request in client.list_approval_requests("PENDING"):
            if user.get("name") not in (request.get("waiting_for") or []):
                continue
            workflow = self._name(client, "workflow", request.get("workflow_id", ""))
            done = sorted(request.get("approvals") or {})
            mark = "current: " if request["id"] == self.current else ""
            found.append(("request", request["id"],
                          f"{mark}approve workflow {workflow} (approvers: "
                          f"{', '.join(request.get('approvers') or [])}; approved so far: "
                          f"{', '.join(done) or 'nobody'})"))
        # the current request first; the rest keep the manager's order
        found.sort(key=lambda entry: entry[1] != self.current)
        return found

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

    def _describe(self, kind: str, result: Mapping[str, Any]) -> str:
        if kind == "task":
            return f"task {result.get('task_type')} ({str(result.get('id'))[:8]})"
        return f"approval request {str(result.get('id'))[:8]} (now {result.get('status')})"


# --- an enclave run ----------------------------------------------------------------------------

class RunMonitor(_Shown):
    """A run's state, a step indicator and the enclave's log, updated while the run goes on."""

    def __init__(self) -> None:
        w = _ipywidgets()
        self.run_state = RunState()
        self.log = ""
        self.outcome: Any = None
        self.label = w.HTML()
        self.progress = w.IntProgress(value=0, min=0, max=len(RUN_STEPS) - 1,
                                      description="Run", bar_style="info")
        self.output = w.Output(layout=w.Layout(max_height="260px", overflow="auto",
                                               border="1px solid #DDDDDD"))
        self.widget = w.VBox([self.label, self.progress, self.output])
        self._show()

    @property
    def state(self) -> str:
        return self.run_state.state

    def feed(self, text: str) -> None:
        """Take more of the enclave's log."""
        if not text:
            return
        self.log += text
        self.output.append_stdout(text)
        self.run_state.feed(text)
        self._show()

    def follow(self, start: Callable[[Callable[[str], None]], Any]) -> Any:
        """Call ``start(on_log)`` — something that runs an enclave and passes its log text to
        ``on_log`` as it grows, such as ``lambda on_log: steps.run_workflow(ws,
        on_log=on_log)`` — and follow the log; return what ``start`` returns (an outcome with
        ``exit_code``). An error is shown, then raised."""
        self.run_state, self.log, self.outcome = RunState(), "", None
        self.output.outputs = ()
        self._show()
        try:
            outcome = start(self.feed)
        except Exception as exc:
            self.run_state.flush()
            if self.run_state.state != "refused":  # a refusal's reason says more
                self.run_state.state = "failed"
                self.run_state.detail = _error_text(exc)
            self._show()
            raise
        self.outcome = outcome
        self.run_state.end(outcome.exit_code)
        self._show()
        return outcome

    def run(self, image: str, appconfig_id: str, **kwargs: Any) -> Any:
        """Run the enclave with :func:`nitronb.runner.run_enclave`, following its log; return
        the outcome (errors are shown, then raised)."""
        from nitronb.runner import run_enclave

        kwargs.pop("on_log", None)
        return self.follow(lambda on_log: run_enclave(image, appconfig_id, on_log=on_log,
                                                      **kwargs))

    def _show(self) -> None:
        state = self.run_state
        colour = {"finished": "#00734F", "failed": "#B00020", "refused": "#B00020"}.get(
            state.state, "#1A1A1A")
        detail = f" — {html.escape(state.detail)}" if state.detail else ""
        self.label.value = (f'<span style="color:{colour}"><b>{html.escape(state.state)}</b>'
                            f"</span>{detail}")
        self.progress.value = state.step
        self.progress.bar_style = {"finished": "success", "failed": "danger",
                                   "refused": "danger"}.get(state.state, "info")


__all__ = ["DatasetForm", "ApprovalsPanel", "PendingItem", "RunMonitor", "RunState",
           "RUN_STEPS", "parse_labels", "WidgetsUnavailableError"]
