"""Small datasets through the input pipeline, for the data tests.

`make_config` is the `DataSpec` of a small digits run (or another dataset);
`load` returns `pipeline.get_datasets`' (train, eval, info).
"""

import dataclasses

import numpy as np

from experiments.configs import default
from maxl_jax.data import pipeline
from maxl_jax.data.spec import DataSpec


def make_config(name='digits', **overrides):
  """The default config's `DataSpec` of `name`, small batches."""
  spec = DataSpec(**default.get_config().data)
  fields = dict(name=name, batch_size=100, eval_batch_size=16)
  return dataclasses.replace(spec, **{**fields, **overrides})


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
