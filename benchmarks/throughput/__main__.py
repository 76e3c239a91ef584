"""``python benchmarks/throughput`` or ``python -m benchmarks.throughput``: run the benchmark."""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:
    # Run as a folder: sys.path[0] is this folder, whose module names (build, report, ...) would
    # shadow top-level ones, and the package imports below need the repository root instead.
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from benchmarks.throughput.cli import main

if __name__ == "__main__":
    sys.exit(main())
