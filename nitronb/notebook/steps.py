"""The walk-through's steps, one verb per notebook, handing their products on through the
workspace (``<workspace>/walkthrough/``) so that each notebook runs alone after its predecessors.

Every verb returns a small record whose display shows no secret: a key appears as its
fingerprint only, presigned query strings redacted, and nothing machine-specific (paths are
shown relative to the workspace).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nitronb.notebook import checks
from nitronb.errors import NitronbError, StepOrderError, ValidationError
from nitronb.keys import fingerprint

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
            if path.resolve() == _sample():
                return f"(shipped sample) {path.name}"
            return path.name

    def client(self, party: str):
        """The manager's client for ``party``; starts the local stack if it is down."""
        from nitronb.ccm import CCMClient

        if not self._stack_checked:
            start_local_stack(self)
            self._stack_checked = True
        return CCMClient.for_party(party, self.workspace)


def _sample() -> Path:
    from nitronb import sample_path

    return sample_path().resolve()


def _wt(workspace) -> Walkthrough:
    return workspace if isinstance(workspace, Walkthrough) else Walkthrough(workspace)


def start_local_stack(workspace=None) -> Record:
    """Start the embedded local stack if it is not running (S3 endpoint, manager, node agent)."""
    from nitronb.local import stack as local

    wt = _wt(workspace)
    status = local.ensure_up(wt.workspace)
    wt._stack_checked = True
    rows = [(name, entry["state"]) for name, entry in status.items()]
    return Record("local stack", rows, {"status": status})


# --- 01 keys --------------------------------------------------------------------------------


def generate_keys(workspace=None, *, replace: bool = False) -> Record:
    """The data owner's input key and the output owner's output key (64 hex, mode 0600).

    Existing keys are kept unless ``replace``: files encrypted with them stay readable.
    """
    from nitronb.keys import read_key_file, write_key_file

    wt = _wt(workspace)
    rows, paths = [], {}
    for owner, name in (("data owner", "input_key.hex"), ("output owner", "output_key.hex")):
        path = wt.path(name)
        if path.exists() and not replace:
            key, verb = read_key_file(path), "kept"
        else:
            key, verb = write_key_file(path, overwrite=replace), "new"
        rows.append((f"{owner}: {name}", f"fingerprint {fingerprint(key)} ({verb}, mode 0600)"))
        paths[name] = str(path)
    wt.update(input_key=paths["input_key.hex"], output_key=paths["output_key.hex"])
    return Record("keys", rows, paths)


# --- 02 encrypt -----------------------------------------------------------------------------


def encrypt_input(workspace=None, input_csv: str | os.PathLike[str] | None = None, *,
                  encoding: str = "utf-8",
                  required_columns: list[str] | tuple[str, ...] | str | None = None) -> Record:
    """Check the input CSV (default: the shipped Synthea sample), then encrypt it with the
    input key, as UTF-8 (a file in another ``encoding`` is transcoded on the way).

    The check (:func:`nitronb.inputs.check_csv`) wants the ``required_columns`` the app reads
    (default: ``DESCRIPTION``; ``[]`` checks none; text is read by
    :func:`nitronb.inputs.column_names`) and one row; every byte must decode in
    ``encoding``. Raises :class:`~nitronb.errors.InputDataError` in one line otherwise, before
    anything is uploaded or approved. The state keeps the input's absolute path.
    """
    from nitronb import inputs
    from nitronb.keys import read_key_file

    wt = _wt(workspace)
    key = read_key_file(wt.need("input_key", "01_generate_keys"))
    source = Path(input_csv).expanduser().resolve() if input_csv else _sample()
    if isinstance(required_columns, str):  # papermill's -p passes text
        required_columns = inputs.column_names(required_columns)
    columns = inputs.REQUIRED_COLUMNS if required_columns is None else tuple(required_columns)
    check = inputs.check_csv(source, encoding=encoding, required_columns=columns)
    target = wt.path(INPUT_OBJECT)
    size = inputs.encrypt_csv(key, check, target)
    # what 03 and later steps check they still build on: the key this encryption used
    wt.update(input_csv=str(source), input_encoding=check.encoding, encrypted_input=str(target),
              encrypted_with=checks.key_fingerprint(wt.state()["input_key"]))
    found = f"{', '.join(columns)} among {len(check.columns)}" if columns else "not checked"
    rows = [("input", wt.shown(source)), ("columns the app reads", found)]
    if check.transcoded:
        how = (f"{check.encoding}, transcoded to UTF-8" if check.encoding != "utf-8"
               else "UTF-8, its byte-order mark dropped")
        rows.append(("text", f"{check.size:,} bytes of {how} for the app"))
    rows += [("plaintext", f"{size:,} bytes"),
             ("encrypted", f"{wt.shown(target)} ({target.stat().st_size:,} bytes = "
                           f"12 nonce + {size:,} ciphertext + 16 tag)"),
             ("key", f"fingerprint {fingerprint(key)}")]
    return Record("encrypted input", rows, {"encrypted": str(target), "size": size,
                                            "check": check})


