"""What the loop measures: the test set's scores, g's label drift from
step 0, and the parameters' digest of result.json.

`evaluate` sums a jitted eval step's statistics on device over the test
set; `DriftProbe` compares g's labels with step 0's on the first test
images (DESIGN §1-2); `params_digest` is result.json's `params_sha256`.
"""

import functools
import hashlib
import itertools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from maxl_jax import diagnostics
from maxl_jax.training.mesh import global_batch, jit_step, replicated, to_host


def params_digest(theta1, theta2) -> tuple[str, dict[str, float]]:
  """sha256 of θ1 and θ2 bytes (fixed leaf order) and their global L2 norms."""
  digest = hashlib.sha256()
  norms = {}
  for name, tree in (('theta1', theta1), ('theta2', theta2)):
    leaves = jax.tree.leaves(to_host(tree))
    for leaf in leaves:
      digest.update(np.ascontiguousarray(leaf).tobytes())
    norms[name] = float(
      np.sqrt(sum(np.sum(np.square(x, dtype=np.float64)) for x in leaves))
    )
  return digest.hexdigest(), norms


@functools.partial(jax.jit, donate_argnums=0)
def _accumulate(totals, sums):
  return jax.tree.map(jnp.add, totals, sums)


def evaluate(
  eval_fn, state, eval_data, mesh, *, psi=None, fine_to_primary=None
) -> dict[str, float]:
  """Scores over the test set, from `eval_fn`'s per-batch sums.

  The sums are added on device and copied to the host once. Returns
  test accuracy (fraction) and mean primary loss; with label statistics
  (an auxiliary task of hierarchy `psi`), 'test/aux_information' and, with
  `fine_to_primary`, 'test/aux_recovery_nmi' and 'test/aux_recovery_ari'
  (`diagnostics.label_scores`, DESIGN §6).
  """
  totals = None
  for batch in eval_data:
    sums = eval_fn(state, global_batch(batch, mesh))
    totals = sums if totals is None else _accumulate(totals, sums)
  totals = to_host(totals)
  count = max(float(totals['count']), 1.0)
  out = {
    'test/accuracy': float(totals['correct']) / count,
    'test/loss': float(totals['loss']) / count,
  }
  if 'label_sums' in totals:
    scores = diagnostics.label_scores(totals, psi, fine_to_primary)
    out.update({f'test/{k}': v for k, v in scores.items()})
  return out


class DriftProbe(NamedTuple):
  """g's labels against step 0's on the first test images (DESIGN §1-2)."""

  fn: Any  # Jitted `steps.drift_step`.
  initial: Any  # The state at step 0 (θ2, its statistics), replicated.
  batches: list  # The probe's test batches (host arrays).

  @classmethod
  def create(cls, run, state, eval_data, mesh, num_images: int):
    """The probe of a run with a label generator; None without one."""
    step = run.drift_step()
    if step is None or num_images < 1:
      return None
    fn = jit_step(step, mesh)
    initial = jax.device_put(
      run.create_state(state.label_state), replicated(mesh)
    )
    count = -(-num_images // eval_data.batch_size)
    return cls(fn, initial, list(itertools.islice(eval_data, count)))

  def measure(self, state, mesh) -> dict[str, float]:
    """{'test/label_drift': mean total variation from step 0's labels
    (both under the current statistics), 'test/param_drift':
    ‖θ2 - θ2⁰‖ / ‖θ2⁰‖}."""
    totals = None
    for batch in self.batches:
      sums = self.fn((state, self.initial), global_batch(batch, mesh))
      totals = sums if totals is None else _accumulate(totals, sums)
    totals = to_host(totals)
    drift = float(totals['drift']) / max(float(totals['count']), 1.0)
    return {
      'test/label_drift': drift,
      'test/param_drift': relative_distance(state.theta2, self.initial.theta2),
    }


def relative_distance(params, reference) -> float:
  """‖params - reference‖ / ‖reference‖ over all leaves (float64 on host)."""
  now, then = (
    [np.asarray(x, np.float64) for x in jax.tree.leaves(to_host(t))]
    for t in (params, reference)
  )
  diff = sum(np.sum(np.square(a - b)) for a, b in zip(now, then, strict=True))
  norm = sum(np.sum(np.square(b)) for b in then)
  return float(np.sqrt(diff / max(norm, 1e-300)))
