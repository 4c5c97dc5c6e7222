"""The model's view of an image: the one normalisation, and its inverse.

Every consumer of images (input pipeline, K-Means autoencoder, figures) goes
through these functions, on numpy or on JAX arrays alike.
"""

import numpy as np

MEAN, STD = 0.5, 0.2  # Per-channel normalisation of the original code.


def normalize(images):
  """uint8 [..., C] -> float32 `(x / 255 - 0.5) / 0.2` (numpy or JAX)."""
  scale = np.float32(1 / (255 * STD))
  return images.astype(np.float32) * scale - np.float32(MEAN / STD)


def to_unit_range(normalized):
  """The inverse of `normalize`, in [0, 1] (for showing an input image)."""
  return np.clip(np.asarray(normalized) * STD + MEAN, 0.0, 1.0)
