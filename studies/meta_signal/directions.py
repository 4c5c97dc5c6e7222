"""Where the meta objective points, at checkpoints of finished MAXL runs.

  python -m studies.meta_signal.directions --workdir=runs/meta_signal \
    --out=runs/meta_signal/analysis/directions

For every finished run with a label generator under WORKDIR whose name
matches --only (default: `PREFIXES`, the runs of docs/RESULTS.md's table;
`python -m studies.meta_signal` writes it after its sweep), at step 0 and at
its final checkpoint, on the first --batches training batches: the slope of
each meta objective's primary part along the label directions Human − g,
Uniform − g and Random − g (one-hot on a random auxiliary class of the
image's primary class: Human's hardness without its content) from g's labels
as θ1 trains on them (batch statistics), beside the entropy term's
(`maxl_jax.diagnostics.label_space_slopes`, docs/DESIGN.md §2i):

  one_step  L_pri(θ1 − α∇L_train(t)) on the training batch (as published);
  k_step    L_pri after --k updates of θ1's own optimiser on the batch;
  held_out  L_pri at the fixed point (IFT, AuxiLearn's solver) on a held-out
            batch: the run's held-out split, or else a test batch.

Negative slope: the objective falls as the labels move that way. Writes
directions.csv (one row per run, state, objective, direction, batch mean)
and directions.md (seed means ± std per group, the runs' commits).
"""

import collections
import csv
import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import cli
from experiments.figures.table import commits_line
from maxl_jax import diagnostics, hierarchy, inverse_hvp
from maxl_jax.data import pipeline
from maxl_jax.data.spec import DataSpec
from maxl_jax.errors import UsageError
from maxl_jax.labels import GENERATED
from maxl_jax.labels.fixed import UniformSource, human_source
from maxl_jax.problem import generated_labels
from maxl_jax.training import restore

FLAGS = flags.FLAGS
# The runs of docs/RESULTS.md's direction table (those with a generator).
PREFIXES = ('study/maxl/', 'paper/maxl/', 'heldout/')


def define_flags():
  """This script's flags (not defined on import: `python -m
  studies.meta_signal` imports it beside the sweep's flags)."""
  flags.DEFINE_string('workdir', 'runs/meta_signal', 'Parent folder of runs.')
  flags.DEFINE_string('out', None, 'Folder of directions.csv and .md.')
  flags.DEFINE_multi_string('only', list(PREFIXES), 'Run-name prefixes.')
  flags.DEFINE_integer('batches', 4, 'Training batches per state.')
  flags.DEFINE_integer('k', 5, 'Optimiser updates of the K-step objective.')


OBJECTIVES = ('one_step', 'k_step', 'held_out')
FIELDS = ('meta', 'entropy', 'meta_cosine', 'entropy_cosine', 'norm')


def _nth(iterator, n):
  """The n-th batch from the start (epochs of a few batches roll over)."""
  return iterator.batch(
    n // iterator.steps_per_epoch, n % iterator.steps_per_epoch
  )


def _as_device(batch):
  return {k: jnp.asarray(v) for k, v in batch.items() if k != 'mask'}


def batch_slopes(run, k, inverse, state, batch, meta_batch, key):
  """{objective: {direction: {field: value}}} on one batch; `inverse`:
  the held-out objective's inverse-HVP solver (the run's config.inverse_hvp)."""
  problem = run.problem
  info = run.info
  labels, _ = generated_labels(problem, state.theta2, state.model_state2, batch)
  human = human_source(info.fine_to_primary, info.num_classes)
  uniform = UniformSource(psi=run.psi)
  targets = {
    name: source.targets({}, None, None, batch, problem=problem)
    for name, source in (('human', human), ('uniform', uniform))
  }
  allowed = jnp.asarray(hierarchy.class_mask(run.psi))[batch['label']]
  # Human's control: one-hot labels as hard as Human's, on a random
  # auxiliary class of the image's primary class (content alone differs).
  slot = jax.random.categorical(key, jnp.where(allowed, 0.0, -jnp.inf))
  targets['random_onehot'] = jax.nn.one_hot(slot, allowed.shape[1])
  directions = {n: t - labels.probs for n, t in targets.items()}
  alpha = run.alpha_schedule(state.step1)  # θ1's lr times its scale.
  theta1, ms1 = state.theta1, state.model_state1
  fns = {
    'one_step': diagnostics.one_step_meta_loss(
      problem, theta1, ms1, batch, alpha, batch
    ),
    'k_step': diagnostics.k_step_meta_loss(
      problem, theta1, ms1, batch, run.tx1, state.opt_state1, k, batch
    ),
    'held_out': diagnostics.held_out_meta_loss(
      problem, theta1, ms1, batch, labels.targets, meta_batch, inverse,
    ),
  }  # fmt: skip
  return {
    name: diagnostics.label_space_slopes(
      fn, labels.probs, problem.lam, directions, allowed
    )
    for name, fn in fns.items()
  }


