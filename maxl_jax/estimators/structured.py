"""(b) The exact meta-gradient without a second-order graph (DESIGN §2b)."""

from maxl_jax.estimators.base import MetaInputs, labels_and_outer, mixed_grad


def structured(problem, inputs: MetaInputs):
  """`∇θ2 L_pri(θ1⁺) = -(α/N) VJP_θ2(g, C)` with `C = JVP_θ1(ℓ_nk, v)`.

  The focal loss is linear in its target, so only one forward-mode pass
  through the multi-task network is needed (plus λ∇H).
  """
  g_vjp, v, entropy_cot, out = labels_and_outer(problem, inputs)
  grads2 = mixed_grad(
    problem,
    inputs.theta1,
    inputs.model_state1,
    inputs.batch,
    g_vjp,
    v,
    inputs.alpha,
    entropy_cot,
  )
  return grads2, out
