"""Label sources: where each method's auxiliary targets come from.

`SOURCES` registers every method (config.method) by name with what it needs
(`Source`: its ψ, a generator, an estimator of its own, its options) and
how it is built; `make_label_source` is the one place that maps a method
name to a source. The run builder, config validation and the figures read
the registry; none tests a method's name. A new source is its module, one
entry here and its test.

  single   no auxiliary task.
  uniform  uniform soft labels over each class's psi[y] classes (`fixed`).
  random   fixed random one-hot labels, a random balanced psi (`fixed`).
  kmeans   k-means clusters of autoencoder codes (`kmeans`).
  human    the hierarchy's hidden fine labels (config.data.hierarchy; `fixed`).
  soft_human  human smoothed towards uniform (`soft_human`).
  frozen   g at its initialisation, never trained (a null control).
  entropy_only  g trained by the entropy term λ∇θ2 H alone (the control
           that says what the meta-gradient adds).
  maxl     the label-generation network g(θ2) (`generated`), the only source
           whose parameters learn by the meta-gradient.

maxl, uniform, random and kmeans take a balanced psi (psi_per_class each),
the label hierarchy's (config.maxl.psi = 'hierarchy') or a list; human and
soft_human always the hierarchy's.
"""

import dataclasses
import functools
from collections.abc import Callable

from maxl_jax.errors import UsageError
from maxl_jax.labels import fixed, generated, kmeans, soft_human
from maxl_jax.labels.base import LabelSource, TrainingImages
from maxl_jax.labels.kmeans import KMeansOptions
from maxl_jax.labels.psi import (
  PSI_CHOICES,
  check_psi_choice,
  parse_psi,
  resolve_psi,
)

__all__ = [
  'GENERATED',
  'METHODS',
  'PSI_CHOICES',
  'SOURCES',
  'KMeansOptions',
  'LabelSource',
  'Source',
  'TrainingImages',
  'check_psi_choice',
  'make_label_source',
  'parse_psi',
  'source',
]


@dataclasses.dataclass(frozen=True)
class Source:
  """A method's label source: what it needs and how it is built.

  Attributes:
    build: `build(info, psi, *, seed, psi_choice, **options)` ->
      `LabelSource` (`psi`: the resolved ψ, None for psi 'none' or 'fine').
    psi: 'none' (no auxiliary task), 'choice' (config.maxl.psi's ψ) or
      'fine' (the dataset hierarchy's fine labels and their ψ).
    generator: its targets come from g(θ2), which takes θ2 steps.
    entropy_only: θ2 follows the entropy part λ∇θ2 H alone, whatever
      maxl.meta_grad says (the controls' estimator).
    options: the keyword arguments of `build` beyond the common ones.
  """

  build: Callable[..., LabelSource]
  psi: str = 'choice'
  generator: bool = False
  entropy_only: bool = False
  options: tuple[str, ...] = ()

  @property
  def meta_gradient(self) -> bool:
    """θ2 follows maxl.meta_grad's estimator of ∇θ2 J."""
    return self.generator and not self.entropy_only


# In the order of the results table (baselines, controls, MAXL).
SOURCES = {
  'single': Source(lambda info, psi, **_: LabelSource(), psi='none'),
  'uniform': Source(fixed.build_uniform),
  'random': Source(fixed.build_random, options=('random_aux_classes',)),
  'kmeans': Source(kmeans.build, options=('kmeans_options', 'steps_per_epoch')),
  'human': Source(fixed.build_human, psi='fine'),
  'soft_human': Source(
    soft_human.build, psi='fine', options=('soft_human_eps',)
  ),
  'frozen': Source(
    functools.partial(generated.build, learns=False),
    generator=True,
    entropy_only=True,
  ),
  'entropy_only': Source(generated.build, generator=True, entropy_only=True),
  'maxl': Source(generated.build, generator=True),
}
METHODS = tuple(SOURCES)
# Methods whose targets come from g: maxl and its two controls.
GENERATED = tuple(name for name, s in SOURCES.items() if s.generator)


def source(method: str) -> Source:
  """The entry of `method`; UsageError for an unknown name."""
  if method not in SOURCES:
    raise UsageError(
      f'unknown method {method!r}; choose one of {list(METHODS)}.'
    )
  return SOURCES[method]


def make_label_source(
  method: str,
  info,
  *,
  psi_per_class: int,
  seed: int,
  psi_choice: str = 'balanced',
  **options,
) -> LabelSource:
  """The label source of `method` for the dataset `info`.

  Args:
    method: one of METHODS.
    info: the dataset's `DatasetInfo`.
    psi_per_class: psi[c] of the balanced hierarchy (maxl, uniform, kmeans;
      random's default total).
    seed: the run seed (random labels, K-Means).
    psi_choice: psi of the sources with psi 'choice' (config.maxl.psi):
      'balanced' (psi_per_class each; random: a random balanced psi),
      'hierarchy' (the dataset hierarchy's psi, unbalanced in general) or P
      comma-separated positive ints ('5,15,5,...', likewise).
    **options: any source's options (`Source.options`); each source takes
      its own: random_aux_classes (random's total K, 0 = psi's),
      kmeans_options and steps_per_epoch (kmeans), soft_human_eps (ε of
      soft_human, in (0, 1]).

  Raises:
    UsageError: an unknown method or psi_choice, a hierarchy needed but
      absent, or a bad hierarchy or option.
    TypeError: an option no source takes.
  """
  entry = source(method)
  known = {name for s in SOURCES.values() for name in s.options}
  unknown = sorted(set(options) - known)
  if unknown:
    raise TypeError(f'make_label_source got unknown options {unknown}.')
  psi = resolve_psi(entry.psi, method, info, psi_choice, psi_per_class)
  own = {k: v for k, v in options.items() if k in entry.options}
  return entry.build(info, psi, seed=seed, psi_choice=psi_choice, **own)
