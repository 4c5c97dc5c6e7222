"""What trains g, per epoch and per group: the meta part against the entropy
part of θ2's gradient, and how far g's labels moved from step 0.

From metrics.jsonl (DESIGN §1-2): `signal/meta_share` (‖meta‖ / (‖meta‖ +
‖entropy‖) of the gradient given to θ2's optimiser, an epoch mean over the
θ2 updates that logged it), `signal/grad_meta_norm`,
`signal/grad_entropy_norm`, `meta/loss_after`
(the meta objective's primary loss L_pri(θ1⁺), held out with
data.meta_fraction) and `test/label_drift` (mean total variation between
g's labels of the first test images now and at step 0).
"""

import pathlib

import numpy as np

from experiments.figures import plots
from experiments.figures.curves import (
  metric_panels,
  seed_mean,
  write_metric_panels_csv,
)
from experiments.figures.finished import Group, series

SHARE, DRIFT = 'signal/meta_share', 'test/label_drift'
PARAM_DRIFT = 'test/param_drift'
META_NORM, ENTROPY_NORM = 'signal/grad_meta_norm', 'signal/grad_entropy_norm'
LOSS_AFTER = 'meta/loss_after'
PANELS = (
  (DRIFT, 'mean total variation', "Drift of g's labels from step 0"),
  (SHARE, '‖meta‖ / (‖meta‖ + ‖entropy‖)', "Meta part of θ2's gradient"),
)


def _run_mean(run, key) -> float | None:
  """The mean of `key` over a run's epochs (None if it never logged it)."""
  _, values = series(run, key)
  return float(np.mean(values)) if values else None


def _last(run, key) -> float | None:
  _, values = series(run, key)
  return values[-1] if values else None


def _seed_stats(values) -> tuple[float | None, float | None]:
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return float(np.mean(values)), std


def signal_rows(groups: list[Group]) -> list[dict]:
  """Per group with a label generator: seed means (and stds) of the final
  drift, the meta share and norm ratio over training, the last epoch's
  L_pri(θ1⁺)."""
  rows = []
  for group in groups:
    if not any(series(r, DRIFT)[1] for r in group.runs):
      continue
    ratios = []
    for run in group.runs:
      meta, entropy = series(run, META_NORM)[1], series(run, ENTROPY_NORM)[1]
      ratio = [m / e for m, e in zip(meta, entropy, strict=True) if e > 0]
      ratios.append(float(np.mean(ratio)) if ratio else None)
    row = {'label': group.label, 'n': len(group.runs)}
    for name, values in (
      ('drift', [_last(r, DRIFT) for r in group.runs]),
      ('param_drift', [_last(r, PARAM_DRIFT) for r in group.runs]),
      ('share', [_run_mean(r, SHARE) for r in group.runs]),
      ('ratio', ratios),
      ('loss_after', [_last(r, LOSS_AFTER) for r in group.runs]),
    ):
      row[name], row[f'{name}_std'] = _seed_stats(values)
    rows.append(row)
  return rows


def _cell(row, name, digits=3) -> str:
  if row[name] is None:
    return '—'
  std = row[f'{name}_std']
  text = f'{row[name]:.{digits}f}'
  return text if std is None else f'{text} ± {std:.{digits}f}'


def signal_markdown(groups: list[Group]) -> str:
  """The rows of `signal_rows` as a markdown table ('' if none)."""
  rows = signal_rows(groups)
  if not rows:
    return ''
  lines = [
    '| Group | n | Label drift (final) | ‖θ2 − θ2⁰‖ / ‖θ2⁰‖ (final) '
    '| Meta share (mean) | ‖meta‖ / ‖entropy‖ (mean) '
    '| L_pri(θ1⁺) (last epoch) |',
    '|---|---:|---:|---:|---:|---:|---:|',
  ]
  for row in rows:
    lines.append(
      f'| {row["label"]} | {row["n"]} | {_cell(row, "drift")} '
      f'| {_cell(row, "param_drift")} | {_cell(row, "share")} '
      f'| {_cell(row, "ratio")} '
      f'| {_cell(row, "loss_after", 4)} |'
    )
  return '\n'.join(lines)


SIGNAL_NOTE = (
  "What trains g. Label drift: mean total variation between g's labels of "
  'the first log.drift_images test images under θ2 at the end and under '
  "step 0's θ2⁰, both with the final BatchNorm statistics (0: where the "
  'initialisation put them). ‖θ2 − θ2⁰‖ / ‖θ2⁰‖: how far the parameters '
  'moved. Meta share: ‖meta‖ / (‖meta‖ + '
  "‖entropy‖) of the two parts of the gradient given to θ2's optimiser "
  '(meta part ∇θ2 L_pri(θ1⁺), entropy part λ∇θ2 H; after maxl.balance), '
  'the mean over epochs of the epoch means; ‖meta‖ / ‖entropy‖ likewise. '
  'L_pri(θ1⁺): the meta objective’s primary loss in the last epoch (on '
  'the held-out split with data.meta_fraction > 0). Mean ± sample std over '
  'the n seeds.'
)


def write_signal(groups: list[Group], out: pathlib.Path):
  """meta_signal.png/.csv; None if no run has a label generator."""
  curves = {
    key: [c for c in (seed_mean(g, key) for g in groups) if c['epoch']]
    for key, _, _ in PANELS
  }
  if not curves[DRIFT]:
    return None
  fig = plots.new_figure(10.0, 4.0)
  colors = {c['label']: f'C{i % 10}' for i, c in enumerate(curves[DRIFT])}
  axes = metric_panels(fig, PANELS, curves, colors, hline={SHARE: 0.5})
  plots.legend_below(fig, axes[0], len(curves[DRIFT]))
  png = plots.save_png(fig, out / 'meta_signal.png')
  data = write_metric_panels_csv(out / 'meta_signal.csv', PANELS, curves)
  return plots.Saved(
    'What trains g',
    png,
    data,
    SIGNAL_NOTE + ' Lines: seed means per epoch, bands ±1 sample std; the '
    'dotted line is a share of 1/2.',
  )
