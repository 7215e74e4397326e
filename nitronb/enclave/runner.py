"""Running a workflow's enclave: ask the node agent to launch the enclave image with an
APPCONFIG_ID, follow its log, and report how it ended.

The one-command form of the original ``docker run -e NODE_AGENT -e CCM_BACKEND -e APPCONFIG_ID
IMAGE``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable

from nitronb.errors import EndpointUnreachableError, LocalStackError, RunError

#: the longest pause between two looks at a running enclave: its end is seen within it
MAX_POLL = 0.25
#: the node agent's states of an enclave that has ended
_ENDED = ("exited", "failed", "lost")
_WAITING = "[nitronb]"


@dataclass
class RunOutcome:
    """How an enclave run ended."""

    enclave_id: str
    backend: str
    exit_code: int
    measurements: dict[str, str]
    log: str
    seconds: float
    steps: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def refused(self) -> str | None:
        """The launcher's refusal line (attestation or provisioning), if the run was refused."""
        for line in self.log.splitlines():
            if line.startswith(_REFUSED):
                return line.split("refused:", 1)[1].strip()
        return None

    @property
    def reason(self) -> str | None:
        """The log line that says why the run failed, or None when it succeeded (exit code 0).

        In this order: the launcher's first ``[enclave-os] refused:`` or ``[enclave-os] cannot``
        line; else the app's first line reporting an error or a failure (a Python traceback
        counts by its exception line, not by the source lines it quotes); else the app's last
        line; else the launcher's last line.
        """
        return None if self.ok else failure_line(self.log)


_REFUSED = "[enclave-os] refused:"
_LAUNCHER = "[enclave-os] "
_SAYS_WHY = re.compile(r"(?i)(\berror\b|error:|exception\b|\bcannot\b|\bfailed\b|"
                       r"\brefused\b|\bdenied\b|\bnot found\b|\bkilled\b)")