def run_slopes(workdir: pathlib.Path, batches: int, k: int) -> list[dict]:
  """Rows (state, objective, direction, fields) of one finished run."""
  final = restore.restore_run(str(workdir))
  run, config = final.run, final.config
  data = pipeline.get_datasets(
    DataSpec(**config.data), seed=config.seed, device_count=1
  )
  step0 = run.create_state(final.state.label_state)
  keys = ('solver', 'neumann_steps', 'neumann_lr', 'cg_steps', 'damping')
  inverse = inverse_hvp.make_solver(**{k: config.inverse_hvp[k] for k in keys})
  slopes = jax.jit(functools.partial(batch_slopes, run, k, inverse))
  rows = []
  for label, state in (('step 0', step0), ('final', final.state)):
    sums = collections.defaultdict(list)
    for b in range(batches):
      batch = _as_device(_nth(data.train, b))
      if data.meta is not None:
        meta_batch = _as_device(_nth(data.meta, b))
      else:
        meta_batch = _as_device(next(iter(data.eval)))
      key = jax.random.key(b)
      out = jax.device_get(slopes(state, batch, meta_batch, key))
      for obj, by_dir in out.items():
        for direction, fields in by_dir.items():
          sums[obj, direction].append(fields)
    for (obj, direction), values in sums.items():
      row = {'state': label, 'objective': obj, 'direction': direction}
      for f in FIELDS:
        row[f] = float(np.mean([v[f] for v in values]))
      rows.append(row)
  return rows


def finished_runs(root: pathlib.Path, prefixes) -> list[pathlib.Path]:
  """The finished runs under `root` whose names start with a prefix and
  that have a label generator (Uniform, Human, ...: no g, no direction)."""
  runs = sorted(p.parent for p in root.glob('**/result.json'))
  names = {p: p.relative_to(root).as_posix() + '/' for p in runs}
  return [
    p
    for p in runs
    if any(names[p].startswith(x) for x in prefixes)
    and json.loads((p / 'config.json').read_text())['method'] in GENERATED
  ]


def markdown(rows: list[dict]) -> str:
  """Seed means ± std per (group, state, objective, direction)."""
  groups = collections.defaultdict(list)
  for r in rows:
    key = (r['group'], r['state'], r['objective'], r['direction'])
    groups[key].append(r)
  lines = [
    '| group | state | objective | towards | n | meta slope | entropy slope '
    '| meta cosine | entropy cosine |',
    '|---|---|---|---|--:|--:|--:|--:|--:|',
  ]

  def cell(values, form):
    mean = format(np.mean(values), '+' + form)
    if len(values) < 2:
      return mean
    return f'{mean} ± {format(np.std(values, ddof=1), form)}'

  for (group, state, obj, direction), rs in groups.items():
    lines.append(
      f'| {group} | {state} | {obj} | {direction} | {len(rs)} '
      + ' | '.join(
        cell([r[f] for r in rs], '.3f' if 'cosine' in f else '.2e')
        for f in ('meta', 'entropy', 'meta_cosine', 'entropy_cosine')
      ).join(('| ', ' |'))
    )
  return '\n'.join(lines) + '\n'


def write(root, out, prefixes=PREFIXES, batches=4, k=5) -> str:
  """directions.csv and directions.md of the finished runs under `root`
  whose names start with a prefix, into `out`; returns the markdown."""
  root, out = pathlib.Path(root), pathlib.Path(out)
  rows, results = [], []
  for path in finished_runs(root, prefixes):
    name = path.relative_to(root).as_posix()
    group, seed = name.rsplit('/', 1)
    for row in run_slopes(path, batches, k):
      rows.append({'group': group, 'seed': seed, **row})
    results.append(json.loads((path / 'result.json').read_text()))
    print(f'{name}: done', flush=True)
  if not rows:
    raise UsageError(
      f'no finished run with a label generator under {root} starts with '
      f'{" or ".join(prefixes)}.'
    )
  out.mkdir(parents=True, exist_ok=True)
  with (out / 'directions.csv').open('w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  text = f'{markdown(rows)}\n{commits_line(results)}\n'
  (out / 'directions.md').write_text(text)
  return text


def main(argv):
  del argv
  root = pathlib.Path(FLAGS.workdir)
  out = FLAGS.out or root / 'analysis' / 'directions'
  try:
    print(write(root, out, FLAGS.only, FLAGS.batches, FLAGS.k))
  except UsageError as e:
    cli.fail(str(e))


if __name__ == '__main__':
  define_flags()
  app.run(main)
