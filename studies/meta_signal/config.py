"""What the meta-gradient does, measured right (docs/RESULTS.md, part 3).

COMMAND (skips finished runs, resumes interrupted ones, then writes the
tables and figures; `--only=PREFIX` runs one part):
  python -m experiments.sweep --config=studies/meta_signal/config.py \
    --workdir=runs/meta_signal --out=runs/meta_signal/analysis

The positive control (digit_pairs, parity, 250 images) balanced by pair
(`data.balance=auto` is `fine` there: 10 images of each of the 25 pairs),
in two settings:

  study   the controls study's: half-width ConvNet-4, θ1 SGD with momentum
          0.9, batch 50, no augmentation (studies/controls/config.py).
  paper   the paper's optimiser settings (`PAPER`): θ1 plain SGD lr 0.01,
          θ2 SGD lr 1e-3 with weight decay 5e-4, focal γ = 2, λ = 0.2,
          random crops (no flip: it changes a pair), batch 100, full-width
          ConvNet-4 (`paper_parity`: crop + flip, as published). At 250
          images an epoch is 2 steps, so the learning rate is not halved
          during the run (the paper halves it every 50 of its 500-step
          epochs).
"""

from studies.controls import config as controls

get_config = controls.get_config

SEEDS = tuple(range(10))
# The positive control with its pairs balanced (data.balance = auto).
PAIRS = {**controls.PAIRS, 'data.balance': 'auto'}
# The paper's model, optimisers and losses (DESIGN.md §6), without a dataset.
PAPER_OPTIMISATION = {
  'model.widths': (32, 64, 128, 256),  # ConvNet-4 at full width.
  'model.head_hidden': 256,
  'data.batch_size': 100,
  'data.augment': 'crop_flip',
  'primary_opt.lr': 0.01,
  'primary_opt.momentum': 0.0,
  'primary_opt.weight_decay': 0.0,
  'primary_opt.decay_every_epochs': 10_000,
  'label_opt.name': 'sgd',
  'label_opt.lr': 1e-3,
  'label_opt.momentum': 0.0,
  'label_opt.weight_decay': 5e-4,
  'label_opt.decay_every_epochs': 10_000,
  'maxl.gamma': 2.0,
  'maxl.lam': 0.2,
}
PAPER = {
  **PAIRS,
  **PAPER_OPTIMISATION,
  # A horizontal flip swaps digit_pairs' two digits and mirrors each, so
  # Human's fine label (the pair) would describe another image: the
  # positive control crops without flipping. (docs/RESULTS.md's paper rows
  # ran with crop_flip, before this.)
  'data.augment': 'crop',
  'train.epochs': 300,  # 600 θ1 steps (2 per epoch).
  'train.eval_every_epochs': 60,
  'checkpoint.every_epochs': 60,
}
REFERENCES = ('single', 'uniform', 'human')
GENERATOR = ('frozen', 'entropy_only', 'maxl')


def _runs(prefix, methods, seeds, **overrides):
  return [
    (f'{prefix}/{m}/seed{s}', {**overrides, 'method': m, 'seed': s})
    for m in methods
    for s in seeds
  ]


# A paper-settings run costs about 10 CPU minutes here (8x a study run).
PAPER_SEEDS = SEEDS


# Longer horizons, each with the held-out split (10%) for the meta
# objective and against entropy_only on the same split: (name, overrides).
HELD_OUT = {**PAIRS, **controls.HELD_OUT}
HORIZONS = (
  # The references on the same 225 training images (the other 25 held out).
  ('uniform', {'method': 'uniform'}),
  ('human', {'method': 'human'}),
  ('entropy_only', {'method': 'entropy_only'}),
  ('k1', {'method': 'maxl'}),
  ('k5', {'method': 'maxl', 'maxl.lookahead_steps': 5}),
  ('implicit', {'method': 'maxl', 'maxl.meta_grad': 'implicit'}),
  ('k20', {'method': 'maxl', 'maxl.lookahead_steps': 20}),
)
# K = 20 costs about 20 lookahead steps per θ2 update: 3 seeds.
FEWER_SEEDS = (0, 1, 2)


def horizons():
  runs = []
  for name, overrides in HORIZONS:
    seeds = FEWER_SEEDS if name == 'k20' else SEEDS
    for s in seeds:
      runs.append(
        (f'heldout/{name}/seed{s}', {**HELD_OUT, **overrides, 'seed': s})
      )
  return runs


# VGG-16 at the paper's settings, a few epochs: the meta share early on.
VGG = {**PAPER, 'model.name': 'vgg16', 'model.widths': (),
       'model.head_hidden': 512, 'train.epochs': 10,
       'train.eval_every_epochs': 5, 'checkpoint.every_epochs': 5}  # fmt: skip


def sweep():
  """[(run name, {dotted config field: value})], in the order they run."""
  return [
    *_runs('study', REFERENCES, SEEDS, **PAIRS),
    *_runs('study', GENERATOR, SEEDS, **PAIRS),
    *_runs('paper', ('maxl', 'entropy_only'), PAPER_SEEDS, **PAPER),
    *horizons(),
    *_runs('vgg16', ('maxl',), (0,), **VGG),
    # Parity 5% (Fashion-MNIST, part 2's setting): the statistics-matched
    # frozen null beside part 3's first MAXL and entropy_only runs.
    *_runs('parity', ('frozen',), FEWER_SEEDS, **controls.parity_setting()),
    # Parity 5% at the paper's optimiser settings (its 15 epochs, 450 steps).
    *_runs(
      'paper_parity',
      ('maxl', 'entropy_only'),
      FEWER_SEEDS,
      **{**controls.parity_setting(), **PAPER_OPTIMISATION},
    ),
  ]


def analyses():
  """(OUT subfolder, run-name prefixes, analysis options)."""
  return [
    (name, [f'{name}/'], {'tsne_images': 0})
    for name in ('study', 'paper', 'heldout', 'vgg16', 'parity', 'paper_parity')
  ]
