"""The run monitor: a run's state, a step indicator and the enclave's log, live."""

from __future__ import annotations

import html
from typing import Any, Callable

from nitronb.notebook.run_state import RUN_STEPS, RunState
from nitronb.notebook.widgets._base import _Shown, _error_text, _ipywidgets


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

    def summary(self) -> str:
        """``run <state>``, and the launcher's last word (``run finished — app exited with
        code 0; credentials wiped``)."""
        state = self.run_state
        return f"run {state.state}" + (f" — {state.detail}" if state.detail else "")

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
        """Run the enclave with :func:`nitronb.enclave.runner.run_enclave`, following its log; return
        the outcome (errors are shown, then raised)."""
        from nitronb.enclave.runner import run_enclave

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


__all__ = ["RunMonitor"]
