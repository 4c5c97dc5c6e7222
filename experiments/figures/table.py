"""results.md: final test accuracy as mean ± std over seeds (paper Table 1).

One row per group of runs that differ only in the seed: dataset, method,
psi, training data, n (seeds), mean ± sample std of the final test accuracy
(result.json), the difference of the mean to Single's on the same dataset
and training data, the mean wall time of a run, and what the final labels
know (DESIGN §6): information I(aux; x | y) and the recovery of hidden fine
classes (NMI, ARI), mean ± std over the seeds that logged them.
"""

import numpy as np

from experiments.figures import signal
from experiments.figures.finished import (
  FinishedRun,
  Group,
  data_label,
  psi_label,
)
from maxl_jax.labels import METHODS, SOURCES

# The registry's order: baselines, controls, MAXL.
METHOD_ORDER = METHODS
# What the labels know: result.json key -> group_stats key.
LABEL_SCORE_TITLES = {
  'test_aux_information': 'information',
  'test_aux_recovery_nmi': 'nmi',
  'test_aux_recovery_ari': 'ari',
}


def _mean_std(values) -> tuple[float | None, float | None]:
  """(mean, sample std or None for one value); (None, None) for none."""
  values = np.asarray(values, np.float64)
  if not values.size:
    return None, None
  std = float(values.std(ddof=1)) if values.size > 1 else None
  return float(values.mean()), std


def group_stats(group: Group) -> dict:
  """Final test accuracy (%) and wall time of a group's runs.

  Returns:
    {'dataset', 'method', 'psi', 'data', 'detail', 'n', 'mean', 'std'
    (sample std, ddof=1; None for n = 1), 'wall_time_s' (mean), and for
    each of 'information', 'nmi', 'ari' the mean and '<name>_std' over the
    runs whose result.json has it (None where none has)}.
  """
  config = group.first.config
  accuracy = np.array([100 * r.result['test_accuracy'] for r in group.runs])
  wall = np.array([r.result['wall_time_s'] for r in group.runs])
  scores = {}
  for key, name in LABEL_SCORE_TITLES.items():
    values = [
      r.result[key] for r in group.runs if r.result.get(key) is not None
    ]
    scores[name], scores[f'{name}_std'] = _mean_std(values)
  return {
    'dataset': group.first.dataset,
    'method': group.first.method,
    'psi': psi_label(config),
    'data': data_label(config),
    'detail': group.detail,
    'n': int(accuracy.size),
    'mean': float(accuracy.mean()),
    'std': float(accuracy.std(ddof=1)) if accuracy.size > 1 else None,
    'wall_time_s': float(wall.mean()),
    **scores,
  }


def _order(row: dict):
  method = row['method']
  rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else 99
  return (row['dataset'], row['data'], rank, method, row['psi'], row['detail'])


# Human - Uniform (pp) below which a gain's share of it is not reported.
MIN_HEADROOM = 0.1


def _reference(
  rows: list[dict], row: dict, method: str, itself: bool = False
) -> float | None:
  """The mean of `method`'s plain group (no detail) on `row`'s dataset and
  training data, the one of the same ψ where there are several; None when
  there is none, it is ambiguous, or (unless `itself`) it is `row`."""
  same = [
    r
    for r in rows
    if r['method'] == method
    and not r['detail']
    and (r['dataset'], r['data']) == (row['dataset'], row['data'])
  ]
  if len(same) > 1:
    same = [r for r in same if r['psi'] == row['psi']]
  if len(same) != 1 or (same[0] is row and not itself):
    return None
  return same[0]['mean']


def table_rows(groups: list[Group]) -> list[dict]:
  """`group_stats` of every group, sorted, with its gains (pp).

  'delta': the mean minus Single's on the same dataset and training data;
  'delta_uniform': minus Uniform's (of the same ψ where there are
  several); 'headroom_share': (method - Uniform) / (Human - Uniform), the
  share of the Human reference's gain over Uniform, when that headroom is
  at least MIN_HEADROOM. Each is None where its reference is missing or
  ambiguous.
  """
  rows = sorted(map(group_stats, groups), key=_order)
  for row in rows:
    single = _reference(rows, row, 'single')
    uniform = _reference(rows, row, 'uniform')
    base = _reference(rows, row, 'uniform', itself=True)
    human = _reference(rows, row, 'human', itself=True)
    row['delta'] = None if single is None else row['mean'] - single
    row['delta_uniform'] = None if uniform is None else row['mean'] - uniform
    row['headroom_share'] = None
    if None not in (base, human) and human - base >= MIN_HEADROOM:
      row['headroom_share'] = (row['mean'] - base) / (human - base)
  return rows


