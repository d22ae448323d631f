"""Benchmark reward definitions (and agents) by what their corruptors do to the learned representation.

A thin command line over the installed :mod:`benchmarking` package; ``python benchmark.py --help``
lists every option and which preset fills the ones left unset.
"""
from __future__ import annotations

from benchmarking.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
