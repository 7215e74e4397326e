"""Enclave images for the process backend: the measured files copied into a folder,
``<workspace>/images/<pcr0[:16]>/`` (``app/``, ``launcher/``, ``image.json``, read-only), and
verified against their measurements before each launch. The layout is the one every enclave image
has (:mod:`nitronb.enclave.image`); a folder and a container image of the same inputs have the
same PCRs."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

from nitronb.enclave.image import (EnclaveImage, _dockerfile_cmd, _measure, _measure_tree, _record,
                                   _record_bytes)
from nitronb.enclave.measure import (DEFAULT_LAUNCHER_MODULE, Measurements, default_launcher_files,
                                     file_mode, tree_files)
from nitronb.errors import ImageBuildError
from nitronb.workspace import workspace_dir

__all__ = ["prepare_process_image", "verify_process_image"]


def prepare_process_image(app_dir: str | os.PathLike[str],
                          launcher_files: Mapping[str, str | os.PathLike[str]] | None = None,
                          base_image_ref: str = "", *,
                          launcher_module: str = DEFAULT_LAUNCHER_MODULE,
                          workspace: str | os.PathLike[str] | None = None) -> EnclaveImage:
    """Copy the measured files into ``<workspace>/images/<pcr0[:16]>/`` (``app/``, ``launcher/``
    and ``image.json``, files read-only) so that what the process backend runs is exactly what
    was measured. Idempotent: an existing folder is verified, and rebuilt if it was altered."""
    if not base_image_ref:
        raise ImageBuildError("no base image reference given: it is part of PCR2.")
    launcher_files = dict(launcher_files or default_launcher_files())
    app_files = tree_files(app_dir)
    measurements = _measure(launcher_files, app_files, base_image_ref, launcher_module)
    images = workspace_dir(workspace) / "images"
    images.mkdir(parents=True, exist_ok=True)
    folder = images / measurements.pcr0[:16]
    if folder.exists():
        try:
            found = verify_process_image(folder)
        except ImageBuildError:
            found = None
        if found is not None and found.measurements == measurements:
            return found
        shutil.rmtree(folder)
    record = _record(measurements, base_image_ref, launcher_module, _dockerfile_cmd(app_files),
                     app_dir)
    record.update(_process_notes(app_files))
    staging = Path(tempfile.mkdtemp(dir=images, prefix=".staging-"))
    try:
        _copy_tree(app_files, staging / "app")
        _copy_tree(launcher_files, staging / "launcher")
        (staging / "image.json").write_bytes(_record_bytes(record))
        os.chmod(staging / "image.json", 0o444)
        os.chmod(staging, 0o755)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return verify_process_image(folder)


def _process_notes(app_files: Mapping[str, Path]) -> dict:
    """What the process backend leaves out of the image: its RUN lines (still measured)."""
    from nitronb.enclave.sandbox import not_run_lines

    return {"not_run_by_process_backend": not_run_lines(app_files)}


def verify_process_image(folder: str | os.PathLike[str]) -> EnclaveImage:
    """Re-measure a prepared image folder; raise :class:`ImageBuildError` unless it matches its
    record (call it right before launching)."""
    folder = Path(folder)
    found, record = _measure_tree(folder)
    base_image, module = record["base_image"], record["launcher_module"]
    if found != Measurements.from_dict(record["measurements"]) or folder.name != found.pcr0[:16]:
        raise ImageBuildError(f"the image folder {folder} was altered: its files no longer match "
                              f"the measurements it was prepared with.",
                              hint="Prepare the image again.")
    return EnclaveImage(reference=str(folder), backend="process", measurements=found,
                        app_dir=Path(record.get("app_dir") or folder / "app"),
                        base_image=base_image, launcher_module=module,
                        command=tuple(record.get("command") or ()))


def _copy_tree(files: Mapping[str, str | os.PathLike[str]], dest: Path) -> None:
    for name in sorted(files):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(files[name], "rb") as src:
            mode = file_mode(os.fstat(src.fileno()).st_mode)
            with open(target, "xb") as dst:
                shutil.copyfileobj(src, dst)
        os.chmod(target, mode & 0o555)
