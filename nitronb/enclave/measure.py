"""Measurements of an enclave image, as ``nitro-cli build-enclave`` reports them.

``PCR = SHA384(48 zero bytes ‖ SHA384(data))``, where ``data`` is the canonical manifest of one
part of the image (:func:`canonical_data`): PCR1 measures the enclave OS part (the launcher files
and the module that starts them), PCR2 the application part (the app's build context and its base
image reference), PCR0 the whole image (both manifests, launcher first). The manifest has no
timestamps, no owners and normalised modes, and lists files by sorted relative path, so the same
inputs give the same PCRs on every machine, whatever the engine that builds the image.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from nitronb.errors import ImageBuildError, UnsafeNameError

HASH_ALGORITHM = "Sha384"
FORMAT = b"nitronb-measure-v1"
DEFAULT_LAUNCHER_MODULE = "nitronb.enclave_os.launcher"
LABEL_PREFIX = "nitronb."
#: never part of a measured tree: caches that Python or editors leave behind
IGNORED_DIRS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ipynb_checkpoints",
                          ".git"})
IGNORED_SUFFIXES = (".pyc", ".pyo", "~", ".swp")

__all__ = [
    "Measurements", "pcr", "canonical_data", "tree_files", "measure_build_context",
    "default_launcher_files", "file_mode",
]


@dataclass(frozen=True)
class Measurements:
    """The PCRs of an enclave image, lower-case hex (96 characters each)."""

    pcr0: str
    pcr1: str
    pcr2: str
    hash_algorithm: str = HASH_ALGORITHM

    def as_dict(self) -> dict[str, str]:
        """The build record's shape: ``{"hash_algorithm", "pcr0", "pcr1", "pcr2"}``."""
        return {"hash_algorithm": self.hash_algorithm, "pcr0": self.pcr0, "pcr1": self.pcr1,
                "pcr2": self.pcr2}

    def pcr_bytes(self) -> dict[int, bytes]:
        """``{0: …, 1: …, 2: …}`` as 48-byte values, as an attestation document holds them."""
        return {0: bytes.fromhex(self.pcr0), 1: bytes.fromhex(self.pcr1),
                2: bytes.fromhex(self.pcr2)}

    def as_labels(self) -> dict[str, str]:
        """Image labels carrying these measurements."""
        return {f"{LABEL_PREFIX}{k}": v for k, v in self.as_dict().items()}

    @classmethod
    def from_dict(cls, record: Mapping[str, str]) -> "Measurements":
        """Read a build record (or :meth:`as_labels` output); raise if a PCR is malformed."""
        get = (lambda k: record.get(k) or record.get(f"{LABEL_PREFIX}{k}"))
        values = {}
        for name in ("pcr0", "pcr1", "pcr2"):
            value = get(name)
            if not isinstance(value, str) or len(value) != 96 or not _is_hex(value):
                raise ImageBuildError(f"the measurements lack a valid {name}: a PCR is 96 hex "
                                      f"characters (SHA-384).")
            values[name] = value.lower()
        algorithm = get("hash_algorithm") or HASH_ALGORITHM
        if algorithm != HASH_ALGORITHM:
            raise ImageBuildError(f"unsupported hash algorithm {algorithm!r}; nitronb measures "
                                  f"with {HASH_ALGORITHM}.")
        return cls(hash_algorithm=algorithm, **values)


def pcr(data: bytes) -> str:
    """``SHA384(48 zero bytes ‖ SHA384(data))`` as lower-case hex: one extend of a zero PCR."""
    return hashlib.sha384(bytes(48) + hashlib.sha384(data).digest()).hexdigest()


def file_mode(mode: int) -> int:
    """The normalised mode a file is measured (and copied) with: 0755 if executable, else 0644."""
    return 0o755 if mode & stat.S_IXUSR else 0o644


def canonical_data(part: str, files: Mapping[str, str | os.PathLike[str]],
                   extras: Mapping[str, str] | None = None) -> bytes:
    """The measured bytes of one part of an image.

    ``files`` maps each relative path inside the part to the file on disk; ``extras`` are
    named strings measured with it (such as the base image). The layout is::

        nitronb-measure-v1 NUL part NUL <number of entries> LF
        extra NUL name NUL value LF                   (sorted by name)
        file NUL path NUL mode (octal) NUL sha384 LF  (sorted by path)
    """
    extras = dict(extras or {})
    lines = [b"\0".join([FORMAT, _text(part, "part"), str(len(files) + len(extras)).encode()])]
    for name in sorted(extras):
        lines.append(b"\0".join([b"extra", _text(name, "extra name"),
                                 _text(extras[name], "extra value")]))
    for arcname in sorted(files, key=lambda n: n.encode("utf-8")):
        _check_arcname(arcname)
        digest, mode = _hash_file(Path(files[arcname]))
        lines.append(b"\0".join([b"file", arcname.encode("utf-8"), f"{mode:o}".encode(),
                                 digest.encode()]))
    return b"\n".join(lines) + b"\n"


