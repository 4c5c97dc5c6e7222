"""results.md: final test accuracy as mean ± std over seeds (paper Table 1).

One row per group of runs that differ only in the seed: dataset, method,
psi, training data, n (seeds), mean ± sample std of the final test accuracy
(result.json), the difference of the mean to Single's on the same dataset
and training data, and the mean wall time of a run.
"""

import numpy as np

from experiments.analysis.runs import Group, Run, data_label, psi_label

METHOD_ORDER = ('single', 'random', 'kmeans', 'human', 'maxl')


def group_stats(group: Group) -> dict:
  """Final test accuracy (%) and wall time of a group's runs.

  Returns:
    {'dataset', 'method', 'psi', 'data', 'detail', 'n', 'mean', 'std'
    (sample std, ddof=1; None for n = 1), 'wall_time_s' (mean)}.
  """
  config = group.first.config
  accuracy = np.array([100 * r.result['test_accuracy'] for r in group.runs])
  wall = np.array([r.result['wall_time_s'] for r in group.runs])
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
  }


def _order(row: dict):
  method = row['method']
  rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else 99
  return (row['dataset'], row['data'], rank, method, row['psi'], row['detail'])


def table_rows(groups: list[Group]) -> list[dict]:
  """`group_stats` of every group, sorted, with 'delta' (pp) to Single.

  'delta' is the mean minus the mean of the Single group of the same
  dataset and training data; None for Single itself, or when there is no
  such group or several.
  """
  rows = sorted(map(group_stats, groups), key=_order)
  for row in rows:
    singles = [
      s['mean']
      for s in rows
      if s['method'] == 'single'
      and (s['dataset'], s['data']) == (row['dataset'], row['data'])
    ]
    ok = row['method'] != 'single' and len(singles) == 1
    row['delta'] = row['mean'] - singles[0] if ok else None
  return rows


def _accuracy(row: dict) -> str:
  if row['std'] is None:
    return f'{row["mean"]:.2f}'
  return f'{row["mean"]:.2f} ± {row["std"]:.2f}'


def markdown_table(rows: list[dict]) -> str:
  """The rows of `table_rows` as a markdown table."""
  lines = [
    '| Dataset | Method | ψ | Train data | n | Test accuracy (%) '
    '| Δ vs Single (pp) | Wall time / run (s) |',
    '|---|---|---|---|---:|---:|---:|---:|',
  ]
  for row in rows:
    method = row['method'] + (f' ({row["detail"]})' if row['detail'] else '')
    delta = '—' if row['delta'] is None else f'{row["delta"]:+.2f}'
    lines.append(
      f'| {row["dataset"]} | {method} | {row["psi"]} | {row["data"]} '
      f'| {row["n"]} | {_accuracy(row)} | {delta} '
      f'| {row["wall_time_s"]:.0f} |'
    )
  return '\n'.join(lines)


def runs_table(runs: list[Run]) -> str:
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
  'difference of the mean to Single on the same dataset and training data, '
  'in percentage points.'
)


def results_markdown(groups: list[Group], runs: list[Run]) -> str:
  """The whole results.md."""
  return (
    f'# Results\n\n{markdown_table(table_rows(groups))}\n\n{TABLE_NOTE}\n\n'
    f'## Runs\n\n{runs_table(runs)}\n'
  )
