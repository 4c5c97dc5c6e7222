"""Small datasets through the input pipeline, for the data tests.

`make_config` is `config.data` of a small digits run (or another dataset);
`load` returns `pipeline.get_datasets`' (train, eval, info).
"""

import numpy as np

from experiments.configs import default
from maxl_jax.data import pipeline


def make_config(name='digits', **overrides):
  config = default.get_config().data
  config.name, config.batch_size, config.eval_batch_size = name, 100, 16
  config.update(overrides)
  return config


def load(config, seed=0, device_count=1, **kwargs):
  """(train, eval, info) of `pipeline.get_datasets`."""
  return pipeline.get_datasets(
    config, seed=seed, device_count=device_count, **kwargs
  )[:3]


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b, strict=True):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)
