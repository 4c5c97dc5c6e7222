"""Collapse of the generated labels: per-epoch usage and end-of-training use.

Per epoch (metrics.jsonl): from `meta/aux_hist` (the epoch's mean generated
probability of each auxiliary class, [K]) when logged:
  - usage: mean over primary classes c of exp(H(q_c)) / psi[c], q_c the
    class's part of the histogram, renormalised (1 = all of c's auxiliary
    classes used equally, 1/psi[c] = collapsed onto one);
  - entropy: H(m) of the whole histogram m, in nats (at most log K).
Without it, the logged `meta/aux_usage` (fraction of the K classes that are
some image's argmax, batch mean) and `meta/aux_entropy` (mean per-image
entropy, nats, at most log psi).

At the end of training (restored generator): per primary class c, how many
of its test images have each of c's auxiliary classes as their argmax.
"""

import math
import pathlib

import numpy as np

from experiments.figures import plots
from experiments.figures.finished import FinishedRun, series

HIST, USAGE, ENTROPY = 'meta/aux_hist', 'meta/aux_usage', 'meta/aux_entropy'


def _entropy(p: np.ndarray) -> float:
  p = p[p > 0]
  return float(-np.sum(p * np.log(p)))


def hist_stats(hist: np.ndarray, psi: np.ndarray) -> tuple[float, float]:
  """(usage, entropy in nats) of one auxiliary histogram (module doc).

  Args:
    hist: [K] mean generated probability of each auxiliary class.
    psi: [P] auxiliary classes per primary class, sum(psi) = K.
  """
  hist = np.asarray(hist, np.float64)
  starts = np.concatenate([[0], np.cumsum(psi)[:-1]])
  used = []
  for start, size in zip(starts, psi, strict=True):
    part = hist[start : start + size]
    if part.sum() > 0:
      used.append(math.exp(_entropy(part / part.sum())) / size)
  usage = float(np.mean(used)) if used else float('nan')
  return usage, _entropy(hist / hist.sum())


