"""Reading an app's Dockerfile: its instructions, and the base image its final stage starts from.

Only what nitronb measures or checks is read: logical lines (``\\`` continuations joined, comments
and blank lines dropped), ``ARG`` declarations before the first ``FROM`` with their defaults, and
the ``FROM`` lines. Variables in ``FROM`` (``$NAME``, ``${NAME}``, ``${NAME:-word}``,
``${NAME:+word}``) take the value of a build argument only when the Dockerfile declares that
``ARG``, as Docker and Podman do.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Mapping

from nitronb.errors import ImageBuildError

__all__ = ["instructions", "words", "exec_form", "base_image", "declared_args"]

_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[-+])(?P<word>[^}]*))?\}"
                       r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def instructions(text: str) -> list[tuple[str, str]]:
    """``[(INSTRUCTION, arguments), …]`` in order: instruction names upper-cased, continuation
    lines joined, comments and blank lines dropped."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.strip():
            name, _, rest = line.strip().partition(" ")
            found.append((name.upper(), rest.strip()))
    if pending.strip():
        name, _, rest = pending.strip().partition(" ")
        found.append((name.upper(), rest.strip()))
    return found


def exec_form(rest: str) -> list[str] | None:
    """The arguments of an exec-form instruction (``CMD ["python3", "x.py"]``), or None when
    ``rest`` is not a JSON list of strings."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def words(rest: str) -> list[str]:
    """An instruction's arguments: its exec form, else split as a shell would."""
    value = exec_form(rest)
    return value if value is not None else shlex.split(rest)


def declared_args(text: str) -> dict[str, str | None]:
    """The ``ARG`` declarations before the first ``FROM``: ``{name: default or None}``."""
    declared: dict[str, str | None] = {}
    for name, rest in instructions(text):
        if name == "FROM":
            break
        if name == "ARG":
            key, sep, value = rest.partition("=")
            declared[key.strip()] = _unquote(value.strip()) if sep else None
    return declared


def base_image(text: str, build_args: Mapping[str, str] | None = None, *,
               where: str = "the Dockerfile") -> str:
    """The image the Dockerfile's final stage is built on, with its ``ARG`` defaults and the
    ``build_args`` it declares substituted; a stage named by an earlier ``FROM … AS name`` is
    followed to that stage's base.

    Raises :class:`ImageBuildError` when there is no ``FROM``, or a variable in it has no value.
    """
    declared = declared_args(text)
    values = {k: v for k, v in declared.items() if v is not None}
    values.update({k: v for k, v in (build_args or {}).items() if k in declared and v})
    stages: dict[str, str] = {}
    current = None
    for name, rest in instructions(text):
        if name != "FROM":
            continue
        words = [w for w in rest.split() if not w.startswith("--")]
        if not words:
            raise ImageBuildError(f"a FROM line of {where} names no image.")
        image = _substitute(words[0], values, where)
        image = stages.get(image.lower(), image)
        if len(words) >= 3 and words[1].upper() == "AS":
            stages[words[2].lower()] = image
        current = image
    if current is None:
        raise ImageBuildError(f"{where} has no FROM line: it names no base image.")
    return current


def _substitute(word: str, values: Mapping[str, str], where: str) -> str:
    def value(match: re.Match) -> str:
        name = match["braced"] or match["plain"]
        given = values.get(name, "")
        if match["op"] == "-":
            return given or match["word"]
        if match["op"] == "+":
            return match["word"] if given else ""
        if not given:
            raise ImageBuildError(f"the FROM line of {where} uses ${{{name}}}, which has no "
                                  f"value.", hint=f"Give ARG {name} a default before FROM, or "
                                                  f"pass it as a build argument.")
        return given

    result = _VARIABLE.sub(value, word)
    if not result:
        raise ImageBuildError(f"the FROM line of {where} names an empty image.")
    return result


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value
