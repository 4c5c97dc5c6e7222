"""`python -m studies.<name>`: one study's runs, tables and figures.

  python -m studies.meta_signal --workdir=runs/meta_signal

Trains every run of `studies/<name>/config.py`'s `sweep()` into
WORKDIR/<run name> (finished runs are skipped, interrupted ones resume),
writes each of its `analyses()` into OUT/<subfolder> (default
WORKDIR/analysis) and then whatever else the study draws from its runs
(the meta-signal study: the direction table, `directions.py`).
`--only=PREFIX` (repeatable) restricts the runs.

`--tiny` reruns the whole pipeline in about a minute, not the study: the
first seed of each group of runs, each shrunk to 2 θ1 steps of batch 16 on
a tiny ConvNet-4 (`TINY`). Its numbers mean nothing; the tests run it.
`--set=FIELD=VALUE` (repeatable) overrides a config field of every run,
e.g. `--set=data.local_dir=DIR` for Fashion-MNIST's IDX files elsewhere.
"""

import ast
import os
import re
import sys

from absl import app, flags

from experiments import allocator, cli
from experiments import sweep as sweep_lib

FLAGS = flags.FLAGS
flags.DEFINE_bool('tiny', False, 'The pipeline at tiny size (the tests).')
flags.DEFINE_multi_string('set', [], 'FIELD=VALUE for every run.')

# Each run at tiny size: 2 epochs of 1 θ1 step (and θ2's), batch 16, a
# ConvNet-4 of widths 8-16-16-32 (VGG-16 runs too), an evaluation and a
# checkpoint per epoch.
TINY = {
  'train.epochs': 2,
  'train.steps_per_epoch': 1,
  'train.eval_every_epochs': 1,
  'checkpoint.every_epochs': 1,
  'data.batch_size': 16,
  'model.name': 'convnet4',
  'model.widths': (8, 16, 16, 32),
  'model.head_hidden': 32,
  'log.drift_images': 100,
}
SEED = re.compile(r'/seed\d+$')


def tiny(runs) -> list:
  """The first seed of each group of `runs` (names that differ only in
  their `/seed<n>` end), with TINY's overrides."""
  chosen, seen = [], set()
  for name, overrides in runs:
    group = SEED.sub('', name)
    if group not in seen:
      seen.add(group)
      chosen.append((name, {**overrides, **TINY}))
  return chosen


def parse_sets(pairs) -> dict:
  """{'a.b': value} of FIELD=VALUE pairs (VALUE a Python literal or a
  string)."""
  out = {}
  for pair in pairs:
    field, sep, text = pair.partition('=')
    if not sep or not field:
      cli.fail(f'--set={pair}: give FIELD=VALUE, e.g. --set=seed=3.')
    try:
      out[field] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      out[field] = text
  return out


def study_runs(name: str, only=(), small=False, sets=None):
  """(get_config, [(run name, overrides)], analyses) of study `name`."""
  path = os.path.join(os.path.dirname(__file__), name, 'config.py')
  get_config, sweep, analyses = sweep_lib.load_sweep(path)
  runs = sweep_lib.select(sweep(), only)
  if small:
    runs = tiny(runs)
  runs = [(n, {**o, **(sets or {})}) for n, o in runs]
  return get_config, runs, analyses


def run_study(name: str, after=None):
  """The study's runs, its analyses, then `after(workdir, out, runs)`."""
  workdir = FLAGS.workdir
  out = FLAGS.out or os.path.join(workdir, 'analysis')
  sweep_lib.start(FLAGS['verbosity'].present, workdir, FLAGS.compile_cache)
  get_config, runs, analyses = study_runs(
    name, FLAGS.only, FLAGS.tiny, parse_sets(FLAGS.set)
  )
  if not runs:
    cli.fail(f'--only={",".join(FLAGS.only)} selects no run of {name}.')
  sweep_lib.train_all(get_config, runs, workdir)
  command = ' '.join([f'python -m studies.{name}', *sys.argv[1:]])
  sweep_lib.analyse(analyses, runs, workdir, out, command)
  if after is not None:
    after(workdir, out, runs)


def main(name: str, after=None):
  """`python -m studies.<name>`'s entry point."""
  try:
    allocator.maybe_reexec()
  except ValueError as e:  # A bad MAXL_ALLOCATOR value.
    cli.fail(str(e))
  example = f'python -m studies.{name} --workdir=runs/{name}'
  app.run(
    lambda argv: run_study(name, after),
    flags_parser=lambda argv: cli.parse_flags(
      argv, required=('workdir',), example=example
    ),
  )
