"""(c) The original's central finite difference along v (DESIGN §2c)."""

import jax
import optax

from maxl_jax.estimators.base import MetaInputs, labels_and_outer
from maxl_jax.problem import aux_focal_terms


def first_order(problem, inputs: MetaInputs):
  """`∇θ2 L_pri(θ1⁺) ≈ -α [∇θ2 L_train(θ1+εv) - ∇θ2 L_train(θ1-εv)] / (2ε)`
  with `ε = fd_eps / ‖v‖`; unlike the original it includes λ∇H. Only L_aux
  depends on θ2 and it is linear in g, so the two gradients share one VJP.
  """
  g_vjp, v, entropy_cot, out = labels_and_outer(problem, inputs)
  eps = problem.fd_eps / (optax.tree.norm(v) + 1e-30)
  alpha = inputs.alpha

  def focal_at(move):  # ℓ_nk at θ1 moved along v.
    theta = jax.tree.map(move, inputs.theta1, v)
    return aux_focal_terms(problem, theta, inputs.model_state1, inputs.batch)

  plus = focal_at(lambda p, d: p + eps * d)
  minus = focal_at(lambda p, d: p - eps * d)
  n = out.aux_probs.shape[0]
  targets_cot = -alpha * (plus - minus) / (2 * eps * n)
  # ε follows θ1's dtype; the cotangent must have g's output dtype (float32
  # compute with float64 parameters).
  dtype = out.aux_probs.dtype
  (grads2,) = g_vjp((entropy_cot.astype(dtype), targets_cot.astype(dtype)))
  return grads2, out