def tree_files(folder: str | os.PathLike[str], *, prefix: str = "") -> dict[str, Path]:
    """Every regular file under ``folder`` (caches skipped), keyed by ``prefix`` + relative path.

    Symbolic links and special files are refused: what is measured must be plain bytes.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ImageBuildError(f"{root} is not a folder; give the folder to measure.")
    found: dict[str, Path] = {}
    for current, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS)
        for name in [*dirs, *names]:
            path = Path(current) / name
            if path.is_symlink():
                raise ImageBuildError(f"{path} is a symbolic link; nitronb measures only plain "
                                      f"files and folders. Replace it with a copy of its target.")
        for name in sorted(names):
            if name.endswith(IGNORED_SUFFIXES):
                continue
            path = Path(current) / name
            if not path.is_file():
                raise ImageBuildError(f"{path} is not a regular file; remove it from {root}.")
            found[prefix + path.relative_to(root).as_posix()] = path
    if not found:
        raise ImageBuildError(f"{root} holds no file to measure.")
    return found


def launcher_data(launcher_files: Mapping[str, str | os.PathLike[str]],
                  launcher_module: str = DEFAULT_LAUNCHER_MODULE) -> bytes:
    """The PCR1 data: the launcher files and the module the image starts."""
    return canonical_data("launcher", launcher_files, {"entrypoint": launcher_module})


def application_data(app_files: Mapping[str, str | os.PathLike[str]], base_image: str) -> bytes:
    """The PCR2 data: the app's build context and its base image reference."""
    return canonical_data("application", app_files, {"base_image": base_image})


def measure_build_context(app_dir: str | os.PathLike[str],
                          launcher_files: Mapping[str, str | os.PathLike[str]] | None = None,
                          base_image: str = "", *,
                          launcher_module: str = DEFAULT_LAUNCHER_MODULE) -> Measurements:
    """The PCRs of the enclave image built from ``app_dir`` on ``base_image`` with the launcher.

    ``launcher_files`` maps paths inside the launcher tree (``nitronb/enclave_os/launcher.py`` …)
    to files; :func:`default_launcher_files` when omitted.
    """
    if not base_image:
        raise ImageBuildError("no base image given: the base image reference is part of PCR2.")
    if launcher_files is None:
        launcher_files = default_launcher_files()
    first = launcher_data(launcher_files, launcher_module)
    second = application_data(tree_files(app_dir), base_image)
    return Measurements(pcr0=pcr(first + second), pcr1=pcr(first), pcr2=pcr(second))


#: the launcher files measured when there is no ``nitronb/enclave_os/`` package (those present)
LAUNCHER_FALLBACK = ("enclave_launcher.py", "nsm.py")


def default_launcher_files(package_dir: str | os.PathLike[str] | None = None,
                           fallback: Iterable[str] = LAUNCHER_FALLBACK) -> dict[str, Path]:
    """The launcher tree that goes into an enclave image, keyed by its path inside the image.

    Every file of the ``nitronb/enclave_os/`` package, which depends on nothing else of nitronb
    (``nitronb`` is then a namespace package in the image, so ``python3 -m
    nitronb.enclave_os.launcher`` runs); without that package, the ``fallback`` modules that exist.
    """
    package = Path(package_dir) if package_dir else Path(__file__).resolve().parent.parent
    enclave = package / "enclave_os"
    if enclave.is_dir():
        return tree_files(enclave, prefix="nitronb/enclave_os/")
    files = {f"nitronb/{name}": package / name for name in fallback if (package / name).is_file()}
    if not files:
        raise ImageBuildError(f"no launcher found: {enclave} does not exist.")
    return files


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha384()
    try:
        with open(path, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise ImageBuildError(f"{path} is not a regular file; only files are measured.")
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except FileNotFoundError:
        raise ImageBuildError(f"{path} does not exist; it was listed to be measured.") from None
    return digest.hexdigest(), file_mode(mode)


def _check_arcname(name: str) -> None:
    parts = name.split("/")
    if (not name or name.startswith("/") or "\0" in name or "\\" in name
            or any(p in ("", ".", "..") for p in parts)):
        raise UnsafeNameError(name, what="path inside the image")


def _text(value: str, what: str) -> bytes:
    if not isinstance(value, str) or "\0" in value or "\n" in value:
        raise ImageBuildError(f"the {what} {value!r} cannot be measured: it must be text without "
                              f"NUL or newline.")
    return value.encode("utf-8")


def _is_hex(value: str) -> bool:
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True
