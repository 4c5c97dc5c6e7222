"""Does the meta-gradient train g? Controls, live variants, a positive control.

COMMAND (the first version of docs/RESULTS.md, part 3, which
studies/meta_signal follows up; skips finished runs, resumes interrupted
ones, then writes the tables and figures):
  python -m experiments.sweep --config=studies/controls/config.py \
    --workdir=runs/controls --out=runs/controls/analysis

`search()`: where do the true fine labels beat uniform soft ones? Human,
Uniform and Single on scikit-learn's digits regrouped into two coarse
classes (parity, halves: five digits per coarse class, so each coarse class
is a union of five distinct shapes that its label does not name), at few
training images, 3 seeds. `table()`: every control and live variant in the
positive control found by the search and in the headroom study's parity 5%
setting (Fashion-MNIST, studies/headroom/config.py), 3 seeds.
"""

from experiments.configs import quickstart
from experiments.figures.finished import flatten
from studies.headroom import config as headroom

SEEDS = (0, 1, 2)
# (name, overrides) of the search's digits settings: about 250 θ1 steps each.
DIGITS = (
  ('parity_frac10', {'data.hierarchy': 'parity', 'data.train_fraction': 0.1,
                     'train.epochs': 100}),
  ('parity_frac25', {'data.hierarchy': 'parity', 'data.train_fraction': 0.25,
                     'train.epochs': 40}),
  ('halves_frac10', {'data.hierarchy': 'halves', 'data.train_fraction': 0.1,
                     'train.epochs': 100}),
)  # fmt: skip


def get_config():
  """The quickstart's digits at half-width ConvNet-4, no comparison; the
  hierarchy's ψ for every source."""
  config = quickstart.get_config()
  config.compare_methods = ''
  config.data.hierarchy = 'parity'
  config.model.widths = (16, 32, 64, 128)
  config.model.head_hidden = 128
  config.maxl.psi = 'hierarchy'
  config.maxl.psi_per_class = 5  # Unused with the hierarchy's ψ.
  config.train.epochs = 40
  config.train.eval_every_epochs = 8
  config.checkpoint.every_steps = 10_000  # Epoch ends only.
  config.checkpoint.every_epochs = 8
  config.log.progress_every_steps = 100
  config.log.meta_signal_every = 1  # What trains g, every θ2 step.
  return config


# The positive control's references: at 250 images the seed (which picks
# the subset) moves accuracy by up to ±10 pp, so they get 10 seeds.
MORE_SEEDS = tuple(range(10))
REFERENCES = ('single', 'uniform', 'human')


def _seeds(name, seeds=SEEDS, **overrides):
  return [(f'{name}/seed{s}', {**overrides, 'seed': s}) for s in seeds]


def _digits(size: str) -> dict:
  overrides = dict(DIGITS)[size]
  fifth = overrides['train.epochs'] // 5
  return {**overrides, 'train.eval_every_epochs': fifth,
          'checkpoint.every_epochs': fifth}  # fmt: skip


# digit_pairs at other sizes, seed 0: how the positive control's size was
# chosen (the table's 10% is in between).
PAIR_SIZES = (
  ('pairs_frac6', {'data.train_fraction': 0.06, 'train.epochs': 100,
                   'train.eval_every_epochs': 20,
                   'checkpoint.every_epochs': 20}),
  ('pairs_frac40', {'data.train_fraction': 0.4, 'train.epochs': 25,
                    'train.eval_every_epochs': 5,
                    'checkpoint.every_epochs': 5}),
)  # fmt: skip


def search():
  """Human, Uniform and Single in each digits setting (3 seeds) and in
  digit_pairs at 6% and 40% (seed 0)."""
  runs = []
  for size, _ in DIGITS:
    for method in ('single', 'uniform', 'human'):
      runs += _seeds(f'search/{size}/{method}', method=method, **_digits(size))
  for size, overrides in PAIR_SIZES:
    for method in ('single', 'uniform', 'human'):
      runs.append((
        f'search/{size}/{method}/seed0',
        {**PAIRS, **overrides, 'method': method, 'seed': 0},
      ))  # fmt: skip
  return runs


