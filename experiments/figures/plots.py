"""Figures on matplotlib's Agg canvas, and the data files beside them.

Figures are `matplotlib.figure.Figure`s with an Agg canvas attached (no
pyplot, no global state, no display needed). Every PNG is written with the
numbers it plots beside it, as CSV (tables) or JSON (nested data).
"""

import csv
import dataclasses
import json
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 120


def new_figure(width: float, height: float) -> Figure:
  """A blank figure of `width` x `height` inches on an Agg canvas."""
  fig = Figure(figsize=(width, height), layout='constrained')
  FigureCanvasAgg(fig)
  return fig


def legend_below(fig: Figure, ax, entries: int):
  """The axes' legend under the plot (long labels keep the plot wide)."""
  fig.set_figheight(fig.get_figheight() + 0.22 * entries)
  fig.legend(*ax.get_legend_handles_labels(), loc='outside lower center',
             fontsize='small')  # fmt: skip


def epoch_axes(ax, ylabel: str, title: str, **title_kw):
  """Axes over epochs: integer epoch ticks, a grid, the labels."""
  from matplotlib.ticker import MaxNLocator

  ax.set_xlabel('epoch')
  ax.set_ylabel(ylabel)
  ax.set_title(title, **title_kw)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.grid(alpha=0.3)


def save_png(fig: Figure, path: pathlib.Path) -> pathlib.Path:
  fig.savefig(path, dpi=DPI)
  return path


def write_csv(
  path: pathlib.Path, columns: Sequence[str], rows: Iterable[Sequence]
) -> pathlib.Path:
  """A CSV file with a header row; floats with full precision."""
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for row in rows:
      writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
  return path


def write_json(path: pathlib.Path, data) -> pathlib.Path:
  path.write_text(json.dumps(data, indent=1, default=_plain) + '\n')
  return path


def _plain(value):
  """numpy scalars and arrays as JSON numbers and lists."""
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f'not JSON-able: {type(value).__name__}')


def class_colors(num_classes: int) -> np.ndarray:
  """[num_classes, 4] RGBA: tab10/tab20, a continuous map beyond 20."""
  if num_classes > 20:
    return colormaps['turbo'](np.linspace(0, 1, num_classes))
  cmap = colormaps['tab10' if num_classes <= 10 else 'tab20']
  return cmap(np.arange(num_classes))


@dataclasses.dataclass(frozen=True)
class Saved:
  """A figure written to disk, for the report."""

  title: str
  png: pathlib.Path
  data: pathlib.Path  # The numbers the figure plots.
  caption: str
