"""The evidence study: does MAXL help on real data, and is it the meta-learning?

COMMAND (the whole study; skips finished runs, resumes interrupted ones, then
writes the figures and tables of docs/RESULTS.md):
  python -m experiments.sweep --config=studies/evidence/config.py \
    --workdir=runs/study --out=runs/study/analysis

The setting is experiments/configs/fashion_low_data.py: Fashion-MNIST
(real, offline: apt-get install dataset-fashion-mnist), 5% of the training
set, class-balanced (3,000 images, AuxiLearn's low-data setting), ConvNet-4
at half width (16-32-64-128: a quarter of the FLOPs, so the study fits about
an hour on 2 CPU cores), 20 epochs of batch 100 (600 θ1 steps), SGD with
momentum 0.9 at lr 0.01 for θ1 of every method (the same budget and
optimiser for the baselines and MAXL; nothing is tuned per method).
Evaluation on all 10,000 test images every other epoch.

`sweep()` lists the runs, most informative first: Single, Uniform, Random,
MAXL, MAXL with a held-out meta split and AuxiLearn's implicit
hypergradient at psi = 5 (3 seeds); MAXL and Random at psi in {2, 3, 10};
MAXL every k in {1, 5, 25} θ1 steps (interleaved); `investigation()`;
Single and MAXL on the full training set (1 seed, 2 epochs).
"""

from experiments.configs import fashion_low_data

SEEDS = (0, 1, 2)
# Fashion-MNIST 5%, half-width ConvNet-4, 20 epochs.
get_config = fashion_low_data.get_config


def _seeds(name, **overrides):
  return [(f'{name}/seed{s}', {**overrides, 'seed': s}) for s in SEEDS]


def sweep():
  """[(run name, {dotted config field: value})], in the order they run."""
  held_out = {'data.meta_fraction': 0.1}
  implicit = {
    **held_out,
    'maxl.meta_grad': 'implicit',
    'maxl.schedule': 'interleaved',
    'maxl.meta_every': 5,
  }
  runs = []
  runs += _seeds('single', method='single')
  runs += _seeds('uniform_psi5', method='uniform')
  runs += _seeds('random_psi5', method='random')
  runs += _seeds('maxl_psi5', method='maxl')
  runs += _seeds('maxl_heldout_psi5', method='maxl', **held_out)
  runs += _seeds('implicit_k5_psi5', method='maxl', **implicit)
  for psi in (2, 3, 10):
    runs += _seeds(
      f'maxl_psi{psi}', method='maxl', **{'maxl.psi_per_class': psi}
    )
    runs += _seeds(
      f'random_psi{psi}', method='random', **{'maxl.psi_per_class': psi}
    )
  for k in (1, 5, 25):
    runs += _seeds(
      f'maxl_every{k}_psi5',
      method='maxl',
      **{'maxl.schedule': 'interleaved', 'maxl.meta_every': k},
    )
  runs += investigation()
  full = {'data.train_fraction': 1.0, 'train.epochs': 2, 'seed': 0}
  full.update({'train.eval_every_epochs': 1})
  runs.append(('full_single/seed0', {**full, 'method': 'single'}))
  runs.append(('full_maxl_psi5/seed0', {**full, 'method': 'maxl'}))
  return runs


def investigation():
  """Why MAXL ends close to Uniform: its knobs, 2 seeds each (psi = 5).

  No entropy regulariser (λ = 0); a 10x faster generator on the held-out
  split (the split keeps the meta-gradient alive: L_pri(θ1⁺) on training
  batches is ~1e-3 by epoch 17).
  """
  two = SEEDS[:2]
  runs = [
    (f'investigate_lam0/seed{s}', {'method': 'maxl', 'maxl.lam': 0.0,
                                   'seed': s})
    for s in two
  ]  # fmt: skip
  runs += [
    (
      f'investigate_glr10x_heldout/seed{s}',
      {'method': 'maxl', 'label_opt.lr': 1e-2, 'data.meta_fraction': 0.1,
       'seed': s},
    )
    for s in two
  ]  # fmt: skip
  return runs


def analyses():
  """(OUT subfolder, run-name prefixes, analysis options) of the study."""
  return [
    ('all', None, {'tsne_images': 0, 'classes': (0, 5)}),
    (  # Seed 0 of each: a t-SNE of four panels.
      'psi5',
      [
        f'{g}/seed0'
        for g in ('single', 'uniform_psi5', 'maxl_psi5', 'implicit_k5_psi5')
      ],
      {'tsne_images': 2000, 'classes': (0, 5)},
    ),  # fmt: skip
  ]