# The positive control: pairs of digits, primary = parity of their sum.
PAIRS = {
  'data.name': 'digit_pairs',
  'data.hierarchy': 'parity',
  'data.train_fraction': 0.1,  # 250 images, 10 per pair.
  'data.eval_batch_size': 500,
  'train.epochs': 60,  # 300 θ1 steps.
  'train.eval_every_epochs': 12,
  'checkpoint.every_epochs': 12,
}
HELD_OUT = {'data.meta_fraction': 0.1, 'data.meta_batch_size': 25}
# Live variants of the meta-signal (config.maxl, label_opt); each with the
# held-out split, so that its meta objective on held-out data is logged.
VARIANTS = {
  'normalized': {'maxl.balance': 'normalized'},
  'normalized_adam': {'maxl.balance': 'normalized', 'label_opt.name': 'adam'},
  'adam': {'label_opt.name': 'adam'},
  'scale10': {'maxl.lookahead_scale': 10.0},
  'ce_normalized_adam': {'maxl.meta_loss': 'ce', 'maxl.balance': 'normalized',
                         'label_opt.name': 'adam'},
}  # fmt: skip


def explore():
  """Seed 0 in the positive control: which variant moves g?"""
  methods = {
    'maxl': {'method': 'maxl'},
    'entropy_only': {'method': 'entropy_only'},
    **{name: {'method': 'maxl', **o} for name, o in VARIANTS.items()},
  }
  return [
    (f'explore/{name}/seed0', {**PAIRS, **HELD_OUT, **o, 'seed': 0})
    for name, o in methods.items()
  ]


def parity_setting() -> dict:
  """The headroom study's parity 5% runs as overrides of this config."""
  config = headroom.get_config()
  for dotted, value in headroom.run_setting(*headroom.CAPTURE).items():
    *parents, field = dotted.split('.')
    node = config
    for part in parents:
      node = node[part]
    node[field] = value
  mine = flatten(get_config().to_dict())
  return {k: v for k, v in flatten(config.to_dict()).items() if mine[k] != v}


# The table's rows: (name, overrides, held out). Controls and MAXL as
# published train θ1 on the whole training set; the live variant and the
# control it is measured against take the held-out split (10%) for the meta
# objective, so that its held-out value is logged.
ROWS = (
  ('single', {'method': 'single'}),
  ('uniform', {'method': 'uniform'}),
  ('human', {'method': 'human'}),
  ('soft_human', {'method': 'soft_human'}),
  ('frozen', {'method': 'frozen'}),
  ('entropy_only', {'method': 'entropy_only'}),
  ('maxl', {'method': 'maxl'}),
  ('entropy_only_heldout', {'method': 'entropy_only', **HELD_OUT}),
  ('normalized_heldout', {'method': 'maxl', **HELD_OUT,
                          **VARIANTS['normalized']}),
  ('normalized_heldout_weights', {'method': 'maxl', **HELD_OUT,
                                  **VARIANTS['normalized'],
                                  'maxl.example_weights': True}),
  ('adam_heldout', {'method': 'maxl', **HELD_OUT, **VARIANTS['adam']}),
)  # fmt: skip


def table(setting: str):
  """Every row of ROWS in `setting` ('pairs' or 'parity'), 3 seeds each
  (the positive control's references 10)."""
  base = PAIRS if setting == 'pairs' else parity_setting()
  runs = []
  for name, overrides in ROWS:
    if setting == 'parity' and 'data.meta_batch_size' in overrides:
      overrides = {**overrides, 'data.meta_batch_size': 0}  # = batch 100.
    seeds = MORE_SEEDS if setting == 'pairs' and name in REFERENCES else SEEDS
    runs += _seeds(f'{setting}/{name}', seeds, **base, **overrides)
  return runs


def sweep():
  """[(run name, {dotted config field: value})], in the order they run."""
  return search() + explore() + table('pairs') + table('parity')


def analyses():
  """(OUT subfolder, run-name prefixes, analysis options)."""
  return [
    (name, [f'{name}/'], {'tsne_images': 0})
    for name in ('search', 'explore', 'pairs', 'parity')
  ]
