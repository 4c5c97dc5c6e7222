"""t-SNE of the multi-task network's trunk features (paper Fig. 5).

Every run is embedded on the same test images (a seeded choice per dataset)
and drawn in its own panel, coloured by primary class.
"""

import pathlib

import numpy as np
from matplotlib.lines import Line2D

from experiments.figures import plots

PCA_DIMS = 50  # Features are reduced to this many dimensions first.


def pick_images(num_test: int, count: int, seed: int = 0) -> np.ndarray:
  """Sorted indices of `count` test images (all if count >= num_test)."""
  if count >= num_test:
    return np.arange(num_test)
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(num_test, size=count, replace=False))


def embed(features: np.ndarray, seed: int = 0) -> np.ndarray:
  """2-D t-SNE of `features` [N, D] -> [N, 2] (PCA to 50 dims first)."""
  # Imported here: scikit-learn takes 1.4 s to import, which every run of
  # the command would pay before it can report bad input.
  import threadpoolctl
  from sklearn.decomposition import PCA
  from sklearn.manifold import TSNE

  features = np.asarray(features, np.float64)
  n = len(features)
  if features.shape[1] > PCA_DIMS and n > PCA_DIMS:
    features = PCA(PCA_DIMS, random_state=seed).fit_transform(features)
  perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
  tsne = TSNE(2, perplexity=perplexity, init='pca', random_state=seed, n_jobs=1)
  # One thread: OpenMP threads that spin beside JAX's own were 5-40x slower
  # on a shared 2-core machine; 2,000 images take about 8 s.
  with threadpoolctl.threadpool_limits(1):
    return tsne.fit_transform(features)


def write_tsne(panels: list[dict], num_classes: int, out: pathlib.Path):
  """tsne.png/.csv: one scatter per run.

  Args:
    panels: [{'run', 'step', 'dataset', 'index': [N] test-image indices,
      'label': [N] primary labels, 'xy': [N, 2]}].
    num_classes: the largest number of primary classes among the panels.
  """
  cols = min(len(panels), 3)
  rows = -(-len(panels) // cols)
  fig = plots.new_figure(4.2 * cols + 1.2, 4.0 * rows)
  axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
  colors = plots.class_colors(num_classes)
  for ax, panel in zip(axes, panels, strict=False):
    labels, xy = np.asarray(panel['label']), np.asarray(panel['xy'])
    for c in np.unique(labels):
      pick = labels == c
      ax.scatter(*xy[pick].T, s=4, color=colors[c], label=str(c))
    ax.set_title(
      f'{panel["run"]} (step {panel["step"]}, {len(labels)} images)',
      fontsize='medium',
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel('t-SNE 1')
    ax.set_ylabel('t-SNE 2')
  for ax in axes[len(panels) :]:
    ax.set_axis_off()
  if num_classes <= 20:  # Beyond that, colours no longer tell classes apart.
    handles = [
      Line2D([], [], marker='o', linestyle='', color=colors[c], label=str(c))
      for c in range(num_classes)
    ]
    fig.legend(handles=handles, title='primary class', loc='outside right')
  fig.suptitle('t-SNE of the shared trunk features on test images (Fig. 5)')
  png = plots.save_png(fig, out / 'tsne.png')
  data = plots.write_csv(
    out / 'tsne.csv',
    ('run', 'dataset', 'image_index', 'label', 'x', 'y'),
    (
      (p['run'], p['dataset'], int(i), int(c), float(x), float(y))
      for p in panels
      for i, c, (x, y) in zip(p['index'], p['label'], p['xy'], strict=True)
    ),
  )
  return plots.Saved(
    't-SNE of the trunk features (Fig. 5)',
    png,
    data,
    "The multi-task network's shared trunk features of the same test "
    'images for every run (reduced to 50 dimensions by PCA, then 2-D '
    't-SNE), coloured by primary class. Tighter, better separated clusters '
    'mean features that separate the primary classes more easily.',
  )