# --- 03 upload and presign ------------------------------------------------------------------


def upload_and_presign(workspace=None, *, profile: str = "local",
                       s3_dir: str = "s3://nitronb/walkthrough/", expiry: int = 3600,
                       legacy: bool = False) -> Record:
    """Upload the encrypted input; presign a GET URL for it and a PUT URL for the output.

    The object is named after the input CSV (``<its name>.csv.enc``, the shipped sample's
    ``conditions.csv.enc``). Raises :class:`~nitronb.errors.StepOrderError` when the input key
    was replaced after 02 encrypted the input."""
    from nitronb.s3 import presign
    from nitronb.s3 import client as storage
    from nitronb.s3 import transfers

    wt = _wt(workspace)
    encrypted = wt.need("encrypted_input", "02_encrypt_input")
    state = wt.state()
    checks.check_products(state, "03")
    if profile == "local":
        start_local_stack(wt)
    name = input_object_name(state.get("input_csv"))
    uploaded = {"id": checks.encryption_id(encrypted), "key": state.get("encrypted_with"),
                "object": name}
    uri = transfers.upload_file(encrypted, s3_dir, profile=profile, key_name=name,
                              workspace=wt.workspace)
    get = presign.presign_download(profile, s3_dir, name, expiry, legacy=legacy,
                                   workspace=wt.workspace)
    put = presign.presign_upload(profile, s3_dir, OUTPUT_OBJECT, expiry, legacy=legacy,
                                 workspace=wt.workspace)
    wt.update(profile=profile, s3_dir=s3_dir, input_uri=uri, input_url=get.url,
              output_url=put.url, output_uri=storage.parse_s3_dir(s3_dir).uri(OUTPUT_OBJECT),
              uploaded_input=uploaded, presign_expiry=expiry)
    return Record("uploaded and presigned", [
        ("input object", uri),
        ("download URL (GET) location", _portless(get.location)),
        ("download query string (base64)", _short(get.query_string_b64)),
        ("upload URL (PUT) location", _portless(put.location)),
        ("upload query string (base64)", _short(put.query_string_b64)),
        ("expiry", f"{expiry} s ({'legacy query form' if legacy else 'SigV4'})"),
    ], {"input_url": get.url, "output_url": put.url, "input_uri": uri})


def input_object_name(input_csv: str | os.PathLike[str] | None) -> str:
    """The input's object name in the store: ``<the CSV's name>.csv.enc``, the name made of
    letters, digits, ``.``, ``_`` and ``-`` only (others become ``-``), so that it needs no
    escaping in a URL; ``conditions.csv.enc`` for the shipped sample (``input_csv`` None)."""
    import re

    stem = Path(input_csv).stem if input_csv else "conditions"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:100]
    return f"{safe or 'input'}.csv.enc"


def _short(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:12]}…{text[-8:]} ({len(text)} characters)"


