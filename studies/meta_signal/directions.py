"""Where the meta objective points, at checkpoints of finished MAXL runs.

  python -m studies.meta_signal.directions --workdir=runs/meta_signal \
    --out=runs/meta_signal/analysis/directions

For every finished run with a label generator under WORKDIR whose name
matches --only (default: `PREFIXES`, the runs of docs/RESULTS.md's table;
`python -m studies.meta_signal` writes it after its sweep), at step 0 and at
its final checkpoint, on the first --batches training batches: the slope of
each meta objective's primary part along the label directions from g's
labels (batch statistics, as θ1 trains on them), beside the entropy term's
(`maxl_jax.diagnostics.label_space_slopes`, docs/DESIGN.md §2i):

  human          Human − g: one-hot on the fine class's slot, in Human's
                 order of the slots;
  human_matched  the same with each primary class's fine classes assigned
                 to the slots that best match g's labels on the batch
                 (largest overlap, a linear assignment: `matched_slots`),
                 so that labels g learnt in another order count. (The mean
                 over all assignments is Uniform: its slope is Uniform's.)
  uniform        Uniform − g;
  random_onehot  Random − g, one-hot on a random auxiliary class of the
                 image's primary class (Human's hardness without its
                 content), each field the mean over --draws draws.

Objectives:

  one_step  L_pri(θ1 − α∇L_train(t)) on the training batch (as published);
  kK_step   L_pri after K updates of θ1's own optimiser on the batch, for
            each --k;
  held_out  L_pri at the fixed point (IFT, AuxiLearn's solver) on a held-out
            batch: the run's held-out split, or else a test batch.

Negative slope: the objective falls as the labels move that way. Writes
directions.csv (one row per run, state, objective, direction and batch)
and directions.md: seed means ± std per group, then the paired difference
of the meta slope per batch, ⟨∇J, h − r⟩ (h: Human's or the matched
labels, r: the random draws), with a 95% t interval over batches and seeds,
and the runs' commits.
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
  flags.DEFINE_multi_integer(
    'k', list(KS), 'Optimiser updates of a K-step objective (repeatable).'
  )
  flags.DEFINE_integer('draws', DRAWS, 'Random one-hot labels per batch.')


KS = (5, 20)  # The K-step objectives' K.
DRAWS = 16  # Random one-hot labels per batch (their slopes averaged).
FIELDS = ('meta', 'entropy', 'meta_cosine', 'entropy_cosine', 'norm')
# The paired differences of the meta slope, per batch: (name, direction,
# minus direction).
PAIRED = (
  ('human − random', 'human', 'random_onehot'),
  ('matched − random', 'human_matched', 'random_onehot'),
)


def _nth(iterator, n):
  """The n-th batch from the start (epochs of a few batches roll over)."""
  return iterator.batch(
    n // iterator.steps_per_epoch, n % iterator.steps_per_epoch
  )


def _as_device(batch):
  return {k: jnp.asarray(v) for k, v in batch.items() if k != 'mask'}


def labels_of(run, state, batch):
  """g's labels [N, K] of `batch` (batch statistics, as θ1 trains)."""
  labels, _ = generated_labels(
    run.problem, state.theta2, state.model_state2, batch
  )
  return labels.probs


def matched_slots(probs, fine, fine_to_primary, psi):
  """[N] auxiliary slot of each image: its fine class's slot under the
  assignment of its primary class's fine classes to its auxiliary slots
  that best matches g's labels `probs` [N, K] on this batch (the largest
  total overlap, scipy's linear_sum_assignment), as Human's labels would be
  named if g had learnt them in another order.

  Args:
    probs: g's labels [N, K] (numpy).
    fine: the images' fine classes [N].
    fine_to_primary: [F] each fine class's primary class.
    psi: [P] auxiliary slots of each primary class (psi[c] = its number of
      fine classes).
  """
  from scipy.optimize import linear_sum_assignment

  probs, fine = np.asarray(probs), np.asarray(fine)
  fine_to_primary = np.asarray(fine_to_primary)
  starts = np.concatenate([[0], np.cumsum(psi)[:-1]])
  slot_of = np.zeros(len(fine_to_primary), np.int64)
  for c, start in enumerate(starts):
    members = np.flatnonzero(fine_to_primary == c)  # Human's slot order.
    overlap = np.stack([
      probs[fine == f, start : start + psi[c]].sum(0) for f in members
    ])  # fmt: skip
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    slot_of[members[rows]] = start + cols
  return slot_of[fine]


