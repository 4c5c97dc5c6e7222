"""What the label generator invented (paper Fig. 6): top-k images per class.

For each chosen primary class c and each of its auxiliary classes k, the
test images of class c to which the restored generator gives k the highest
probability, shown as the model saw them.
"""

import pathlib

import numpy as np

from experiments.figures import plots
from maxl_jax.data.images import to_unit_range


def top_k(probs: np.ndarray, labels: np.ndarray, aux: int, owner: int, k: int):
  """The (at most) k images of class `owner` most probable for `aux`.

  Args:
    probs: [N, K] generated probabilities.
    labels: [N] primary labels.
    aux: an auxiliary class of `owner`.
    owner: a primary class.
    k: how many images.

  Returns:
    [min(k, #images of owner)] indices into N, by decreasing probability
    (ties: the lower index first).
  """
  candidates = np.flatnonzero(np.asarray(labels) == owner)
  order = np.argsort(-probs[candidates, aux], kind='stable')
  return candidates[order[:k]]


def invented_rows(probs, labels, psi, classes, k: int) -> list[dict]:
  """One row per auxiliary class of each class in `classes`.

  Returns:
    [{'class': c, 'aux': global aux index, 'index': [<=k] image indices,
    'prob': [<=k] their probabilities of that aux class}].
  """
  psi = np.asarray(psi)
  starts = np.concatenate([[0], np.cumsum(psi)[:-1]])
  rows = []
  for c in classes:
    for aux in range(starts[c], starts[c] + psi[c]):
      index = top_k(probs, labels, aux, c, k)
      rows.append(
        {
          'class': int(c),
          'aux': int(aux),
          'index': index.tolist(),
          'prob': probs[index, aux].astype(float).tolist(),
        }
      )
  return rows


def write_invented(
  run: str, slug: str, step: int, rows: list[dict], images, out: pathlib.Path
):
  """invented_<slug>.png/.json: the grid of `invented_rows`.

  Args:
    run: the run's name; slug: the same as a file-name part.
    step: the checkpoint's step.
    rows: from `invented_rows`.
    images: [N, H, W, C] normalised test images (the model's input).
    out: output folder.
  """
  k = max(1, max(len(r['index']) for r in rows))
  fig = plots.new_figure(max(1.15 * k + 1.0, 5.5), 1.3 * len(rows) + 1.0)
  axes = fig.subplots(len(rows), k, squeeze=False)
  for row, line in zip(rows, axes, strict=True):
    for ax in line:
      ax.set_xticks([])
      ax.set_yticks([])
      ax.spines[:].set_visible(False)
    for ax, i, p in zip(line, row['index'], row['prob'], strict=False):
      shown = to_unit_range(images[i])
      if shown.shape[-1] == 1:
        ax.imshow(shown[..., 0], cmap='gray', vmin=0, vmax=1)
      else:
        ax.imshow(shown)
      ax.set_title(f'p={p:.2f}', fontsize=8, pad=2)
    line[0].set_ylabel(
      f'class {row["class"]}\naux {row["aux"]}',
      fontsize=8,
      rotation=0,
      ha='right',
      va='center',
    )
  fig.suptitle(
    f'{run}, step {step}: what the generator invented\n'
    f'each row: the {k} test images most probable for one\n'
    'auxiliary class (p: its generated probability)',
    fontsize='medium',
  )
  png = plots.save_png(fig, out / f'invented_{slug}.png')
  data = plots.write_json(
    out / f'invented_{slug}.json', {'run': run, 'step': step, 'rows': rows}
  )
  return plots.Saved(
    f'What the generator invented: {run} (Fig. 6)',
    png,
    data,
    'Each row is one auxiliary class of a chosen primary class; the images '
    'are the test images of that primary class to which the restored '
    'generator gives that auxiliary class the highest probability, shown '
    'as the network saw them (normalised input mapped back to [0, 1]).',
  )