def _portless(url: str) -> str:
    """A local URL with its port replaced (ports vary from run to run)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.hostname in ("127.0.0.1", "localhost"):
        return f"{parts.scheme}://{parts.hostname}:PORT{parts.path}"
    return url


# --- 04 datasets ----------------------------------------------------------------------------


def create_datasets(workspace=None, *, input_name: str = "",
                    output_name: str = "describe-result",
                    input_description: str = "",
                    output_description: str = "describe() of the conditions, encrypted",
                    input_labels: dict[str, str] | str | None = None,
                    output_labels: dict[str, str] | str | None = None,
                    long_description: str = "") -> Record:
    """Register the input dataset (data owner) and the output dataset (output owner).

    The input's name, description and labels default to ones derived from the CSV that
    :func:`encrypt_input` encrypted (:func:`nitronb.datasets.input_defaults`): for the shipped
    sample ``synthea-conditions``; for another CSV its file name made a dataset name.
    ``long_description`` is Markdown text, a file's path or an http(s) URL.

    Raises :class:`~nitronb.errors.StepOrderError` when the input was encrypted again, or its
    key replaced, after 03 uploaded it, and
    :class:`~nitronb.errors.PresignedURLExpiredError` when 03's URLs have expired or expire
    within a minute: the datasets are then not registered.
    """
    from nitronb.datasets import Dataset, input_defaults, load_long_description, parse_labels
    from nitronb.keys import read_key_file

    wt = _wt(workspace)
    state = wt.state()
    input_url = wt.need("input_url", "03_upload_and_presign")
    output_url = state["output_url"]
    checks.check_products(state, "04")
    checks.check_urls_fresh(state)
    source = Path(state["input_csv"]) if state.get("input_csv") else _sample()
    derived = input_defaults(source, sample=source.resolve() == _sample(),
                             avoid=(output_name,))
    input_name = input_name or derived["name"]
    input_description = input_description or derived["description"]
    input_labels = derived["labels"] if input_labels is None else input_labels
    long_text = load_long_description(long_description) if long_description else ""
    definitions = {
        "data-owner": Dataset.from_url(
            input_name, input_url, read_key_file(wt.need("input_key", "01_generate_keys")),
            description=input_description,
            labels=parse_labels(input_labels),
            long_description=long_text),
        "output-owner": Dataset.from_url(
            output_name, output_url, read_key_file(state["output_key"]),
            description=output_description,
            labels=parse_labels(output_labels or {"kind": "result"})),
    }
    rows, ids = [], {}
    for party, dataset in definitions.items():
        dataset.save(wt.path(f"dataset-{dataset.name}.json"))
        created = _create_or_update_dataset(wt.client(party), dataset)
        ids[party] = created["id"]
        key = dataset.credentials["encryption"]["key"]
        rows.append((f"{party}: {dataset.name}",
                     f"{_portless(dataset.location)} · key fingerprint {fingerprint(key)} · labels "
                     f"{', '.join(f'{k}={v}' for k, v in dataset.labels.items()) or '—'}"))
    # what 08 checks it still runs on: this upload, these URLs and keys
    registered = {"input": (state.get("uploaded_input") or {}).get("id"),
                  "urls": checks.urls_id(state),
                  "input_key": checks.key_fingerprint(state["input_key"]),
                  "output_key": checks.key_fingerprint(state["output_key"])}
    wt.update(input_dataset=input_name, output_dataset=output_name,
              input_dataset_id=ids["data-owner"], output_dataset_id=ids["output-owner"],
              registered=registered)
    return Record("datasets registered", rows, {"ids": ids})


def _create_or_update_dataset(client, dataset) -> dict:
    from nitronb.errors import ConflictError

    try:
        return client.create_dataset(dataset.payload())
    except ConflictError:
        payload = dataset.payload()
        # the location moves with the credentials (another S3 directory, or a local endpoint
        # that came back on another port)
        return client.update_dataset(dataset.name, {
            k: payload[k] for k in ("description", "labels", "long_description", "location",
                                    "credentials")})


# --- 05 enclave image -----------------------------------------------------------------------


def build_enclave_image(workspace=None, *, backend: str = "auto", base_image: str = "",
                        app_dir: str | os.PathLike[str] | None = None,
                        on_log=None) -> Record:
    """Build the app, convert it into an enclave image, register app and build, and have the
    administrator approve the domain and build whitelisting tasks.

    ``app_dir`` is the app's folder (a Dockerfile and its files; ``enclave_image/`` when
    omitted; a relative path is read from the working folder). On the container backend the
    base image measured is the one the Dockerfile's ``FROM`` names; ``base_image`` is its
    ``BASE_IMAGE`` build argument when it declares ``ARG BASE_IMAGE``."""
    from nitronb.enclave import image as images

    wt = _wt(workspace)
    start_local_stack(wt)
    app_dir = Path(app_dir) if app_dir else images.default_app_dir()
    chosen = _choose_backend(backend, wt)
    if chosen == "container":
        from nitronb.enclave.engine import require_engine

        engine = require_engine(wt.workspace)
        given = base_image or images.default_base_image()
        base = images.app_base_image(app_dir, given)  # the Dockerfile's real FROM
        # engine tags of this workspace's app folder: another workspace or app folder never
        # retags the image this workspace measured and whitelisted
        import hashlib

        tag = hashlib.sha256(f"{wt.workspace}\0{app_dir.resolve()}".encode("utf-8")).hexdigest()
        app_tag = f"nitronb/describe-app:{tag[:12]}"
        images.build_app_image(app_dir, app_tag, base_image=given,
                               engine=engine, on_log=on_log)
        built = images.convert_to_enclave_image(app_tag, f"{IMAGE_NAME.split(':')[0]}:{tag[:12]}",
                                                app_dir=app_dir, base_image=base,
                                                engine=engine,
                                                on_log=on_log)
    else:
        base = base_image or images.HOST_PYTHON
        built = images.prepare_process_image(app_dir, None, base,
                                             workspace=wt.workspace)
    measurements = built.measurements.as_dict()
    owner, admin = wt.client("app-owner"), wt.client("admin")
    app = _find(owner.list_apps(), APP_NAME) or owner.create_app(
        {"name": APP_NAME, "image": IMAGE_NAME, "domain": APP_DOMAIN,
         "description": "pandas describe() of the DESCRIPTION column"})
    build = next((b for b in owner.list_builds(app["id"])
                  if b.get("measurements") == measurements), None)
    if build is None:
        build = owner.create_build({"app_id": app["id"], "image": IMAGE_NAME,
                                    "measurements": measurements})
    for task_id in (app["domain_task_id"], build["task_id"]):
        if admin.get_task(task_id)["status"] == "PENDING":
            admin.approve_task(task_id)
    tasks = {t: admin.get_task(t)["status"] for t in (app["domain_task_id"], build["task_id"])}
    wt.update(backend=built.backend, image_reference=built.reference, app_id=app["id"],
              build_id=build["id"], measurements=measurements)
    _refuse_unapproved(admin, {"domain": app["domain_task_id"], "build": build["task_id"]})
    return Record("enclave image", [
        ("backend", built.backend), ("image", IMAGE_NAME),
        ("base image", built.base_image or base),
        *((f"PCR{i}", _pcr(measurements[f"pcr{i}"])) for i in range(3)),
        ("domain whitelist task", tasks[app["domain_task_id"]]),
        ("build whitelist task", tasks[build["task_id"]]),
    ], {"image": built, "app": app, "build": build})


def _refuse_unapproved(admin, tasks: dict[str, str]) -> None:
    """ConflictError when a whitelisting task (``{"domain"|"build": task id}``) is not
    APPROVED (revoked or denied by the administrator): such an image can never run."""
    from nitronb.errors import ConflictError

    for kind, task_id in tasks.items():
        task = admin.get_task(task_id)
        if task["status"] != "APPROVED":
            said = task.get("revoke_reason") or task.get("reason")
            who = f" by {task['revoked_by']}" if task.get("revoked_by") else ""
            why = f"{who}: {' '.join(str(said).split())}" if said else who
            raise ConflictError(
                f"the {kind} whitelist task {task_id} is {task['status']}{why}; an enclave of "
                "this image would be refused.",
                hint="Ask the administrator why; change the app (a build with the same "
                     "measurements stays refused) and run 05 again.")


def _choose_backend(backend: str, wt: Walkthrough) -> str:
    if backend not in BACKENDS:
        raise ValidationError(f"unknown backend {backend!r}; choose auto, process or container.")
    if backend != "auto":
        return backend
    from nitronb.enclave.engine import find_engine

    return "container" if find_engine(wt.workspace, timeout=10) is not None else "process"


def _pcr(value: str) -> str:
    return f"{value[:16]}…{value[-8:]}"


def _find(items: list[dict], name: str) -> dict | None:
    return next((item for item in items if item.get("name") == name), None)


# --- 06 app configuration -------------------------------------------------------------------


def create_app_configuration(workspace=None, *, name: str = "describe-app-config",
                             description: str = "describe() of the input, result to the output",
                             labels: dict[str, str] | None = None) -> Record:
    """The application configuration: image, ports ``input`` (in) and ``output`` (out)."""
    wt = _wt(workspace)
    build_id = wt.need("build_id", "05_build_enclave_image")
    owner = wt.client("app-owner")
    wanted = {"name": name, "image": IMAGE_NAME, "build_id": build_id,
              "ports": {"input": "in", "output": "out"}, "labels": dict(labels or {}),
              "description": description, "config_items": {}}
    existing = _find(owner.list_app_configs(), name)
    if existing and existing.get("build_id") == build_id:
        config = existing
    else:
        if existing:
            wanted["name"] = name = f"{name}-{build_id[-6:]}"
            config = _find(owner.list_app_configs(), name) or owner.create_app_config(wanted)
        else:
            config = owner.create_app_config(wanted)
    wt.update(app_config_id=config["id"], app_config_name=name,
              app_config_build_id=config.get("build_id", build_id))
    return Record("application configuration", [
        ("name", name), ("image", IMAGE_NAME),
        ("ports", "input (in) ← dataset, output (out) → dataset"),
        ("configuration items", str(len(config.get("config_items") or {})))],
        {"app_config": config})


# --- 07 workflow and approvals --------------------------------------------------------------


def create_workflow(workspace=None, *, name: str = WORKFLOW_NAME) -> Record:
    """Draft the workflow graph (input → app → output) and request every owner's approval."""
    wt = _wt(workspace)
    state = wt.state()
    app_config_id = wt.need("app_config_id", "06_app_and_configuration")
    graph = _workflow_graph(wt, name, app_config_id, state)
    owner = wt.client("app-owner")
    draft = _find(owner.list_workflows(), name)
    draft = owner.update_workflow(draft["id"], graph) if draft else owner.create_workflow(graph)
    request = owner.request_approval(draft["id"])
    wt.update(workflow_draft_id=draft["id"], approval_request_id=request["id"],
              final_workflow_id=request["workflow_id"], appconfig_id=None, workflow_graph=graph,
              workflow_status={"status": request["status"]})
    return Record("workflow drafted, approval requested", [
        ("workflow", name), ("version", str(request.get("version", draft.get("version", "")))),
        ("approvers", ", ".join(request["approvers"])), ("status", request["status"])],
        {"draft": draft, "request": request, "graph": graph})


