"""The distribution built from setup.cfg: what it holds and what it needs.

The wheel is built from a copy of the working tree (no build files land in
the repository) with the installed setuptools, offline. It must hold the
`maxl_jax` package only (the command-line modules run from a checkout),
the license, and declare every distribution the library imports;
requirements.txt must pin versions inside setup.cfg's ranges on every
Python it supports.
"""

import ast
import email
import functools
import importlib.metadata
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
from packaging.requirements import Requirement

REPO = pathlib.Path(__file__).resolve().parents[1]
VERSION = '0.2.0'
EXTRAS = {'tensorboard', 'tensorflow', 'torch', 'test'}
# What the library needs to import and run (TensorFlow is an extra).
REQUIRED = {
  'jax', 'jaxlib', 'flax', 'optax', 'orbax-checkpoint', 'ml-collections',
  'clu', 'absl-py', 'etils', 'numpy', 'tensorflow-datasets', 'pillow',
  'scikit-learn', 'threadpoolctl',
}  # fmt: skip
TENSORFLOW = {'tensorflow', 'tensorflow-cpu'}


def _name(dist: str) -> str:
  return re.sub(r'[-_.]+', '-', dist).lower()


@pytest.fixture(scope='module')
def wheel(tmp_path_factory) -> zipfile.ZipFile:
  """The wheel of a copy of the working tree, built by setuptools."""
  tmp = tmp_path_factory.mktemp('packaging')
  src, out = tmp / 'src', tmp / 'dist'
  shutil.copytree(
    REPO,
    src,
    ignore=shutil.ignore_patterns(
      '.git', '.venv*', '__pycache__', '*.egg-info', 'build', '.*cache'
    ),
  )
  out.mkdir()
  hook = 'import sys; from setuptools import build_meta as b; '
  hook += 'print(b.build_wheel(sys.argv[1]))'
  proc = subprocess.run(
    [sys.executable, '-c', hook, str(out)],
    cwd=src,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  name = proc.stdout.split()[-1]
  assert name.startswith(f'maxl_jax-{VERSION}-py3-none-any'), name
  with zipfile.ZipFile(out / name) as z:
    yield z


@pytest.fixture(scope='module')
def metadata(wheel) -> email.message.Message:
  return email.message_from_bytes(
    wheel.read(f'maxl_jax-{VERSION}.dist-info/METADATA')
  )


def _requirements(metadata) -> list[Requirement]:
  return [Requirement(r) for r in metadata.get_all('Requires-Dist')]


def _unconditional(metadata) -> dict[str, Requirement]:
  return {_name(r.name): r for r in _requirements(metadata) if r.marker is None}


def _extra(metadata, extra: str) -> set[str]:
  """The distributions `extra` adds on Linux x86-64, Python 3.11."""
  env = {
    'extra': extra,
    'sys_platform': 'linux',
    'platform_machine': 'x86_64',
    'python_version': '3.11',
  }
  return {
    _name(r.name)
    for r in _requirements(metadata)
    if r.marker is not None
    and 'extra' in str(r.marker)
    and r.marker.evaluate(env)
  }


def test_the_wheel_holds_the_library_and_its_license_only(wheel):
  names = wheel.namelist()
  info = f'maxl_jax-{VERSION}.dist-info/'
  outside = [n for n in names if not n.startswith(('maxl_jax/', info))]
  assert not outside, outside  # No experiments/, studies/, tests/.
  # Every module of the package, subpackages included.
  modules = {
    p.relative_to(REPO).as_posix() for p in (REPO / 'maxl_jax').rglob('*.py')
  }
  assert modules == {n for n in names if n.endswith('.py')}
  licenses = [n for n in names if n.startswith(info) and 'LICENSE' in n]
  assert len(licenses) == 1, licenses
  assert wheel.read(licenses[0]) == (REPO / 'LICENSE').read_bytes()
  assert b'Apache License' in wheel.read(licenses[0])


def test_one_version_everywhere(metadata):
  assert metadata['Version'] == VERSION
  citation = (REPO / 'CITATION.cff').read_text()
  assert re.search(r'^version: (\S+)$', citation, re.M).group(1) == VERSION
  changelog = (REPO / 'CHANGELOG.md').read_text()
  assert re.search(r'^## (\S+)', changelog, re.M).group(1) == VERSION
  assert metadata['Requires-Python'] == '>=3.11'


def test_the_library_needs_no_tensorflow_and_the_extras_add_it(metadata):
  required = _unconditional(metadata)
  assert REQUIRED <= set(required), REQUIRED - set(required)
  assert not TENSORFLOW & set(required)
  assert set(metadata.get_all('Provides-Extra')) == EXTRAS
  for extra in ('tensorboard', 'tensorflow'):
    added = _extra(metadata, extra)
    assert 'tensorflow-cpu' in added and 'tensorboard' in added, extra
  assert 'torch' in _extra(metadata, 'torch')
  assert {'pytest', 'pytest-xdist', 'hypothesis', 'ruff', 'chex'} <= (
    _extra(metadata, 'test')
  )


@functools.cache
def _owners() -> dict[str, list[str]]:
  return importlib.metadata.packages_distributions()  # Seconds: once.


def _imported(folder: str) -> set[str]:
  """The top-level modules that the code under `folder` imports."""
  names = set()
  for path in (REPO / folder).rglob('*.py'):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names.update(a.name.split('.')[0] for a in node.names)
      elif isinstance(node, ast.ImportFrom) and not node.level:
        names.add(node.module.split('.')[0])
  return names - set(sys.stdlib_module_names) - {'maxl_jax'}


@pytest.mark.parametrize('folder, extras', [
  ('maxl_jax', ('tensorflow',)),
  ('tests', ('tensorflow', 'test')),
])  # fmt: skip
def test_every_imported_distribution_is_declared(metadata, folder, extras):
  """Each third-party module imported maps (in this environment) to a
  distribution that setup.cfg requires, or that one of `extras` adds."""
  declared = set(_unconditional(metadata))
  for extra in extras:
    declared |= _extra(metadata, extra)
  owners = _owners()
  local = {
    p.stem for d in ('tests', 'benchmarks') for p in (REPO / d).glob('*.py')
  }
  local |= {'experiments', 'studies'}  # Run from the checkout.
  for module in sorted(_imported(folder) - local):
    dists = {_name(d) for d in owners.get(module, ())}
    assert dists, f'{module}: not installed here'
    assert dists & declared, f'{module} ({dists}) is not in setup.cfg'


def _pins(python: str) -> dict[str, str]:
  """requirements.txt's pins that apply on Linux x86-64 with `python`."""
  env = {
    'python_version': python,
    'sys_platform': 'linux',
    'platform_machine': 'x86_64',
  }
  pins = {}
  for line in (REPO / 'requirements.txt').read_text().splitlines():
    line = line.split('#')[0].strip()
    if line:
      req = Requirement(line)
      if req.marker is None or req.marker.evaluate(env):
        (version,) = [s.version for s in req.specifier if s.operator == '==']
        assert _name(req.name) not in pins, req.name
        pins[_name(req.name)] = version
  return pins


@pytest.mark.parametrize('python', ['3.11', '3.12', '3.13'])
def test_requirements_pin_inside_the_declared_ranges(metadata, python):
  """The pins install what setup.cfg declares, each within its range, and
  the lower bounds are the oldest pins (the versions tried)."""
  pins = _pins(python)
  for extra in ('', 'tensorboard', 'test'):
    for req in _requirements(metadata):
      env = {
        'extra': extra,
        'python_version': python,
        'sys_platform': 'linux',
        'platform_machine': 'x86_64',
      }
      if req.marker is not None and not req.marker.evaluate(env):
        continue
      name = _name(req.name)
      assert name in pins, f'{name} is not pinned for Python {python}'
      assert req.specifier.contains(pins[name]), (name, pins[name])


def test_lower_bounds_are_the_oldest_pins(metadata):
  oldest = _pins('3.11')
  for name, req in _unconditional(metadata).items():
    (low,) = [s.version for s in req.specifier if s.operator == '>=']
    assert low == oldest[name], (name, low, oldest[name])
