"""Print pandas describe() of the DESCRIPTION column of each CSV file named on the command line."""

import sys

import pandas as pd

for name in sys.argv[1:]:
    frame = pd.read_csv(name, usecols=["DESCRIPTION"])
    print(frame["DESCRIPTION"].describe())