def _workflow_graph(wt: Walkthrough, name: str, app_config_id: str,
                    state: dict[str, Any]) -> dict[str, Any]:
    """The graph input → app → output, its objects keyed by node names as the real CCM's user
    interface draws them (short generated ids); a graph drafted earlier in this workspace over the
    same app configuration and datasets keeps its node names, so that drafting it again changes
    nothing the enclave sees."""
    from nitronb.ccm import workflow_graph

    inputs, outputs = state["input_dataset_id"], state["output_dataset_id"]
    wanted = sorted([("app", app_config_id), ("dataset", inputs), ("dataset", outputs)])
    earlier = state.get("workflow_graph") or {}
    refs = sorted((o.get("type"), o.get("app_config_id") or o.get("dataset_id"))
                  for o in (earlier.get("objects") or {}).values())
    if refs == wanted:
        return {**earlier, "name": name}
    return workflow_graph(name, app_config_id, inputs={"input": inputs},
                          outputs={"output": outputs},
                          description=f"describe() of {state.get('input_dataset', 'the input')}")


def approve_workflow(workspace=None, *, decline: dict[str, str] | None = None,
                     in_panel: bool = False) -> Record:
    """Every approver approves (or, for a party in ``decline``, declines with the reason).

    With ``in_panel`` nothing is decided here (``decline`` is not used): the record says who
    is still to approve, for people who decide by clicking in :func:`approvals_panel`.
    Raises :class:`~nitronb.errors.ValidationError` for a ``decline`` by a non-approver.
    """
    wt = _wt(workspace)
    request_id = wt.need("approval_request_id", "07_workflow_and_approvals")
    if in_panel:
        status = approval_status(wt)
        return Record("approvals", [
            ("decide", "in the approvals panel below: each approver clicks Approve (or types "
                       "a reason and clicks Decline)"),
            *status.rows[2:]], status.data)
    decline = dict(decline or {})
    rows = []
    request = wt.client("admin").get_approval_request(request_id)
    strangers = sorted(set(decline) - set(request["approvers"]))
    if strangers:
        raise ValidationError(f"{', '.join(strangers)} cannot decline: the approvers of this "
                              f"workflow are {', '.join(request['approvers'])}.")
    for party in list(request["waiting_for"]):
        client = wt.client(party)
        if party in decline:
            request = client.deny_request(request_id, decline[party])
            rows.append((party, f"declined: {decline[party]}"))
            break
        request = client.approve_request(request_id)
        rows.append((party, "approved"))
    status = approval_status(wt)
    rows.append(("workflow status", status["status"]))
    if status["appconfig_id"]:
        rows.append(("APPCONFIG_ID", status["appconfig_id"]))
    return Record("approvals", rows, {"request": status["request"], "final": status["final"],
                                      "app_config_ids": status["app_config_ids"]})


