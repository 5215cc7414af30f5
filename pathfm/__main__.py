"""``python -m pathfm``: the same command as ``pathfm`` (see :mod:`pathfm.cli`)."""

import sys

from pathfm.cli import main

if __name__ == "__main__":
    sys.exit(main())
