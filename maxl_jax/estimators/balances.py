"""How θ2's gradient combines its two parts, by name (DESIGN §2g).

A balance is a transform of the parts `(meta, entropy, *, lam) -> (meta,
entropy)` (`base.gradient_parts`), whose sum θ2's optimiser takes. None
('sum'): the estimator's ∇θ2 J itself, as published.
"""

import functools

import jax
import optax

from maxl_jax.errors import UsageError


def normalized(meta, entropy, *, lam: float):
  """`(m / ‖m‖, λ e / ‖e‖)`: each part scaled to unit norm and λ relative,
  so that the meta part's share of θ2's direction is 1 / (1 + λ) whatever
  the two raw norms are."""
  unit = lambda tree, scale: jax.tree.map(  # noqa: E731
    lambda x: x * (scale / (optax.tree.norm(tree) + 1e-12)), tree
  )
  return unit(meta, 1.0), unit(entropy, lam)


BALANCES = {'sum': None, 'normalized': normalized}


def balance(name: str, lam: float):
  """The transform of `BALANCES[name]` with λ bound (None for 'sum')."""
  if name not in BALANCES:
    raise UsageError(f'balance = {name!r} is not one of {list(BALANCES)}.')
  transform = BALANCES[name]
  return None if transform is None else functools.partial(transform, lam=lam)
