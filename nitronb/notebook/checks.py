"""What the walk-through checks before a step acts, so that a step run out of order or skipped
fails in one line that names the steps to run again, instead of running on stale products.

Two kinds of checks:

- **products**: each step records in the workspace state what it consumed — the encryption of the
  input it uploaded, the keys it registered (by fingerprint), the build its configuration uses —
  and a later step checks that its predecessors' products are still the ones it builds on
  (:func:`check_products`, :func:`check_result_key`, :func:`check_urls_fresh`);
- **parameters**: the values that can be checked before anything runs (choices, files that must
  exist), for ``nitronb walkthrough`` and :func:`nitronb.notebook.runner.run_notebooks`
  (:func:`check_parameter_values`).

The records are cheap: a key is told apart by :func:`key_fingerprint` (8 hex digits of SHA-256
of the key's 32 bytes, which reveal nothing usable about it), an encryption of the input by
:func:`encryption_id` (its size, GCM nonce and tag: no hashing of the file).
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping

from nitronb.errors import NotebookError, PresignedURLExpiredError, StepOrderError

#: how long a presigned URL must still live when 04 registers it
URL_MARGIN_SECONDS = 60
#: the backends 05 can build for
BACKENDS = ("auto", "process", "container")


# --- fingerprints ---------------------------------------------------------------------------


def key_fingerprint(path: str | os.PathLike[str]) -> str:
    """The first 8 hex digits of SHA-256 of the 32 bytes of the key in the file at ``path``:
    enough to tell two keys apart, nothing to recover either. Raises
    :class:`~nitronb.errors.KeyFileError` for a missing or malformed key file."""
    from nitronb.keys import fingerprint, read_key_file

    return fingerprint(read_key_file(path))


def encryption_id(path: str | os.PathLike[str] | None) -> str | None:
    """An id of one encryption of a file in the format ``nonce (12) | ciphertext | tag (16)``:
    16 hex digits of SHA-256 over its size, nonce and tag. The nonce is random per encryption
    and the tag authenticates the whole ciphertext, so encrypting again (even the same file
    with the same key) gives another id; only 28 bytes are read. None when there is no file."""
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            nonce = handle.read(12)
            handle.seek(max(size - 16, 0))
            tag = handle.read(16)
    except FileNotFoundError:
        return None
    return hashlib.sha256(f"{size}:".encode() + nonce + tag).hexdigest()[:16]


def urls_id(state: Mapping[str, Any]) -> str:
    """16 hex digits of SHA-256 of the presigned URLs 03 made (to compare, not to keep them)."""
    both = f"{state.get('input_url', '')}\n{state.get('output_url', '')}"
    return hashlib.sha256(both.encode()).hexdigest()[:16]


# --- products -------------------------------------------------------------------------------


def _stale(what: str, again: tuple[str, ...], step: str, note: str = "") -> StepOrderError:
    listed = again[0] if len(again) == 1 else f"{', '.join(again[:-1])} and {again[-1]}"
    then = "08 and 09" if step == "09" else step
    return StepOrderError(f"{what}.", hint=f"Run {listed} again{note}, then {then}.")


def check_products(state: Mapping[str, Any], step: str) -> None:
    """Raise :class:`~nitronb.errors.StepOrderError` when a product that ``step`` ("03", "04",
    "08", or "09" for the run whose result it decrypts) builds on changed after the step that
    consumed it ran; the message says what changed, the hint which steps to run again. Records
    missing from ``state`` (a workspace written before they existed) are not checked."""
    stage = "08" if step == "09" else step
    if state.get("encrypted_with") and state.get("input_key"):
        if key_fingerprint(state["input_key"]) != state["encrypted_with"]:
            again = ("02", "03", "04")[:("03", "04", "08").index(stage) + 1]
            raise _stale("the input key was replaced after 02 encrypted the input", again, step)
    if stage == "03":
        return
    uploaded = state.get("uploaded_input") or {}
    if uploaded.get("id"):
        current = encryption_id(state.get("encrypted_input"))
        if current is not None and current != uploaded["id"]:
            raise _stale("the input was encrypted again after 03 uploaded it",
                         ("03",) if stage == "04" else ("03", "04"), step)
    if stage == "04":
        return
    registered = state.get("registered") or {}
    if registered:
        if (uploaded.get("id"), urls_id(state)) != (registered.get("input"),
                                                     registered.get("urls")):
            raise _stale("the input was uploaded and presigned again after 04 registered the "
                         "datasets", ("04",), step)
        if key_fingerprint(state["output_key"]) != registered.get("output_key"):
            raise _stale("the output key was replaced after 04 registered the output dataset",
                         ("04",), step, " (results encrypted with the old key stay unreadable)")
    if state.get("app_config_build_id") and state.get("build_id") != state["app_config_build_id"]:
        raise _stale("the enclave image was built again after 06 made the application "
                     "configuration", ("06", "07"), step)
    objects = list(((state.get("workflow_graph") or {}).get("objects") or {}).values())
    if objects:
        drawn_app = {o.get("app_config_id") for o in objects if o.get("type") == "app"}
        drawn_datasets = {o.get("dataset_id") for o in objects if o.get("type") == "dataset"}
        if state.get("app_config_id") not in drawn_app:
            raise _stale("the application configuration was made again after 07 drafted the "
                         "workflow", ("07",), step)
        if not {state.get("input_dataset_id"), state.get("output_dataset_id")} <= drawn_datasets:
            raise _stale("the datasets were registered again, as other datasets, after 07 "
                         "drafted the workflow", ("07",), step)


def run_products(state: Mapping[str, Any]) -> str:
    """16 hex digits naming what a run (08) runs on: the registered upload, URLs and keys, the
    datasets, the build, the application configuration and the approved APPCONFIG_ID."""
    import json

    names = ("registered", "input_dataset_id", "output_dataset_id", "build_id",
             "image_reference", "app_config_id", "appconfig_id")
    text = json.dumps({name: state.get(name) for name in names}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_result_current(state: Mapping[str, Any]) -> None:
    """Raise :class:`~nitronb.errors.StepOrderError` when the result 09 would decrypt is not
    from a run on the products the workspace has now: the output key replaced since the run
    encrypted it, a product changed after the step that consumed it (see
    :func:`check_products`), or the run made before steps ran again."""
    check_products(state, "09")
    check_result_key(state)
    then = (state.get("last_run") or {}).get("products")
    if then and then != run_products(state):
        raise StepOrderError("the last run (08) ran before the input, the datasets, the image or "
                             "the workflow changed; its result describes the old ones.",
                             hint="Run 08 again, then 09.")


def check_result_key(state: Mapping[str, Any]) -> None:
    """Raise :class:`~nitronb.errors.StepOrderError` when the output key was replaced after the
    last run (08) encrypted its result with the key registered in the output dataset."""
    last = state.get("last_run") or {}
    then = last.get("output_key") or (state.get("registered") or {}).get("output_key")
    if not (then and state.get("output_key")):
        return
    now = key_fingerprint(state["output_key"])
    if now != then:
        registered = (state.get("registered") or {}).get("output_key") == now
        raise StepOrderError(
            "the output key was replaced after 08's run encrypted its result with the key the "
            "output dataset had; that result stays unreadable.",
            hint="Run 08 again, then 09." if registered else
                 "Run 04 again (it registers the new key), then 08 and 09.")


# --- presigned URLs -------------------------------------------------------------------------


def urls_expiry(state: Mapping[str, Any]) -> datetime | None:
    """When the first of the presigned URLs in ``state`` stops working (aware UTC), if known."""
    from nitronb.s3.presign import url_expiry

    ends = [url_expiry(state[name]) for name in ("input_url", "output_url") if state.get(name)]
    ends = [end for end in ends if end is not None]
    return min(ends) if ends else None


def shown_time(moment: datetime) -> str:
    return f"{moment.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


def check_urls_fresh(state: Mapping[str, Any], *, margin: float = URL_MARGIN_SECONDS,
                     now: datetime | None = None) -> None:
    """Raise :class:`~nitronb.errors.PresignedURLExpiredError` (one line, saying when) when a
    presigned URL in ``state`` has expired or expires within ``margin`` seconds: a dataset
    registered with it would give the enclave a 403."""
    from nitronb.s3.presign import split_url, url_expiry

    now = now or datetime.now(timezone.utc)
    for name, what in (("input_url", "download (GET)"), ("output_url", "upload (PUT)")):
        url = state.get(name)
        end = url_expiry(url) if url else None
        if end is None or end > now + timedelta(seconds=margin):
            continue
        location = split_url(url)[0]
        if end <= now:
            said = f"the presigned {what} URL that 03 made expired at {shown_time(end)}"
        else:
            said = (f"the presigned {what} URL that 03 made expires at {shown_time(end)}, in "
                    f"less than {margin:g} s: too soon for a run")
        raise PresignedURLExpiredError(f"{said}.", url=location,
                                       hint="Run 03 again (it presigns new URLs), then 04.")


def run_failure_hint(reason: str, state: Mapping[str, Any], *, refused: bool,
                     now: datetime | None = None) -> str:
    """The hint of the error 08 raises when the enclave uploaded no result, from the log line
    that says why (``reason``; ``refused``: the launcher was refused before the app ran).

    The store's refusals (an app's ``HTTP 403 (AccessDenied)``, ``SignatureDoesNotMatch``, an
    expired URL) get the presigned-URL hint; the manager's refusal of the release (a withdrawn
    or superseded version, a revoked whitelisting task) says what to do about the approval."""
    import re

    from nitronb.s3.presign import url_lifetime

    manager = refused or reason.startswith("[enclave-os] ")
    if refused and re.search(r"by the manager refused \(HTTP 403\)", reason):
        if re.search(r"\) was withdrawn by ", reason):
            return ("The approval of this workflow version was withdrawn: run 07 again so that "
                    "its parties approve a new version, then 08.")
        if re.search(r"\) was superseded by version \d+", reason):
            return ("A newer version of this workflow was approved after the one 07 recorded: "
                    "run 07 again for the version that runs now, then 08.")
        if re.search(r"\btask \S+ \(.*\) was revoked by |\bbuild \S+ were revoked by ",
                     reason):
            return ("An administrator revoked a whitelisting task of this app or its build: ask "
                    "the administrator why; change the app and run 05, 06 and 07 again (a build "
                    "with the revoked measurements is refused), then 08.")
    if not manager and re.search(r"\bHTTP 403\b|AccessDenied|SignatureDoesNotMatch|"
                                 r"\bexpired\b", reason, re.IGNORECASE):
        end = urls_expiry(state)
        if end is not None and end <= (now or datetime.now(timezone.utc)):
            lifetime = url_lifetime(state.get("input_url", "")) or state.get("presign_expiry")
            made = f" (03 made them for {lifetime} s)" if lifetime else ""
            return (f"The presigned URLs expired at {shown_time(end)}{made}; run 03 and 04 "
                    "again, then 08.")
        return ("The store refused a presigned URL; run 03 and 04 again for fresh URLs, "
                "then 08.")
    if refused:
        return ("The enclave was refused before its app ran: if the image was built again, run "
                "06 and 07 again; if a whitelisting task is pending, approve it (05); then run 08 "
                "again.")
    return ("The enclave's log (printed below the run in 08) says more; fix the cause and run 08 "
            "again.")


# --- parameters -----------------------------------------------------------------------------


def check_parameter_values(parameters: Mapping[str, Any], declared_in: Mapping[str, str]) -> None:
    """Check the values that can be checked before any notebook runs: choices (``backend``,
    ``decline_party``), ranges (``expiry``, ``timeout``, ``top``), the ``encoding``'s name, an
    S3 folder's form, and that ``input_csv`` is a readable file and ``app_dir`` and
    ``workspace`` folders. ``declared_in`` maps each name to the notebook that declares it.

    Raises :class:`~nitronb.errors.NotebookError` (or :class:`~nitronb.errors.InputDataError`
    for the input CSV) naming the parameter and its notebook, in one line.
    """
    from nitronb.ccm.models import PARTIES

    def refuse(name: str, takes: str) -> NotebookError:
        return NotebookError(f"parameter {name} of {declared_in.get(name, 'the notebooks')} takes "
                             f"{takes}, not {parameters[name]!r}.",
                             hint="See `nitronb walkthrough --help` for the parameters and their "
                                  "defaults.")

    def given(name: str) -> bool:
        return name in parameters and parameters[name] not in (None, "")

    choices = {"backend": BACKENDS, "decline_party": PARTIES}
    for name, allowed in choices.items():
        if given(name) and parameters[name] not in allowed:
            raise refuse(name, " or ".join([", ".join(allowed[:-1]), allowed[-1]]))
    if given("expiry") and isinstance(parameters["expiry"], int):
        from nitronb.s3.presign import MAX_EXPIRY_SECONDS

        legacy = parameters.get("legacy_presign") is True
        if parameters["expiry"] < 1 or (not legacy and parameters["expiry"] > MAX_EXPIRY_SECONDS):
            raise refuse("expiry", f"1 to {MAX_EXPIRY_SECONDS} seconds (a presigned URL lives "
                                   "at most seven days)")
    for name, least in (("timeout", 1), ("top", 1)):
        if given(name) and isinstance(parameters[name], (int, float)) and parameters[name] < least:
            raise refuse(name, f"a number of at least {least}")
    if given("encoding"):
        from nitronb.inputs import codec_name

        codec_name(parameters["encoding"])
    if given("s3_dir"):
        from nitronb.s3.client import parse_s3_dir

        parse_s3_dir(parameters["s3_dir"])
    if given("input_csv"):
        from nitronb.inputs import check_path

        check_path(Path(parameters["input_csv"]))
    for name in ("app_dir", "workspace"):
        if given(name):
            folder = Path(parameters[name]).expanduser()
            if folder.exists() and not folder.is_dir():
                raise NotebookError(f"parameter {name} of {declared_in.get(name, 'the notebooks')}"
                                    f" names {folder}, which is a file, not a folder.",
                                    hint="Name a folder.")
            if name == "app_dir" and not folder.exists():
                raise NotebookError(f"parameter app_dir of {declared_in.get(name, 'the notebooks')}"
                                    f" names {folder}, which does not exist.",
                                    hint="Name the folder of the app's Dockerfile.")


__all__ = ["BACKENDS", "key_fingerprint", "encryption_id", "urls_id", "check_products",
           "run_products", "check_result_current", "check_result_key", "check_urls_fresh",
           "run_failure_hint", "check_parameter_values", "urls_expiry"]
