"""The data and output owners' steps: keys (01), the encrypted input (02), the upload and the
presigned URLs (03), the dataset definitions (04), and the decrypted output (09)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from nitronb.keys import fingerprint
from nitronb.notebook import checks
from nitronb.notebook.walkthrough import (INPUT_OBJECT, OUTPUT_OBJECT, Record, as_walkthrough,
                                         sample_csv, start_local_stack)


# --- 01 keys --------------------------------------------------------------------------------


def generate_keys(workspace=None, *, replace: bool = False) -> Record:
    """The data owner's input key and the output owner's output key (64 hex, mode 0600).

    Existing keys are kept unless ``replace``: files encrypted with them stay readable.
    """
    from nitronb.keys import read_key_file, write_key_file

    wt = as_walkthrough(workspace)
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

    wt = as_walkthrough(workspace)
    key = read_key_file(wt.need("input_key", "01_generate_keys"))
    source = Path(input_csv).expanduser().resolve() if input_csv else sample_csv()
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

    wt = as_walkthrough(workspace)
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

    wt = as_walkthrough(workspace)
    state = wt.state()
    input_url = wt.need("input_url", "03_upload_and_presign")
    output_url = state["output_url"]
    checks.check_products(state, "04")
    checks.check_urls_fresh(state)
    source = Path(state["input_csv"]) if state.get("input_csv") else sample_csv()
    derived = input_defaults(source, sample=source.resolve() == sample_csv(),
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
    from nitronb.keys import read_key_file
    from nitronb.results import decrypt_run_result
    from nitronb.s3 import transfers

    from nitronb.errors import DecryptionError, ResultDecryptionError, RunError

    wt = as_walkthrough(workspace)
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
