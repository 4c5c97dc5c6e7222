"""The label sources of maxl_jax/labels/: Random, Human, Single, Uniform,
K-Means. (MAXL's generator, generated.py: test_step_fns.py.)

Unit tests check the labels' invariants on tiny data; the slow tests run
each baseline end to end through the entry point (Human on mock CIFAR-100).
"""

import dataclasses
import json
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn import metrics
from toy_problems import TOY_INFO, run_config

from experiments.configs import cifar100, quickstart
from maxl_jax import hierarchy, labels
from maxl_jax.data import cifar100_hierarchy
from maxl_jax.data.info import DatasetInfo
from maxl_jax.errors import UsageError
from maxl_jax.labels import fixed
from maxl_jax.labels import kmeans as kmeans_labels
from maxl_jax.labels.base import masked_targets_ok
from maxl_jax.training import contract, loop, restore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVELS = (3, 10, 20, 100)
PAIRS = [(a, b) for a in LEVELS for b in LEVELS if a < b]


def _info(num_classes, num_train=64, channels=3):
  return DatasetInfo(
    name='toy',
    num_classes=num_classes,
    image_shape=(32, 32, channels),
    num_train=num_train,
    num_test=0,
  )


def _batch(labels, index):
  return {
    'label': np.asarray(labels, np.int32),
    'index': np.asarray(index, np.int32),
  }


# ---------------------------------------------------------------- Random ---


def _random_source(seed, num_classes=7, aux_classes=23):
  return labels.make_label_source(
    'random',
    _info(num_classes),
    psi_per_class=5,
    seed=seed,
    random_aux_classes=aux_classes,
  )


def _random_classes(source, labels, index):
  targets = np.asarray(
    source.targets({}, None, None, _batch(labels, index), problem=None)
  )
  return targets.argmax(-1), targets


def test_random_psi_is_balanced_and_labels_are_masked():
  source = _random_source(seed=3)
  assert source.psi.sum() == 23 and source.psi.max() - source.psi.min() <= 1
  labels = np.arange(200) % 7
  classes, targets = _random_classes(source, labels, np.arange(200))
  mask = hierarchy.class_mask(source.psi)
  assert masked_targets_ok(targets, labels, mask)
  np.testing.assert_array_equal(targets.sum(-1), 1.0)  # One-hot.
  for c in range(7):  # Every auxiliary class of c is drawn.
    drawn = np.unique(classes[labels == c])
    assert drawn.size == source.psi[c]


def test_random_is_a_fixed_function_of_seed_and_index():
  rng = np.random.default_rng(0)
  index = rng.permutation(500)[:60]
  labels = index % 7  # The label of an image never changes.
  source = _random_source(seed=5)
  first, _ = _random_classes(source, labels, index)
  again = _random_source(seed=5)  # Rebuilt from the same seed.
  np.testing.assert_array_equal(again.psi, source.psi)
  order = rng.permutation(60)  # Another epoch: other order, other batches.
  for part in np.array_split(order, 3):
    classes, _ = _random_classes(again, labels[part], index[part])
    np.testing.assert_array_equal(classes, first[part])
  other, _ = _random_classes(_random_source(seed=6), labels, index)
  assert np.any(other != first)


# ----------------------------------------------------------------- Human ---


@pytest.mark.parametrize('primary, aux', PAIRS)
def test_human_psi_and_targets_follow_the_hierarchy(primary, aux):
  primary_of = cifar100_hierarchy.level_of_fine(
    primary
  )  # [100] per fine class.
  aux_of = cifar100_hierarchy.level_of_fine(aux)
  source = fixed.human_source(
    cifar100_hierarchy.level_map(aux, primary), primary
  )
  expected = [np.unique(aux_of[primary_of == c]).size for c in range(primary)]
  np.testing.assert_array_equal(source.psi, expected)
  parent = np.zeros(aux, np.int64)
  parent[aux_of] = primary_of  # Each aux-level class under its primary one.
  np.testing.assert_array_equal(
    source.psi, hierarchy.psi_from_label_map(parent, primary)
  )
  fine = np.arange(100)
  batch = {'label': primary_of[fine], 'fine_label': aux_of[fine]}
  targets = np.asarray(source.targets({}, None, None, batch, problem=None))
  mask = hierarchy.class_mask(source.psi)
  assert masked_targets_ok(targets, batch['label'], mask)
  classes = targets.argmax(-1)
  np.testing.assert_array_equal(targets.sum(-1), 1.0)
  for a in range(aux):  # aux-level class <-> auxiliary class: a bijection.
    assert np.unique(classes[aux_of == a]).size == 1
  assert np.unique(classes).size == aux == source.num_aux


