"""result.json's fields: the final evaluation, the run's own fields, the
parameters' digest and where the wall clock went."""

import time

from maxl_jax.training import session
from maxl_jax.training.evaluation import params_digest
from maxl_jax.training.provenance import git_commit


def result(ctx: session.Context, p: session.Progress, start: float) -> dict:
  """result.json's fields (the final evaluation, repeated if missing)."""
  final, probed = p.final, p.probed
  if final is None:  # Resumed from the final checkpoint without a result.
    final = session.evaluate_all(ctx, p.carry.state)
    probed = session.probe(ctx, p.carry.state)
    p = session.charge(p, 'eval')
  run = ctx.run
  sha, norms = params_digest(*run.digested(p.carry.state))
  return {
    'method': run.method,
    'dataset': run.info.name,
    'seed': run.seed,
    'epochs': ctx.options.epochs,
    'steps': p.step,
    'test_accuracy': final['test/accuracy'],
    **run.result_fields({**final, **probed}),
    'wall_time_s': time.time() - start,
    'params_sha256': sha,
    'git_commit': git_commit(),  # HEAD, '-dirty' if edited; None.
    'param_norms': norms,
    'timing': session.charge(p, 'other').ledger.summary(),
  }
