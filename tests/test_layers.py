"""The package's architecture, checked: nitronb's import graph has no circle, each component
imports only the components below it, every module reads in one sitting, and the README's layout
table and API section match the tree and ``nitronb.__all__``.

The graph is read from the source (every ``import`` and ``from … import``, also those inside
functions), so a circle that only a rarely used path would close is found as well.
"""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

import nitronb

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nitronb"
README = ROOT / "README.md"

#: the components from the bottom up: a component imports its own modules and those of the
#: components on lower rows, never one on its own row (but in the base) or above
LAYERS = [
    ("errors", "keys", "crypto", "_files", "_progress"),  # the base: these import each other
    ("enclave_os",),                                       # copied into images: imports no other
    ("workspace", "http_server"),
    ("inputs", "results"),
    ("local",),
    ("s3",),
    ("datasets",),
    ("enclave",),
    ("ccm",),
    ("notebook",),
    ("cli",),
    ("__main__",),
]
RANK = {name: rank for rank, row in enumerate(LAYERS) for name in row}
#: what modules of every layer but the base may take from ``nitronb`` itself, whose own imports
#: are the base only (its public names are looked up lazily, when first used)
FROM_ROOT = {"__version__", "sample_path"}
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, set[str], int]]:
    """``(module imported, names taken from it, line)`` for every import of nitronb's in a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, set(), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = {a.name for a in node.names}
            submodules = {f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES}
            found += [(module, set(), node.lineno) for module in submodules]
            if names - {m.rpartition(".")[2] for m in submodules}:
                found.append((base, names, node.lineno))
    return [(m, names, line) for m, names, line in found
            if m == "nitronb" or m.startswith("nitronb.")]


def _resolve(module: str) -> str:
    while module not in MODULES and "." in module:
        module = module.rpartition(".")[0]
    return module


GRAPH = {name: {(_resolve(m), frozenset(names), line) for m, names, line in _imports(name, path)}
         for name, path in MODULES.items()}


def _component(module: str) -> str:
    return module.split(".")[1] if module != "nitronb" else "nitronb"


def test_every_module_has_a_place_in_the_layers():
    placed = {_component(m) for m in MODULES} - {"nitronb", "data"}
    assert placed <= set(RANK), f"components missing from LAYERS: {sorted(placed - set(RANK))}"


def test_no_import_circle():
    sorter = TopologicalSorter({name: {target for target, _, _ in edges if target != name}
                                for name, edges in GRAPH.items()})
    try:
        sorter.prepare()
    except CycleError as exc:
        pytest.fail("import circle: " + " imports ".join(reversed(exc.args[1])))


def test_components_import_only_those_below():
    wrong = []
    for name, edges in GRAPH.items():
        if name == "nitronb":
            continue
        mine = _component(name)
        for target, names, line in edges:
            theirs = _component(target)
            if theirs == mine:
                continue
            if theirs == "nitronb":
                if RANK[mine] == 0 or not names <= FROM_ROOT:
                    wrong.append(f"{name}:{line} takes {sorted(names)} from nitronb itself")
            elif RANK[theirs] > RANK[mine] or (RANK[theirs] == RANK[mine] and RANK[mine] > 0):
                wrong.append(f"{name}:{line} imports {target} ({theirs} is not below {mine})")
    assert not wrong, "\n".join(wrong)


def test_the_root_imports_only_the_base():
    assert {_component(t) for t, _, _ in GRAPH["nitronb"]} <= set(LAYERS[0])


def test_the_enclave_os_imports_nothing_else_of_nitronb():
    outside = [f"{name} imports {target}" for name, edges in GRAPH.items()
               if _component(name) == "enclave_os"
               for target, _, _ in edges if _component(target) != "enclave_os"]
    assert not outside


def test_modules_read_in_one_sitting():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def _readme_section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def test_readme_layout_names_every_part_of_the_package():
    table = _readme_section("Layout")
    listed = set(re.findall(r"^\| `nitronb/([\w.]+?)(?:/|\.py)?` \|", table, re.M))
    parts = {p.name if p.is_dir() else p.stem for p in PACKAGE.iterdir()
             if (p.is_dir() and (p / "__init__.py").is_file())
             or (p.suffix == ".py" and not p.name.startswith("__"))}
    parts |= {"data"}
    assert listed == parts, (f"in the tree, not in README's layout: {sorted(parts - listed)}; "
                             f"in the layout, not in the tree: {sorted(listed - parts)}")


def test_readme_api_documents_every_public_name():
    section = _readme_section("API")
    documented = set(re.findall(r"`(?:nitronb\.)?(\w+)(?:\(|`)", section))
    missing = [name for name in nitronb.__all__ if name not in documented]
    assert not missing, f"public names missing from the README's API section: {missing}"
    for name in nitronb.__all__:
        assert getattr(nitronb, name) is not None
