"""`train_and_evaluate(config, workdir)`: one run, MAXL's or the combiner's.

Training = load the data, build the run (`runs`: a MAXL or baseline
`assembly.Run`, or AuxiLearn's loss combiner, `combine.CombineRun`),
initialise the label source (or restore a checkpoint), then loop over the
schedule's steps with evaluations, metrics and checkpoints. The only module
with side effects.

What the loop asks of a run: its `schedule`, `held_out`, `on_nonfinite`,
`alpha_schedule` (the logged lr), `label_source`, `psi`, `method`, `seed`
and `info`; `init_state`/`abstract_state` (a `MaxlState`); `jit_steps(mesh)`
(a jitted step per schedule kind, 'eval', and optionally 'probe', a row's
entries from the fixed batch `probe_batch(data)`, each epoch); and
`result_fields(final)`, its own fields of result.json.

Data parallel (SPMD, `mesh`): every process feeds its own share of each
batch. Only process 0 writes metrics, the config and the result; every
process takes part in checkpoints.

Fault tolerance: a checkpoint every `checkpoint.every_steps` steps, at each
epoch end and at the end; a rerun with the same workdir resumes from the
newest usable one (bitwise: the metric sums of the current epoch are in the
state); SIGTERM saves a checkpoint and stops (`Preempted`); a non-finite
step stops the run (`NonFiniteError`) before any checkpoint after it.
"""

import dataclasses
import functools
import hashlib
import itertools
import json
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from clu import parameter_overview, periodic_actions
from jax.experimental import multihost_utils

from maxl_jax import diagnostics
from maxl_jax.data import pipeline
from maxl_jax.errors import Preempted
from maxl_jax.labels import TrainingImages
from maxl_jax.training import (
  checkpointing,
  compilation,
  console,
  metrics,
  runs,
  step_fns,
)
from maxl_jax.training import workdir as workdir_lib
from maxl_jax.training.mesh import (
  global_batch,
  jit_step,
  make_mesh,
  replicated,
  to_host,
  with_sharding,
)
from maxl_jax.training.schedule import PRIMARY


