import sys

from nitronb.cli import main

sys.exit(main())
