"""Running the walk-through's notebooks with papermill, in order, into a run folder: their
parameters as papermill's command line reads them, checked against each notebook's defaults, and
the ``nitronb`` Jupyter kernel they run on."""

from __future__ import annotations

import ast
import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from nitronb.errors import NitronbError, NotebookError
from nitronb.notebook.kernels import AHEAD, KernelChain

#: the Jupyter kernel the notebooks run on: this interpreter, wherever ``nitronb`` is installed
KERNEL_NAME = "nitronb"
KERNEL_DISPLAY_NAME = "Python 3 (nitronb)"

#: parameters that name a file or folder; relative values are read from the caller's folder
PATH_PARAMETERS = ("workspace", "input_csv", "app_dir", "long_description")


def notebooks_dir() -> Path:
    """The ``notebooks/`` folder of the project (beside the package)."""
    here = Path(__file__).resolve().parents[2] / "notebooks"
    if not here.is_dir():
        raise NitronbError(f"the notebooks folder {here} is missing; run from a checkout of "
                           "nitronb (pip install -e .).")
    return here


def walkthrough_notebooks(folder: Path | None = None) -> list[Path]:
    """The numbered notebooks ``01_…`` to ``09_…``, in order (the index ``00`` is not run)."""
    folder = folder or notebooks_dir()
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if not p.name.startswith("00_"))
    if not found:
        raise NitronbError(f"no walk-through notebook in {folder}.")
    return found


def working_copy(folder: str | os.PathLike[str], *, reset: bool = False
                 ) -> tuple[list[Path], list[Path]]:
    """Copy the notebooks (``00_…`` to ``09_…``) into ``folder`` for people to step through and
    edit, leaving the installed ones untouched. A notebook already in ``folder`` is kept unless
    ``reset``. Returns ``(copied, kept)``; raises :class:`NitronbError` if ``folder`` is a file.
    """
    import shutil

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NitronbError(f"{folder} is a file, not a folder for the notebooks.",
                           hint="Name a folder (it is created if missing).")
    folder.mkdir(parents=True, exist_ok=True)
    installed = notebooks_dir()
    if folder.resolve() == installed.resolve():
        raise NitronbError(f"{folder} is the installed notebooks folder; a working copy must be "
                           "somewhere else.", hint="Name another folder, or leave DIR out.")
    copied, kept = [], []
    for notebook in sorted(installed.glob("[0-9][0-9]_*.ipynb")):
        target = folder / notebook.name
        if target.is_symlink():
            # a link could make the copy write somewhere else (a folder others can write to)
            raise NitronbError(f"{target} is a symbolic link; the working copy writes only "
                               "regular files.", hint="Remove the link, or choose another folder.")
        if target.exists() and not reset:
            kept.append(target)
            continue
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(installed / notebook.name, tmp)
        os.replace(tmp, target)  # replaces the name, never writes through it
        copied.append(target)
    return copied, kept


def import_papermill():
    """The ``papermill`` module, imported without the IRI format checks of jsonschema (which
    nbformat imports): with ``rfc3987_syntax`` installed they compile some forty grammars at
    import, seconds of start-up, and no notebook field is an IRI. Other importers of
    ``rfc3987_syntax`` afterwards get it as usual."""
    import importlib

    if "papermill.execute" not in sys.modules and "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[assignment]
        try:
            importlib.import_module("papermill")
        finally:
            if sys.modules.get("rfc3987_syntax", False) is None:
                del sys.modules["rfc3987_syntax"]
    return importlib.import_module("papermill")


# --- parameters -----------------------------------------------------------------------------


class _Source(str):
    """The source text of a default that is not a Python literal (its type is unknown)."""


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """The names and literal defaults of a notebook's ``parameters`` cell: ``{name: value}``
    (a default that is not a Python literal is left as its source text)."""
    papermill = import_papermill()
    declared = {}
    for name, spec in papermill.inspect_notebook(str(notebook)).items():
        source = spec.get("default")
        try:
            declared[name] = ast.literal_eval(source) if source is not None else None
        except (ValueError, SyntaxError):
            declared[name] = _Source(source)
    return declared


