"""`analyze(...)`: from finished runs to figures, data files and reports.

Every input is checked before anything is written: the runs (finished,
with checkpoints), the step, the classes. Figures from metrics.jsonl need
no network; t-SNE, the top-k images and the end-of-training label usage
restore each run's networks and run them on its test split.
"""

import dataclasses
import json
import pathlib
import sys

import numpy as np
from tqdm import tqdm

from experiments.figures import (
  curves,
  forward,
  invented,
  knowledge,
  report,
  signal,
  table,
  tsne,
  usage,
)
from experiments.figures import finished as finished_lib
from maxl_jax.data.images import normalize
from maxl_jax.data.spec import DataSpec
from maxl_jax.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Options:
  """What to draw (the command's flags)."""

  step: int | None = None  # Checkpoint to restore; None: the newest.
  classes: tuple[int, ...] = (0, 1)  # Primary classes of Fig. 6.
  topk: int = 8  # Images per auxiliary class in Fig. 6.
  tsne_images: int = 2000  # Test images in the t-SNE (0: no t-SNE).


def warn(message: str):
  print(f'warning: {message}', file=sys.stderr)


def _check_classes(restored: dict, classes):
  """Raises UsageError for a class that some run does not have."""
  for name, r in restored.items():
    count = r.run.info.num_classes
    bad = [c for c in classes if not 0 <= c < count]
    if bad:
      raise UsageError(
        f'--classes={",".join(map(str, classes))}: class {bad[0]} is out of '
        f'range for {name}, which has primary classes 0..{count - 1}.'
      )


def _restore_all(runs, options: Options) -> dict:
  """{run name: restored run} of the runs that a figure restores: all for
  the t-SNE, else those with a label generator (the top-k images, the
  label usage); checks --step and --classes."""
  from maxl_jax.labels import GENERATED
  from maxl_jax.training import restore  # Orbax: only when restoring.

  finished_lib.check_step(runs, options.step)
  needed = [r for r in runs if options.tsne_images or r.method in GENERATED]
  restored = {
    run.name: restore.restore_run(str(run.path), step=options.step)
    for run in tqdm(needed, desc='restore', unit='run')
  }
  _check_classes(restored, options.classes)
  return restored


class _TestImages:
  """Each dataset's test split, loaded once: normalised images, labels."""

  def __init__(self):
    self._cache = {}

  def __call__(self, config):
    key = json.dumps(config.data.to_dict(), sort_keys=True, default=str)
    if key not in self._cache:
      from maxl_jax.data import pipeline  # TensorFlow: only when needed.

      images, labels, _ = pipeline.load_test_split(DataSpec(**config.data))
      self._cache[key] = (normalize(images), np.asarray(labels))
    return self._cache[key]


def _tsne(runs, restored, test, options, out):
  """tsne.png: every run's trunk features on the same test images."""
  panels = []
  for run in runs:
    r = restored[run.name]
    images, labels = test(r.config)
    index = tsne.pick_images(len(labels), options.tsne_images)
    features = forward.trunk_features(
      r.run.f,
      r.state.theta1,
      r.state.model_state1,
      images[index],
      r.config.data.eval_batch_size,
      desc=f'features {run.name}',
    )
    panels.append(
      {
        'run': run.name,
        'step': int(r.step),
        'dataset': run.dataset,
        'index': index,
        'label': labels[index],
        'features': features,
      }
    )
  for panel in tqdm(panels, desc='t-SNE', unit='run'):
    panel['xy'] = tsne.embed(panel.pop('features'))
  num_classes = max(restored[r.name].run.info.num_classes for r in runs)
  return tsne.write_tsne(panels, num_classes, out)


def _generator_figures(runs, restored, test, options, out):
  """argmax_usage.png and one invented_<run>.png per run with a generator."""
  panels, saved = [], []
  for run in runs:
    r = restored[run.name]
    images, labels = test(r.config)
    probs = forward.generated_probs(
      r.run.problem,
      r.state.theta2,
      r.state.model_state2,
      images,
      labels,
      r.config.data.eval_batch_size,
      desc=f'labels {run.name}',
    )
    psi = np.asarray(r.run.psi)
    counts = usage.argmax_counts(probs, labels, psi)
    panels.append(
      {'run': run.name, 'step': int(r.step), 'psi': psi, 'counts': counts}
    )
    rows = invented.invented_rows(
      probs, labels, psi, options.classes, options.topk
    )
    saved.append(
      invented.write_invented(
        run.name, run.slug, int(r.step), rows, images, out
      )
    )
  return [usage.write_argmax_usage(panels, out), *saved]


def _with_generator(runs, restored, notes: list[str]) -> list:
  """The runs with a label generator; a warning for each of the others."""
  with_g = []
  for run in runs:
    if run.name in restored and restored[run.name].run.g is not None:
      with_g.append(run)
      continue
    note = (
      f'{run.name} ({run.method}) has no label generator: no top-k images '
      'or end-of-training label usage for it.'
    )
    warn(note)
    notes.append(note)
  return with_g


def analyze(
  workdirs: list[str], out: str, options: Options, command: str = ''
) -> list[pathlib.Path]:
  """Writes the figures, their data, results.md and report.md into `out`.

  Returns:
    The paths written.

  Raises:
    UsageError: bad input (see module docstring), before anything is
      written.
  """
  runs = finished_lib.find_runs(workdirs)
  groups = finished_lib.group_runs(runs)
  notes = []
  restored = _restore_all(runs, options)
  with_g = _with_generator(runs, restored, notes)
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  saved = [
    curves.write_learning_curves(groups, out),
    curves.write_time_to_accuracy(groups, out),
    curves.write_cosine(runs, out),
    knowledge.write_label_knowledge(groups, out),
    signal.write_signal(groups, out),
    usage.write_usage_curves(runs, out),
  ]
  saved = [s for s in saved if s is not None]
  test = _TestImages()
  if options.tsne_images:
    saved.append(_tsne(runs, restored, test, options, out))
  if with_g:
    saved += _generator_figures(with_g, restored, test, options, out)
  results = out / 'results.md'
  results.write_text(table.results_markdown(groups, runs))
  text = report.report_markdown(command, runs, groups, saved, notes)
  (out / 'report.md').write_text(text)
  written = [p for s in saved for p in (s.png, s.data)]
  return [*written, results, out / 'report.md']
