"""The input pipeline: maxl_jax/data/pipeline.py, on digits.

Batches, resumption, evaluation padding, multi-host shares, config errors,
and what it does with a hierarchy, low-data options and the held-out split.
(The datasets themselves: test_readers.py.)
"""

import numpy as np
import pytest
from data_loading import assert_batches_equal, load, make_config, take

from maxl_jax.data import pipeline
from maxl_jax.errors import UsageError

pytestmark = pytest.mark.usefixtures('no_gcs')  # conftest.py.


# ------------------------------------------------------------- Hierarchy ---


def test_hierarchy_regroups_labels_and_keeps_the_fine_ones():
  """digits, halves: label = digit // 5, fine_label = the digit."""
  plain = pipeline.get_datasets(make_config(), seed=0, device_count=1)
  config = make_config(hierarchy='halves', meta_fraction=0.1)
  data = pipeline.get_datasets(config, seed=0, device_count=1)
  assert (data.info.num_classes, data.info.fine_num_classes) == (2, 10)
  np.testing.assert_array_equal(data.info.fine_to_primary, [0] * 5 + [1] * 5)
  for it in (data.train, data.meta):
    np.testing.assert_array_equal(it.labels, it.fine_labels // 5)
    batch = it.batch(0, 1)
    np.testing.assert_array_equal(batch['label'], batch['fine_label'] // 5)
    assert batch['fine_label'].dtype == np.int32
  # The same images, in the same order, with the same fine labels.
  np.testing.assert_array_equal(data.eval.images, plain.eval.images)
  np.testing.assert_array_equal(data.eval.fine_labels, plain.eval.labels)
  for batch in data.eval:
    assert batch['fine_label'].dtype == np.int32
    real = batch['mask'] > 0
    np.testing.assert_array_equal(
      batch['label'][real], batch['fine_label'][real] // 5
    )
  test = pipeline.load_test_split(config)
  np.testing.assert_array_equal(test.fine_labels, plain.eval.labels)
  np.testing.assert_array_equal(test.labels, plain.eval.labels // 5)
  images, labels, fine = pipeline.load_test_split(make_config())
  assert fine is None and not any('fine_label' in b for b in plain.eval)
  np.testing.assert_array_equal(labels, plain.eval.labels)


# ------------------------------------------------------ Low-data subsets ---


def test_low_data_options_through_get_datasets():
  train, eval_data, info = load(make_config(per_class=20), seed=5)
  assert info.num_train == 200 and info.num_test == 360
  np.testing.assert_array_equal(np.bincount(train.labels), np.full(10, 20))
  np.testing.assert_array_equal(train.indices, np.arange(200))
  other, _, _ = load(make_config(per_class=20), seed=6)
  assert not np.array_equal(train.images, other.images)
  half, _, info = load(make_config(train_fraction=0.5))
  assert abs(info.num_train - 1437 / 2) <= 10


def test_balance_fine_gives_every_pair_the_same_count():
  """digit_pairs at 10%: 10 images of each of the 25 pairs (auto = fine);
  balanced by parity alone the pairs' counts vary with the seed."""
  pairs = {'hierarchy': 'parity', 'train_fraction': 0.1, 'batch_size': 50}
  for seed in (0, 1):
    train, _, _ = load(make_config('digit_pairs', **pairs), seed=seed)
    np.testing.assert_array_equal(np.bincount(train.fine_labels), [10] * 25)
    held = pipeline.get_datasets(
      make_config(
        'digit_pairs', **pairs, meta_fraction=0.1, meta_batch_size=25
      ),
      seed=seed,
      device_count=1,
    )
    np.testing.assert_array_equal(np.bincount(held.train.fine_labels), [9] * 25)
    np.testing.assert_array_equal(np.bincount(held.meta.fine_labels), [1] * 25)
  coarse, _, _ = load(make_config('digit_pairs', **pairs, balance='primary'))
  assert len(set(np.bincount(coarse.fine_labels, minlength=25))) > 1
  np.testing.assert_array_equal(np.bincount(coarse.labels), [130, 120])


def test_balance_errors_say_what_to_set():
  with pytest.raises(UsageError, match='data.balance = .nope.'):
    load(make_config(balance='nope', train_fraction=0.5))
  with pytest.raises(UsageError, match='--config.data.hierarchy'):
    load(make_config(balance='fine', train_fraction=0.5))


# -------------------------------------------------------------- Iterator ---


def test_set_state_resumes_with_identical_batches():
  config = make_config()
  train, _, _ = load(config)
  assert train.steps_per_epoch == 14
  take(train, 10)
  state = train.get_state()
  assert state == {'epoch': 0, 'step': 10}
  expected = take(train, 20)  # Crosses into epoch 2.
  resumed, _, _ = load(config)
  resumed.set_state(state)
  assert_batches_equal(take(resumed, 20), expected)
  assert resumed.get_state() == train.get_state() == {'epoch': 2, 'step': 2}


def test_batches_depend_on_the_seed_only():
  a = take(load(make_config(), seed=1)[0], 16)
  assert_batches_equal(a, take(load(make_config(), seed=1)[0], 16))
  b = take(load(make_config(), seed=2)[0], 16)
  assert not np.array_equal(a[0]['index'], b[0]['index'])
  assert not np.array_equal(a[0]['index'], a[14]['index'])  # New epoch.


# ------------------------------------------------- Evaluation, multi-host ---


def test_eval_batch_rounds_up_to_the_devices():
  """Evaluation masks padding, so 10 on 4 devices becomes 12, not an error."""
  assert pipeline.eval_batch_size(10, 4, 1) == 12
  assert pipeline.eval_batch_size(500, 8, 2) == 504
  _, eval_data, _ = load(make_config(eval_batch_size=10), device_count=4)
  batches = list(eval_data)
  assert {b['label'].shape for b in batches} == {(12,)}
  assert sum(b['mask'].sum() for b in batches) == 360  # Every test image.


def test_eval_batches_are_padded_with_mask():
  _, eval_data, _ = load(make_config(eval_batch_size=16))
  batches = list(eval_data)
  assert len(batches) == 23  # ceil(360 / 16).
  assert all(b['label'].shape == (16,) for b in batches)
  np.testing.assert_array_equal(batches[-1]['mask'], np.arange(16) < 8)
  real = np.concatenate([b['label'][b['mask'] > 0] for b in batches])
  np.testing.assert_array_equal(real, eval_data.labels)


def test_multi_host_shares_cover_the_training_set_once():
  whole, _, info = load(make_config(batch_size=10))
  shares = [
    load(make_config(batch_size=10), process_index=p, process_count=2)
    for p in (0, 1)
  ]
  indices = [s[0].indices for s in shares]
  assert not set(indices[0]) & set(indices[1])
  np.testing.assert_array_equal(
    np.sort(np.concatenate(indices)), np.arange(info.num_train)
  )
  for train, eval_data, _ in shares:
    np.testing.assert_array_equal(train.images, whole.images[train.indices])
    assert train.steps_per_epoch == whole.steps_per_epoch
    assert next(train)['image'].shape == (5, 32, 32, 1)
    assert len(eval_data) == 23 and eval_data.batch_size == 8
  assert sum(s[1].num_examples for s in shares) == 360


# ---------------------------------------------------------------- Errors ---


@pytest.mark.parametrize(
  'overrides, kwargs, match',
  [
    ({'batch_size': 10}, {'device_count': 4}, 'batch_size = 10'),
    ({'eval_batch_size': 0}, {}, 'eval_batch_size'),
    ({'batch_size': 9}, {'process_count': 2}, '2 hosts'),
    ({'batch_size': 2000}, {}, 'exceeds the 1437'),
    ({'name': 'cifar1000'}, {}, 'known datasets: mnist'),
    ({'train_fraction': 0.5, 'per_class': 5}, {}, 'Both low-data'),
    ({'train_fraction': 0.0}, {}, 'train_fraction'),
    ({'per_class': 500}, {}, 'per_class <= '),
    ({'augment': 'mixup'}, {}, 'augment'),
    ({'hierarchy': '0,1'}, {}, 'but digits has 10 classes'),
    ({'hierarchy': 'pairs'}, {}, r"one of \['parity', 'halves'\]"),
    ({'name': 'cifar100', 'primary_level': 20, 'aux_level': 10}, {}, 'finer'),
  ],
)
def test_bad_config_raises_usage_error(overrides, kwargs, match):
  with pytest.raises(UsageError, match=match):
    load(make_config(**overrides), **kwargs)


def test_bad_resume_state_raises():
  train, _, _ = load(make_config())
  with pytest.raises(UsageError, match='steps per epoch'):
    train.set_state({'epoch': 0, 'step': 14})


# ------------------------------------------------------ held-out split ---


def test_held_out_split_through_get_datasets():
  config = make_config('digits', batch_size=20, meta_fraction=0.2)
  data = pipeline.get_datasets(config, seed=0, device_count=1)
  whole = load(make_config('digits', batch_size=20))[0]
  train, meta = data.train, data.meta
  assert data.info.num_meta == len(meta.labels) == round(0.2 * 1437)
  assert data.info.num_train == len(train.labels) == 1437 - data.info.num_meta
  train_images = {img.tobytes() for img in train.images}
  assert not any(img.tobytes() in train_images for img in meta.images)
  counts = np.bincount(meta.labels, minlength=10)
  np.testing.assert_allclose(counts / counts.sum(), 0.1, atol=0.01)
  both = np.concatenate([train.images, meta.images])
  assert sorted(x.tobytes() for x in both) == sorted(
    x.tobytes() for x in whole.images
  )
  again = pipeline.get_datasets(config, seed=0, device_count=1).meta
  assert_batches_equal([meta.batch(1, 2)], [again.batch(1, 2)])
  assert not np.array_equal(
    meta.batch(0, 0)['label'][:8], train.batch(0, 0)['label'][:8]
  )  # The two streams draw apart.
