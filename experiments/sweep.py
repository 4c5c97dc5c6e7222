"""Runs a config's sweep, then analyses it: `python -m experiments.sweep`.

  python -m experiments.sweep --config=studies/evidence/config.py \
    --workdir=runs/study --out=runs/study/analysis

The config module's `sweep()` lists (run name, {dotted field: value}); each
run trains into WORKDIR/<run name> with the config's own values overridden
(no copied configs). Finished runs are skipped and interrupted ones resume
(`train_and_evaluate` does both), so rerunning the command continues the
study. Then `experiments.analyze` writes its figures and tables into OUT.
`--only=PREFIX` (repeatable) restricts the sweep to runs whose name starts
with a prefix. The runs share compiled programs through JAX's persistent
compilation cache (`--compile_cache`), so only the first run of each
program compiles.
"""

import importlib.util
import json
import os
import pathlib
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402

from experiments import allocator, cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string('config', None, 'A config file with get_config and sweep.')
flags.DEFINE_string('workdir', None, 'Parent folder of the runs.')
flags.DEFINE_string('out', None, 'Analysis folder ("" = no analysis).')
flags.DEFINE_multi_string('only', [], 'Run only names with these prefixes.')
flags.DEFINE_string(
  'compile_cache',
  None,
  "JAX's persistent compilation cache, shared by the runs (default: "
  'WORKDIR/compile_cache; "none": off).',
)
EXAMPLE = (
  'python -m experiments.sweep --config=studies/evidence/config.py '
  '--workdir=runs/study --out=runs/study/analysis'
)


def load_sweep(path: str):
  """(get_config, sweep, analyses) of the config file at `path`.

  `analyses()` (optional) lists (OUT subfolder, run-name prefixes or None,
  `figures.build.Options` fields).
  """
  if not os.path.isfile(path):
    cli.fail(f'config file {path} does not exist.')
  spec = importlib.util.spec_from_file_location('sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 - the user's file: one line.
    cli.fail(f'config file {path} failed to load: {type(e).__name__}: {e}')
  if not hasattr(module, 'sweep'):
    cli.fail(f'config file {path} has no sweep() function.')
  analyses = getattr(module, 'analyses', lambda: [('', None, {})])
  return module.get_config, module.sweep, analyses


def configured(get_config, overrides: dict):
  """The base config with `overrides` ({'a.b': value}) applied."""
  from maxl_jax.training import config_fields

  config = get_config()
  for dotted, value in overrides.items():
    try:
      node, field = config_fields.config_field(config, dotted)
    except KeyError:
      cli.fail(f'sweep override {dotted!r}: no such config field.')
    node[field] = value
  return config


def finished(workdir: str, config) -> dict | None:
  """The result of a run that finished with exactly `config`, else None.

  Saves loading the data to find out (train_and_evaluate would skip it too).
  """
  from maxl_jax.training.workdir import CONFIG, RESULT

  path = pathlib.Path(workdir)
  try:
    same = (path / CONFIG).read_text() == config.to_json_best_effort(indent=2)
    return json.loads((path / RESULT).read_text()) if same else None
  except FileNotFoundError:
    return None


def select(runs, only) -> list:
  """The (name, overrides) of `runs` whose names start with a prefix of
  `only` (all when it is empty)."""
  return [(n, o) for n, o in runs if not only or n.startswith(tuple(only))]


def train_all(get_config, runs, workdir: str):
  """Trains each run into WORKDIR/<name>; skips finished runs. Every
  config is checked before the first run; a bad one exits 2."""
  from maxl_jax.errors import NonFiniteError, Preempted, UsageError
  from maxl_jax.training import loop

  configs = [configured(get_config, o) for _, o in runs]  # Checks them all.
  start = time.time()
  for i, ((name, _), config) in enumerate(zip(runs, configs, strict=True)):
    run_dir = os.path.join(workdir, name)
    logging.info('Run %d/%d: %s', i + 1, len(runs), name)
    result = finished(run_dir, config)
    try:
      result = result or loop.train_and_evaluate(config, run_dir)
    except UsageError as e:
      cli.fail(f'{name}: {e}')
    except NonFiniteError as e:
      cli.fail(f'{name}: {e}', status=1)
    except Preempted as e:
      print(
        f'preempted: {name}: {e}; rerun the same command to resume.',
        file=sys.stderr,
      )
      sys.exit(143)
    print(
      f'[{i + 1}/{len(runs)}, {time.time() - start:.0f} s] {name}: '
      f'{100 * result["test_accuracy"]:.2f}%',
      flush=True,
    )


def start(verbose: bool, workdir: str, compile_cache: str | None):
  """The terminal's log and the shared compilation cache of a sweep."""
  from maxl_jax.training import compilation, console

  # Each run's start, evaluation and result lines; its whole log in its
  # workdir's log.txt (--verbosity: everything on the terminal too).
  console.configure(verbose)
  if compile_cache != 'none':
    compilation.enable_cache(
      compile_cache or os.path.join(workdir, 'compile_cache')
    )


def main(argv):
  del argv
  start(FLAGS['verbosity'].present, FLAGS.workdir, FLAGS.compile_cache)
  get_config, sweep, analyses = load_sweep(FLAGS.config)
  runs = select(sweep(), FLAGS.only)
  train_all(get_config, runs, FLAGS.workdir)
  if FLAGS.out:
    command = ' '.join(sys.argv)
    analyse(analyses, runs, FLAGS.workdir, FLAGS.out, command)


def analyse(analyses, runs, workdir: str, out: str, command: str):
  """Each of the config's analyses (default: one of every run) into OUT;
  an analysis that selects none of `runs` is skipped."""
  from experiments.figures import build
  from maxl_jax.errors import UsageError

  for subdir, prefixes, options in analyses():
    chosen = [
      os.path.join(workdir, name)
      for name, _ in runs
      if prefixes is None or name.startswith(tuple(prefixes))
    ]
    if not chosen:
      continue
    where = os.path.join(out, subdir)
    try:
      written = build.analyze(chosen, where, build.Options(**options), command)
    except UsageError as e:
      cli.fail(str(e))
    print(f'Wrote {len(written)} files to {where}; see report.md there.')


if __name__ == '__main__':
  try:
    allocator.maybe_reexec()
  except ValueError as e:  # A bad MAXL_ALLOCATOR value.
    cli.fail(str(e))
  app.run(
    main,
    flags_parser=lambda argv: cli.parse_flags(
      argv, required=('config', 'workdir'), example=EXAMPLE
    ),
  )