def through_approval(workspace=None, *, backend: str = "process",
                     input_csv: str | os.PathLike[str] | None = None, encoding: str = "utf-8",
                     required_columns: list[str] | tuple[str, ...] | None = None,
                     app_dir: str | os.PathLike[str] | None = None) -> Walkthrough:
    """Steps 01 to 07 with their defaults, every owner approving: the workspace is then ready
    for :func:`run_workflow` (for batch runs, tests and benchmarks). ``input_csv``,
    ``encoding`` and ``required_columns`` go to :func:`encrypt_input`, ``app_dir`` to
    :func:`build_enclave_image`."""
    wt = _wt(workspace)
    generate_keys(wt)
    encrypt_input(wt, input_csv, encoding=encoding, required_columns=required_columns)
    for step in (upload_and_presign, create_datasets):
        step(wt)
    build_enclave_image(wt, backend=backend, app_dir=app_dir)
    create_app_configuration(wt)
    create_workflow(wt)
    approved = approve_workflow(wt)
    if approved["request"]["status"] != "APPROVED":
        raise NitronbError(f"the workflow ended {approved['request']['status']}, not APPROVED.")
    return wt


def runtime_configuration(workspace=None) -> dict:
    """The runtime configuration the manager serves for APPCONFIG_ID, and the id recomputed."""
    from nitronb.ccm import app_config_id

    wt = _wt(workspace)
    config_id = approved_config_id(wt)
    served = wt.client("app-owner").get_runtime_config(config_id)
    return {"appconfig_id": config_id, "recomputed": app_config_id(served["config"]),
            "config": served["config"]}


