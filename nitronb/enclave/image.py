"""Enclave images: build the app image, convert it into an enclave image, or prepare the same
image as a folder for the process backend.

The process backend's images (folders) are prepared by :mod:`nitronb.enclave.process_image`.

Whatever the backend, an image's PCRs are :func:`nitronb.enclave.measure.measure_build_context` of its
inputs (the app's build context, the base image reference, the launcher files), so an image built
by Docker, by Podman, or prepared as a folder has the same measurements. The engine is sent
exactly the measured files, as a tar with fixed owners, modes and times.

Every enclave image carries its measured inputs in one tree, the same in a container image (at
``/opt/nitronb``) and in a process image folder: ``launcher/`` (the launcher tree, the
entrypoint's import root), ``app/`` (the app's build context) and ``image.json`` (base image,
launcher module, app command, measurements). Measuring that tree again gives the image's PCRs
without trusting its labels (:func:`verify_container_image`, :func:`verify_process_image`).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from nitronb.errors import ImageBuildError
from nitronb.enclave.measure import (DEFAULT_LAUNCHER_MODULE, Measurements, application_data,
                                     default_launcher_files, file_mode, launcher_data, pcr, tree_files)

if TYPE_CHECKING:  # pragma: no cover
    import docker

#: where an enclave image keeps its measured inputs, and the launcher's import root
IMAGE_ROOT = "/opt/nitronb"
LAUNCHER_ROOT = f"{IMAGE_ROOT}/launcher"
APP_LABEL_PCR2 = "nitronb.app.pcr2"
APP_LABEL_BASE = "nitronb.app.base_image"
LogSink = Callable[[str], None]

__all__ = [
    "default_app_dir", "default_base_image", "EnclaveImage", "build_app_image", "app_base_image",
    "convert_to_enclave_image", "verify_container_image", "image_measurements",
    "launcher_command", "IMAGE_ROOT", "LAUNCHER_ROOT",
]


def default_app_dir() -> Path:
    """The tutorial's app: ``enclave_image/`` beside the nitronb package (a source checkout), else
    in the current folder."""
    beside = Path(__file__).resolve().parents[2] / "enclave_image"
    return beside if (beside / "Dockerfile").is_file() else Path.cwd() / "enclave_image"


#: the base of a process image: the host's own Python, named so in PCR2
HOST_PYTHON = "python3 (host)"


def default_base_image() -> str:
    """``$NITRONB_BASE_IMAGE``, else the Debian base image that nitronb makes for Podman."""
    from nitronb.enclave.engine import BASE_IMAGE_NAME

    return os.environ.get("NITRONB_BASE_IMAGE") or BASE_IMAGE_NAME


@dataclass(frozen=True)
class EnclaveImage:
    """An enclave image ready to launch.

    ``reference`` is the image tag (backend ``"container"``) or the image folder (``"process"``).
    """

    reference: str
    backend: str
    measurements: Measurements
    app_dir: Path
    base_image: str = ""
    launcher_module: str = DEFAULT_LAUNCHER_MODULE
    image_id: str | None = None
    command: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict:
        """A JSON-friendly record of the image."""
        return {"reference": self.reference, "backend": self.backend,
                "measurements": self.measurements.as_dict(), "app_dir": str(self.app_dir),
                "base_image": self.base_image, "launcher_module": self.launcher_module,
                "image_id": self.image_id, "command": list(self.command)}


def launcher_command(launcher_module: str = DEFAULT_LAUNCHER_MODULE,
                     root: str = LAUNCHER_ROOT) -> list[str]:
    """The enclave image's entrypoint: run ``launcher_module`` from ``root``, isolated from the
    app's Python settings; the app's command follows as the launcher's arguments."""
    bootstrap = (f"import runpy, sys; sys.path.insert(0, {root!r}); "
                 f"runpy.run_module({launcher_module!r}, run_name='__main__', alter_sys=True)")
    return ["python3", "-I", "-c", bootstrap]


# --- container backend ---------------------------------------------------------------------


