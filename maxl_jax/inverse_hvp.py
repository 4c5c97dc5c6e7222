"""Implicit (IFT) hypergradients: inverse Hessian-vector products on pytrees.

AuxiLearn (Navon et al., ICLR 2021; DESIGN §2d) treats θ as a minimiser of an
inner loss `L_T(θ, φ)` and differentiates an outer loss `L_A(θ)` through
that minimum with the implicit function theorem:

  ∇φ L_A(θ*(φ)) = -∇²φθ L_T · H⁻¹ ∇θ L_A,   H = ∇²θ L_T.

`w ≈ H⁻¹ ∇θ L_A` comes from Hessian-vector products only (no Hessian is
formed): a truncated Neumann series, as AuxiLearn, or conjugate gradient.
Everything here is a pure function of pytrees; the MAXL estimator
`estimators.implicit` and the loss combiner (`combiner`) build on it.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from maxl_jax.errors import UsageError

Params = Any
HvpFn = Callable[[Params], Params]

SOLVERS = ('neumann', 'cg')


def tree_vdot(a, b):
  """`⟨a, b⟩` summed over the leaves of two pytrees of the same structure."""
  return sum(jax.tree.leaves(jax.tree.map(jnp.vdot, a, b)))


def hvp(loss_fn, params, vector):
  """`∇²loss_fn(params) · vector`, forward-over-reverse.

  One `jax.jvp` of `jax.grad(loss_fn)`: a small multiple (about 2x) of a
  gradient's cost, without differentiating the gradient's graph in reverse.

  Args:
    loss_fn: scalar function of `params` (a pytree).
    params: where the Hessian is taken.
    vector: pytree like `params`.

  Returns:
    A pytree like `params`.
  """
  return jax.jvp(jax.grad(loss_fn), (params,), (vector,))[1]


def _axpy(a, x, y):
  """`a * x + y`, leaf by leaf (a scalar)."""
  return jax.tree.map(lambda u, v: a * u + v, x, y)


def neumann(hvp_fn: HvpFn, g, *, steps: int, lr: float):
  """AuxiLearn's truncated Neumann series for `H⁻¹ g`.

  `w = lr Σ_{j=0..K} (I - lr H)^j g` with K = `steps` (K HVPs; K = 0 gives
  `lr * g`). It converges to `H⁻¹ g` when the spectrum of `lr H` lies in
  (0, 2); truncated, it is `H⁻¹ g` restricted to the curvature that K steps
  of gradient descent with step `lr` would see.

  Args:
    hvp_fn: `u -> H u` on pytrees like `g`.
    g: right-hand side (a pytree).
    steps: K >= 0, the number of Hessian-vector products.
    lr: the series' step size η.
  """

  def body(_, carry):
    term, total = carry
    term = _axpy(-lr, hvp_fn(term), term)  # (I - lr H) term.
    return term, jax.tree.map(jnp.add, total, term)

  _, total = jax.lax.fori_loop(0, steps, body, (g, g))
  return jax.tree.map(lambda t: lr * t, total)


def damped(hvp_fn: HvpFn, damping: float) -> HvpFn:
  """`u -> (H + damping I) u` from `hvp_fn: u -> H u`."""
  if not damping:
    return hvp_fn
  return lambda u: _axpy(damping, u, hvp_fn(u))


def cg(hvp_fn: HvpFn, g, *, steps: int, damping: float = 0.0, tol=1e-6):
  """Conjugate gradient on `(H + damping I) w = g`, at most `steps` HVPs.

  CG needs `H + damping I` positive definite; the Hessian of a non-convex
  network's loss may be indefinite, so damp it (or use `neumann`).

  Args:
    hvp_fn: `u -> H u` on pytrees like `g`.
    g: right-hand side (a pytree).
    steps: maximum number of iterations.
    damping: δ >= 0 added to the diagonal.
    tol: relative residual at which CG stops early (0 runs all `steps`).
  """
  operator = damped(hvp_fn, damping)
  w, _ = jax.scipy.sparse.linalg.cg(operator, g, tol=tol, maxiter=steps)
  return w


@dataclasses.dataclass(frozen=True)
class InverseHvp:
  """How `w ≈ (H + damping I)⁻¹ g` is computed from Hessian-vector products.

  Attributes:
    solver: 'neumann' (AuxiLearn's truncated series) or 'cg'.
    steps: HVPs per solve: K of the Neumann series (AuxiLearn: 3), or CG's
      maximum number of iterations.
    lr: the Neumann series' step size η (AuxiLearn: 0.1); unused by CG.
    damping: δ >= 0 added to H's diagonal (both solvers).
    tol: CG's relative residual for an early stop; unused by Neumann.
  """

  solver: str = 'neumann'
  steps: int = 3
  lr: float = 0.1
  damping: float = 0.0
  tol: float = 1e-6

  def __post_init__(self):
    if self.solver not in SOLVERS:
      raise UsageError(
        f'unknown inverse-HVP solver {self.solver!r}; choose one of '
        f'{list(SOLVERS)}.'
      )
    if self.steps < 0 or self.damping < 0 or self.lr <= 0:
      raise UsageError(
        f'inverse-HVP needs steps >= 0, damping >= 0 and lr > 0; got '
        f'steps={self.steps!r}, damping={self.damping!r}, lr={self.lr!r}.'
      )

  def solve(self, hvp_fn: HvpFn, g):
    """`w ≈ (H + damping I)⁻¹ g` with `hvp_fn: u -> H u` (pytrees)."""
    if self.solver == 'cg':
      return cg(hvp_fn, g, steps=self.steps, damping=self.damping, tol=self.tol)
    return neumann(
      damped(hvp_fn, self.damping), g, steps=self.steps, lr=self.lr
    )


def make_solver(
  *, solver='neumann', neumann_steps=3, neumann_lr=0.1, cg_steps=3, damping=0.0
) -> InverseHvp:
  """The solver of these settings (the steps of the one chosen), shared by
  `implicit` and the combiner."""
  steps = neumann_steps if solver == 'neumann' else cg_steps
  return InverseHvp(solver=solver, steps=steps, lr=neumann_lr, damping=damping)


def hypergradient(inner_loss, outer_loss, theta, phi, inverse: InverseHvp):
  """The IFT hypergradient `-∇φ ⟨w, ∇θ inner(θ, φ)⟩`, `w = H⁻¹ ∇θ outer(θ)`.

  `H = ∇²θ inner(θ, φ)` at the given θ (ideally a minimiser of inner). The
  mixed term is reverse-over-reverse, fine for a small φ (e.g. a loss
  combiner); MAXL's label network uses the structured form instead
  (`estimators.implicit`). A direct dependence of the outer loss on φ is not
  included: add its gradient.

  Args:
    inner_loss: `(theta, phi) -> scalar`, the training loss L_T.
    outer_loss: `theta -> scalar`, the held-out loss L_A.
    theta: pytree, the inner parameters.
    phi: pytree, the outer (hyper)parameters.
    inverse: any object with `solve(hvp_fn, g) -> w`, e.g. `InverseHvp`.

  Returns:
    A pytree like `phi`.
  """
  g = jax.grad(outer_loss)(theta)
  w = inverse.solve(lambda u: hvp(lambda t: inner_loss(t, phi), theta, u), g)
  w = jax.lax.stop_gradient(w)

  def mixed(p):
    return tree_vdot(w, jax.grad(inner_loss)(theta, p))

  return jax.tree.map(jnp.negative, jax.grad(mixed)(phi))
