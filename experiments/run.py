"""Runs one experiment: `python -m experiments.run --config=... --workdir=...`.

Every kind of run (`config.run`, maxl_jax/training/contract.py): MAXL or a
baseline (`config.method`, or each of `config.compare_methods` in turn), or
a loss combiner (experiments/configs/combine_fashion.py).
Every config field can be overridden (`--config.train.epochs=3`). Rerunning
the same command with the same workdir resumes from its newest checkpoint.
Several processes (hosts): the same command on each, with `--distributed`
(Cloud TPU, SLURM) or `--coordinator_address/--num_processes/--process_id`.

On a CPU-only JAX install the command restarts itself once under jemalloc
when it is installed (`experiments/allocator.py`; MAXL_ALLOCATOR=system opts
out): 12-20% faster steps.

Exit status: 0 done; 1 a non-finite step (`train.on_nonfinite=stop`); 2 a
usage or config error, as one `error:` line, with nothing written; 143
SIGTERM (preemption), after a checkpoint.
"""

import logging as std_logging
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# TensorFlow only decodes data here; its oneDNN notice is noise.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import allocator, cli  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config',
  None,
  'Experiment config file (experiments/configs/*.py).',
  lock_config=True,
)
flags.DEFINE_string(
  'workdir',
  None,
  'Directory for metrics, checkpoints and '
  'results; rerunning with the same one resumes.',
)
flags.DEFINE_bool(
  'distributed',
  False,
  'Call jax.distributed.initialize() (automatic on Cloud TPU VMs and SLURM).',
)
flags.DEFINE_string(
  'coordinator_address',
  None,
  'Multi-process without auto-detection: host:port of process 0.',
)
flags.DEFINE_integer('num_processes', None, 'Number of processes.')
flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')


def flags_parser(command: str, config_file: str):
  """absl's flags parser of a training command, with its example."""
  example = f'python -m {command} --config={config_file} --workdir=/tmp/maxl'
  return lambda argv: cli.parse_flags(
    argv, required=('config', 'workdir'), example=example
  )


parse_flags = flags_parser(
  'experiments.run', 'experiments/configs/quickstart.py'
)


def run_methods(config, workdir):
  """Trains `config.method`, or each of `config.compare_methods` in turn."""
  # JAX and TensorFlow load after the allocator's re-exec (`__main__`).
  from maxl_jax import labels
  from maxl_jax.errors import UsageError
  from maxl_jax.training import loop, timing
  from maxl_jax.training import workdir as workdir_lib

  workdir_lib.check_writable(workdir)
  methods = [m.strip() for m in config.compare_methods.split(',') if m.strip()]
  if not methods:
    # Start-up counts from the process's start (imports included).
    result = loop.train_and_evaluate(
      config, workdir, started=timing.process_start()
    )
    print(summary(result))
    return [result]
  for method in methods:
    if method not in labels.METHODS:
      raise UsageError(
        f'config.compare_methods names {method!r}; choose '
        f'from {list(labels.METHODS)}.'
      )
  results = []
  for method in methods:
    one = config.copy_and_resolve_references()
    with one.unlocked():
      one.method, one.compare_methods = method, ''
    results.append(loop.train_and_evaluate(one, os.path.join(workdir, method)))
  print(f'\n{"method":<10}{"test accuracy":>15}{"wall time":>12}')
  for r in results:
    print(
      f'{r["method"]:<10}{100 * r["test_accuracy"]:>14.2f}%'
      f'{r["wall_time_s"]:>11.0f}s'
    )
  info = workdir_lib.read_info(
    workdir_lib.as_path(os.path.join(workdir, methods[0]))
  )
  print(how_to_read(info.num_test))
  return results


def summary(result: dict) -> str:
  """One run's line: its test accuracy (a combiner's task weights too) and
  its parameters' sha256; where its wall clock went."""
  from maxl_jax.training import timing

  name = result['method']
  weights = ''
  if 'weights' in result:  # A loss combiner (`combiner_run.result_fields`).
    name = f'{result["form"]} combiner'
    weights = ', '.join(f'{k} {v:.3f}' for k, v in result['weights'].items())
  return (
    f'{name} on {result["dataset"]}: test accuracy '
    f'{100 * result["test_accuracy"]:.2f}%'
    + (f', task weights {weights}' if weights else '')
    + f', params sha256 {result["params_sha256"]}'
    + (f'\n  {timing.describe(result["timing"])}' if 'timing' in result else '')
  )


def how_to_read(num_test: int) -> str:
  """What one seed's comparison can and cannot show."""
  return (
    f'\nOne seed, {num_test} test images (one image = '
    f'{100 / num_test:.2f} points): this compares methods on one draw, it '
    'does not measure a gain. Differences of a point or less are within '
    'seed-to-seed noise, and an ablation that learns nothing can match '
    'a gain (docs/RESULTS.md). Compare seeds and --config.method=uniform '
    'before crediting the meta-learning.'
  )


def setup():
  """This process's side of a run, from the flags: the terminal and the
  log, the compilation cache, several processes, Orbax's log filter."""
  from maxl_jax.training import console

  # The terminal shows the run's progress; the whole log is in
  # <workdir>/log.txt (and on the terminal with --verbosity or
  # --config.log.verbose).
  console.configure(FLAGS['verbosity'].present or FLAGS.config.log.verbose)
  if FLAGS.config.train.compile_cache_dir:
    from maxl_jax.training import compilation

    compilation.enable_cache(FLAGS.config.train.compile_cache_dir)
  import jax

  if FLAGS.coordinator_address or FLAGS.distributed:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    try:
      jax.distributed.initialize(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
      )
    except (ValueError, RuntimeError) as e:
      cli.fail(f'jax.distributed.initialize: {str(e).strip().splitlines()[0]}')
  # Orbax logs every save in detail; keep its warnings only.
  logging.get_absl_handler().addFilter(
    lambda r: r.levelno >= std_logging.WARNING or '/orbax/' not in r.pathname
  )
  logging.info(
    'JAX devices: %s (process %d of %d); host allocator: %s',
    jax.devices(),
    jax.process_index(),
    jax.process_count(),
    allocator.active(),
  )


def exit_on_error(train, *args):
  """`train(*args)`; its errors end the program with the statuses of the
  module docstring."""
  from maxl_jax.errors import NonFiniteError, Preempted, UsageError

  try:
    return train(*args)
  except UsageError as e:
    cli.fail(str(e))
  except NonFiniteError as e:
    cli.fail(str(e), status=1)
  except Preempted as e:
    print(f'preempted: {e}; rerun the same command to resume.', file=sys.stderr)
    sys.exit(143)


def main(argv):
  del argv
  setup()
  exit_on_error(run_methods, FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  try:
    allocator.maybe_reexec()
  except ValueError as e:
    cli.fail(str(e))
  app.run(main, flags_parser=parse_flags)