def resolve_type(text: str) -> Any:
    """A ``-p NAME VALUE`` value as papermill's command line reads it: ``True``, ``False``,
    ``None``, an int, a float, else the text itself."""
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def cli_parameters(*, values: Iterable[tuple[str, str]] = (), raw: Iterable[tuple[str, str]] = (),
                   yaml_texts: Iterable[str] = (), files: Iterable[str | os.PathLike[str]] = ()
                   ) -> tuple[dict[str, Any], dict[str, str]]:
    """Parameters from papermill's options, merged in papermill's order (``-f`` files, then
    ``-y`` YAML, then ``-p``, then ``-r``; a later one wins).

    Returns ``(parameters, texts)``: ``texts`` keeps each ``-p`` and ``-r`` value as typed, so
    that a number given for a text parameter stays text (see :func:`check_parameters`).
    Raises :class:`NotebookError` for a file that cannot be read or YAML that is not a mapping.
    """
    parameters: dict[str, Any] = {}
    texts: dict[str, str] = {}
    for path in files:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise NotebookError(f"cannot read the parameters file {path}: "
                                f"{getattr(exc, 'strerror', None) or exc}.") from None
        _merge_yaml(parameters, texts, text, f"the parameters file {path}")
    for text in yaml_texts:
        _merge_yaml(parameters, texts, text, "the -y YAML")
    for name, text in values:
        parameters[name], texts[name] = resolve_type(text), text
    for name, text in raw:
        parameters[name], texts[name] = text, text
    return parameters, texts


def _merge_yaml(parameters: dict[str, Any], texts: dict[str, str], text: str, where: str) -> None:
    import yaml
    import_papermill()
    from papermill.iorw import NoDatesSafeLoader

    try:
        loaded = yaml.load(text, Loader=NoDatesSafeLoader) or {}
    except yaml.YAMLError as exc:
        raise NotebookError(f"{where} is not YAML: {' '.join(str(exc).split())}.") from None
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise NotebookError(f"{where} must be a YAML mapping of parameter names to values.")
    for name, value in loaded.items():
        parameters[name] = value
        texts.pop(name, None)