def approval_status(workspace=None) -> Record:
    """The workflow's approval as the manager has it now; the workspace state follows it.

    The manager is the source of truth, whoever decided and however (in code, by clicking in
    the approvals panel, with ``nitronb ccm``): this reads the approval request and the final
    workflow and writes ``appconfig_id`` (None unless approved: an earlier version's is
    forgotten) and ``workflow_status`` to the workspace state. The record's data holds
    ``status`` ("PENDING", "APPROVED", "DENIED", or "REVOKED" / "SUPERSEDED" for an approved
    version that no longer runs), ``waiting_for`` (parties), ``denied_by``,
    ``reason``, ``version``, ``appconfig_id``, ``app_config_ids``, ``request``, ``final``
    and ``summary`` (one sentence). Raises :class:`StepOrderError` before
    :func:`create_workflow`.
    """
    wt = _wt(workspace)
    request_id = wt.need("approval_request_id", "07_workflow_and_approvals")
    client = wt.client("app-owner")
    request = client.get_approval_request(request_id)
    final = client.get_final_workflow(request["workflow_id"])
    ids = final.get("app_config_ids") or {}
    status = request["status"]
    if final.get("status") in ("REVOKED", "SUPERSEDED"):
        status = final["status"]
    appconfig_id = next(iter(ids.values()), None) if status == "APPROVED" else None
    waiting = list(request.get("waiting_for") or []) if status == "PENDING" else []
    decided = {"status": status, "version": final.get("version"),
               "denied_by": request.get("denied_by"), "reason": request.get("reason"),
               "waiting_for": waiting}
    wt.update(appconfig_id=appconfig_id, workflow_status=decided)
    workflow = f"the workflow {final.get('name') or WORKFLOW_NAME} version {decided['version']}"
    if status == "APPROVED":
        summary = f"{workflow} is approved; its APPCONFIG_ID is {appconfig_id}."
    elif status == "DENIED":
        summary = f"{workflow} was declined by {decided['denied_by']}: {decided['reason']}."
    elif status == "REVOKED":
        summary = (f"{workflow} no longer runs: {final.get('revoked_by')} withdrew its "
                   f"approval: {final.get('revoke_reason')}.")
    elif status == "SUPERSEDED":
        summary = (f"{workflow} no longer runs: it was superseded by version "
                   f"{final.get('superseded_by')}.")
    else:
        summary = f"{workflow} is waiting for approvals by {', '.join(waiting) or 'nobody'}."
    rows = [("workflow", str(final.get("name") or "")), ("version", str(decided["version"])),
            ("status", status)]
    if waiting:
        rows.append(("waiting for", ", ".join(waiting)))
    if status == "DENIED":
        rows.append(("declined by", f"{decided['denied_by']}: {decided['reason']}"))
    if appconfig_id:
        rows.append(("APPCONFIG_ID", appconfig_id))
    return Record("workflow approval", rows, {
        **decided, "appconfig_id": appconfig_id, "app_config_ids": ids, "request": request,
        "final": final, "summary": summary})


