"""report.md: every figure with its caption and data file, and the table."""

from experiments.figures import plots, table
from experiments.figures.finished import FinishedRun, Group


def report_markdown(
  command: str,
  runs: list[FinishedRun],
  groups: list[Group],
  saved: list[plots.Saved],
  notes: list[str],
) -> str:
  """The text of report.md (figure paths relative to the report)."""
  made = f'Made by `{command}`. ' if command else ''
  parts = [
    f'# Analysis of {len(runs)} run{"s" if len(runs) != 1 else ""}',
    f'{made}The numbers behind every figure are in the CSV/JSON file named '
    'under it; [results.md](results.md) has the table below and one row '
    'per run.',
    '## Final test accuracy (Table 1)',
    table.markdown_table(table.table_rows(groups)),
    table.commits_line(r.result for r in runs),
    table.TABLE_NOTE,
  ]
  for item in saved:
    parts += [
      f'## {item.title}',
      f'![{item.title}]({item.png.name})',
      f'{item.caption} Data: [{item.data.name}]({item.data.name}).',
    ]
  if notes:
    parts += ['## Notes', '\n'.join(f'- {note}' for note in notes)]
  return '\n\n'.join(parts) + '\n'
