"""Benchmarking reward definitions and agents: sweeps, their statistics, report and plots.

- :mod:`benchmarking.sweep`: presets and tasks (tables), the grid of runs, each run's settings and
  identity, validation, and :func:`~benchmarking.sweep.run_one`;
- :mod:`benchmarking.engines`: where runs execute, ``local`` (process pool) or ``ray`` (Ray Tune);
- :mod:`benchmarking.results`: the results folder (runs.csv, curves.json, run_settings.json);
- :mod:`benchmarking.confidence`, :mod:`benchmarking.report`, :mod:`benchmarking.plots`: what is made of the rows;
- :mod:`benchmarking.cli`: the command line (``python benchmark.py`` or ``python -m benchmarking``).
"""
from benchmarking.confidence import bootstrap_ci, iqm
from benchmarking.sweep import BASELINE_KWARGS, PRESETS, REFERENCES, TASKS, Preset, RunSpec, Sweep, run_one

__all__ = ["BASELINE_KWARGS", "PRESETS", "REFERENCES", "TASKS", "Preset", "RunSpec", "Sweep", "bootstrap_ci", "iqm",
           "run_one"]
