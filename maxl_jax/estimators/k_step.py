"""∇θ2 J with a K-step lookahead through θ1's own optimiser (DESIGN §2h)."""

import functools

import jax
import optax

from maxl_jax.estimators.base import MetaInputs, entropy_gradient, objective
from maxl_jax.problem import optimizer_lookahead


def k_step_objective(problem, inputs: MetaInputs, theta2, *, tx, steps: int):
  """(J(θ2), MetaOutput) with θ1⁺ after `steps` updates of `tx` from
  `inputs.opt_state1`."""

  def ahead(targets):
    return optimizer_lookahead(
      problem,
      inputs.theta1,
      inputs.model_state1,
      targets,
      inputs.batch,
      tx,
      inputs.opt_state1,
      steps,
    )

  return objective(problem, inputs, theta2, ahead)


def k_step(
  problem,
  inputs: MetaInputs,
  *,
  tx: optax.GradientTransformation,
  steps: int,
  entropy_only: bool = False,
):
  """θ1⁺ is `steps` updates of θ1's optimiser `tx` (momentum included) on
  g's labels, from θ1's optimiser state `inputs.opt_state1`
  (`problem.optimizer_lookahead`); bind `tx` and `steps` with
  `functools.partial`.

  Exact: `jax.grad` through the scan of K `jax.grad`s (the unrolled
  estimator's construction; the scan's body is rematerialised). α is
  unused: the optimiser's own learning rate is the step. With
  `entropy_only`, θ2 follows λ∇θ2 H alone (the control) while J is still
  computed and logged. One step (K = 1) with plain SGD is `unrolled`.

  Raises:
    ValueError: `inputs.opt_state1` is None.
  """
  if inputs.opt_state1 is None:
    raise ValueError(
      "the K-step lookahead continues θ1's optimiser: pass its state "
      '(MetaInputs.opt_state1).'
    )
  entropy = entropy_gradient(
    problem, inputs.theta2, inputs.model_state2, inputs.batch
  )
  fn = functools.partial(k_step_objective, problem, inputs, tx=tx, steps=steps)
  if entropy_only:
    out = fn(inputs.theta2)[1]
    return entropy, out._replace(entropy_grads=entropy)
  grads2, out = jax.grad(fn, has_aux=True)(inputs.theta2)
  return grads2, out._replace(entropy_grads=entropy)
