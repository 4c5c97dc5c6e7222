"""Per-epoch curves from metrics.jsonl: test accuracy (Fig. 3), cosine (Fig. 4).

Learning curves average the seeds of a group (runs that differ only in the
seed) epoch by epoch: the mean, and ±1 sample standard deviation as a band.
"""

import pathlib

import numpy as np

from experiments.figures import plots
from experiments.figures.finished import TRAIN_S, FinishedRun, Group, series

ACCURACY, COSINE = 'test/accuracy', 'grad_cosine'


def seed_mean(group: Group, key: str, scale: float = 1.0) -> dict:
  """Epoch-wise mean and sample std of metric `key` over a group's seeds.

  Returns:
    {'label', 'runs': [names], 'epoch': [E], 'mean': [E], 'std': [E]
    (0 where n = 1), 'n': [E] (runs that logged that epoch)}.
  """
  by_epoch: dict[int, list[float]] = {}
  for run in group.runs:
    for epoch, value in zip(*series(run, key), strict=True):
      by_epoch.setdefault(epoch, []).append(scale * value)
  epochs = sorted(by_epoch)
  values = [np.asarray(by_epoch[e]) for e in epochs]
  return {
    'label': group.label,
    'runs': [r.name for r in group.runs],
    'epoch': epochs,
    'mean': [float(v.mean()) for v in values],
    'std': [float(v.std(ddof=1)) if v.size > 1 else 0.0 for v in values],
    'n': [int(v.size) for v in values],
  }


def mean_with_band(ax, x, mean, std, label: str, n: int, color=None):
  """A seed-mean line with a ±1 std band (no band for one seed)."""
  (line,) = ax.plot(
    x, mean, marker='o', markersize=3, label=f'{label} (n={n})', color=color
  )
  if n > 1:
    ax.fill_between(
      x, mean - std, mean + std, color=line.get_color(), alpha=0.2
    )


def metric_panels(fig, panels, curves: dict, colors: dict, hline=None):
  """One axis per (metric, y label, title) of `panels`, each group's
  `seed_mean` curve of that metric in `curves[metric]` drawn in its colour
  of `colors` (so that a group keeps it across panels); `hline`: a
  {metric: y} reference line. Returns the axes."""
  axes = np.atleast_1d(fig.subplots(1, len(panels)))
  for ax, (key, ylabel, title) in zip(axes, panels, strict=True):
    for curve in curves[key]:
      mean_with_band(
        ax,
        np.asarray(curve['epoch']),
        np.asarray(curve['mean']),
        np.asarray(curve['std']),
        curve['label'],
        max(curve['n']),
        colors.get(curve['label']),
      )
    if hline and key in hline:
      ax.axhline(hline[key], color='black', linewidth=0.8, linestyle=':')
    plots.epoch_axes(ax, ylabel, title, fontsize='medium')
  return axes


def write_metric_panels_csv(path: pathlib.Path, panels, curves: dict):
  """The curves of `metric_panels` as CSV rows (metric, series, runs,
  epoch, mean, std, n)."""
  rows = (
    (key, c['label'], ';'.join(c['runs']), e, m, s, n)
    for key, _, _ in panels
    for c in curves[key]
    for e, m, s, n in zip(c['epoch'], c['mean'], c['std'], c['n'], strict=True)
  )
  return plots.write_csv(
    path, ('metric', 'series', 'runs', 'epoch', 'mean', 'std', 'n'), rows
  )


def write_learning_curves(groups: list[Group], out: pathlib.Path):
  """learning_curves.png/.csv: test accuracy (%) per epoch, each group."""
  curves = [seed_mean(g, ACCURACY, 100.0) for g in groups]
  curves = [c for c in curves if c['epoch']]
  fig = plots.new_figure(7.0, 4.5)
  ax = fig.add_subplot()
  for curve in curves:
    n = max(curve['n'])
    epoch, mean = np.asarray(curve['epoch']), np.asarray(curve['mean'])
    mean_with_band(ax, epoch, mean, np.asarray(curve['std']), curve['label'], n)
  plots.epoch_axes(
    ax, 'test accuracy (%)', 'Test accuracy per epoch (band: ±1 std over seeds)'
  )
  plots.legend_below(fig, ax, len(curves))
  png = plots.save_png(fig, out / 'learning_curves.png')
  rows = (
    (c['label'], ';'.join(c['runs']), e, m, s, n)
    for c in curves
    for e, m, s, n in zip(c['epoch'], c['mean'], c['std'], c['n'], strict=True)
  )
  data = plots.write_csv(
    out / 'learning_curves.csv',
    (
      'series',
      'runs',
      'epoch',
      'test_accuracy_mean_pct',
      'test_accuracy_std_pct',
      'n',
    ),
    rows,
  )
  return plots.Saved(
    'Learning curves (Fig. 3)',
    png,
    data,
    'Test accuracy after each epoch. Runs that differ only in the seed are '
    'one line: their mean, with a band of ±1 sample standard deviation; n '
    'is the number of seeds.',
  )


