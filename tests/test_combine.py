"""The combiner experiment: given tasks, its steps, a tiny run, its CLI."""

import json
import subprocess
import sys

import chex
import entry_point as ep
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import combine_fashion
from maxl_jax.data.info import DatasetInfo
from maxl_jax.errors import UsageError
from maxl_jax.training import combine

TINY_INFO = DatasetInfo('fashion_mnist', 10, (32, 32, 1), 100, 100, 10)


@pytest.fixture
def fast_compile():
  """XLA with most optimisations off (compiles ~2x faster), then restored."""
  before = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', before)


def tiny_config(form='linear', tasks='coarse,random'):
  """The experiment's config with a 4-8-8-8 ConvNet-4 and heads of 8."""
  config = combine_fashion.get_config()
  config.model.widths = (4, 8, 8, 8)
  config.model.head_hidden = 8
  config.combiner.form, config.combiner.tasks = form, tasks
  return config


def tiny_batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  return {
    'image': jnp.asarray(rng.normal(size=(n, 32, 32, 1)), jnp.float32),
    'label': jnp.asarray(rng.integers(0, 10, n), jnp.int32),
    'index': jnp.arange(n, dtype=jnp.int32),
  }


def test_coarse_task_is_the_stated_grouping():
  groups = {0: (0, 2, 4, 6), 1: (1, 3), 2: (5, 7, 9), 3: (8,)}
  expected = np.zeros(10, np.int32)
  for group, classes in groups.items():
    expected[list(classes)] = group
  task = combine.TASKS['coarse']
  got = task.labels({'label': jnp.arange(10)}, 0)
  np.testing.assert_array_equal(got, expected)
  assert task.num_classes == 4


def test_random_task_is_fixed_per_index_and_uniform():
  index = jnp.arange(10_000, dtype=jnp.int32)
  labels = np.asarray(combine.random_labels(0, index))
  np.testing.assert_array_equal(combine.random_labels(0, index), labels)
  perm = np.random.default_rng(0).permutation(10_000)  # Order-free.
  np.testing.assert_array_equal(
    combine.random_labels(0, index[perm]), labels[perm]
  )
  counts = np.bincount(labels, minlength=10)
  assert counts.size == 10 and np.all(np.abs(counts - 1000) < 120), counts
  other = np.asarray(combine.random_labels(1, index))
  assert np.mean(other == labels) < 0.15  # Another seed, other labels.


def test_task_names_are_checked():
  assert combine.get_tasks(' coarse, random', 'fashion_mnist') == (
    'coarse',
    'random',
  )
  for names, dataset in (
    ('coarse', 'digits'),  # Fashion-MNIST only.
    ('random,random', 'digits'),
    ('', 'digits'),
    ('fine', 'digits'),
  ):
    with pytest.raises(UsageError):
      combine.get_tasks(names, dataset)
  config = tiny_config('mlp')
  config.data.meta_fraction = 0.0  # A learned φ needs the held-out split.
  with pytest.raises(UsageError, match='meta_fraction'):
    combine.check_config(config)


def test_one_theta_and_one_phi_step_are_finite(fast_compile):
  names, fns, state = combine.build(tiny_config(), TINY_INFO, 5)
  assert names == ('coarse', 'random') and set(fns) >= {'theta', 'phi'}
  batch, meta_batch = tiny_batch(), tiny_batch(seed=1)
  theta0, phi0 = jax.device_get((state.theta, state.phi))
  state, values = fns['theta'](state, batch)
  assert {'loss', 'loss_pri', 'loss_aux', 'loss_coarse', 'loss_random'} <= set(
    values
  )
  chex.assert_tree_all_finite((state, values))
  state, values = fns['phi'](state, batch, meta_batch)
  chex.assert_tree_all_finite((state, values))
  assert values['hypergrad_norm'] > 0
  assert not np.allclose(state.phi['rho'], phi0['rho'])
  delta = jax.tree.map(lambda a, b: np.abs(a - b).max(), state.theta, theta0)
  assert max(jax.tree.leaves(delta)) > 0
  weights = fns['weights'](state, meta_batch)
  assert list(weights) == ['coarse', 'random']
  chex.assert_tree_all_finite(weights)


def test_fixed_form_has_no_phi_and_weights_stay_one(fast_compile):
  _, fns, state = combine.build(tiny_config('fixed'), TINY_INFO, 5)
  assert state.phi == {} and 'phi' not in fns
  for seed in range(2):
    state, _ = fns['theta'](state, tiny_batch(seed=seed))
  weights = fns['weights'](state, tiny_batch())
  assert weights == {'coarse': 1.0, 'random': 1.0}


def test_tiny_digits_run_writes_metrics_and_result(tmp_path, fast_compile):
  config = tiny_config('linear', 'random')
  config.data.name = 'digits'
  config.data.train_fraction = 1.0
  config.data.batch_size = 16
  config.data.eval_batch_size = 128
  config.train.epochs = 1
  config.train.steps_per_epoch = 3
  config.combiner.meta_every = 2
  result = combine.train_and_evaluate(config, str(tmp_path))
  rows = [
    json.loads(line)
    for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()
  ]
  assert len(rows) == 1
  row = rows[0]
  assert row['epoch'] == 1 and row['step'] == 3
  for key in ('test/accuracy', 'train/loss', 'train/loss_random'):
    assert np.isfinite(row[key]), key
  assert 'meta/meta_loss' in row and 'weight/random' in row
  assert row['train/loss_aux'] > 0
  saved = json.loads((tmp_path / 'result.json').read_text())
  assert saved == result
  assert 0 <= saved['test_accuracy'] <= 1
  assert set(saved['weights']) == {'random'} and saved['wall_time_s'] > 0


def test_bad_form_is_one_error_line(tmp_path):
  workdir = tmp_path / 'run'
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'experiments.combine',
      '--config=experiments/configs/combine_fashion.py',
      f'--workdir={workdir}',
      '--config.combiner.form=quadratic',
    ],
    cwd=ep.REPO,
    env=ep.env(),
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2, proc.stderr
  lines = ep.error_lines(proc.stderr)
  assert len(lines) == 1 and 'config.combiner.form' in lines[0], proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not workdir.exists()
