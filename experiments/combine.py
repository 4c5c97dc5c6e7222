"""AuxiLearn's loss combiner on given tasks: `python -m experiments.combine`.

  python -m experiments.combine \
    --config=experiments/configs/combine_fashion.py \
    --workdir=runs/combine/mlp/seed0 --config.combiner.form=mlp

Trains one run (`maxl_jax.training.combine.train_and_evaluate`) and prints
its test accuracy and learned task weights. No checkpoints (runs last
minutes): the same command starts over.

Exit status: 0 done; 1 a non-finite training loss; 2 a usage or config
error, as one `error:` line.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import allocator, cli  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
  'config',
  None,
  'Config file (experiments/configs/combine_fashion.py).',
  lock_config=True,
)
flags.DEFINE_string('workdir', None, 'Directory for metrics and result.')


def parse_flags(argv):
  return cli.parse_flags(
    argv,
    required=('config', 'workdir'),
    example=(
      'python -m experiments.combine '
      '--config=experiments/configs/combine_fashion.py '
      '--workdir=/tmp/combine'
    ),
  )


def main(argv):
  del argv
  import jax

  from maxl_jax.errors import NonFiniteError, UsageError
  from maxl_jax.training import combine

  logging.info('JAX devices: %s', jax.devices())
  if 'combiner' not in FLAGS.config:
    cli.fail(
      f'config file {config_flags.get_config_filename(FLAGS["config"])} has '
      'no config.combiner group; use '
      'experiments/configs/combine_fashion.py or a config importing it.'
    )
  try:
    result = combine.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except UsageError as e:
    cli.fail(str(e))
  except NonFiniteError as e:
    cli.fail(str(e), status=1)
  weights = ', '.join(f'{k} {v:.3f}' for k, v in result['weights'].items())
  print(
    f'{result["form"]} on {result["dataset"]}: test accuracy '
    f'{100 * result["test_accuracy"]:.2f}%'
    + (f', task weights {weights}' if weights else '')
  )


if __name__ == '__main__':
  try:
    allocator.maybe_reexec()  # jemalloc on CPU, as experiments.run.
  except ValueError as e:
    cli.fail(str(e))
  app.run(main, flags_parser=parse_flags)
