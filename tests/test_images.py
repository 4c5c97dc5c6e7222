"""Normalisation and augmentation: maxl_jax/data/images.py (in batches)."""

import numpy as np
import pytest
from data_loading import load, make_config

from maxl_jax.data import images

pytestmark = pytest.mark.usefixtures('no_gcs')  # conftest.py.


def test_no_augmentation_is_normalised_raw_images():
  train, _, _ = load(make_config(augment='none'))
  batch = next(train)
  raw = train.images[batch['index']]
  np.testing.assert_array_equal(batch['image'], images.normalize(raw))
  np.testing.assert_array_equal(batch['label'], train.labels[batch['index']])
  np.testing.assert_allclose(images.normalize(np.array([0, 255], np.uint8)), [
      -2.5, 2.5,
  ], rtol=1e-6)  # fmt: skip


def test_crop_flip_gives_a_crop_of_the_padded_image():
  train, _, _ = load(make_config(augment='crop_flip'))
  batch = next(train)
  raw = train.images[batch['index']]
  assert not np.array_equal(batch['image'], images.normalize(raw))
  padded = np.pad(raw, ((0, 0), (4, 4), (4, 4), (0, 0)))
  flips = 0
  for image, original in zip(batch['image'], padded, strict=True):
    candidates = [
        (f, images.normalize(c[:, ::-1] if f else c))
        for f in (0, 1)
        for c in (original[y : y + 32, x : x + 32] for y in range(9)
                  for x in range(9))
    ]  # fmt: skip
    matches = [f for f, c in candidates if np.array_equal(image, c)]
    assert matches, 'augmented image is not a crop/flip of its source'
    flips += min(matches)
  assert 20 < flips < 80  # About half the images flipped.


def _offsets_and_flips(out, images):
  """(y, x, flipped) of each output image as a crop of its padded source."""
  padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
  found = []
  for image, original in zip(out, padded, strict=True):
    matches = [
        (y, x, f)
        for y in range(9) for x in range(9) for f in (False, True)
        if np.array_equal(
            image, (lambda c: c[:, ::-1] if f else c)(
                original[y : y + 32, x : x + 32]))
    ]  # fmt: skip
    assert len(matches) == 1, 'not one crop (and flip) of its source'
    found.append(matches[0])
  return found


def test_crop_never_flips_and_crop_flip_does_with_the_same_offsets():
  """`crop` (augment='crop', label-preserving for digit_pairs) draws the
  offsets and flips of `crop_flip` and drops the flips."""
  rng = np.random.default_rng(0)
  raw = rng.integers(0, 256, size=(64, 32, 32, 1), dtype=np.uint8)
  cropped = images.crop_flip(raw, np.random.default_rng(1), flip=False)
  flipped = images.crop_flip(raw, np.random.default_rng(1))
  crops = _offsets_and_flips(cropped, raw)
  crop_flips = _offsets_and_flips(flipped, raw)
  assert not any(f for _, _, f in crops)
  assert 16 < sum(f for _, _, f in crop_flips) < 48  # About half flipped.
  assert [c[:2] for c in crops] == [c[:2] for c in crop_flips]
  assert len({c[:2] for c in crops}) > 10  # Random offsets.


def test_crop_augments_training_batches_without_flipping():
  train, _, _ = load(make_config(augment='crop'))
  batch = next(train)
  raw = train.images[batch['index']]
  assert not np.array_equal(batch['image'], images.normalize(raw))
  padded = np.pad(raw, ((0, 0), (4, 4), (4, 4), (0, 0)))
  for image, original in zip(batch['image'], padded, strict=True):
    assert any(
      np.array_equal(image, images.normalize(original[y : y + 32, x : x + 32]))
      for y in range(9)
      for x in range(9)
    )