def test_make_label_source_human_uses_the_dataset_map():
  info = dataclasses.replace(
    _info(10),
    fine_num_classes=20,
    fine_to_primary=cifar100_hierarchy.level_map(20, 10),
  )
  source = labels.make_label_source('human', info, psi_per_class=5, seed=0)
  assert source.num_aux == 20 and source.psi.size == 10
  with pytest.raises(UsageError, match='label hierarchy'):
    labels.make_label_source('human', _info(10), psi_per_class=5, seed=0)


# Fashion-MNIST under 'types': tops {0, 2, 4, 6}, {1, 3}, shoes {5, 7, 9}, {8}.
TYPES = dataclasses.replace(
  _info(4),
  name='fashion_mnist',
  fine_num_classes=10,
  fine_to_primary=np.array([0, 1, 0, 1, 0, 2, 0, 2, 3, 2]),
)


def test_human_on_a_grouping_targets_the_fine_class():
  source = labels.make_label_source('human', TYPES, psi_per_class=5, seed=0)
  np.testing.assert_array_equal(source.psi, [4, 2, 3, 1])
  fine = np.arange(10)
  batch = {'label': TYPES.fine_to_primary[fine], 'fine_label': fine}
  classes = np.asarray(
    source.targets({}, None, None, batch, problem=None)
  ).argmax(-1)
  # Fine classes in id order within their primary class's range.
  np.testing.assert_array_equal(classes, [0, 4, 1, 5, 2, 6, 3, 7, 9, 8])


@pytest.mark.parametrize('method', ['maxl', 'uniform', 'random', 'kmeans'])
def test_psi_choice_balanced_or_the_hierarchys(method):
  kwargs = dict(psi_per_class=3, seed=0)
  balanced = labels.make_label_source(method, TYPES, **kwargs)
  assert balanced.num_aux == 12
  if method != 'random':
    np.testing.assert_array_equal(balanced.psi, [3, 3, 3, 3])
  source = labels.make_label_source(
    method, TYPES, psi_choice='hierarchy', **kwargs
  )
  np.testing.assert_array_equal(source.psi, [4, 2, 3, 1])
  with pytest.raises(UsageError, match='data.hierarchy') as error:
    labels.make_label_source(method, _info(4), psi_choice='hierarchy', **kwargs)
  assert "psi='hierarchy'" in str(error.value)
  with pytest.raises(UsageError, match="'balanced', 'hierarchy'"):
    labels.make_label_source(method, TYPES, psi_choice='fine', **kwargs)


def test_human_without_a_hierarchy_says_how_to_set_one():
  info = dataclasses.replace(_info(10), name='digits')
  with pytest.raises(UsageError) as error:
    labels.make_label_source('human', info, psi_per_class=5, seed=0)
  message = str(error.value)
  assert 'method=human' in message and '--config.data.hierarchy' in message
  assert "['parity', 'halves']" in message and 'list of 10' in message


def test_cifar100_config_parses_level_pairs():
  config = cifar100.get_config()
  assert (config.data.primary_level, config.data.aux_level) == (20, 100)
  assert config.maxl.psi_per_class == 5 and config.model.name == 'vgg16'
  for primary, aux in PAIRS:
    config = cifar100.get_config(f'primary={primary},aux={aux}')
    assert (config.data.primary_level, config.data.aux_level) == (primary, aux)
    assert config.baseline.aux_classes == aux
  with pytest.raises(UsageError):
    cifar100.get_config('primry=3')


# ---------------------------------------------------------------- Single ---


def test_single_has_no_auxiliary_task():
  source = labels.make_label_source(
    'single', _info(10), psi_per_class=5, seed=0
  )
  assert source.num_aux == 0 and source.psi is None
  assert source.targets({}, None, None, _batch([0], [0]), problem=None) is None


# --------------------------------------------------------------- Uniform ---


