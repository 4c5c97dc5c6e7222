"""The `entropy_only` control: not an estimator of ∇J, θ2 follows the
entropy part λ∇θ2 H alone (DESIGN §6)."""

from maxl_jax.estimators.base import MetaInputs, labels_and_outer


def entropy_only(problem, inputs: MetaInputs):
  """(λ∇θ2 H, MetaOutput): no meta part.

  J and the lookahead are still computed, so that the control logs the same
  meta objective as MAXL (the one it does not optimise).
  """
  out = labels_and_outer(problem, inputs)[3]
  return out.entropy_grads, out
