"""What the labels know, per epoch: information and fine-class recovery.

From metrics.jsonl (DESIGN §6): `test/aux_information`, I(aux; x | y) of
the auxiliary labels of the test images in nats, and, with a label
hierarchy, `test/aux_recovery_nmi` and `test/aux_recovery_ari`, how well the
argmax auxiliary class recovers the hidden fine class within each primary
class. One line per group: the seed mean with a ±1 std band, as the
learning curves.
"""

import pathlib

from experiments.figures import plots
from experiments.figures.curves import (
  metric_panels,
  seed_mean,
  write_metric_panels_csv,
)
from experiments.figures.finished import Group

INFORMATION = 'test/aux_information'
NMI, ARI = 'test/aux_recovery_nmi', 'test/aux_recovery_ari'
PANELS = (
  (INFORMATION, 'I(aux; x | y) (nats)', 'Information of the labels'),
  (NMI, 'NMI', 'Recovery of the fine classes: NMI'),
  (ARI, 'ARI', 'Recovery of the fine classes: ARI'),
)


def knowledge_curves(groups: list[Group]) -> dict[str, list[dict]]:
  """{metric: [`seed_mean` of each group that logged it]} (none: no key)."""
  out = {}
  for key, _, _ in PANELS:
    curves = [c for c in (seed_mean(g, key) for g in groups) if c['epoch']]
    if curves:
      out[key] = curves
  return out


def write_label_knowledge(groups: list[Group], out: pathlib.Path):
  """label_knowledge.png/.csv; None if no run logged information."""
  curves = knowledge_curves(groups)
  if INFORMATION not in curves:
    return None
  panels = [p for p in PANELS if p[0] in curves]
  fig = plots.new_figure(4.5 * len(panels) + 1.0, 4.0)
  # A group keeps its colour in every panel (not all log recovery).
  colors = {c['label']: f'C{i % 10}' for i, c in enumerate(curves[INFORMATION])}
  axes = metric_panels(fig, panels, curves, colors)
  for ax in axes:
    ax.axhline(0.0, color='black', linewidth=0.8)
  # One legend: the information panel has every group with a label source.
  plots.legend_below(fig, axes[0], len(curves[INFORMATION]))
  png = plots.save_png(fig, out / 'label_knowledge.png')
  data = write_metric_panels_csv(out / 'label_knowledge.csv', panels, curves)
  return plots.Saved(
    'What the labels know',
    png,
    data,
    'At each evaluation, the auxiliary labels of the test images (MAXL: '
    "the generator's mask-softmax labels, BatchNorm running averages; the "
    "baselines' targets). Information: I(aux; x | y) = H(mean label of a "
    'class) − mean H(label of an image), averaged over the primary '
    'classes, in nats; 0 for labels that ignore the image (Uniform), log ψ '
    "for one-hot labels that use a class's ψ auxiliary classes equally. "
    'Recovery (with a label hierarchy): NMI and ARI between the argmax '
    'auxiliary class and the hidden fine class, within each primary class, '
    'an unweighted mean over the classes. Lines: seed means, bands ±1 '
    'sample std, n seeds.',
  )
