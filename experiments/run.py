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

import logging as std_logging
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

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


def parse_flags(argv):
  return cli.parse_flags(
    argv,
    required=('config', 'workdir'),
    example=(
      'python -m experiments.run '
      '--config=experiments/configs/quickstart.py --workdir=/tmp/maxl'
    ),
  )


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
  from experiments import runner
  from maxl_jax.errors import UsageError
  from maxl_jax.training.loop import NonFiniteError, Preempted

  try:
    runner.run(FLAGS.config, FLAGS.workdir)
  except UsageError as e:
    cli.fail(str(e))
  except NonFiniteError as e:
    cli.fail(str(e), status=1)
  except Preempted as e:
    print(f'preempted: {e}; rerun the same command to resume.', file=sys.stderr)
    sys.exit(143)


if __name__ == '__main__':
  try:
    allocator.maybe_reexec()
  except ValueError as e:
    cli.fail(str(e))
  app.run(main, flags_parser=parse_flags)
