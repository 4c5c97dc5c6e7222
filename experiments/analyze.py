"""Figures and tables of finished runs: `python -m experiments.analyze`.

  python -m experiments.analyze --workdir=/tmp/maxl_quickstart --out=/tmp/fig

A `--workdir` (repeatable) is a run folder or a `compare_methods` parent.
OUT receives learning curves (Fig. 3), gradient cosine (Fig. 4), t-SNE of
the trunk features (Fig. 5), the generator's top-k images per auxiliary
class (Fig. 6), label-usage (collapse) figures, each PNG with its numbers
beside it as CSV or JSON, results.md (final accuracy, mean ± std over
seeds) and report.md (everything on one page).

Exit status: 0 done; 2 bad input (an unfinished run, a missing checkpoint
step, a class out of range, a bad flag) as one `error:` line, with nothing
written. A run without a label generator gets a `warning:` line and no
generator figures.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app, flags, logging  # noqa: E402

from experiments import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_multi_string(
  'workdir', None, 'A run folder or a compare_methods parent (repeatable).'
)
flags.DEFINE_string('out', None, 'Folder for the figures and reports.')
flags.DEFINE_integer(
  'step', None, 'Checkpoint step to restore (default: the newest).'
)
flags.DEFINE_list('classes', ['0', '1'], 'Primary classes of Fig. 6.')
flags.DEFINE_integer(
  'topk', 8, 'Images per auxiliary class in Fig. 6.', lower_bound=1
)
flags.DEFINE_integer(
  'tsne_images', 2000, 'Test images in the t-SNE (0: none).', lower_bound=0
)


EXAMPLE = (
  'python -m experiments.analyze --workdir=/tmp/maxl_quickstart '
  '--out=/tmp/maxl_figures'
)


def parse_flags(argv):
  """absl flag parsing, with errors as one `error:` line and exit 2."""
  rest = cli.parse_flags(argv, required=('workdir', 'out'), example=EXAMPLE)
  if not FLAGS.out:
    cli.fail(f'--out is required, e.g. {EXAMPLE}')
  if 0 < FLAGS.tsne_images < 10:
    cli.fail('--tsne_images must be 0 (no t-SNE) or at least 10.')
  try:
    [int(c) for c in FLAGS.classes]
  except ValueError:
    cli.fail(
      f'--classes={",".join(FLAGS.classes)}: give primary class numbers.'
    )
  return rest


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every restore.
  from experiments.figures import build
  from maxl_jax.errors import UsageError

  options = build.Options(
    step=FLAGS.step,
    classes=tuple(int(c) for c in FLAGS.classes),
    topk=FLAGS.topk,
    tsne_images=FLAGS.tsne_images,
  )
  command = ' '.join(['python -m experiments.analyze', *sys.argv[1:]])
  try:
    written = build.analyze(FLAGS.workdir, FLAGS.out, options, command)
  except UsageError as e:
    cli.fail(str(e))
  print(f'Wrote {len(written)} files to {FLAGS.out}; see report.md there.')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
