"""Label sources: where each method's auxiliary targets come from.

  single   no auxiliary task.
  maxl     the label-generation network g(θ2) (`generated`), the only source
           whose parameters learn (by meta steps).
  random   fixed random one-hot labels for a random balanced psi (`fixed`).
  human    the dataset's finer labels, CIFAR-100 levels (`fixed`).
  uniform  uniform soft labels over each class's psi[y] classes (`fixed`).
  kmeans   k-means clusters of autoencoder codes (`kmeans`).

`make_label_source` is the one place that maps a method name to a source.
"""

import numpy as np

from maxl_jax import hierarchy
from maxl_jax.errors import UsageError
from maxl_jax.labels import kmeans
from maxl_jax.labels.base import LabelSource, TrainingImages
from maxl_jax.labels.fixed import RandomSource, UniformSource, human_source
from maxl_jax.labels.generated import GeneratedSource

METHODS = ('single', 'maxl', 'random', 'kmeans', 'human', 'uniform')

__all__ = ['METHODS', 'LabelSource', 'TrainingImages', 'make_label_source']


def make_label_source(
  method: str,
  info,
  *,
  psi_per_class: int,
  seed: int,
  random_aux_classes: int = 0,
  kmeans_config=None,
  steps_per_epoch: int = 1,
) -> LabelSource:
  """The label source of `method` for the dataset `info`.

  Args:
    method: one of METHODS.
    info: the dataset's `DatasetInfo`.
    psi_per_class: psi[c] of the balanced hierarchy (maxl, uniform, kmeans;
      random's default total).
    seed: the run seed (random labels, K-Means).
    random_aux_classes: random's total K (0 = psi_per_class * P).
    kmeans_config: `config.kmeans` (method kmeans only).
    steps_per_epoch: θ1 steps per epoch (K-Means' default refresh period).

  Raises:
    UsageError: an unknown method, or a bad hierarchy or K-Means setting.
  """
  num_primary = info.num_classes
  psi = hierarchy.balanced_psi(num_primary, psi_per_class)
  if method == 'single':
    return LabelSource()
  if method == 'maxl':
    return GeneratedSource(psi=psi)
  if method == 'uniform':
    return UniformSource(psi=psi)
  if method == 'random':
    total = random_aux_classes or int(psi.sum())
    rng = np.random.default_rng(seed)
    return RandomSource(
      psi=hierarchy.random_psi(num_primary, total, rng), seed=seed
    )
  if method == 'human':
    if info.aux_to_primary is None:
      raise UsageError(
        'method=human needs a dataset with a label hierarchy: use '
        '--config.data.name=cifar100 (with data.primary_level/aux_level).'
      )
    return human_source(info.aux_to_primary, num_primary)
  if method == 'kmeans':
    return kmeans.from_config(
      kmeans_config, info, psi, seed=seed, steps_per_epoch=steps_per_epoch
    )
  raise UsageError(f'unknown method {method!r}; choose one of {list(METHODS)}.')
