"""The model's view of an image: normalisation, its inverse, augmentation.

Every consumer of images (input pipeline, K-Means autoencoder, figures) goes
through these functions, on numpy or on JAX arrays alike.
"""

import numpy as np

MEAN, STD = 0.5, 0.2  # Per-channel normalisation of the original code.
PAD = 4  # Zero padding of the random crop.


def normalize(images):
  """uint8 [..., C] -> float32 `(x / 255 - 0.5) / 0.2` (numpy or JAX)."""
  scale = np.float32(1 / (255 * STD))
  return images.astype(np.float32) * scale - np.float32(MEAN / STD)


def to_unit_range(normalized):
  """The inverse of `normalize`, in [0, 1] (for showing an input image)."""
  return np.clip(np.asarray(normalized) * STD + MEAN, 0.0, 1.0)


def crop_flip(
  images: np.ndarray, rng: np.random.Generator, flip: bool = True
) -> np.ndarray:
  """Random 32x32 crop of the 4-pixel zero-padded image + random h-flip.

  Args:
    images: uint8 [B, H, W, C].
    rng: source of the per-image offsets and flips.
    flip: False: the crop only (`augment='crop'`: the same offsets, no
      flip; for labels a mirror image changes, as digit_pairs' order).

  Returns:
    uint8 [B, H, W, C], one gather for the whole batch.
  """
  b, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)))
  dy = rng.integers(0, 2 * PAD + 1, size=b)
  dx = rng.integers(0, 2 * PAD + 1, size=b)
  flip = (rng.random(b) < 0.5) & flip  # Drawn either way: same crops.
  rows = dy[:, None] + np.arange(h)  # [B, H]
  cols = np.where(flip[:, None], np.arange(w)[::-1], np.arange(w))
  cols = dx[:, None] + cols  # [B, W]
  return padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
