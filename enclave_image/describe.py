"""The analysis: for each CSV path on the command line, its path, then pandas ``describe()`` of
its ``DESCRIPTION`` column (only that column is read, to bound memory), then the ten most
frequent values with their counts."""

from __future__ import annotations

import sys


COLUMN = "DESCRIPTION"
TOP = 10


def main(paths: list[str]) -> int:
    import pandas as pd

    for path in paths:
        print(path)
        column = pd.read_csv(path, usecols=[COLUMN])[COLUMN]
        print(column.describe())
        # the most frequent values too, so that the output owner can chart them
        print(f"\nmost frequent values of {COLUMN} in {path}:")
        for value, count in column.value_counts().head(TOP).items():
            print(f"{count:>8}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
