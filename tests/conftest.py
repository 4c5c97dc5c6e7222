"""Pytest fixtures and hooks shared by every test file.

Helpers that tests import live in modules named for what they hold:
`toy_problems` (tiny MAXL problems), `data_loading` (small datasets through the
input pipeline), `entry_point` (the entry points in subprocesses).
"""

import os
from unittest import mock

os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')

import pytest  # noqa: E402


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