def write_cosine(runs: list[FinishedRun], out: pathlib.Path):
  """grad_cosine.png/.csv for the runs that logged it; None if none did."""
  logged = [(r, series(r, COSINE)) for r in runs]
  logged = [(r, s) for r, s in logged if s[0]]
  if not logged:
    return None
  fig = plots.new_figure(7.0, 4.5)
  ax = fig.add_subplot()
  for run, (epoch, value) in logged:
    ax.plot(epoch, value, marker='o', markersize=3, label=run.name)
  ax.axhline(0.0, color='black', linewidth=0.8)
  plots.epoch_axes(
    ax,
    'cosine similarity of ∇L_pri and ∇L_aux',
    'Gradient cosine similarity on the shared trunk (Fig. 4)',
  )
  plots.legend_below(fig, ax, len(logged))
  png = plots.save_png(fig, out / 'grad_cosine.png')
  rows = ((r.name, e, v) for r, s in logged for e, v in zip(*s, strict=True))
  data = plots.write_csv(
    out / 'grad_cosine.csv', ('run', 'epoch', 'grad_cosine'), rows
  )
  return plots.Saved(
    'Gradient cosine similarity (Fig. 4)',
    png,
    data,
    'Cosine similarity between the gradients of the primary and the '
    'auxiliary loss on the shared trunk, per output unit, averaged over '
    'layers, on one fixed training batch at the end of each epoch. Above 0: '
    'the auxiliary task pulls the trunk the same way as the primary task.',
  )


def write_time_to_accuracy(groups: list[Group], out: pathlib.Path):
  """time_to_accuracy.png/.csv: test accuracy against training seconds.

  Seconds are wall clock of the training steps (compilation included,
  evaluations excluded), from timing.jsonl; None if no run has it.
  """
  curves = []
  for group in groups:
    accuracy, seconds = (
      seed_mean(group, ACCURACY, 100.0),
      seed_mean(group, TRAIN_S),
    )
    at = dict(zip(seconds['epoch'], seconds['mean'], strict=True))
    points = [
      (at[e], m, s)
      for e, m, s in zip(
        accuracy['epoch'], accuracy['mean'], accuracy['std'], strict=True
      )
      if e in at
    ]
    if points:
      runs = ';'.join(accuracy['runs'])
      curves.append((group.label, runs, max(accuracy['n']), points))
  if not curves:
    return None
  fig = plots.new_figure(7.0, 4.5)
  ax = fig.add_subplot()
  for label, _, n, points in curves:
    x, mean, std = (np.asarray(v) for v in zip(*points, strict=True))
    mean_with_band(ax, x, mean, std, label, n)
  ax.set_xlabel('training time (s, wall clock, without evaluation)')
  ax.set_ylabel('test accuracy (%)')
  ax.grid(alpha=0.3)
  ax.set_title('Time to accuracy (band: ±1 std over seeds)')
  plots.legend_below(fig, ax, len(curves))
  png = plots.save_png(fig, out / 'time_to_accuracy.png')
  rows = (
    (label, runs, n, x, m, s)
    for label, runs, n, points in curves
    for x, m, s in points
  )
  data = plots.write_csv(
    out / 'time_to_accuracy.csv',
    ('series', 'runs', 'n', 'train_seconds_mean', 'test_accuracy_mean_pct',
     'test_accuracy_std_pct'),
    rows,
  )  # fmt: skip
  return plots.Saved(
    'Time to accuracy',
    png,
    data,
    'Test accuracy against the cumulative wall-clock seconds of training '
    '(jit compilation included, evaluations excluded), both averaged over '
    'the seeds of a group at each evaluated epoch.',
  )
