"""The local node agent: launches enclaves and plays their Nitro Secure Module.

It measures the image it launches (the same deterministic measurement as the build), starts the
enclave on a backend (a container engine, or a private process), and issues attestation documents
for that enclave only, carrying the PCRs it measured — never ones the enclave claims.

    python -m nitronb.enclave.node_agent_api --workspace WS --host 127.0.0.1 --port PORT

(the HTTP layer, :mod:`nitronb.enclave.node_agent_api`, builds on this module).

HTTP (JSON bodies only): ``GET /health``; with the operator's bearer token (the file
``<workspace>/node-agent/operator.token``, mode 0600): ``POST /v1/enclaves`` ``{"image",
"appconfig_id", "ccm_url", "backend"}``, ``GET /v1/enclaves[/{id}[/log]]``,
``POST /v1/enclaves/{id}/stop``; with the enclave's own bearer token:
``POST /v1/enclaves/{id}/attestation`` ``{"public_key", "user_data", "nonce"}`` (base64).

An enclave runs exactly the command of the image that was measured: no request can change it.

Each enclave's record is ``<workspace>/node-agent/enclaves/<id>/enclave.json`` (what ``GET``
answers, plus the SHA-256 of the enclave's token). Enclaves outlive the node agent: one that
starts finds every enclave an earlier one left ``starting`` or ``running``, adopts those still
running and records how the others ended (:func:`nitronb.enclave.backends.adopt`); an enclave whose end
nothing recorded is ``lost``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nitronb.errors import AuthenticationError, ConflictError, NotFoundError, ValidationError

log = logging.getLogger("nitronb.enclave.node_agent")
LOG_TAIL = 64 * 1024
#: the states of an enclave that has ended ("lost": it ended and nothing recorded its code)
ENDED = ("exited", "failed", "lost")
#: how long a node agent that starts keeps asking an unreachable engine about its containers (s)
ADOPT_PATIENCE = 600.0


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class Enclave:
    """One launched enclave and what the node agent knows of it."""

    id: str
    token: str
    backend: str
    image: str
    appconfig_id: str
    pcrs: dict[str, str]
    folder: Path
    handle: Any = None
    state: str = "starting"
    exit_code: int | None = None
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    attestations: int = 0
    #: the SHA-256 (hex) of ``token``: all a node agent started later knows of it
    token_sha256: str = ""

    def __post_init__(self) -> None:
        if self.token and not self.token_sha256:
            self.token_sha256 = _digest(self.token)

    def token_matches(self, token: str | None) -> bool:
        return bool(token) and bool(self.token_sha256) and secrets.compare_digest(
            _digest(token), self.token_sha256)

    def refresh(self) -> None:
        from nitronb.enclave.backends import LOST

        if self.handle is not None and self.exit_code is None and self.state not in ENDED:
            code = self.handle.poll()
            if code is not None:
                self.ended_at = time.time()
                if code == LOST:
                    self.state = "lost"
                else:
                    self.exit_code = code
                    self.state = "exited"

    def record(self) -> dict[str, Any]:
        """What ``enclave.json`` holds: :meth:`public` and the token's digest."""
        return {**self.public(), "token_sha256": self.token_sha256}

    @classmethod
    def from_record(cls, record: dict[str, Any], folder: Path) -> "Enclave":
        return cls(id=record["id"], token="", backend=record["backend"], image=record["image"],
                   appconfig_id=record["appconfig_id"], pcrs=record["measurements"],
                   folder=folder, state=record["state"], exit_code=record.get("exit_code"),
                   started_at=record["started_at"], ended_at=record.get("ended_at"),
                   attestations=record.get("attestations", 0),
                   token_sha256=record.get("token_sha256", ""))

    def public(self) -> dict[str, Any]:
        self.refresh()
        return {"id": self.id, "backend": self.backend, "image": self.image,
                "appconfig_id": self.appconfig_id, "measurements": self.pcrs,
                "state": self.state, "exit_code": self.exit_code,
                "started_at": self.started_at, "ended_at": self.ended_at,
                "attestations": self.attestations}