def approved_config_id(workspace=None, *,
                       error: type[NitronbError] = StepOrderError) -> str:
    """The APPCONFIG_ID of the approved workflow, as the manager has it now (see
    :func:`approval_status`). Raises ``error`` — one line naming who is still to approve, or
    who declined and why — when the workflow is not approved."""
    status = approval_status(workspace)
    if status["appconfig_id"]:
        return status["appconfig_id"]
    if status["status"] in ("DENIED", "REVOKED", "SUPERSEDED"):
        raise error(f"{status['summary'][:-1]}; no enclave can be provisioned for it.",
                    hint="Draft a new version (run 07_workflow_and_approvals again) and ask "
                         "for approval again.")
    raise error(f"{status['summary'][:-1]}; it has no APPCONFIG_ID yet.",
                hint="Approve it in the approvals panel of 07_workflow_and_approvals (or with "
                     "steps.approve_workflow), then run this cell again.")


# --- 08 run ---------------------------------------------------------------------------------


def run_workflow(workspace=None, *, timeout: float = 900, on_log=None):
    """Launch the enclave image through the node agent with APPCONFIG_ID; wait for the end.

    Returns the run's ``RunOutcome``. Raises :class:`~nitronb.errors.StepOrderError` when a
    product the run builds on changed after the step that consumed it (a key replaced, the
    input encrypted or uploaded again, the image built again: see
    :func:`nitronb.notebook.checks.check_products`), and :class:`~nitronb.errors.RunError`,
    with a hint, when the workflow is not approved or the enclave uploaded no result.
    """
    from nitronb.enclave.runner import run_enclave

    from nitronb.s3 import client as storage
    from nitronb.errors import RunError

    wt = _wt(workspace)
    config_id = approved_config_id(wt, error=RunError)
    state = wt.state()
    reference = wt.need("image_reference", "05_build_enclave_image")
    output_uri = wt.need("output_uri", "03_upload_and_presign")
    checks.check_products(state, "08")
    start_local_stack(wt)
    # a result left by an earlier run must not pass for this run's
    storage.delete_object(output_uri, profile=state.get("profile", "local"),
                          workspace=wt.workspace)
    wt.update(last_run=None)
    backend = wt.need("backend", "05_build_enclave_image")
    try:
        outcome = run_enclave(reference, config_id, backend=backend, workspace=wt.workspace,
                              timeout=timeout, on_log=on_log)
    except RunError as exc:
        if exc.hint:
            raise
        timed_out = "did not finish within" in exc.message
        raise RunError(exc.message, hint=(
            "Give it longer (the timeout parameter of 08, in seconds) and run 08 again."
            if timed_out else "Check the local stack (`nitronb local status`, its logs), then "
                              "run 08 again.")) from None
    # the object was deleted above: if it is there now, this run's app uploaded it
    uploaded = outcome.refused is None and _object_exists(
        output_uri, profile=state.get("profile", "local"), workspace=wt.workspace)
    wt.update(last_run={"enclave_id": outcome.enclave_id, "exit_code": outcome.exit_code,
                        "result_uploaded": uploaded,
                        "output_key": (state.get("registered") or {}).get("output_key"),
                        "products": checks.run_products(state)})
    if not outcome.ok and not uploaded:
        reason = outcome.reason or "it wrote no log"
        raise RunError(f"enclave {outcome.enclave_id} ended with exit code {outcome.exit_code} "
                       f"and uploaded no result: {reason}",
                       hint=checks.run_failure_hint(reason, state,
                                                    refused=outcome.refused is not None))
    return outcome


