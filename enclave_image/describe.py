r"""The analysis: for each CSV path on the command line, its path, then pandas ``describe()`` of
its ``DESCRIPTION`` column (only that column is read, to bound memory), then the ten most
frequent values with their counts, one per line: a value's backslashes, line feeds and carriage
returns are written ``\\``, ``\n`` and ``\r``, so that a multi-line value stays on its line
and the output owner can undo the escaping (``nitronb.results.value_counts``)."""

from __future__ import annotations

import sys


COLUMN = "DESCRIPTION"
TOP = 10


def one_line(value: object) -> str:
    r"""``value`` as text on one line, reversibly: ``\`` as ``\\``, LF as ``\n``, CR as ``\r``."""
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def main(paths: list[str]) -> int:
    import pandas as pd

    for path in paths:
        print(path)
        column = pd.read_csv(path, usecols=[COLUMN])[COLUMN]
        print(column.describe())
        # the most frequent values too, so that the output owner can chart them
        print(f"\nmost frequent values of {COLUMN} in {path}:")
        for value, count in column.value_counts().head(TOP).items():
            print(f"{count:>8}  {one_line(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
