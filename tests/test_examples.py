"""Every script of examples/ runs, on tiny settings, as a user would copy it.

Each example is registered in `TINY` with the arguments that shrink it;
an unregistered example fails here. Each docstring must say how to run it
in full.
"""

import importlib.util
import pathlib
import sys

import jax
import numpy as np
import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / 'examples'
# name: the arguments of a tiny run.
TINY = {
  'own_model': ['--epochs=1', '--steps=2'],
  'own_nnx_model': ['--epochs=1', '--steps=2'],
  'own_losses': ['--steps=300'],
  'own_psi': ['--epochs=1', '--steps=2'],
  'many_seeds': ['--seeds=3', '--epochs=1', '--steps=2'],
}


# Tiny runs: XLA's optimisations cost more than they save (conftest.py).
pytestmark = pytest.mark.usefixtures('fast_compiles')


def _load(name):
  if str(EXAMPLES) not in sys.path:  # As `python examples/<name>.py` has it.
    sys.path.insert(0, str(EXAMPLES))
  spec = importlib.util.spec_from_file_location(
    f'example_{name}', EXAMPLES / f'{name}.py'
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_example_is_registered_and_says_how_to_run_it():
  names = sorted(p.stem for p in EXAMPLES.glob('*.py'))
  assert names == sorted(TINY)
  for name in names:
    doc = _load(name).__doc__
    assert f'python examples/{name}.py' in doc, name


def test_own_model(capsys):
  results = _load('own_model').main(TINY['own_model'])
  assert set(results) == {'single', 'maxl'}
  assert all(0.0 <= a <= 1.0 for a in results.values())
  out = capsys.readouterr().out
  assert 'single test accuracy' in out and 'maxl test accuracy' in out


def test_own_nnx_model(capsys):
  results = _load('own_nnx_model').main(TINY['own_nnx_model'])
  assert set(results) == {'single', 'maxl'}
  assert all(0.0 <= a <= 1.0 for a in results.values())
  out = capsys.readouterr().out
  assert 'single test accuracy' in out and 'maxl test accuracy' in out


def test_own_losses_learns_to_down_weight_the_unrelated_task(capsys):
  results, learnt = _load('own_losses').main(TINY['own_losses'])
  # Both start at 1; the hypergradient lowers the competing task's more.
  assert learnt['unrelated'] < learnt['related'] - 0.2, learnt
  assert results['learnt weights'] < results['fixed weights 1']
  assert 'learnt task weights' in capsys.readouterr().out


def test_own_psi(capsys):
  out = _load('own_psi').main(TINY['own_psi'])
  assert out['psi'] == [1, 1, 1, 1, 1, 4, 4, 4, 4, 4]
  assert len(out['used']) == 10
  assert all(1 <= u <= p for u, p in zip(out['used'], out['psi'], strict=True))
  assert 'test accuracy' in capsys.readouterr().out


def _flat(tree, index):
  return np.concatenate([a[index].ravel() for a in jax.tree.leaves(tree)])


def test_many_seeds(capsys):
  """Each seed's accuracy, the mean and CI; and seed 1 of the vmapped
  program is the run of seed 1 alone: the same initialisation and
  batches, only the batched kernels' rounding differs.

  Measured: ‖Δθ1‖/‖θ1‖ 2e-8, ‖Δθ2‖/‖θ2‖ 5e-5. θ2's is larger because the
  convolutions' biases sit under BatchNorm: their exact gradient is 0, so
  Adam's first steps (±lr whatever the gradient's size) turn rounding into
  ±1e-3 there; the bounds leave 50x and 20x of room. Seeds 0 and 1 differ
  by O(1) (another initialisation and order of the data).
  """
  example = _load('many_seeds')
  out = example.main(TINY['many_seeds'])
  assert len(out['accuracies']) == 3
  assert all(0.0 <= a <= 1.0 for a in out['accuracies'])
  assert out['mean'] == np.mean(out['accuracies']) and out['ci95'] >= 0
  printed = capsys.readouterr().out
  assert 'seed 2: test accuracy' in printed and '(95% CI)' in printed

  data = _load('own_model').load()  # TINY: --epochs=1 --steps=2, ψ = 3.
  _, alone = example.train(example.learner([3] * 10), data, [1], 1, 2)
  together = out['states']
  for group, bound in (('theta1', 1e-6), ('theta2', 1e-3)):
    want = _flat(getattr(alone, group), 0)
    got = _flat(getattr(together, group), 1)
    assert np.linalg.norm(got - want) < bound * np.linalg.norm(want), group
    other = _flat(getattr(together, group), 0)
    assert np.linalg.norm(other - want) > 0.1 * np.linalg.norm(want), group
