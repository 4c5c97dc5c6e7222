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
