"""Label sources: where each method's auxiliary targets come from.

  single   no auxiliary task.
  maxl     the label-generation network g(θ2) (`generated`), the only source
           whose parameters learn (by meta steps).
  frozen   g at its initialisation, never trained (a null control).
  entropy_only  g trained by the entropy term λ∇θ2 H alone (the control
           that says what the meta-gradient adds).
  random   fixed random one-hot labels, a random balanced psi (`fixed`).
  human    the hierarchy's hidden fine labels (config.data.hierarchy; `fixed`).
  soft_human  human smoothed towards uniform by baseline.soft_human_eps.
  uniform  uniform soft labels over each class's psi[y] classes (`fixed`).
  kmeans   k-means clusters of autoencoder codes (`kmeans`).

maxl, uniform, random and kmeans take a balanced psi (psi_per_class each) or
the label hierarchy's (config.maxl.psi = 'hierarchy'); human always the
hierarchy's.

`make_label_source` is the one place that maps a method name to a source,
and the one that needs a label hierarchy (human; psi_choice='hierarchy').
"""

import numpy as np

from maxl_jax import hierarchy
from maxl_jax.data import groupings
from maxl_jax.errors import UsageError
from maxl_jax.labels import kmeans
from maxl_jax.labels.base import LabelSource, TrainingImages
from maxl_jax.labels.fixed import RandomSource, UniformSource, human_source
from maxl_jax.labels.generated import GeneratedSource
from maxl_jax.labels.kmeans import KMeansOptions

METHODS = (
  'single',
  'maxl',
  'random',
  'kmeans',
  'human',
  'uniform',
  'frozen',
  'entropy_only',
  'soft_human',
)
# Methods whose targets come from g: maxl and its two controls.
GENERATED = ('maxl', 'frozen', 'entropy_only')
# config.maxl.psi: psi_per_class for every class, or the hierarchy's psi
# (or P comma-separated positive ints, `parse_psi`).
PSI_CHOICES = ('balanced', 'hierarchy')

__all__ = [
  'METHODS',
  'PSI_CHOICES',
  'KMeansOptions',
  'LabelSource',
  'check_psi_choice',
  'parse_psi',
  'TrainingImages',
  'make_label_source',
]


def parse_psi(psi_choice) -> np.ndarray | None:
  """config.maxl.psi as a list of ints ('5,15,5,...', or a sequence), or
  None for a name of PSI_CHOICES. Raises UsageError for anything else."""
  if isinstance(psi_choice, str) and psi_choice in PSI_CHOICES:
    return None
  tokens = psi_choice.split(',') if isinstance(psi_choice, str) else psi_choice
  try:
    values = [int(str(t).strip()) for t in tokens]
  except (TypeError, ValueError):
    values = None
  if not values or any(v < 1 for v in values):
    raise UsageError(
      f'config.maxl.psi = {psi_choice!r} is not one of {list(PSI_CHOICES)} '
      'nor a comma-separated list of positive ints, one per primary class '
      '(e.g. --config.maxl.psi=5,15,5).'
    )
  return np.asarray(values, np.int64)


def check_psi_choice(psi_choice: str):
  """Raises UsageError unless `psi_choice` (config.maxl.psi) is known:
  a name of PSI_CHOICES or a list of positive ints (`parse_psi`)."""
  parse_psi(psi_choice)


def _check_hierarchy(info, why: str):
  """Raises UsageError unless the dataset `info` has a label hierarchy."""
  if info.fine_to_primary is None:
    named = groupings.names(info.name)
    listed = f'one of {list(named)} or ' if named else ''
    raise UsageError(
      f'{why} needs a dataset with a label hierarchy, and {info.name} has '
      f'none as configured: set --config.data.hierarchy to {listed}a '
      f'comma-separated list of {info.num_classes} coarse ids, one per '
      'class (cifar100 has its levels by default).'
    )


def make_label_source(
  method: str,
  info,
  *,
  psi_per_class: int,
  seed: int,
  psi_choice: str = 'balanced',
  random_aux_classes: int = 0,
  kmeans_options: kmeans.KMeansOptions | None = None,
  steps_per_epoch: int = 1,
  soft_human_eps: float = 0.5,
) -> LabelSource:
  """The label source of `method` for the dataset `info`.

  Args:
    method: one of METHODS.
    info: the dataset's `DatasetInfo`.
    psi_per_class: psi[c] of the balanced hierarchy (maxl, uniform, kmeans;
      random's default total).
    seed: the run seed (random labels, K-Means).
    psi_choice: psi of maxl, uniform, random and kmeans (config.maxl.psi):
      'balanced' (psi_per_class each; random: a random balanced psi),
      'hierarchy' (the dataset hierarchy's psi, unbalanced in general;
      random_aux_classes is then unused) or P comma-separated positive
      ints ('5,15,5,...', likewise). human always uses the hierarchy's.
    random_aux_classes: random's total K (0 = psi_per_class * P).
    kmeans_options: the K-Means settings (method kmeans; None: defaults).
    steps_per_epoch: θ1 steps per epoch (K-Means' default refresh period).
    soft_human_eps: ε of soft_human, in (0, 1].

  Raises:
    UsageError: an unknown method or psi_choice, a hierarchy needed but
      absent, or a bad hierarchy or K-Means setting.
  """
  if method not in METHODS:
    raise UsageError(
      f'unknown method {method!r}; choose one of {list(METHODS)}.'
    )
  given = parse_psi(psi_choice)
  num_primary = info.num_classes
  if method == 'soft_human' and not 0 < soft_human_eps <= 1:
    raise UsageError(
      f'config.baseline.soft_human_eps = {soft_human_eps!r} must be in '
      '(0, 1] for method=soft_human (0 is human; 1 is uniform).'
    )
  if method in ('human', 'soft_human'):
    _check_hierarchy(info, f'method={method}')
  elif method != 'single' and psi_choice == 'hierarchy':
    _check_hierarchy(info, f"config.maxl.psi='hierarchy' ({method})")
  elif method != 'single' and given is not None and given.size != num_primary:
    raise UsageError(
      f'config.maxl.psi gives {given.size} values, but {info.name} has '
      f'{num_primary} primary classes; give one positive int per class '
      f'(--config.maxl.psi=' + ','.join(['5'] * num_primary) + ').'
    )
  if method == 'single':
    return LabelSource()
  if method in ('human', 'soft_human'):
    smoothing = soft_human_eps if method == 'soft_human' else 0.0
    return human_source(info.fine_to_primary, num_primary, smoothing)
  if given is not None:
    psi = given
  elif psi_choice == 'hierarchy':
    psi = hierarchy.psi_from_label_map(info.fine_to_primary, num_primary)
  else:
    psi = hierarchy.balanced_psi(num_primary, psi_per_class)
  if method in GENERATED:
    return GeneratedSource(psi=psi, learns=method != 'frozen')
  if method == 'uniform':
    return UniformSource(psi=psi)
  if method == 'random':
    if psi_choice == 'balanced':
      total = random_aux_classes or int(psi.sum())
      rng = np.random.default_rng(seed)
      psi = hierarchy.random_psi(num_primary, total, rng)
    return RandomSource(psi=psi, seed=seed)
  return kmeans.make_source(
    kmeans_options or kmeans.KMeansOptions(),
    info,
    psi,
    seed=seed,
    steps_per_epoch=steps_per_epoch,
  )
