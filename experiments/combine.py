"""AuxiLearn's loss combiner on given tasks: `python -m experiments.combine`.

  python -m experiments.combine \
    --config=experiments/configs/combine_fashion.py \
    --workdir=runs/combine/mlp/seed0 --config.combiner.form=mlp

Trains one run (`maxl_jax.training.combine`, DESIGN §2e) through the same
loop as `experiments.run`: the workdir gets config.json, dataset.json,
metrics.jsonl (with `weight/<task>`), timing.jsonl, TensorBoard scalars,
checkpoints, log.txt and result.json; rerunning the same command resumes
from the newest checkpoint. Prints the test accuracy, the learned task
weights and the parameters' sha256. The flags are `experiments.run`'s
(--config.<field>=..., --distributed, ...).

Exit status: 0 done; 1 a non-finite step (`train.on_nonfinite=stop`); 2 a
usage or config error, as one `error:` line, with nothing written; 143
SIGTERM (preemption), after a checkpoint.
"""

from absl import app
from ml_collections import config_flags

from experiments import allocator, cli, run

FLAGS = run.FLAGS


parse_flags = run.flags_parser(
  'experiments.combine', 'experiments/configs/combine_fashion.py'
)


def main(argv):
  del argv
  if 'combiner' not in FLAGS.config:
    cli.fail(
      f'config file {config_flags.get_config_filename(FLAGS["config"])} has '
      'no config.combiner group; use '
      'experiments/configs/combine_fashion.py or a config importing it.'
    )
  run.setup()
  from maxl_jax.training import loop

  result = run.exit_on_error(
    loop.train_and_evaluate, FLAGS.config, FLAGS.workdir
  )
  weights = ', '.join(f'{k} {v:.3f}' for k, v in result['weights'].items())
  print(
    f'{result["form"]} combiner on {result["dataset"]}: test accuracy '
    f'{100 * result["test_accuracy"]:.2f}%'
    + (f', task weights {weights}' if weights else '')
    + f', params sha256 {result["params_sha256"]}'
  )


if __name__ == '__main__':
  try:
    allocator.maybe_reexec()  # jemalloc on CPU, as experiments.run.
  except ValueError as e:
    cli.fail(str(e))
  app.run(main, flags_parser=parse_flags)
