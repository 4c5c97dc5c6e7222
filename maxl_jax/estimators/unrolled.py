"""(a) `jax.grad` through the lookahead's own `jax.grad`: the reference
estimator of ∇θ2 J (DESIGN §2a)."""

import functools

import jax

from maxl_jax.estimators.base import MetaInputs, entropy_gradient, objective


def unrolled(problem, inputs: MetaInputs):
  """∇θ2 J by differentiating J itself, second-order graph included.

  λ∇θ2 H (`MetaOutput.entropy_grads`) is differentiated on its own.
  """
  grads2, out = jax.grad(
    functools.partial(objective, problem, inputs), has_aux=True
  )(inputs.theta2)
  entropy = entropy_gradient(
    problem, inputs.theta2, inputs.model_state2, inputs.batch
  )
  return grads2, out._replace(entropy_grads=entropy)
