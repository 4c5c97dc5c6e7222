"""Pytest fixtures and hooks shared by every test file.

Helpers that tests import live in modules named for what they hold:
`toy_problems` (tiny MAXL problems), `data_loading` (small datasets through the
input pipeline), `entry_point` (the entry points in subprocesses).
"""

import os
from unittest import mock

os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

import pytest  # noqa: E402
from entry_point import compilation_cache_env  # noqa: E402

# One persistent compilation cache for this test process and the entry
# points it starts (set before JAX is imported, which reads it once): the
# many small runs compile the same programs, and a hit gives the same
# executable as a compile.
for _name, _value in compilation_cache_env().items():
  os.environ.setdefault(_name, _value)


@pytest.fixture(autouse=True)
def _tfds_mock_needs_no_network():
  """`tfds.testing.mock_data` replaces downloads: skip the network probe.

  readers imports TensorFlow only on first use, so importing it here is
  cheap and patches the probe whichever test imports readers first. (Tests
  never download; the probe's own tests patch it themselves.)
  """
  from maxl_jax.data import readers

  with mock.patch.object(readers, 'network_reachable', return_value=True):
    yield


@pytest.fixture
def no_gcs():
  """Keeps TFDS off the network (GCS metadata look-ups) in a test.

  Test files that read datasets use it for every test:
  `pytestmark = pytest.mark.usefixtures('no_gcs')`.
  """
  import tensorflow_datasets as tfds  # Only in the tests that read data.

  with tfds.testing.disable_gcs_access():
    yield


@pytest.fixture(scope='module')
def fast_compiles():
  """XLA with most optimisations off, for a module of tiny programs, where
  they cost more compile time than they save (values agree to rounding):
  `pytestmark = pytest.mark.usefixtures('fast_compiles')`."""
  import jax

  before = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', before)


@pytest.fixture(scope='session')
def finished_smoke_run(tmp_path_factory):
  """(workdir, result) of one finished smoke run (`configs/smoke.py`, MAXL,
  in process), shared by the tests that only read it (test_restore,
  test_loop)."""
  import jax

  from experiments.configs import smoke
  from maxl_jax.training import loop

  before = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)  # Tiny: faster.
  try:
    workdir = tmp_path_factory.mktemp('smoke') / 'run'
    result = loop.train_and_evaluate(smoke.get_config(), str(workdir))
  finally:
    jax.config.update('jax_disable_most_optimizations', before)
  return workdir, result