def build_app_image(context_dir: str | os.PathLike[str], tag: str, *, base_image: str = "",
                    engine: "docker.DockerClient | None" = None,
                    on_log: LogSink | None = None, no_cache: bool = False) -> str:
    """Build the app image ``tag`` from ``context_dir``; return its image id.

    The image is labelled and measured with the base its Dockerfile really starts from
    (:func:`app_base_image`): ``base_image`` is passed as the ``BASE_IMAGE`` build argument only
    when the Dockerfile declares ``ARG BASE_IMAGE``. A base the engine lacks is pulled; one it
    cannot pull raises :class:`ImageBuildError` naming the ``tag`` command that provides it. Each
    build log line goes to ``on_log``; a failed step raises :class:`ImageBuildError` with its
    log. ``no_cache`` rebuilds every step."""
    from nitronb.enclave.dockerfile import declared_args

    files = tree_files(context_dir)
    base = app_base_image(context_dir, base_image)
    client = engine or _require_engine()
    _ensure_base(client, base, Path(context_dir) / "Dockerfile")
    declared = declared_args(files["Dockerfile"].read_text(encoding="utf-8", errors="replace"))
    buildargs = {"BASE_IMAGE": base_image} if base_image and "BASE_IMAGE" in declared else None
    labels = {APP_LABEL_PCR2: pcr(application_data(files, base)), APP_LABEL_BASE: base}
    return _build(client, _context_tar(files), tag, what=f"the app image {tag}",
                  buildargs=buildargs, labels=labels, on_log=on_log, no_cache=no_cache)


def app_base_image(context_dir: str | os.PathLike[str], base_image: str = "") -> str:
    """The image the app's Dockerfile is built on: its final ``FROM``, with the ``ARG`` defaults
    and ``BASE_IMAGE=base_image`` (only if the Dockerfile declares that ``ARG``) substituted.
    This is the base image PCR2 names. Raises :class:`ImageBuildError` if there is no
    Dockerfile or its ``FROM`` has no value."""
    from nitronb.enclave.dockerfile import base_image as dockerfile_base

    path = Path(context_dir) / "Dockerfile"
    if not path.is_file():
        raise ImageBuildError(f"{context_dir} has no Dockerfile.")
    text = path.read_text(encoding="utf-8", errors="replace")
    return dockerfile_base(text, {"BASE_IMAGE": base_image} if base_image else None,
                           where=str(path))


def _ensure_base(client, base: str, dockerfile: Path) -> None:
    """Make sure the engine has ``base``: pull it if missing; say how to provide it if not."""
    docker_errors = _docker_errors()
    try:
        client.images.get(base)
        return
    except docker_errors.ImageNotFound:
        pass
    except docker_errors.APIError as exc:
        raise ImageBuildError(f"cannot inspect the base image {base}: {_explain(exc)}") from None
    try:
        client.images.pull(base)
        client.images.get(base)
        return
    except docker_errors.DockerException:
        pass
    tool = "podman" if _is_podman(client) else "docker"
    raise ImageBuildError(
        f"the base image {base} (FROM in {dockerfile}) is not in the container engine, and it "
        f"cannot be pulled.",
        hint=f"Pull it where a registry is reachable, or give a local image that name: "
             f"`{tool} tag {default_base_image()} {base}`.")


def convert_to_enclave_image(app_image: str, enclave_tag: str, *,
                             app_dir: str | os.PathLike[str],
                             base_image: str | None = None,
                             launcher_files: Mapping[str, str | os.PathLike[str]] | None = None,
                             launcher_module: str = DEFAULT_LAUNCHER_MODULE,
                             engine: "docker.DockerClient | None" = None,
                             on_log: LogSink | None = None) -> EnclaveImage:
    """Derive the enclave image ``enclave_tag`` from ``app_image``: add the launcher tree under
    ``/opt/nitronb``, make the launcher the entrypoint with the app's command as its arguments,
    and label it with its PCRs.

    ``app_dir`` is the app's build context and ``base_image`` its base (read from the app image's
    label when omitted); they are measured, and must be what ``app_image`` was built from.
    """
    client = engine or _require_engine()
    docker_errors = _docker_errors()
    try:
        app = client.images.get(app_image)
    except docker_errors.ImageNotFound:
        raise ImageBuildError(f"the app image {app_image} does not exist; "
                              f"build it first.") from None
    except docker_errors.APIError as exc:
        raise ImageBuildError(f"cannot inspect the app image {app_image}: "
                              f"{_explain(exc)}") from None
    config = app.attrs.get("Config") or {}
    app_labels = config.get("Labels") or {}
    base_image = base_image or app_labels.get(APP_LABEL_BASE)
    if not base_image:
        raise ImageBuildError(f"{app_image} does not say which base image it was built on; "
                              f"pass base_image.")
    launcher_files = dict(launcher_files or default_launcher_files())
    app_files = tree_files(app_dir)
    measurements = _measure(launcher_files, app_files, base_image, launcher_module)
    built_from = app_labels.get(APP_LABEL_PCR2)
    if built_from and built_from != measurements.pcr2:
        raise ImageBuildError(f"{app_image} was not built from {app_dir} on {base_image}: its "
                              f"application measurement differs.",
                              hint="Rebuild the app image from this folder, then convert it.")
    command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    if not command:
        raise ImageBuildError(f"{app_image} has no CMD or ENTRYPOINT: nothing for the launcher "
                              f"to start.")
    labels = {**measurements.as_labels(), "nitronb.base_image": base_image,
              "nitronb.launcher_module": launcher_module, "nitronb.app_image": app.id}
    dockerfile = "\n".join([
        f"FROM {app.id}",
        f"COPY image/ {IMAGE_ROOT}/",
        "LABEL " + " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())),
        f"ENTRYPOINT {json.dumps(launcher_command(launcher_module))}",
        f"CMD {json.dumps(command)}",
        "",
    ]).encode()
    record = _record(measurements, base_image, launcher_module, command, app_dir)
    context = {f"image/launcher/{name}": Path(path) for name, path in launcher_files.items()}
    context.update({f"image/app/{name}": Path(path) for name, path in app_files.items()})
    extra = {"Dockerfile": dockerfile, "image/image.json": _record_bytes(record)}
    image_id = _build(client, _context_tar(context, extra=extra), enclave_tag,
                      what=f"the enclave image {enclave_tag}", on_log=on_log)
    return EnclaveImage(reference=enclave_tag, backend="container", measurements=measurements,
                        app_dir=Path(app_dir).resolve(), base_image=base_image,
                        launcher_module=launcher_module, image_id=image_id,
                        command=tuple(command))


