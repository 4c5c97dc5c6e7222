"""CIFAR-100, VGG-16, 20 coarse -> 100 auxiliary classes (the original code).

COMMAND:
  python -m experiments.run --config=experiments/configs/cifar100.py \
    --workdir=/tmp/maxl_cifar100

The authors' own experiment (DESIGN §3): primary task the 20 superclasses,
psi = 5 per class (K = 100), batch 100, 200 epochs, crop + flip; every
value is the default's. Paper Fig. 3 (a plot; no table of numbers): MAXL
beats Single, Random and K-Means and is competitive with Human, the
dataset's own 100 fine labels.

Baselines of Fig. 3 (DESIGN §4) with `--config.method=single|random|kmeans|
human`. A pair of hierarchy levels from {3, 10, 20, 100}, primary < aux,
goes in the config string, e.g. Human 3 -> 100:
  python -m experiments.run \
    --config=experiments/configs/cifar100.py:primary=3,aux=100 \
    --config.method=human --workdir=/tmp/maxl_cifar100_human_3_100
The string also sets K for the other methods: Random draws K = aux classes,
MAXL and K-Means use psi = round(aux / primary) per class.
`--config.data.primary_level=...` still overrides the level alone.
"""

from experiments.configs import default
from maxl_jax.errors import UsageError


def get_config(arg=None):
  """CIFAR-100 20 -> 100, or the level pair of `arg` ('primary=3,aux=100')."""
  config = default.get_config()
  pairs = dict(kv.split('=', 1) for kv in arg.split(',')) if arg else {}
  if set(pairs) - {'primary', 'aux'}:
    raise UsageError(
      f'cifar100.py:{arg}: use e.g. cifar100.py:primary=3,aux=10'
    )
  primary, aux = int(pairs.get('primary', 20)), int(pairs.get('aux', 100))
  config.data.name = 'cifar100'
  config.data.primary_level, config.data.aux_level = primary, aux
  config.maxl.psi_per_class = max(1, round(aux / primary))
  config.baseline.aux_classes = aux
  return config
