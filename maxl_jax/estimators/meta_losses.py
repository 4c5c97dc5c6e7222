"""The meta objective's primary loss, by name (DESIGN §2g).

`MaxlProblem.meta_loss`: `(primary logits [N, P], labels [N]) -> scalar`.
None: the training's focal loss (γ), as published.
"""

from maxl_jax import losses


def cross_entropy(logits, labels):
  """Cross-entropy, the focal loss at γ = 0: its gradient does not shrink as
  fast as the focal loss's once f fits the batch."""
  return losses.primary_loss(logits, labels, 0.0)


META_LOSSES = {'focal': None, 'ce': cross_entropy}
