"""The old name of `contract.build_run` and `maxl_run.jit_steps`.

Kept only for benchmarks/bench_steps.py until it imports `contract` and
`maxl_run` itself; new code uses those modules.
"""

from maxl_jax.training.contract import build_run
from maxl_jax.training.maxl_run import jit_steps

__all__ = ['build_run', 'jit_steps']
