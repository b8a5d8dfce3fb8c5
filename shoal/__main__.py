"""``python -m shoal``: the same command line as the ``shoal`` script."""

from __future__ import annotations

import sys

from shoal.cli import main

if __name__ == "__main__":
    sys.exit(main())