def verify_container_image(image: str,
                           engine: "docker.DockerClient | None" = None) -> Measurements:
    """Measure an enclave image from the inputs it carries at ``/opt/nitronb`` (not from its
    labels); raise :class:`ImageBuildError` if they no longer match what it was converted with."""
    return inspect_container_image(image, engine)[0]


def inspect_container_image(image: str, engine: "docker.DockerClient | None" = None
                            ) -> tuple[Measurements, dict]:
    """:func:`verify_container_image`, plus what to launch: ``{"image_id", "entrypoint",
    "command"}`` — the image measured (by id, so a re-tag cannot swap it), the launcher, and the
    measured Dockerfile's command (the image's own ENTRYPOINT and CMD are not trusted)."""
    client = engine or _require_engine()
    docker_errors = _docker_errors()
    try:
        image_id = client.images.get(image).id
        container = client.containers.create(image_id)
    except docker_errors.ImageNotFound:
        raise ImageBuildError(f"the image {image} does not exist.") from None
    except docker_errors.APIError as exc:
        raise ImageBuildError(f"cannot open the image {image}: {_explain(exc)}") from None
    try:
        with tempfile.TemporaryDirectory(prefix="nitronb-measure-") as tmp:
            with tempfile.SpooledTemporaryFile(max_size=32 << 20) as spool:
                try:
                    chunks, _ = container.get_archive(IMAGE_ROOT)
                    for chunk in chunks:
                        spool.write(chunk)
                except docker_errors.NotFound:
                    raise ImageBuildError(f"{image} is not an enclave image: it has no "
                                          f"{IMAGE_ROOT}; convert it first.") from None
                spool.seek(0)
                with tarfile.open(fileobj=spool, mode="r:") as tar:
                    tar.extractall(tmp, filter="data")
            found, record = _measure_tree(Path(tmp) / Path(IMAGE_ROOT).name)
    finally:
        container.remove(force=True)
    if found != Measurements.from_dict(record["measurements"]):
        raise ImageBuildError(f"{image} was altered after it was converted: the inputs it "
                              f"carries no longer match its measurements.",
                              hint="Convert the app image again.")
    if not record["command"]:
        raise ImageBuildError(f"{image}'s Dockerfile names no exec-form CMD to run.")
    return found, {"image_id": image_id, "command": record["command"],
                   "entrypoint": launcher_command(record["launcher_module"])}


def image_measurements(image: str, engine: "docker.DockerClient | None" = None) -> Measurements:
    """The PCRs an enclave image was labelled with by :func:`convert_to_enclave_image` (a claim;
    :func:`verify_container_image` measures)."""
    client = engine or _require_engine()
    docker_errors = _docker_errors()
    try:
        labels = (client.images.get(image).attrs.get("Config") or {}).get("Labels") or {}
    except docker_errors.ImageNotFound:
        raise ImageBuildError(f"the image {image} does not exist.") from None
    if "nitronb.pcr0" not in labels:
        raise ImageBuildError(f"{image} is not an enclave image (it has no PCR labels); "
                              f"convert it first.")
    return Measurements.from_dict(labels)