def batch_slopes(run, ks, inverse, draws, state, batch, meta_batch, key, slot):
  """{objective: {direction: {field: value}}} on one batch; `inverse`:
  the held-out objective's inverse-HVP solver (the run's config.inverse_hvp);
  `slot` [N]: `matched_slots`; `draws` random one-hot labels, whose fields
  are averaged ('random_onehot')."""
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
  num_aux = allowed.shape[1]
  targets['human_matched'] = jax.nn.one_hot(slot, num_aux)
  # Human's control: one-hot labels as hard as Human's, on a random
  # auxiliary class of the image's primary class (content alone differs).
  logits = jnp.where(allowed, 0.0, -jnp.inf)
  for i, k in enumerate(jax.random.split(key, draws)):
    targets[f'random{i}'] = jax.nn.one_hot(
      jax.random.categorical(k, logits), num_aux
    )
  directions = {n: t - labels.probs for n, t in targets.items()}
  alpha = run.alpha_schedule(state.step1)  # θ1's lr times its scale.
  theta1, ms1 = state.theta1, state.model_state1
  fns = {
    'one_step': diagnostics.one_step_meta_loss(
      problem, theta1, ms1, batch, alpha, batch
    ),
    **{
      f'k{k}_step': diagnostics.k_step_meta_loss(
        problem, theta1, ms1, batch, run.tx1, state.opt_state1, k, batch
      )
      for k in ks
    },
    'held_out': diagnostics.held_out_meta_loss(
      problem, theta1, ms1, batch, labels.targets, meta_batch, inverse,
    ),
  }  # fmt: skip
  out = {}
  for name, fn in fns.items():
    slopes = diagnostics.label_space_slopes(
      fn, labels.probs, problem.lam, directions, allowed
    )
    randoms = [slopes.pop(f'random{i}') for i in range(draws)]
    mean = lambda *v: jnp.mean(jnp.stack(v))  # noqa: E731
    slopes['random_onehot'] = jax.tree.map(mean, *randoms)
    out[name] = slopes
  return out


def run_slopes(workdir: pathlib.Path, batches: int, ks, draws: int):
  """Rows (state, objective, direction, batch, fields) of one finished
  run: one per batch."""
  final = restore.restore_run(str(workdir))
  run, config = final.run, final.config
  data = pipeline.get_datasets(
    DataSpec(**config.data), seed=config.seed, device_count=1
  )
  step0 = run.create_state(final.state.label_state)
  keys = ('solver', 'neumann_steps', 'neumann_lr', 'cg_steps', 'damping')
  inverse = inverse_hvp.make_solver(**{k: config.inverse_hvp[k] for k in keys})
  slopes = jax.jit(
    functools.partial(batch_slopes, run, tuple(ks), inverse, draws)
  )
  probs_of = jax.jit(functools.partial(labels_of, run))
  info = run.info
  rows = []
  for label, state in (('step 0', step0), ('final', final.state)):
    for b in range(batches):
      host = _nth(data.train, b)
      batch = _as_device(host)
      if data.meta is not None:
        meta_batch = _as_device(_nth(data.meta, b))
      else:
        meta_batch = _as_device(next(iter(data.eval)))
      slot = matched_slots(
        jax.device_get(probs_of(state, batch)),
        host['fine_label'],
        info.fine_to_primary,
        np.asarray(run.psi),
      )
      key = jax.random.key(b)
      out = jax.device_get(slopes(state, batch, meta_batch, key, slot))
      for obj, by_dir in out.items():
        for direction, fields in by_dir.items():
          row = {'state': label, 'objective': obj, 'direction': direction}
          row['batch'] = b
          rows.append({**row, **{f: float(fields[f]) for f in FIELDS}})
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