def usage_curve(run: FinishedRun) -> dict | None:
  """Per-epoch usage and entropy of a run; None if it logged neither."""
  rows = [r for r in run.metrics if isinstance(r.get(HIST), list)]
  if rows:
    k = len(rows[0][HIST])
    per_class = int(run.config['maxl']['psi_per_class'])
    psi = np.full(k // per_class, per_class)
    stats = [hist_stats(r[HIST], psi) for r in rows]
    return {
      'run': run.name,
      'source': HIST,
      'epoch': [int(r['epoch']) for r in rows],
      'usage': [s[0] for s in stats],
      'entropy': [s[1] for s in stats],
      'entropy_max': math.log(k),
    }
  epochs, usage = series(run, USAGE)
  entropy_epochs, entropy = series(run, ENTROPY)
  if not epochs or entropy_epochs != epochs:
    return None
  return {
    'run': run.name,
    'source': f'{USAGE}, {ENTROPY}',
    'epoch': epochs,
    'usage': usage,
    'entropy': entropy,
    'entropy_max': math.log(int(run.config['maxl']['psi_per_class'])),
  }


def write_usage_curves(runs: list[FinishedRun], out: pathlib.Path):
  """aux_usage.png/.csv over epochs; None if no run logged usage."""
  curves = [c for c in map(usage_curve, runs) if c is not None]
  if not curves:
    return None
  fig = plots.new_figure(10.0, 4.0)
  ax_use, ax_ent = fig.subplots(1, 2)
  maxima = {}  # Entropy maximum -> its name (log K or log psi).
  for curve in curves:
    hist = curve['source'] == HIST
    label = curve['run'] + ('' if hist else ' (argmax usage, per-image H)')
    style = '-' if hist else '--'
    ax_use.plot(
      curve['epoch'], curve['usage'], style, marker='o', ms=3, label=label
    )
    ax_ent.plot(curve['epoch'], curve['entropy'], style, marker='o', ms=3)
    name = 'log K' if hist else 'log ψ'
    maxima[curve['entropy_max']] = (
      f'maximum, {name} = {curve["entropy_max"]:.2f}'
    )
  for value, name in maxima.items():
    dash = ':' if 'log K' in name else '-.'
    ax_ent.axhline(value, color='gray', linestyle=dash, label=name)
  ax_use.set_ylim(0, 1.05)
  plots.epoch_axes(
    ax_use,
    'effective usage (fraction of auxiliary classes)',
    'Auxiliary-class usage (1 = all used equally)',
  )
  plots.epoch_axes(ax_ent, 'entropy (nats)', 'Entropy of the generated labels')
  for ax in (ax_use, ax_ent):
    ax.legend(fontsize='small')
  png = plots.save_png(fig, out / 'aux_usage.png')
  rows = (
    (c['run'], c['source'], e, u, h, c['entropy_max'])
    for c in curves
    for e, u, h in zip(c['epoch'], c['usage'], c['entropy'], strict=True)
  )
  data = plots.write_csv(
    out / 'aux_usage.csv',
    ('run', 'source', 'epoch', 'usage', 'entropy_nats', 'entropy_max_nats'),
    rows,
  )
  return plots.Saved(
    'Collapse: auxiliary-class usage per epoch',
    png,
    data,
    'Solid (from meta/aux_hist, the epoch-mean generated distribution): '
    "usage = mean over primary classes of exp(entropy of the class's "
    'auxiliary distribution) / psi, 1 when every auxiliary class is used '
    'equally, 1/psi when collapsed; entropy of the whole mean '
    'distribution (maximum log K). Dashed (older runs without aux_hist): '
    "the fraction of auxiliary classes that are some image's argmax, and "
    'the mean per-image entropy (maximum log psi).',
  )


def argmax_counts(probs: np.ndarray, labels: np.ndarray, psi) -> np.ndarray:
  """Test images of each primary class per argmax auxiliary class.

  Args:
    probs: [N, K] generated (mask-softmax) probabilities.
    labels: [N] primary labels.
    psi: [P] auxiliary classes per primary class.

  Returns:
    [P, max(psi)] int: entry (c, j) counts the images of class c whose
    most probable auxiliary class is o_c + j (0 for j >= psi[c]).
  """
  psi = np.asarray(psi)
  starts = np.concatenate([[0], np.cumsum(psi)[:-1]])
  counts = np.zeros((psi.size, psi.max()), np.int64)
  local = np.argmax(probs, -1) - starts[labels]
  np.add.at(counts, (labels, local), 1)
  return counts


def write_argmax_usage(panels: list[dict], out: pathlib.Path):
  """argmax_usage.png/.json: one heatmap per run of `argmax_counts`.

  Args:
    panels: [{'run', 'step', 'psi': [P], 'counts': [P, max psi]}].
  """
  fig = plots.new_figure(4.2 * len(panels) + 1.0, 4.5)
  axes = np.atleast_1d(fig.subplots(1, len(panels)))
  for ax, panel in zip(axes, panels, strict=True):
    counts, psi = np.asarray(panel['counts']), np.asarray(panel['psi'])
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    share = np.where(np.arange(counts.shape[1]) < psi[:, None], share, np.nan)
    image = ax.imshow(share, vmin=0, vmax=1, cmap='viridis', aspect='auto')
    if counts.size <= 150:
      for (c, j), n in np.ndenumerate(counts):
        if j < psi[c]:
          color = 'black' if share[c, j] > 0.6 else 'white'
          ax.text(
            j, c, str(n), ha='center', va='center', fontsize=7, color=color
          )
    ax.set_xticks(range(counts.shape[1]))
    ax.set_yticks(range(counts.shape[0]))
    ax.set_xlabel('auxiliary class j of the primary class')
    ax.set_ylabel('primary class')
    ax.set_title(f'{panel["run"]} (step {panel["step"]})', fontsize='medium')
  fig.colorbar(image, ax=list(axes), label="share of the class's test images")
  fig.suptitle('Generated labels at the end of training (argmax, test set)')
  png = plots.save_png(fig, out / 'argmax_usage.png')
  data = plots.write_json(out / 'argmax_usage.json', panels)
  return plots.Saved(
    'Collapse: generated labels at the end of training',
    png,
    data,
    'For every test image, the auxiliary class the restored generator gives '
    'the highest probability; per primary class (row), how its test images '
    'spread over its auxiliary classes (numbers: image counts). A row with '
    'one bright cell is a collapsed class.',
  )
