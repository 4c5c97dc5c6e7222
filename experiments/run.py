"""Runs one experiment: `python -m experiments.run --config=... --workdir=...`.

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

import ast
import contextlib
import logging as std_logging
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import allocator  # noqa: E402

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


def _fail(message, status=2):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(status)


def _flag_error(error):
  """One line for a flag parsing error."""
  text = str(error)
  if isinstance(error, (KeyError, AttributeError)):  # --config.<unknown>=...
    with contextlib.suppress(ValueError, SyntaxError):
      text = ast.literal_eval(text)  # ml_collections quotes its message.
    text = ' '.join(text.split()).replace(' Did you', '; did you')
    return f'unknown config field {text}'
  return text.strip().splitlines()[0]


def parse_flags(argv):
  """absl flag parsing, with errors as one `error:` line and exit 2."""
  try:
    rest = FLAGS(argv)
  except Exception as e:  # noqa: BLE001 - any parse error is a usage error.
    _fail(f'{_flag_error(e)} (see --helpfull).')
  for name in ('config', 'workdir'):
    if FLAGS[name].value is None:
      _fail(
        f'--{name} is required, e.g. python -m experiments.run '
        '--config=experiments/configs/quickstart.py --workdir=/tmp/maxl'
      )
  if len(rest) > 1:
    _fail(f'unexpected arguments {rest[1:]}; options are --flag=value.')
  return rest


def main(argv):
  del argv
  import jax

  if FLAGS.coordinator_address or FLAGS.distributed:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    try:
      jax.distributed.initialize(
        FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
      )
    except (ValueError, RuntimeError) as e:
      _fail(f'jax.distributed.initialize: {str(e).strip().splitlines()[0]}')
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
  from experiments import runner
  from maxl_jax.errors import UsageError
  from maxl_jax.train import NonFiniteError, Preempted

  try:
    runner.run(FLAGS.config, FLAGS.workdir)
  except UsageError as e:
    _fail(str(e))
  except NonFiniteError as e:
    _fail(str(e), status=1)
  except Preempted as e:
    print(f'preempted: {e}; rerun the same command to resume.', file=sys.stderr)
    sys.exit(143)


if __name__ == '__main__':
  try:
    allocator.maybe_reexec()
  except ValueError as e:
    _fail(str(e))
  app.run(main, flags_parser=parse_flags)
