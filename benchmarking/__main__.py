"""``python -m benchmarking``: the same command line as ``python benchmark.py``."""
from benchmarking.cli import main

raise SystemExit(main())
