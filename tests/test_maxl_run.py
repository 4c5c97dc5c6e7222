"""MAXL's run builder (maxl_jax/training/maxl_run.py), in process (no data).

A run is built from a config and a `DatasetInfo` alone: its abstract state
must describe the real initial state exactly, and building it must import
no data library.
"""

import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import pytest
from toy_problems import TOY_INFO, run_config

from maxl_jax.errors import UsageError
from maxl_jax.training import config_fields, contract


@pytest.mark.parametrize('method', ['single', 'maxl', 'random', 'uniform'])
def test_abstract_state_describes_the_initial_state(method):
  run = contract.build_run(run_config(method), TOY_INFO)
  real = run.create_state({})
  abstract = run.state_shapes()
  chex.assert_trees_all_equal_shapes_and_dtypes(real, abstract)
  assert jax.tree.structure(real) == jax.tree.structure(abstract)
  assert (run.g is not None) == (method == 'maxl')
  assert run.label_source.num_aux == (0 if method == 'single' else 4 * 3)
  assert run.schedule.name == ('paper' if method == 'maxl' else 'single')


def test_kmeans_abstract_state_needs_no_images():
  config = run_config('kmeans')
  config.kmeans.update(ae_widths=(4, 8), latent_dim=6)
  run = contract.build_run(config, TOY_INFO)
  label_state = run.state_shapes().label_state
  assert label_state['assign'].shape == (TOY_INFO.num_train,)
  assert label_state['centroids'].shape == (12, 6)
  params = run.label_source.ae.init(
    jax.random.key(0), jnp.zeros((1, 32, 32, 1))
  )['params']
  chex.assert_trees_all_equal_shapes_and_dtypes(
    label_state['ae_params'], params
  )


def test_the_same_config_builds_the_same_initial_state():
  a = contract.build_run(run_config(), TOY_INFO).create_state({})
  b = contract.build_run(run_config(), TOY_INFO).create_state({})
  chex.assert_trees_all_equal(a, b)


def test_steps_per_epoch_and_bad_values():
  config = run_config()
  assert config_fields.steps_per_epoch(config, TOY_INFO) == 3  # The cap.
  config.train.steps_per_epoch = 0
  assert config_fields.steps_per_epoch(config, TOY_INFO) == 64 // 16
  config.data.batch_size = 100
  with pytest.raises(UsageError, match='exceeds the 64 training examples'):
    config_fields.steps_per_epoch(config, TOY_INFO)
  with pytest.raises(UsageError, match="config.maxl.schedule = 'nope'"):
    contract.build_run(run_config(schedule='nope'), TOY_INFO)
  with pytest.raises(UsageError, match='label hierarchy'):
    contract.build_run(run_config('human'), TOY_INFO)


def test_building_a_run_imports_no_data_library():
  code = (
    'import sys; import maxl_jax; import maxl_jax.training.contract; '
    "bad = [m for m in sys.modules if m.split('.')[0] in "
    "('tensorflow', 'tensorflow_datasets', 'orbax', 'clu', 'sklearn')]; "
    'print(bad); assert not bad'
  )
  proc = subprocess.run(
    [sys.executable, '-c', code], capture_output=True, text=True, timeout=120
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
