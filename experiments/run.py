"""Runs one experiment: `python -m experiments.run --config=... --workdir=...`.

Every config field can be overridden (`--config.train.epochs=3`). A usage
or config error prints one `error:` line and exits with status 2.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

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


def parse_flags(argv):
  """absl flag parsing, with errors as one `error:` line and exit 2."""
  try:
    rest = FLAGS(argv)
  except Exception as e:  # noqa: BLE001 - any parse error is a usage error.
    _fail(f'{str(e).strip().splitlines()[0]} (see --helpfull).')
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
    jax.distributed.initialize(
      FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id
    )
  logging.info(
    'JAX devices: %s (process %d of %d)',
    jax.devices(),
    jax.process_index(),
    jax.process_count(),
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
  app.run(main, flags_parser=parse_flags)
