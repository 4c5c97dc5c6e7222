"""Puts the repository root on `sys.path` when imported.

The benchmarks run as `python benchmarks/<script>.py` and import
`experiments/`, which runs from a checkout: the installed distribution
holds `maxl_jax` only.
"""

import pathlib
import sys

ROOT = str(pathlib.Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