def _accuracy(row: dict) -> str:
  if row['std'] is None:
    return f'{row["mean"]:.2f}'
  return f'{row["mean"]:.2f} ± {row["std"]:.2f}'


def _signed(value: float | None) -> str:
  return '—' if value is None else f'{value:+.2f}'


def _score(row: dict, name: str) -> str:
  """A label score as '0.123 ± 0.004', '0.123' (one run) or '—' (none)."""
  if row[name] is None:
    return '—'
  std = row[f'{name}_std']
  return f'{row[name]:.3f}' + ('' if std is None else f' ± {std:.3f}')


def markdown_table(rows: list[dict]) -> str:
  """The rows of `table_rows` as a markdown table."""
  lines = [
    '| Dataset | Method | ψ | Train data | n | Test accuracy (%) '
    '| Δ vs Single (pp) | Δ vs Uniform (pp) | Share of headroom '
    '| Wall time / run (s) | Information (nats) | Recovery NMI '
    '| Recovery ARI |',
    '|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for row in rows:
    method = row['method'] + (f' ({row["detail"]})' if row['detail'] else '')
    lines.append(
      f'| {row["dataset"]} | {method} | {row["psi"]} | {row["data"]} '
      f'| {row["n"]} | {_accuracy(row)} | {_signed(row["delta"])} '
      f'| {_signed(row["delta_uniform"])} '
      f'| {_signed(row["headroom_share"])} '
      f'| {row["wall_time_s"]:.0f} | {_score(row, "information")} '
      f'| {_score(row, "nmi")} | {_score(row, "ari")} |'
    )
  return '\n'.join(lines)


def runs_table(runs: list[FinishedRun]) -> str:
  """One markdown row per run: where it is and what it gave."""
  lines = [
    '| Run | Method | Seed | Test accuracy (%) | Epochs | Steps '
    '| Wall time (s) | Folder |',
    '|---|---|---:|---:|---:|---:|---:|---|',
  ]
  for run in runs:
    result = run.result
    lines.append(
      f'| {run.name} | {run.method} | {run.seed} '
      f'| {100 * result["test_accuracy"]:.2f} | {result.get("epochs", "")} '
      f'| {result.get("steps", "")} | {result["wall_time_s"]:.0f} '
      f'| `{run.path}` |'
    )
  return '\n'.join(lines)


TABLE_NOTE = (
  'Final test accuracy (result.json): mean ± sample standard deviation over '
  'n runs that differ only in the seed (n = 1: the single value). Δ: '
  'difference of the mean to Single (Uniform) on the same dataset and '
  'training data (and ψ), in percentage points. Share of headroom: '
  '(method − Uniform) / (Human − Uniform), the share of the Human '
  "reference's gain over Uniform a method reaches; only where that "
  f'headroom is at least {MIN_HEADROOM} pp. Information: I(aux; x | y) '
  'of the final auxiliary '
  'labels of the test images, H(mean label of a class) − mean H(label), '
  'averaged over the primary classes (nats; 0 = labels that ignore the '
  'image, as Uniform; log ψ = one-hot labels using all ψ classes equally). '
  'Recovery: NMI and ARI between the argmax auxiliary class and the hidden '
  'fine class within each primary class, an unweighted mean over the '
  'classes; only with a label hierarchy (data.hierarchy). —: not logged '
  '(Single, or no fine labels).'
)


def _held_out(group: Group) -> float:
  return group.first.config['data'].get('meta_fraction', 0.0)


def paired_rows(groups: list[Group], reference: str) -> list[dict]:
  """Each group against the `reference` method's group, paired by seed.

  The reference group has the same dataset and training data (and, for
  'uniform', the same psi; for 'entropy_only', the same held-out split
  data.meta_fraction); seeds pair up because a seed fixes the
  low-data subset, the data order and the initial θ1. Two-sided paired
  t-test (scipy.stats.ttest_rel) on the final test accuracies.

  Returns:
    [{'label', 'reference', 'n' (pairs), 'diff' (mean, pp), 'sd' (of the
    differences), 'ci95' (half-width of the t interval of the mean
    difference, sd / √n · t_{0.975, n-1}), 't', 'p'}] for groups with >= 2
    seeds paired.
  """
  from scipy import stats  # Slow import: only here.

  stats_of = {id(g): group_stats(g) for g in groups}
  out = []
  for group in groups:
    row = stats_of[id(group)]
    if row['method'] == reference:
      continue
    generator = SOURCES[row['method']].generator
    if reference == 'entropy_only' and not generator:
      continue  # The control of g's training, for runs with a generator.
    refs = [
      g
      for g in groups
      if stats_of[id(g)]['method'] == reference
      and (stats_of[id(g)]['dataset'], stats_of[id(g)]['data'])
      == (row['dataset'], row['data'])
      and (reference != 'uniform' or stats_of[id(g)]['psi'] == row['psi'])
      and (reference != 'entropy_only' or _held_out(g) == _held_out(group))
    ]
    if len(refs) != 1:
      continue
    ref = {r.seed: r.result['test_accuracy'] for r in refs[0].runs}
    pairs = [
      (100 * r.result['test_accuracy'], 100 * ref[r.seed])
      for r in group.runs
      if r.seed in ref
    ]
    if len(pairs) < 2:
      continue
    a, b = np.asarray(pairs).T
    test = stats.ttest_rel(a, b)
    label = row['method'] + (f' ({row["detail"]})' if row['detail'] else '')
    out.append(
      {
        'label': f'{row["dataset"]} {row["data"]} {label} ψ={row["psi"]}',
        'reference': refs[0].label,
        'n': len(pairs),
        'diff': float(np.mean(a - b)),
        'sd': float(np.std(a - b, ddof=1)),
        'ci95': float(
          np.std(a - b, ddof=1)
          / np.sqrt(len(pairs))
          * stats.t.ppf(0.975, len(pairs) - 1)
        ),
        't': float(test.statistic),
        'p': float(test.pvalue),
      }
    )
  return out


def paired_markdown(groups: list[Group]) -> str:
  """Paired comparisons against Single, Uniform and (runs with a label
  generator) the entropy_only control."""
  lines = [
    '| Group | Against | Pairs | Mean difference (pp) | 95% CI (pp) '
    '| SD of differences | t | p (two-sided) |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
  ]
  for reference in ('single', 'uniform', 'entropy_only'):
    for row in paired_rows(groups, reference):
      low, high = row['diff'] - row['ci95'], row['diff'] + row['ci95']
      lines.append(
        f'| {row["label"]} | {reference} | {row["n"]} | {row["diff"]:+.2f} '
        f'| [{low:+.2f}, {high:+.2f}] | {row["sd"]:.2f} | {row["t"]:.2f} '
        f'| {row["p"]:.3f} |'
      )
  return '\n'.join(lines)


PAIRED_NOTE = (
  'Paired by seed (a seed fixes the training subset, the data order and the '
  'initial weights); paired t-test on the final test accuracies; 95% CI: '
  'the t interval of the mean difference. With 3 pairs, p < 0.05 needs a '
  'large, consistent difference: read p as a screen, not a verdict.'
)


def commits_line(results) -> str:
  """'Runs at commit(s) …': the `git_commit` of each result.json ('unknown'
  where a run did not record one), each once."""
  commits = sorted({r.get('git_commit') or 'unknown' for r in results})
  return f'Runs at commit(s) {", ".join(commits)}.'


def results_markdown(groups: list[Group], runs: list[FinishedRun]) -> str:
  """The whole results.md."""
  paired = paired_markdown(groups)
  trains_g = signal.signal_markdown(groups)
  if trains_g:
    trains_g = f'## What trains g\n\n{trains_g}\n\n{signal.SIGNAL_NOTE}\n\n'
  return (
    f'# Results\n\n{markdown_table(table_rows(groups))}\n\n'
    f'{commits_line(r.result for r in runs)}\n\n{TABLE_NOTE}\n\n'
    f'## Paired comparisons\n\n{paired}\n\n{PAIRED_NOTE}\n\n'
    f'{trains_g}## Runs\n\n{runs_table(runs)}\n'
  )