def _object_exists(uri: str, *, profile: str, workspace) -> bool:
    import botocore.exceptions as bce

    from nitronb.s3 import client as storage
    from nitronb.errors import NoSuchObjectError

    bucket, key = storage.parse_s3_uri(uri)
    client = storage.client_for(profile, workspace=workspace)
    try:
        client.head_object(Bucket=bucket, Key=key)
    except (bce.BotoCoreError, bce.ClientError) as exc:
        error = storage.storage_error(exc, bucket=bucket, key=key, profile=profile)
        if isinstance(error, NoSuchObjectError):
            return False
        raise error from None
    return True


# --- 09 decrypt the output ------------------------------------------------------------------


def decrypt_output(workspace=None):
    """Download the result object and decrypt it with the output key: a ``RunResult``, whose
    ``returncode``, ``stderr`` and :meth:`~nitronb.results.RunResult.report` say how the app
    ended (an app that failed still uploads its result). Raises
    :class:`~nitronb.errors.RunError` when the last run uploaded no result,
    :class:`~nitronb.errors.StepOrderError` when the result is not from a run on the
    workspace's products now (:func:`nitronb.notebook.checks.check_result_current`: the
    output key replaced, the input encrypted again …), and
    :class:`~nitronb.errors.ResultDecryptionError` (naming the result relative to the
    workspace) when the result does not decrypt with the output key."""
    from nitronb.s3 import client as storage
    from nitronb.s3 import transfers
    from nitronb.keys import read_key_file
    from nitronb.results import decrypt_run_result

    from nitronb.errors import DecryptionError, ResultDecryptionError, RunError

    wt = _wt(workspace)
    uri = wt.need("output_uri", "03_upload_and_presign")
    last = wt.need("last_run", "08_run_workflow")
    if last.get("exit_code") != 0 and not last.get("result_uploaded"):
        raise RunError(f"the last run (enclave {last.get('enclave_id')}) failed with exit code "
                       f"{last.get('exit_code')}; it uploaded no result to decrypt.",
                       hint="See 08_run_workflow's log, fix the cause and run it again.")
    checks.check_result_current(wt.state())
    target = wt.path(OUTPUT_OBJECT)
    transfers.download_file(uri, target, profile=wt.state().get("profile", "local"),
                          workspace=wt.workspace)
    key = read_key_file(wt.need("output_key", "01_generate_keys"))
    try:
        result = decrypt_run_result(key, target, name=wt.shown(target))
    except DecryptionError as exc:
        raise ResultDecryptionError(
            exc.message, path=target,
            hint="The enclave encrypts the result with the key the output dataset had when 08 "
                 "ran; if the output key was replaced since (01 with replace_keys), run 04 and "
                 "08 again, then 09.") from None
    return dataclasses.replace(result, inputs=_input_files(wt.state()))


def _input_files(state: dict[str, Any]) -> dict[str, str]:
    """``input/<node>`` (the file the app reads, DESIGN §3.3) → the input dataset's name."""
    graph = state.get("workflow_graph") or {}
    nodes = [e["source"] for e in graph.get("edges") or [] if e.get("port") == "input"]
    return {f"input/{node}": state.get("input_dataset", node) for node in nodes}


# what the notebooks display beside the steps
from nitronb.notebook.displays import (Picture, approvals_panel, dataset_form, result_chart,  # noqa: E402
                              result_table, run_summary, run_workflow_live, workflow_picture)

__all__ = [
    "Walkthrough", "Record", "StepOrderError", "start_local_stack", "generate_keys",
    "encrypt_input", "upload_and_presign", "create_datasets", "build_enclave_image",
    "create_app_configuration", "create_workflow", "approve_workflow", "through_approval",
    "runtime_configuration", "approval_status", "approved_config_id", "run_workflow_live",
    "run_workflow", "decrypt_output", "Picture", "workflow_picture", "run_summary",
    "result_table", "result_chart", "dataset_form", "approvals_panel",
]
