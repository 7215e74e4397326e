"""The application owner's steps: the enclave image, built, measured, registered and
whitelisted (05), and the application configuration (06)."""

from __future__ import annotations

import os
from pathlib import Path

from nitronb.errors import ValidationError
from nitronb.notebook.walkthrough import (APP_DOMAIN, APP_NAME, BACKENDS, IMAGE_NAME, Record,
                                         Walkthrough, as_walkthrough, find_named,
                                         start_local_stack)


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

    wt = as_walkthrough(workspace)
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
        from nitronb.enclave.process_image import prepare_process_image

        base = base_image or images.HOST_PYTHON
        built = prepare_process_image(app_dir, None, base, workspace=wt.workspace)
    measurements = built.measurements.as_dict()
    owner, admin = wt.client("app-owner"), wt.client("admin")
    app = find_named(owner.list_apps(), APP_NAME) or owner.create_app(
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


# --- 06 app configuration -------------------------------------------------------------------


def create_app_configuration(workspace=None, *, name: str = "describe-app-config",
                             description: str = "describe() of the input, result to the output",
                             labels: dict[str, str] | None = None) -> Record:
    """The application configuration: image, ports ``input`` (in) and ``output`` (out)."""
    wt = as_walkthrough(workspace)
    build_id = wt.need("build_id", "05_build_enclave_image")
    owner = wt.client("app-owner")
    wanted = {"name": name, "image": IMAGE_NAME, "build_id": build_id,
              "ports": {"input": "in", "output": "out"}, "labels": dict(labels or {}),
              "description": description, "config_items": {}}
    existing = find_named(owner.list_app_configs(), name)
    if existing and existing.get("build_id") == build_id:
        config = existing
    else:
        if existing:
            wanted["name"] = name = f"{name}-{build_id[-6:]}"
            config = find_named(owner.list_app_configs(), name) or owner.create_app_config(wanted)
        else:
            config = owner.create_app_config(wanted)
    wt.update(app_config_id=config["id"], app_config_name=name,
              app_config_build_id=config.get("build_id", build_id))
    return Record("application configuration", [
        ("name", name), ("image", IMAGE_NAME),
        ("ports", "input (in) ← dataset, output (out) → dataset"),
        ("configuration items", str(len(config.get("config_items") or {})))],
        {"app_config": config})