def test_uniform_targets_spread_evenly_over_the_class_range():
  run = contract.build_run(run_config('uniform', psi_per_class=2), TOY_INFO)
  psi = run.psi
  batch = {'label': jnp.asarray([0, 3, 1])}
  targets = run.label_source.targets({}, None, None, batch, problem=None)
  mask = hierarchy.class_mask(psi)
  np.testing.assert_allclose(targets, mask[[0, 3, 1]] / 2.0)


# --------------------------------------------------------------- K-Means ---

PSI = (2, 3)  # Two classes, five ground-truth colour blobs.
PER_BLOB = 4


def _kmeans_options(**kmeans):
  small = dict(
    ae_steps=2,
    ae_steps_per_refresh=1,
    ae_widths=(4, 8, 8),
    latent_dim=8,
    ae_batch_size=4,
    n_init=2,
  )
  return kmeans_labels.KMeansOptions(**{**small, **kmeans})


def _blobs(seed=0):
  """Images of one noisy constant colour per (class, cluster); shuffled.

  Returns:
    (train_iter-like namespace, ground-truth auxiliary class per global
    index [n]).
  """
  rng = np.random.default_rng(seed)
  truth = np.repeat(np.arange(sum(PSI)), PER_BLOB)  # Global index order.
  labels = hierarchy.aux_owner(PSI)[truth]
  levels = np.array([30, 130, 230])
  grid = np.stack(np.meshgrid(levels, levels, levels), -1).reshape(-1, 3)
  colours = grid[rng.permutation(len(grid))[: sum(PSI)]]
  noise = rng.integers(-3, 4, size=(truth.size, 32, 32, 3))
  images = (colours[truth][:, None, None, :] + noise).astype(np.uint8)
  order = rng.permutation(truth.size)  # The process's local order.
  train_iter = types.SimpleNamespace(
    images=images[order], labels=labels[order], indices=order
  )
  return train_iter, truth


def _kmeans(**kmeans):
  train_iter, truth = _blobs()
  info = _info(len(PSI), num_train=truth.size)
  source = kmeans_labels.make_source(
    _kmeans_options(**kmeans),
    info,
    PSI,
    seed=0,
    steps_per_epoch=truth.size // 4,  # Batches of 4.
  )
  return source, train_iter, truth


def test_kmeans_recovers_the_blobs_within_each_class():
  source, train_iter, truth = _kmeans()
  state = source.init_state(train_iter)
  assign = state['assign']
  assert assign.shape == truth.shape and assign.dtype == np.int32
  assert metrics.adjusted_rand_score(truth, assign) == 1.0
  offs = hierarchy.offsets(PSI)
  owner = hierarchy.aux_owner(PSI)
  for c, k in enumerate(PSI):  # All psi[c] clusters of class c are used.
    used = np.unique(assign[owner[truth] == c])
    np.testing.assert_array_equal(used, offs[c] + np.arange(k))
  batch = _batch(train_iter.labels, train_iter.indices)
  targets = source.targets(state, None, None, batch, problem=None)
  assert masked_targets_ok(targets, batch['label'], hierarchy.class_mask(PSI))
  np.testing.assert_array_equal(np.argmax(targets, -1), assign[batch['index']])
  assert state['centroids'].shape == (sum(PSI), 8)
  assert all(np.asarray(x).size for x in jax.tree.leaves(state))  # For orbax.


def test_kmeans_refresh_is_deterministic_and_scheduled():
  source, train_iter, truth = _kmeans(refresh_every=3)
  state = jax.device_put(source.init_state(train_iter))
  assert source.refresh(state, 0, train_iter) is state  # Not due.
  first = source.refresh(state, 2, train_iter)
  second = source.refresh(state, 2, train_iter)
  assert int(first['refreshes']) == 1
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second), strict=True):
    assert isinstance(a, jax.Array) and a.sharding == b.sharding
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  changed = jax.tree.map(
    lambda a, b: not np.array_equal(a, b),
    first['ae_params'],
    state['ae_params'],
  )
  assert any(jax.tree.leaves(changed))  # The autoencoder trained on.
  assert metrics.adjusted_rand_score(truth, np.asarray(first['assign'])) == 1.0
  per_epoch, _, _ = _kmeans()
  assert per_epoch.steps_per_epoch == truth.size // 4
  assert [s for s in range(12) if per_epoch.due(s)] == [4, 9]


