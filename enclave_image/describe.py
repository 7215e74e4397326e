"""The analysis: for each CSV path on the command line, its path, then pandas ``describe()`` of
its ``DESCRIPTION`` column (only that column is read, to bound memory)."""

from __future__ import annotations

import sys


def main(paths: list[str]) -> int:
    import pandas as pd

    for path in paths:
        print(path)
        frame = pd.read_csv(path, usecols=["DESCRIPTION"])
        print(frame["DESCRIPTION"].describe())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