def _seed_means(rows: list[dict]) -> dict:
  """{(group, state, objective, direction): [per-seed batch means]}."""
  batches = collections.defaultdict(list)
  for r in rows:
    key = (r['group'], r['state'], r['objective'], r['direction'])
    batches[key, r['seed']].append(r)
  out = collections.defaultdict(list)
  for (key, _), rs in batches.items():
    out[key].append({f: float(np.mean([r[f] for r in rs])) for f in FIELDS})
  return out


def paired(rows: list[dict]) -> list[dict]:
  """Per (group, state, objective) and PAIRED difference: the meta slope's
  ⟨∇J, h − r⟩ per batch (h: Human's or the matched Human's labels, r: the
  random draws' mean), its mean and 95% t interval over batches and seeds
  (n of them)."""
  from scipy import stats

  slope = {
    (r['group'], r['state'], r['objective'], r['direction'], r['seed'],
     r['batch']): r['meta']
    for r in rows
  }  # fmt: skip
  values = collections.defaultdict(list)
  for (group, state, obj, direction, seed, b), value in slope.items():
    for name, plus, minus in PAIRED:
      if direction == plus:
        other = slope[group, state, obj, minus, seed, b]
        values[group, state, obj, name].append(value - other)
  out = []
  for (group, state, obj, name), v in values.items():
    n, mean = len(v), float(np.mean(v))
    half = float('nan')
    if n > 1:
      half = float(stats.t.ppf(0.975, n - 1) * np.std(v, ddof=1) / np.sqrt(n))
    out.append({
      'group': group, 'state': state, 'objective': obj, 'difference': name,
      'n': n, 'mean': mean, 'ci95': half,
    })  # fmt: skip
  return out


def markdown(rows: list[dict]) -> str:
  """Seed means ± std per (group, state, objective, direction), then the
  paired differences with their 95% intervals."""
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

  for (group, state, obj, direction), seeds in _seed_means(rows).items():
    lines.append(
      f'| {group} | {state} | {obj} | {direction} | {len(seeds)} '
      + ' | '.join(
        cell([s[f] for s in seeds], '.3f' if 'cosine' in f else '.2e')
        for f in ('meta', 'entropy', 'meta_cosine', 'entropy_cosine')
      ).join(('| ', ' |'))
    )
  lines += [
    '',
    '| group | state | objective | meta slope difference | n (batches × '
    'seeds) | mean | 95% CI |',
    '|---|---|---|---|--:|--:|--:|',
  ]
  for r in paired(rows):
    low, high = r['mean'] - r['ci95'], r['mean'] + r['ci95']
    lines.append(
      f'| {r["group"]} | {r["state"]} | {r["objective"]} | {r["difference"]} '
      f'| {r["n"]} | {r["mean"]:+.2e} | [{low:+.2e}, {high:+.2e}] |'
    )
  return '\n'.join(lines) + '\n'


def write(root, out, prefixes=PREFIXES, batches=4, ks=KS, draws=DRAWS):
  """directions.csv and directions.md of the finished runs under `root`
  whose names start with a prefix, into `out`; returns the markdown."""
  root, out = pathlib.Path(root), pathlib.Path(out)
  rows, results = [], []
  for path in finished_runs(root, prefixes):
    name = path.relative_to(root).as_posix()
    group, seed = name.rsplit('/', 1)
    for row in run_slopes(path, batches, ks, draws):
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
    print(write(root, out, FLAGS.only, FLAGS.batches, FLAGS.k, FLAGS.draws))
  except UsageError as e:
    cli.fail(str(e))


if __name__ == '__main__':
  define_flags()
  app.run(main)