def test_kmeans_needs_enough_images_per_class():
  source, train_iter, _ = _kmeans()
  latents = np.arange(24, dtype=np.float32).reshape(3, 8)
  with pytest.raises(UsageError, match='class 1 has 1 training images'):
    source.cluster(latents, np.array([0, 0, 1]), None, 0)
  with pytest.raises(UsageError, match='ae_steps'):
    kmeans_labels.make_source(
      _kmeans_options(ae_steps=-1),
      _info(2, num_train=20),
      PSI,
      seed=0,
      steps_per_epoch=1,
    )


# ---------------------------------------------------------- end to end ---


@pytest.fixture
def fast_compile():
  """Cheaper XLA compilation for the in-process end-to-end runs."""
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', False)


def _entry_point(method, workdir, *overrides):
  cmd = [
    sys.executable, '-m', 'experiments.run',
    '--config=experiments/configs/quickstart.py', f'--workdir={workdir}',
    '--config.compare_methods=', f'--config.method={method}',
    '--config.train.epochs=1', '--config.train.steps_per_epoch=2',
    '--config.model.head_hidden=16', *overrides,
  ]  # fmt: skip
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((workdir / 'result.json').read_text())
  assert result['method'] == method and result['dataset'] == 'digits'
  assert result['steps'] == 2 and 0.0 <= result['test_accuracy'] <= 1.0
  assert len(result['params_sha256']) == 64
  return result


@pytest.mark.slow
@pytest.mark.parametrize('method', ['single', 'random'])
def test_baseline_through_the_entry_point(method, tmp_path):
  _entry_point(method, tmp_path)


@pytest.mark.slow
def test_kmeans_through_the_entry_point(tmp_path):
  _entry_point(
    'kmeans',
    tmp_path,
    '--config.kmeans.ae_steps=3',
    '--config.kmeans.ae_steps_per_refresh=1',
    '--config.kmeans.refresh_every=1',  # Re-clusters inside the loop.
  )


@pytest.mark.slow
def test_kmeans_resumed_run_is_bitwise_identical(tmp_path, fast_compile):
  """Two epochs in one go == one epoch, then a resumed second epoch."""

  def config(epochs):
    config = quickstart.get_config()
    config.method, config.compare_methods = 'kmeans', ''
    config.model.head_hidden = 16
    config.train.epochs, config.train.steps_per_epoch = epochs, 2
    config.kmeans.update(ae_steps=2, ae_steps_per_refresh=1, refresh_every=1)
    return config

  whole = loop.train_and_evaluate(config(2), str(tmp_path / 'whole'))
  loop.train_and_evaluate(config(1), str(tmp_path / 'split'))
  resumed = loop.train_and_evaluate(config(2), str(tmp_path / 'split'))
  assert resumed['steps'] == whole['steps'] == 4
  assert resumed['params_sha256'] == whole['params_sha256']
  label_states = []
  for name in ('whole', 'split'):  # Restored without retraining anything.
    restored = restore.restore_run(str(tmp_path / name))
    assert restored.step == 4
    assert int(restored.state.label_state['refreshes']) == 4
    label_states.append(restored.state.label_state)
  for a, b in zip(*map(jax.tree.leaves, label_states), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_human_on_mock_cifar100(tmp_path, fast_compile):
  config = cifar100.get_config('primary=3,aux=10')
  config.method, config.compare_methods = 'human', ''
  config.model.name, config.model.head_hidden = 'convnet4', 16
  config.data.batch_size = config.data.eval_batch_size = 8
  config.train.epochs, config.train.steps_per_epoch = 1, 2
  config.log.progress_every_steps = 1
  policy = tfds.testing.MockPolicy.USE_CODE
  # download=True is safe here: mock_data replaces download_and_prepare and
  # disable_gcs_access keeps TFDS off the network.
  with tfds.testing.disable_gcs_access():
    with tfds.testing.mock_data(num_examples=16, policy=policy):
      result = loop.train_and_evaluate(config, str(tmp_path))
  assert result['method'] == 'human' and result['dataset'] == 'cifar100'
  assert result['steps'] == 2 and 0.0 <= result['test_accuracy'] <= 1.0
  row = json.loads((tmp_path / 'metrics.jsonl').read_text().splitlines()[-1])
  assert row['nonfinite_steps'] == 0 and np.isfinite(row['train/loss_aux'])