def check_parameters(parameters: Mapping[str, Any], declared_by: Mapping[Path, Mapping[str, Any]],
                     *, texts: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Check each value against the type of the default of every notebook declaring it.

    ``True``/``False`` defaults take booleans only; int defaults ints; float defaults ints or
    floats (given as floats); text defaults text (a ``-p`` value in ``texts`` is taken as typed,
    so ``-p input_name 2024`` is ``"2024"``); dict and list defaults a mapping or list (YAML or
    JSON text too, and ``key=value;…`` text for labels); a ``None`` default anything.
    Returns the values as the notebooks receive them; raises :class:`NotebookError` naming the
    first notebook whose parameter does not take a value.
    """
    texts = dict(texts or {})
    checked: dict[str, Any] = {}
    for name, value in parameters.items():
        _json_only(name, value)
        for notebook, declared in declared_by.items():
            if name in declared:
                value = _typed(name, value, texts.get(name), declared[name], Path(notebook).stem)
        checked[name] = value
    return checked


def _json_only(name: str, value: Any, *, depth: int = 0) -> None:
    """Refuse a value that is not made of JSON's types (text, numbers, booleans, null, lists and
    mappings with text keys): papermill writes other types into the parameters cell as their
    ``str()``, which is not a literal and may be code (YAML's ``!!pairs`` gives tuples)."""
    if depth > 32:
        raise NotebookError(f"parameter {name} is nested deeper than 32 levels.")
    if value is None or isinstance(value, (str, bool, int, float)):
        return
    if isinstance(value, list):
        for item in value:
            _json_only(name, item, depth=depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotebookError(f"parameter {name} has a key of type {type(key).__name__} "
                                    f"({key!r}); mappings take text keys.")
            _json_only(name, item, depth=depth + 1)
        return
    raise NotebookError(f"parameter {name} holds a {type(value).__name__}, which a notebook "
                        "parameter cannot take.",
                        hint="Use text, numbers, True/False, None, lists and mappings (plain "
                             "YAML or JSON, without tags such as !!pairs or !!set).")


def _typed(name: str, value: Any, text: str | None, default: Any, notebook: str) -> Any:
    def refuse(takes: str) -> NotebookError:
        shown = repr(text if text is not None else value)
        if isinstance(value, str) and text == value and resolve_type(text) != text:
            shown += " as text (-r passes text; -p reads it as papermill does)"
        return NotebookError(f"parameter {name} of {notebook} takes {takes}, not {shown}.",
                             hint="See `nitronb walkthrough --help` for the parameters and their "
                                  "defaults.")

    if isinstance(default, _Source):
        return value
    if default is None:
        # labels default to None when the step derives them; text may be YAML or key=value
        if isinstance(value, str) and name.endswith("labels"):
            return _structured(name, value, dict)
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise refuse("True or False (papermill's -p syntax)")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse("a whole number")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse("a number")
        return float(value)
    if isinstance(default, str):
        if text is not None:
            return text
        if not isinstance(value, str):
            raise refuse("text (quote it in YAML)")
        return value
    if isinstance(default, (dict, list)):
        kind = dict if isinstance(default, dict) else list
        if isinstance(value, str):
            value = _structured(name, value, kind)
        if not isinstance(value, kind):
            raise refuse("a mapping (YAML or JSON, e.g. '{source: mine}')" if kind is dict
                         else "a list (YAML or JSON, e.g. '[DESCRIPTION]')")
        return value
    return value


def _structured(name: str, text: str, kind: type) -> Any:
    """A dict or list from YAML/JSON text, or labels from ``key=value;…`` text."""
    import yaml
    import_papermill()
    from papermill.iorw import NoDatesSafeLoader

    try:
        loaded = yaml.load(text, Loader=NoDatesSafeLoader)
    except yaml.YAMLError:
        loaded = None
    if isinstance(loaded, kind):
        return loaded
    if kind is dict and name.endswith("labels") and "=" in text:
        from nitronb.datasets import parse_labels

        return parse_labels(text)
    return text


def prepare_parameters(parameters: Mapping[str, Any],
                       declared_by: Mapping[Path, Mapping[str, Any]], *,
                       texts: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The parameters as the notebooks receive them: every name declared by one of the
    notebooks (``declared_by``: notebook → :func:`declared_parameters`), every value checked
    (:func:`check_parameters`), relative paths made absolute (:func:`absolute_paths`), and
    what can be checked before anything runs checked
    (:func:`nitronb.notebook.checks.check_parameter_values`: choices such as ``backend``,
    the input CSV a readable file …).

    Raises :class:`NotebookError` for an unknown name (suggesting a declared one it resembles)
    or a value of the wrong type or out of its choices, and
    :class:`~nitronb.errors.InputDataError` for an input CSV that is missing or a folder."""
    import difflib

    from nitronb.notebook.checks import check_parameter_values

    known = sorted({name for declared in declared_by.values() for name in declared})
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        close = {name: difflib.get_close_matches(name, known, n=1) for name in unknown}
        meant = [close[name][0] if len(unknown) == 1 else f"{close[name][0]} for {name}"
                 for name in unknown if close[name]]
        raise NotebookError(
            f"no notebook declares the parameter(s) {', '.join(unknown)}"
            + (f"; did you mean {', '.join(meant)}?" if meant else "."),
            hint="Each notebook's first cell lists the parameters it takes (`nitronb "
                 "walkthrough --help` lists them all).")
    prepared = absolute_paths(check_parameters(parameters, declared_by, texts=texts))
    declared_in: dict[str, str] = {}
    for notebook, declared in declared_by.items():
        for name in declared:
            declared_in.setdefault(name, Path(notebook).stem)
    check_parameter_values(prepared, declared_in)
    return prepared


def absolute_paths(parameters: Mapping[str, Any], cwd: str | os.PathLike[str] | None = None
                   ) -> dict[str, Any]:
    """The parameters with relative file and folder names made absolute against ``cwd``
    (default: the current folder): ``input_csv``, ``workspace``, ``app_dir``, and
    ``long_description`` when it names an existing file."""
    base = Path(cwd or os.getcwd())
    out = dict(parameters)
    for name in PATH_PARAMETERS:
        value = out.get(name)
        if not isinstance(value, str) or not value or "\n" in value or len(value) > 4096:
            continue
        path = Path(value).expanduser()
        if name == "long_description" and (value.startswith(("http://", "https://"))
                                           or not (base / path).is_file()):
            continue
        out[name] = str(path if path.is_absolute() else base / path)
    return out


# --- the kernel -----------------------------------------------------------------------------


def install_kernelspec(*, user: bool = False) -> Path:
    """Install the ``nitronb`` kernelspec (this interpreter, ``-m ipykernel_launcher``) into
    ``sys.prefix/share/jupyter/kernels/nitronb``, or the user's Jupyter folder if ``user``."""
    from ipykernel.kernelspec import install

    return Path(install(kernel_name=KERNEL_NAME, display_name=KERNEL_DISPLAY_NAME,
                        user=user, prefix=None if user else sys.prefix))


def ensure_kernelspec() -> Path:
    """The folder of the ``nitronb`` kernelspec, installed first if Jupyter finds none that runs
    this interpreter. Raises :class:`NotebookError` if another one named ``nitronb`` shadows it."""
    found = find_kernelspec()
    if found is not None and _runs_this_python(found):
        return found
    installed = install_kernelspec()
    found = find_kernelspec()
    if found is None or not _runs_this_python(found):
        raise NotebookError(f"Jupyter finds the kernel {KERNEL_NAME!r} at {found}, which runs "
                            f"another Python than {sys.executable}.",
                            hint=f"Remove that folder, or install this one with `nitronb kernel "
                                 f"install --user` (installed now: {installed}).")
    return found


def find_kernelspec() -> Path | None:
    """The folder of the kernelspec Jupyter finds under the name ``nitronb``, if any."""
    from jupyter_client.kernelspec import KernelSpecManager

    found = KernelSpecManager().find_kernel_specs().get(KERNEL_NAME)
    return Path(found) if found else None


def _runs_this_python(folder: Path) -> bool:
    import json

    try:
        argv = json.loads((folder / "kernel.json").read_text(encoding="utf-8"))["argv"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return bool(argv) and argv[0] == sys.executable


# --- running --------------------------------------------------------------------------------


@dataclass
class NotebookRun:
    notebook: str
    output: Path
    seconds: float


def run_notebooks(out_dir: str | os.PathLike[str], parameters: Mapping[str, Any] | None = None,
                  notebooks: list[Path] | None = None,
                  on_start: Callable[[Path], None] | None = None,
                  on_done: Callable[[NotebookRun], None] | None = None, *,
                  texts: Mapping[str, str] | None = None,
                  env: Mapping[str, str] | None = None,
                  kernels: KernelChain | None = None,
                  ahead: int = AHEAD) -> list[NotebookRun]:
    """Execute ``notebooks`` (default: the walk-through) in order with papermill.

    Each executed notebook is kept in ``out_dir``; a notebook receives only the parameters its
    ``parameters`` cell declares, checked against its defaults (:func:`check_parameters`, with
    ``texts`` the ``-p`` values as typed) and with relative paths made absolute against the
    current folder, which is also the kernels' working folder. The kernels run on the
    ``nitronb`` kernelspec (installed if missing). The first failing cell raises
    :class:`NotebookError` naming the notebook and the cell; a parameter a notebook does not
    declare, or of the wrong type, raises it before anything runs. What the kernels write to
    stderr goes to ``out_dir/kernels.log``; ``env`` adds environment variables to the kernels'
    (or ``kernels`` is the chain to take them from, e.g. one whose first kernels started early;
    the caller then stops what is left of it).
    ``ahead`` kernels (default :data:`~nitronb.notebook.kernels.AHEAD`) are kept started for the notebooks
    that follow.

    Each notebook runs alone in a fresh kernel; the next notebooks' kernels start (and import
    nitronb) while the current one runs (:class:`nitronb.notebook.kernels.KernelChain`), and no kernel
    outlives the call, whether it returns or raises.
    """
    import time

    papermill = import_papermill()
    from papermill.exceptions import PapermillExecutionError

    notebooks = list(notebooks or walkthrough_notebooks())
    declared_by = {nb: declared_parameters(nb) for nb in notebooks}
    parameters = prepare_parameters(parameters or {}, declared_by, texts=texts)
    ensure_kernelspec()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    # a chain of the caller's is the caller's to close (its kernels then end while it goes on)
    owned = kernels is None
    kernels = kernels or KernelChain(KERNEL_NAME, env=env, log=out / "kernels.log")
    with kernels if owned else contextlib.nullcontext():
        kernel = kernels.take()
        for index, notebook in enumerate(notebooks):
            if on_start:
                on_start(notebook)
            declared = declared_by[notebook]
            given = {k: v for k, v in parameters.items() if k in declared}
            target = out / notebook.name
            started = time.perf_counter()
            # the next notebooks' kernels boot while this one runs; they see nothing of it
            kernels.start_ahead(min(ahead, len(notebooks) - index - 1))
            try:
                papermill.execute_notebook(str(notebook), str(target), parameters=given,
                                           kernel_name=KERNEL_NAME, progress_bar=False,
                                           km=kernel)
            except PapermillExecutionError as exc:
                raise NotebookError(
                    f"{notebook.name} failed in cell {exc.exec_count or exc.cell_index}: "
                    f"{exc.ename}: {exc.evalue}",
                    hint=f"The executed notebook with the traceback is {target}.") from None
            finally:
                kernels.stop(kernel)
            runs.append(NotebookRun(notebook.name, target, time.perf_counter() - started))
            if on_done:
                on_done(runs[-1])
            if index + 1 < len(notebooks):
                kernel = kernels.take()
    return runs