@dataclasses.dataclass(frozen=True)
class LoopOptions:
  """The loop's own settings (from `config.train`, `.checkpoint`, `.log`)."""

  epochs: int
  eval_every_epochs: int
  checkpoint_every_steps: int
  checkpoint_every_epochs: int
  keep_checkpoints: int
  progress_every_steps: int
  drift_images: int = 1000

  @classmethod
  def from_config(cls, config) -> 'LoopOptions':
    return cls(
      epochs=config.train.epochs,
      eval_every_epochs=config.train.eval_every_epochs,
      checkpoint_every_steps=config.checkpoint.every_steps,
      checkpoint_every_epochs=config.checkpoint.get('every_epochs', 1),
      keep_checkpoints=config.checkpoint.keep,
      progress_every_steps=config.log.progress_every_steps,
      drift_images=config.log.get('drift_images', 1000),
    )


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

  fn: Any  # Jitted `step_fns.drift_step`.
  initial: Any  # The state at step 0 (θ2, its statistics), replicated.
  batches: list  # The probe's test batches (host arrays).

  @classmethod
  def create(cls, run, state, eval_data, mesh, num_images: int):
    """The probe of a run with a label generator; None without one."""
    if getattr(run, 'g', None) is None or num_images < 1:
      return None
    fn = jit_step(
      functools.partial(
        step_fns.drift_step,
        problem=run.problem,
        label_source=run.label_source,
      ),
      mesh,
    )
    initial = jax.device_put(
      run.init_state(state.label_state), replicated(mesh)
    )
    count = -(-num_images // eval_data.batch_size)
    return cls(fn, initial, list(itertools.islice(eval_data, count)))

  def measure(self, state, mesh) -> dict[str, float]:
    """{'test/label_drift': mean total variation from step 0's labels}."""
    totals = None
    for batch in self.batches:
      sums = self.fn((state, self.initial), global_batch(batch, mesh))
      totals = sums if totals is None else _accumulate(totals, sums)
    totals = to_host(totals)
    drift = float(totals['drift']) / max(float(totals['count']), 1.0)
    return {'test/label_drift': drift}


def _evaluate_all(fns, state, eval_data, mesh, scoring, drift) -> dict:
  """The test set's scores, and the label drift where there is a probe."""
  out = evaluate(fns['eval'], state, eval_data, mesh, **scoring)
  if drift is not None:
    out.update(drift.measure(state, mesh))
  return out


def _lead_says(flag: bool) -> bool:
  """Process 0's `flag`, on every process (so that all take one branch)."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def training_images(train_it) -> TrainingImages:
  """The label sources' view of the training set (no augmentation)."""
  return TrainingImages(
    images=train_it.images,
    labels=train_it.labels,
    indices=train_it.indices,
  )


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains per `config`, writing into `workdir`; returns the result dict.

  Resumes from the newest usable checkpoint in `workdir`; a finished run
  (result.json present, final step reached) returns its result untouched.

  Raises:
    UsageError: a bad config or workdir (before anything is written) or no
      usable checkpoint.
    NonFiniteError: a non-finite step with `train.on_nonfinite='stop'`.
    Preempted: SIGTERM; a checkpoint was saved.
  """
  # From the start, so that a SIGTERM is never lost.
  watch = checkpointing.PreemptionWatch()
  try:
    runs.validate(config)
    workdir_lib.check_writable(workdir)
    data = pipeline.get_datasets(
      config.data,
      seed=config.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
    )
    run = runs.build_run(config, data.info)  # Raises before any write.
    path = workdir_lib.as_path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    console.open_log(path)
    manager = checkpointing.make_manager(
      str(path / workdir_lib.CHECKPOINTS), config.checkpoint.keep
    )
    try:
      return _train(
        run,
        LoopOptions.from_config(config),
        config.to_json_best_effort(indent=2),
        data,
        path,
        manager,
        watch,
      )
    finally:
      manager.close()
  finally:
    watch.close()


def _data_position(data) -> dict:
  """The iterators' positions, saved with every checkpoint."""
  position = {'data': data.train.get_state()}
  if data.meta is not None:
    position['meta_data'] = data.meta.get_state()
  return position


def _initial(run, data, manager, mesh):
  """(step, state, last saved step): a restored checkpoint, or step 0.

  A restored run takes its label-source state from the checkpoint; only a
  new one initialises it (K-Means trains its autoencoder here).
  """
  repl = replicated(mesh)
  template = with_sharding(run.abstract_state(), repl)
  step, state, extra = checkpointing.restore_latest(manager, template)
  if step is not None:
    data.train.set_state(extra['data'])
    if data.meta is not None:
      data.meta.set_state(extra['meta_data'])
    return step, state, step
  label_state = run.label_source.init_state(training_images(data.train))
  return 0, jax.device_put(run.init_state(label_state), repl), None


def _evaluation_line(row: dict, epochs: int) -> str:
  """One terminal line per evaluation: the epoch's losses, the test set."""
  parts = [f'epoch {row["epoch"]}/{epochs}', f'step {row["step"]}']
  if 'train/loss_pri' in row:
    parts.append(f'train loss {row["train/loss_pri"]:.4f}')
  if 'meta/meta_loss' in row:
    parts.append(f'meta loss {row["meta/meta_loss"]:.4f}')
  parts.append(f'test accuracy {100 * row["test/accuracy"]:.2f}%')
  parts.append(f'test loss {row["test/loss"]:.4f}')
  return '  '.join(parts)


def _train(run, options, config_json, data, workdir, manager, watch) -> dict:
  """The training loop of `train_and_evaluate`."""
  train_it, eval_data = data.train, data.eval
  lead = jax.process_index() == 0
  mesh = make_mesh()
  schedule = run.schedule
  per_epoch = schedule.epoch_steps
  total = options.epochs * per_epoch
  result_path = workdir / workdir_lib.RESULT
  step, state, last_saved = _initial(run, data, manager, mesh)
  if step:
    console.say('Resuming from the checkpoint at step %d of %d.', step, total)
  else:
    console.say('Starting from scratch: no checkpoint in %s.', workdir)
  if step >= total and _lead_says(result_path.exists()):
    console.say(
      'This run already finished (step %d of %d); nothing to train. Result: %s',
      step,
      total,
      result_path,
    )
    return json.loads(result_path.read_text())
  console.say(
    'Training %s on %s: %d steps (%d epochs of %d) on %d %s device(s) '
    '(process %d of %d).',
    run.method,
    run.info.name,
    total,
    options.epochs,
    per_epoch,
    jax.device_count(),
    jax.default_backend(),
    jax.process_index(),
    jax.process_count(),
  )

  fns = run.jit_steps(mesh)
  scoring = {'psi': run.psi, 'fine_to_primary': run.info.fine_to_primary}
  if lead:
    workdir_lib.write_run_files(workdir, config_json, run.info)
    parameter_overview.log_parameter_overview(state.theta1)
  # A run from scratch drops every row an earlier attempt wrote.
  writer = metrics.EpochWriter(workdir, step // per_epoch if step else -1, lead)
  report = periodic_actions.ReportProgress(
    num_train_steps=total,
    writer=writer.scalars,
    every_steps=options.progress_every_steps,
  )
  images = training_images(train_it)
  probe_batch = global_batch(run.probe_batch(data), mesh)
  start = time.time()
  first, session_tick = step, time.perf_counter()  # For steps/s and ETA.
  train_s = writer.carried('train_s')  # Training's wall clock, no evals.
  # Compiling (or reading the persistent cache) every program of the run.
  compile_s = writer.carried('compile_s') - compilation.seconds()
  tick = time.perf_counter()
  final = None  # The last evaluation of the test set.
  probed = {}  # The last probe's row entries.
  drift = DriftProbe.create(run, state, eval_data, mesh, options.drift_images)
  if step == 0:  # Every curve starts at the initial networks.
    eval_s = time.perf_counter()
    row = {'epoch': 0, 'step': 0}
    row.update(_evaluate_all(fns, state, eval_data, mesh, scoring, drift))
    seconds = {'train_s': 0.0, 'eval_s': time.perf_counter() - eval_s}
    seconds['compile_s'] = compile_s + compilation.seconds()
    writer.write(0, row, seconds)
    console.say(_evaluation_line(row, options.epochs))
    tick = time.perf_counter()

  def probe():
    if 'probe' not in fns:
      return {}
    values = to_host(fns['probe'](state, probe_batch))
    return {k: float(v) for k, v in values.items()}

  def check_guard():
    return metrics.check_guard(
      to_host(state.guard), run.on_nonfinite, last_saved
    )

  def save(wait=False):
    nonlocal last_saved
    check_guard()
    checkpointing.save(manager, step, state, _data_position(data), wait=wait)
    last_saved = step

  try:
    while step < total:
      if watch.reached(step):
        if step and last_saved != step:
          save()
        manager.wait_until_finished()
        raise Preempted(
          f'checkpoint saved at step {step} of {total}'
          if last_saved
          else 'stopped before the first step; nothing to save'
        )
      epoch = step // per_epoch
      kind = schedule.kind(step)
      batches = [global_batch(next(train_it), mesh)]
      if run.held_out and kind != PRIMARY:
        batches.append(global_batch(next(data.meta), mesh))
      state = fns[kind](state, *batches)
      state = state.replace(
        label_state=run.label_source.refresh(state.label_state, step, images)
      )
      step += 1
      report(step)
      console.progress(
        step, total, (step - first) / (time.perf_counter() - session_tick)
      )
      if step % options.progress_every_steps == 0:
        check_guard()
        logging.info('epoch %d step %d/%d', epoch + 1, step, total)
      if step % per_epoch == 0:
        jax.block_until_ready(state)
        train_s += time.perf_counter() - tick
        row = {'epoch': epoch + 1, 'step': step}
        row.update(metrics.epoch_means(to_host(state.sums)))
        probed = probe()
        row.update(probed)
        row['nonfinite_steps'] = check_guard()
        row['lr'] = float(run.alpha_schedule(int(to_host(state.step1))))
        eval_s = time.perf_counter()
        if (epoch + 1) % options.eval_every_epochs == 0 or step == total:
          with report.timed('eval'):
            final = _evaluate_all(fns, state, eval_data, mesh, scoring, drift)
          row.update(final)
        eval_s = time.perf_counter() - eval_s
        zero = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), state.sums)
        state = state.replace(sums=jax.device_put(zero, replicated(mesh)))
        seconds = {
          'train_s': train_s,
          'eval_s': eval_s,
          'compile_s': compile_s + compilation.seconds(),
        }
        writer.write(step, row, seconds)
        if 'test/accuracy' in row:
          console.say(_evaluation_line(row, options.epochs))
        if (
          (epoch + 1) % options.checkpoint_every_epochs == 0
          or step % options.checkpoint_every_steps == 0
          or step == total
        ):
          save(wait=step == total)
        tick = time.perf_counter()
      elif step % options.checkpoint_every_steps == 0:
        save()
  finally:
    manager.wait_until_finished()
    writer.flush()

  if final is None:  # Resumed from the final checkpoint without a result.
    final = _evaluate_all(fns, state, eval_data, mesh, scoring, drift)
    probed = probe()
  sha, norms = params_digest(state.theta1, state.theta2)
  result = {
    'method': run.method,
    'dataset': run.info.name,
    'seed': run.seed,
    'epochs': options.epochs,
    'steps': step,
    'test_accuracy': final['test/accuracy'],
    **run.result_fields({**final, **probed}),
    'wall_time_s': time.time() - start,
    'params_sha256': sha,
    'param_norms': norms,
  }
  if lead:
    result_path.write_text(json.dumps(result, indent=2))
  logging.info('Finished at step %d; params sha256 %s.', step, sha)
  return result
