"""The state of an enclave run, followed from the enclave's log: the launcher's
``[enclave-os] …`` lines move it from starting to finished (or failed, or refused).

Plain Python (no widgets): :class:`nitronb.notebook.widgets.RunMonitor` shows it live, and the
walk-through's run summary reads it from a finished run's log.
"""

from __future__ import annotations

import re

RUN_STEPS = ("starting", "attesting", "provisioned", "running app", "finished")
_EXIT = re.compile(r"app exited with code (-?\d+)")


class RunState:
    """The state of a run, followed from the enclave's log (no widgets)."""

    def __init__(self) -> None:
        self.state = "starting"
        self.detail = ""
        self.exit_code: int | None = None
        self._partial = ""

    @property
    def step(self) -> int:
        """How far the run got, 0 … len(RUN_STEPS) - 1."""
        if self.state in RUN_STEPS:
            return RUN_STEPS.index(self.state)
        return len(RUN_STEPS) - 1

    @property
    def done(self) -> bool:
        return self.state in ("finished", "failed", "refused")

    def feed(self, text: str) -> None:
        """Take more log text; complete lines move the state on."""
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.line(line.rstrip("\r"))

    def flush(self) -> None:
        """Take a last line that ended without a newline."""
        if self._partial:
            line, self._partial = self._partial, ""
            self.line(line)

    def line(self, line: str) -> None:
        """Take one log line."""
        if self.state == "starting" and line.strip():
            self.state = "attesting"
        if not line.startswith("[enclave-os] "):
            return
        message = line[len("[enclave-os] "):].strip()
        exited = _EXIT.search(message)
        if exited:
            self.exit_code = int(exited.group(1))
        if self.state == "refused":
            return  # keep the refusal's reason in view
        self.detail = message
        if message.startswith("refused:"):
            self.state = "refused"
        elif message.startswith("attested:"):
            self.state = "attesting"
        elif message.startswith("provisioned:"):
            self.state = "provisioned"
        elif message.startswith("wrote ") and "starting the app" in message:
            self.state = "running app"
        elif message.startswith("cannot start the app"):
            self.state = "failed"
        elif exited:
            if self.state != "failed":
                self.state = "finished" if self.exit_code == 0 else "failed"

    def end(self, exit_code: int) -> None:
        """The run ended with ``exit_code``: settle a state the log did not settle."""
        self.flush()
        if self.exit_code is None:
            self.exit_code = exit_code
        if not self.done:
            self.state = "finished" if exit_code == 0 else "failed"


__all__ = ["RUN_STEPS", "RunState"]