def failure_line(log: str) -> str | None:
    """The line of an enclave's ``log`` that says why it failed (see :attr:`RunOutcome.reason`);
    None for an empty log."""
    lines = [line.rstrip() for line in log.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(_REFUSED) or line.startswith(_LAUNCHER + "cannot"):
            return line
    app = [line for line in lines if not line.startswith(_LAUNCHER)]
    for line in app:
        if line[0].isspace() or line.startswith("Traceback (most recent call last)"):
            continue  # the source lines and header of a traceback
        if _SAYS_WHY.search(line):
            return line
    if app:
        return app[-1]
    return lines[-1] if lines else None


def _service_url(name: str, given: str | None, workspace) -> str:
    if given:
        return given.rstrip("/")
    from nitronb.local import stack as local

    return local.url(name, workspace)


def _call(method: str, url: str, token: str, **kwargs):
    import requests

    try:
        reply = requests.request(method, url, timeout=60,
                                 headers={"Authorization": f"Bearer {token}"}, **kwargs)
    except requests.ConnectionError:
        raise EndpointUnreachableError(f"the node agent at {url} does not answer.",
                                       hint="Start the local stack with `nitronb local up`.")
    except requests.RequestException as exc:
        raise RunError(f"the request to the node agent at {url} failed: {exc}.") from None
    try:
        body = reply.json()
    except ValueError:
        body = {"message": reply.text[:200]}
    if reply.status_code >= 400:
        raise RunError(f"the node agent refused the request (HTTP {reply.status_code}): "
                       f"{body.get('message', body)}")
    return body


def run_enclave(image: str, appconfig_id: str, *, node_agent: str | None = None,
                ccm: str | None = None, backend: str = "auto", workspace=None,
                timeout: float = 900, poll: float = 0.1,
                on_log: Callable[[str], None] | None = None) -> RunOutcome:
    """Launch ``image`` for ``appconfig_id`` and wait for it to end; return the outcome.

    ``on_log`` receives the enclave's log text as it grows (for a live view). Raises
    :class:`RunError` when the enclave does not end within ``timeout`` seconds (see
    :func:`follow_enclave`).
    """
    from nitronb.enclave.node_agent import operator_token
    from nitronb.workspace import workspace_dir

    agent = _service_url("node-agent", node_agent, workspace)
    token = operator_token(workspace_dir(workspace))
    manager = _service_url("manager", ccm, workspace)
    started = time.perf_counter()
    record = _call("POST", f"{agent}/v1/enclaves", token,
                   json={"image": str(image), "appconfig_id": appconfig_id, "ccm_url": manager,
                         "backend": backend})
    return follow_enclave(record["id"], node_agent=node_agent, workspace=workspace,
                          timeout=timeout, poll=poll, on_log=on_log, started=started)


def follow_enclave(enclave_id: str, *, node_agent: str | None = None, workspace=None,
                   timeout: float = 900, poll: float = 0.1,
                   on_log: Callable[[str], None] | None = None,
                   started: float | None = None) -> RunOutcome:
    """Follow the enclave ``enclave_id`` a node agent launched until it ends; its outcome.

    The node agent keeps every enclave's record, so this also reports an enclave launched
    earlier (``nitronb run --enclave ID``), one that ended long ago included. ``on_log``
    receives its log from the beginning. Raises :class:`RunError` when the enclave does not end
    within ``timeout`` seconds (a running enclave is then stopped; one whose node agent does
    not answer is left running) or ended without an exit code, and the node agent's 404 as
    :class:`RunError` for an id it does not know.
    """
    from nitronb.enclave.node_agent import operator_token
    from nitronb.workspace import workspace_dir

    agent = node_agent.rstrip("/") if node_agent else None  # the local one: looked up below
    token = operator_token(workspace_dir(workspace))
    started = time.perf_counter() if started is None else started
    shown = 0
    text = ""
    deadline = started + timeout
    delay = poll
    away = False
    while True:
        try:  # the enclave outlives its node agent: wait for one to answer again
            if agent is None or away and not node_agent:
                agent = _service_url("node-agent", None, workspace)
            record = _call("GET", f"{agent}/v1/enclaves/{enclave_id}", token)
            text = _call("GET", f"{agent}/v1/enclaves/{enclave_id}/log", token)["log"]
        except (EndpointUnreachableError, LocalStackError):
            if not away and on_log:
                on_log(f"{_WAITING} the node agent does not answer; enclave {enclave_id} runs "
                       "on, and its outcome is known once a node agent is back (`nitronb local "
                       "up` restarts it)\n")
            away = True
            if time.perf_counter() > deadline:
                raise RunError(f"the node agent did not answer again within {timeout:.0f} s "
                               f"to say how enclave {enclave_id} ended.",
                               hint="Start it with `nitronb local up`: it finds the enclave and "
                                    "its outcome; then see that outcome with `nitronb run "
                                    f"--enclave {enclave_id}`.")
            time.sleep(MAX_POLL)
            continue
        away = False
        finished = record["state"] in _ENDED
        if on_log and len(text) > shown:
            on_log(text[shown:])
            shown = len(text)
        if finished:
            break
        if time.perf_counter() > deadline:
            _call("POST", f"{agent}/v1/enclaves/{enclave_id}/stop", token)
            raise RunError(f"enclave {enclave_id} did not finish within {timeout:.0f} s; "
                           "it was stopped. Its log ends with:\n" + text[-2000:])
        time.sleep(delay)
        delay = min(delay * 1.5, MAX_POLL)
    if record["exit_code"] is None:
        how = ("ended while no node agent watched it, and nothing recorded its exit code"
               if record["state"] == "lost" else f"{record['state']} with no exit code")
        raise RunError(f"enclave {enclave_id} {how}. Its log ends with:\n" + text[-2000:],
                       hint="Look whether its result was uploaded; run it again if not.")
    return RunOutcome(enclave_id=enclave_id, backend=record["backend"],
                      exit_code=int(record["exit_code"]), measurements=record["measurements"],
                      log=text, seconds=time.perf_counter() - started)
