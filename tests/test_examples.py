"""Every script of examples/ runs, on tiny settings, as a user would copy it.

Each example is registered in `TINY` with the arguments that shrink it;
an unregistered example fails here. Each docstring must say how to run it
in full.
"""

import importlib.util
import pathlib
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / 'examples'
# name: the arguments of a tiny run.
TINY = {
  'own_model': ['--epochs=1', '--steps=2'],
  'own_losses': ['--steps=300'],
  'own_psi': ['--epochs=1', '--steps=2'],
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