def _build(engine, context: io.BufferedIOBase, tag: str, *, what: str,
           buildargs: dict[str, str] | None = None, labels: dict[str, str] | None = None,
           on_log: LogSink | None, no_cache: bool = False) -> str:
    client = engine or _require_engine()
    docker_errors = _docker_errors()
    step: list[str] = []
    image_id = None
    try:
        stream = client.api.build(fileobj=context, custom_context=True, tag=tag, rm=True,
                                  forcerm=True, pull=False, decode=True, buildargs=buildargs,
                                  labels=labels, nocache=no_cache)
        for chunk in stream:
            if "error" in chunk or "errorDetail" in chunk:
                message = chunk.get("error") or chunk["errorDetail"].get("message", "")
                raise ImageBuildError(_step_failure(what, message, step))
            if "aux" in chunk and isinstance(chunk["aux"], dict):
                image_id = chunk["aux"].get("ID") or image_id
            for line in (chunk.get("stream") or "").splitlines():
                if line.startswith(("STEP ", "Step ")):
                    step = []
                step.append(line)
                if on_log is not None:
                    on_log(line)
    except docker_errors.APIError as exc:
        raise ImageBuildError(_step_failure(what, _explain(exc), step)) from None
    finally:
        context.close()
    try:
        return client.images.get(tag).id
    except docker_errors.ImageNotFound:
        if image_id:
            return image_id
        raise ImageBuildError(_step_failure(what, "the engine reported no image", step)) from None


def _step_failure(what: str, message: str, step: list[str]) -> str:
    log = "\n".join(step[-30:])
    return f"building {what} failed: {message.strip()}" + (f"\n{log}" if log else "")


def _context_tar(files: Mapping[str, Path], extra: Mapping[str, bytes] | None = None
                 ) -> io.BufferedIOBase:
    """A build context holding exactly ``files``, with fixed owners, modes and times."""
    spool = tempfile.SpooledTemporaryFile(max_size=32 << 20)
    with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = {name: ("file", path) for name, path in files.items()}
        entries.update({name: ("bytes", data) for name, data in (extra or {}).items()})
        for name in sorted(entries):
            kind, source = entries[name]
            info = tarfile.TarInfo(name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            if kind == "bytes":
                info.size, info.mode = len(source), 0o644
                tar.addfile(info, io.BytesIO(source))
            else:
                with open(source, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    info.size, info.mode = st.st_size, file_mode(st.st_mode)
                    tar.addfile(info, fh)
    spool.seek(0)
    return spool


def _is_podman(client) -> bool:
    try:
        components = client.version().get("Components") or []
    except Exception:  # noqa: BLE001 - only the hint depends on it
        return "podman" in str(getattr(client, "engine_url", ""))
    return any("podman" in str(c.get("Name", "")).lower() for c in components)


def _require_engine():
    from nitronb.enclave.engine import require_engine

    return require_engine()


def _docker_errors():
    import docker.errors

    return docker.errors


def _explain(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    return str(explanation or exc)


def _measure(launcher_files: Mapping[str, str | os.PathLike[str]],
             app_files: Mapping[str, str | os.PathLike[str]], base_image: str,
             launcher_module: str) -> Measurements:
    first = launcher_data(launcher_files, launcher_module)
    second = application_data(app_files, base_image)
    return Measurements(pcr0=pcr(first + second), pcr1=pcr(first), pcr2=pcr(second))


def _record(measurements: Measurements, base_image: str, launcher_module: str,
            command: list[str], app_dir: str | os.PathLike[str]) -> dict:
    return {"measurements": measurements.as_dict(), "base_image": base_image,
            "launcher_module": launcher_module, "command": list(command),
            "app_dir": str(Path(app_dir).resolve())}


def _record_bytes(record: dict) -> bytes:
    return (json.dumps(record, indent=2) + "\n").encode()


def _measure_tree(folder: Path) -> tuple[Measurements, dict]:
    """Measure an image tree (``launcher/``, ``app/``, ``image.json``); return it and its record."""
    try:
        record = json.loads((folder / "image.json").read_text(encoding="utf-8"))
        Measurements.from_dict(record["measurements"])
        base_image, module = record["base_image"], record["launcher_module"]
    except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError, ImageBuildError):
        raise ImageBuildError(f"{folder} is not an enclave image tree (no valid "
                              f"image.json).") from None
    app_files = tree_files(folder / "app")
    found = _measure(tree_files(folder / "launcher"), app_files, base_image, module)
    # the command is the measured Dockerfile's CMD: what image.json says is not trusted
    record["command"] = _dockerfile_cmd(app_files)
    return found, record


def _dockerfile_cmd(app_files: Mapping[str, Path]) -> list[str]:
    """The exec-form CMD of the app's Dockerfile, if it has one."""
    from nitronb.enclave.dockerfile import exec_form, instructions

    path = app_files.get("Dockerfile")
    if path is None:
        return []
    command: list[str] = []
    for name, rest in instructions(Path(path).read_text(encoding="utf-8", errors="replace")):
        if name == "CMD":
            command = exec_form(rest) or command
    return command
