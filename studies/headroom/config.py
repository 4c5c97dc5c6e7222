"""When do learned labels matter? Planted hierarchies, a Human reference.

COMMAND (the scan, then the capture study in the setting with the most
headroom; skips finished runs, resumes interrupted ones, then writes the
figures and tables of docs/RESULTS.md, part 2):
  python -m experiments.sweep --config=studies/headroom/config.py \
    --workdir=runs/headroom --out=runs/headroom/analysis

Fashion-MNIST's ten classes regrouped into coarse primary classes
(`data.hierarchy`): the original labels become hidden fine classes, the
Human auxiliary labels and the ground truth of label recovery. The base is
the first study's (experiments/configs/fashion_low_data.py: half-width
ConvNet-4, batch 100, SGD with momentum 0.9 at lr 0.01, no augmentation),
with 300-450 θ1 steps whatever the training-set size, 5 evaluations and 5
checkpoints a run.

`scan()`: Human vs Uniform (both on the hierarchy's ψ) for every grouping
and training-set size, 3 seeds: where does the true fine structure help
more than fixed soft targets? `capture()`: every label generator and
control in the setting with the most headroom, 3 seeds.
`investigation()`: MAXL's knobs there, one seed each.
"""

from experiments.configs import fashion_low_data

SEEDS = (0, 1, 2)
HIERARCHIES = ('pairs', 'types', 'parity')
# Training-set sizes: (name, overrides); 300-450 θ1 steps each (test
# accuracy is flat after ~150 at 0.5%).
SIZES = (
  ('frac5', {'data.train_fraction': 0.05, 'train.epochs': 15}),
  ('frac1', {'data.train_fraction': 0.01, 'train.epochs': 60}),
  ('frac0.5', {'data.train_fraction': 0.005, 'train.epochs': 100}),
)
# The setting of `capture()`: the scan's largest Human - Uniform gap
# (docs/RESULTS.md, part 2).
CAPTURE = ('parity', 'frac5')


def get_config():
  """Fashion-MNIST, the first study's network and optimiser."""
  config = fashion_low_data.get_config()
  config.data.hierarchy = 'pairs'
  config.maxl.psi = 'hierarchy'
  config.log.meta_signal_every = 1  # What trains g, every θ2 step.
  return config


def run_setting(hierarchy: str, size: str) -> dict:
  sizes = dict(SIZES)
  epochs = sizes[size]['train.epochs']
  return {
    'data.hierarchy': hierarchy,
    **sizes[size],
    'train.eval_every_epochs': epochs // 5,
    'checkpoint.every_epochs': epochs // 5,
  }


def _seeds(name, **overrides):
  return [(f'{name}/seed{s}', {**overrides, 'seed': s}) for s in SEEDS]


def scan():
  """Human and Uniform on every hierarchy and training-set size."""
  runs = []
  for size, _ in SIZES:
    for hierarchy in HIERARCHIES:
      setting = run_setting(hierarchy, size)
      for method in ('human', 'uniform'):
        runs += _seeds(f'scan/{hierarchy}_{size}/{method}', method=method,
                       **setting)  # fmt: skip
  return runs


def capture():
  """Every label source and control where Human beats Uniform the most."""
  setting = run_setting(*CAPTURE)
  held_out = {'data.meta_fraction': 0.1}
  implicit = {
    **held_out,
    'maxl.meta_grad': 'implicit',
    'maxl.schedule': 'interleaved',
    'maxl.meta_every': 5,
  }
  methods = {
    'single': {'method': 'single'},
    'single_ls': {'method': 'single', 'train.label_smoothing': 0.1},
    'uniform': {'method': 'uniform'},
    'random': {'method': 'random'},
    'human': {'method': 'human'},
    'maxl': {'method': 'maxl'},
    'maxl_heldout': {'method': 'maxl', **held_out},
    'implicit_k5': {'method': 'maxl', **implicit},
    'maxl_weights': {'method': 'maxl', 'maxl.example_weights': True},
  }
  runs = []
  for name, overrides in methods.items():
    runs += _seeds(f'capture/{name}', **setting, **overrides)
  return runs


def investigation():
  """MAXL's knobs in the capture setting, seed 0: what moves recovery, what
  moves accuracy? A 10x faster generator; no entropy regulariser (λ = 0).
  (Two knobs only: the CPU budget of this study.)"""
  setting = run_setting(*CAPTURE)
  variants = {
    'glr10x': {'label_opt.lr': 1e-2},
    'lam0': {'maxl.lam': 0.0},
  }
  return [
    (f'investigate/maxl_{name}/seed0', {**setting, 'method': 'maxl',
                                        **overrides, 'seed': 0})
    for name, overrides in variants.items()
  ]  # fmt: skip


def sweep():
  """[(run name, {dotted config field: value})], in the order they run."""
  return scan() + capture() + investigation()


def analyses():
  """(OUT subfolder, run-name prefixes, analysis options)."""
  return [
    ('scan', ['scan/'], {'tsne_images': 0}),
    ('capture', ['capture/'], {'tsne_images': 0, 'topk': 8}),
    ('investigate', ['capture/maxl/', 'investigate/'], {'tsne_images': 0}),
  ]