class NodeAgent:
    """Launch, watch and attest enclaves; state and logs under ``<workspace>/node-agent``."""

    def __init__(self, workspace: Path) -> None:
        from nitronb.enclave.nsm import LocalNSM

        self.workspace = Path(workspace)
        self.folder = self.workspace / "node-agent"
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.nsm = LocalNSM(self.workspace / "nsm")
        self.nsm.root_path  # create the local root CA now, so the manager can trust it
        self.enclaves: dict[str, Enclave] = {}
        self.lock = threading.Lock()
        self.operator_token = operator_token(self.workspace, create=True)
        self.recover()

    def recover(self) -> None:
        """Load every enclave recorded in the workspace; adopt those an earlier node agent left
        running, and record how those that ended meanwhile ended."""
        from nitronb.enclave.supervisor import remove

        for folder in sorted((self.folder / "enclaves").glob("enc-*")):
            if not (folder / "enclave.json").exists():  # never started: only its image copy
                remove(folder / "private")
        for path in sorted((self.folder / "enclaves").glob("enc-*/enclave.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                enclave = Enclave.from_record(record, path.parent)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("cannot read %s: %s", path, exc)
                continue
            with self.lock:
                if enclave.id in self.enclaves:
                    continue
                self.enclaves[enclave.id] = enclave
            if enclave.state not in ENDED:
                threading.Thread(target=self._adopt, args=(enclave,), daemon=True).start()

    def _adopt(self, enclave: Enclave) -> None:
        from nitronb.enclave.backends import adopt

        deadline = time.monotonic() + ADOPT_PATIENCE
        while True:
            try:
                handle = adopt(enclave.backend, enclave.id, enclave.folder, self.workspace)
            except Exception as exc:  # noqa: BLE001 - an engine error: ask again
                log.warning("cannot look for enclave %s: %s", enclave.id, exc)
                handle = None
            if handle is not None or time.monotonic() > deadline:
                break
            time.sleep(5)
        if handle is None:
            from nitronb.enclave.backends import LOST, Ended

            handle = Ended(LOST)
        enclave.handle = handle
        enclave.refresh()
        if enclave.state in ENDED:
            log.info("enclave %s ended while no node agent watched it: %s", enclave.id,
                     enclave.state if enclave.exit_code is None else
                     f"exit code {enclave.exit_code}")
            self._save(enclave)
            return
        enclave.state = "running"
        log.info("adopted enclave %s, still running", enclave.id)
        self._save(enclave)
        self._watch(enclave)

    def check_operator(self, token: str | None) -> None:
        if not token or not secrets.compare_digest(token, self.operator_token):
            raise AuthenticationError(
                "the node agent needs its operator token (bearer) for this request.",
                hint="`nitronb run` reads it from <workspace>/node-agent/operator.token.")

    def launch(self, image: str, appconfig_id: str, ccm_url: str, backend: str = "auto"
               ) -> dict[str, Any]:
        from nitronb.enclave.backends import choose_backend

        if not isinstance(image, str) or not image:
            raise ValidationError("'image' is required: an enclave image reference or folder.")
        if not isinstance(appconfig_id, str) or not re.fullmatch(r"[0-9a-f]{64}", appconfig_id):
            raise ValidationError("'appconfig_id' must be the 64 lower-case hex APPCONFIG_ID "
                                  "the manager returned on approval.")
        if not isinstance(ccm_url, str) or not ccm_url.startswith(("http://", "https://")):
            raise ValidationError("'ccm_url' must be the manager's http(s) URL.")
        chosen = choose_backend(backend, image, self.workspace)
        enclave_id = f"enc-{secrets.token_hex(8)}"
        folder = self.folder / "enclaves" / enclave_id
        folder.mkdir(parents=True, mode=0o700)
        try:
            prepared = chosen.prepare(image, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        enclave = Enclave(id=enclave_id, token=secrets.token_urlsafe(32), backend=chosen.name,
                          image=image, appconfig_id=appconfig_id,
                          pcrs=prepared.measurements.as_dict(), folder=folder)
        env = {"NODE_AGENT": self.url, "CCM_BACKEND": ccm_url.rstrip("/"),
               "APPCONFIG_ID": appconfig_id, "NITRONB_ENCLAVE_ID": enclave.id,
               "NITRONB_ENCLAVE_TOKEN": enclave.token}
        with self.lock:
            self.enclaves[enclave.id] = enclave
        self._save(enclave)  # "starting": a node agent started later finds it
        try:
            enclave.handle = chosen.start(prepared, env, enclave.folder,
                                          enclave.folder / "enclave.log")
        except BaseException:
            enclave.state, enclave.ended_at = "failed", time.time()
            self._save(enclave)
            raise
        enclave.state = "running"
        self._save(enclave)
        log.info("launched %s (%s) for %s", enclave.id, chosen.name, appconfig_id[:12])
        threading.Thread(target=self._watch, args=(enclave,), daemon=True).start()
        return enclave.public()

    def _watch(self, enclave: Enclave) -> None:
        enclave.handle.wait()
        enclave.refresh()
        self._save(enclave)

    def _save(self, enclave: Enclave) -> None:
        from nitronb._files import write_atomic

        write_atomic(enclave.folder / "enclave.json",
                     json.dumps(enclave.record(), indent=2).encode("utf-8"), mode=0o600)

    def get(self, enclave_id: str) -> Enclave:
        with self.lock:
            enclave = self.enclaves.get(enclave_id)
        if enclave is None:
            raise NotFoundError(f"no enclave {enclave_id!r} on this node agent.")
        return enclave

    def attest(self, enclave_id: str, token: str | None, body: dict[str, Any]) -> dict[str, str]:
        enclave = self.get(enclave_id)
        if not enclave.token_matches(token):
            raise AuthenticationError("only the enclave itself may ask for its attestation "
                                      "document (bearer token missing or wrong).")
        _forget_token_file(enclave)
        enclave.refresh()
        # "starting": an engine may run the enclave before its start call returns
        if enclave.state not in ("starting", "running"):
            raise ConflictError(f"enclave {enclave_id} is {enclave.state}; documents are issued "
                                "to running enclaves only.")
        fields = {name: _b64(body.get(name), name) for name in ("public_key", "user_data", "nonce")}
        document = self.nsm.attest(pcrs={i: enclave.pcrs[f"pcr{i}"] for i in range(3)},
                                   module_id=f"i-local-{enclave.id}", **fields)
        enclave.attestations += 1
        return {"document": base64.b64encode(document).decode("ascii")}

    def stop(self, enclave_id: str) -> dict[str, Any]:
        enclave = self.get(enclave_id)
        if enclave.handle is not None and enclave.exit_code is None:
            enclave.handle.stop()
        return enclave.public()

    def read_log(self, enclave_id: str) -> str:
        path = self.get(enclave_id).folder / "enclave.log"
        if not path.exists():
            return ""
        with open(path, "rb") as handle:
            size = path.stat().st_size
            handle.seek(max(0, size - LOG_TAIL))
            return handle.read().decode("utf-8", errors="replace")

    url = ""


def _forget_token_file(enclave: Enclave) -> None:
    """Remove the file that handed ``enclave`` its token (container backend) once the token is
    used: the app, started after attestation, finds none."""
    from nitronb.enclave.backends import TOKEN_FILE, TOKEN_FOLDER

    try:
        (enclave.folder / TOKEN_FOLDER / TOKEN_FILE).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove the token file of %s: %s", enclave.id, exc)


def _b64(value: Any, name: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"'{name}' must be base64 text.")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"'{name}' is not valid base64.") from None


def operator_token(workspace: str | Path, *, create: bool = False) -> str:
    """The node agent's operator token from ``<workspace>/node-agent/operator.token``
    (``$NITRONB_NODE_AGENT_TOKEN`` overrides it for a node agent elsewhere)."""
    import os

    from nitronb._files import write_atomic

    given = os.environ.get("NITRONB_NODE_AGENT_TOKEN")
    if given and not create:
        return given
    path = Path(workspace) / "node-agent" / "operator.token"
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        if not create:
            raise AuthenticationError(
                f"no node agent operator token at {path}.",
                hint="Start the local stack (`nitronb local up`), or set "
                     "NITRONB_NODE_AGENT_TOKEN for a node agent elsewhere.") from None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    write_atomic(path, (token + "\n").encode("ascii"), mode=0o600)
    return token
