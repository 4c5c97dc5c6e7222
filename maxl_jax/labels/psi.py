"""The hierarchy ψ a label source gets: config.maxl.psi parsed, checked
against the dataset, resolved to an array."""

import numpy as np

from maxl_jax import hierarchy
from maxl_jax.data import groupings
from maxl_jax.errors import UsageError

# config.maxl.psi: psi_per_class for every class, or the hierarchy's psi
# (or P comma-separated positive ints, `parse_psi`).
PSI_CHOICES = ('balanced', 'hierarchy')


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


def check_hierarchy(info, why: str):
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


def resolve_psi(kind: str, method: str, info, psi_choice, psi_per_class: int):
  """The ψ of a source whose psi is `kind` (`labels.Source.psi`), checked.

  'none' (no auxiliary task) and 'fine' (the hierarchy's own, built by the
  source) give None; 'choice' gives `psi_choice`'s ψ: the listed ints,
  the hierarchy's, or `psi_per_class` for every class.

  Raises:
    UsageError: a bad psi_choice, or a hierarchy needed but absent, or a
      list of the wrong length.
  """
  given = parse_psi(psi_choice)
  num_primary = info.num_classes
  if kind == 'fine':
    check_hierarchy(info, f'method={method}')
    return None
  if kind == 'none':
    return None
  if psi_choice == 'hierarchy':
    check_hierarchy(info, f"config.maxl.psi='hierarchy' ({method})")
    return hierarchy.psi_from_label_map(info.fine_to_primary, num_primary)
  if given is not None:
    if given.size != num_primary:
      raise UsageError(
        f'config.maxl.psi gives {given.size} values, but {info.name} has '
        f'{num_primary} primary classes; give one positive int per class '
        f'(--config.maxl.psi=' + ','.join(['5'] * num_primary) + ').'
      )
    return given
  return hierarchy.balanced_psi(num_primary, psi_per_class)
