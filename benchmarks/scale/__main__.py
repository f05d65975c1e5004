"""Entry point: ``python -m benchmarks.scale --tiles 1 4 16 64`` (see ``run.py``)."""

from __future__ import annotations

import sys

from benchmarks.scale.run import main

if __name__ == "__main__":  # worker processes are spawned and re-import __main__
    sys.exit(main())
