"""Runs a config's method(s) and prints the results (used by run.py)."""

import os

from maxl_jax import labels
from maxl_jax.errors import UsageError
from maxl_jax.training import loop
from maxl_jax.training import workdir as workdir_lib


def run(config, workdir):
  """Trains `config.method`, or each of `config.compare_methods` in turn."""
  workdir_lib.check_writable(workdir)
  methods = [m.strip() for m in config.compare_methods.split(',') if m.strip()]
  if not methods:
    result = loop.train_and_evaluate(config, workdir)
    print(
      f'{result["method"]} on {result["dataset"]}: test accuracy '
      f'{100 * result["test_accuracy"]:.2f}%, params sha256 '
      f'{result["params_sha256"]}'
    )
    return [result]
  for method in methods:
    if method not in labels.METHODS:
      raise UsageError(
        f'config.compare_methods names {method!r}; choose '
        f'from {list(labels.METHODS)}.'
      )
  results = []
  for method in methods:
    one = config.copy_and_resolve_references()
    with one.unlocked():
      one.method, one.compare_methods = method, ''
    results.append(loop.train_and_evaluate(one, os.path.join(workdir, method)))
  print(f'\n{"method":<10}{"test accuracy":>15}{"wall time":>12}')
  for r in results:
    print(
      f'{r["method"]:<10}{100 * r["test_accuracy"]:>14.2f}%'
      f'{r["wall_time_s"]:>11.0f}s'
    )
  info = workdir_lib.read_info(
    workdir_lib.as_path(os.path.join(workdir, methods[0]))
  )
  print(how_to_read(info.num_test))
  return results


def how_to_read(num_test: int) -> str:
  """What one seed's comparison can and cannot show."""
  return (
    f'\nOne seed, {num_test} test images (one image = '
    f'{100 / num_test:.2f} points): this compares methods on one draw, it '
    'does not measure a gain. Differences of a point or less are within '
    "seed-to-seed noise; on Fashion-MNIST at 5% MAXL's gain over Single "
    '(+0.8 points, 3 seeds) is matched by the Uniform ablation, which '
    'learns nothing (docs/RESULTS.md). Compare seeds and '
    '--config.method=uniform before crediting the meta-learning.'
  )
