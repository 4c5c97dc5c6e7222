"""studies/: every study's sweep config loads as `python -m experiments.sweep`
loads it, each of its runs is a valid config, every config that
docs/RESULTS.md names exists, and each study's command (`python -m
studies.<name> --tiny`) runs its pipeline end to end: runs, tables with
their commits, figures, the direction table.

The configs load in a subprocess: `experiments.sweep` defines the same
flags as `experiments.run`, which other tests import. The default suite
runs a few groups of each study (`ONLY`); `-m slow` runs every group.
"""

import csv
import gzip
import json
import os
import re
import subprocess
import sys

import entry_point as ep
import numpy as np
import pytest

STUDIES = sorted((ep.REPO / 'studies').glob('*/config.py'))
CONFIG_FLAG = re.compile(r'--config=([^\s:`]+)')
# Loads the sweep at argv[1] (relative to the repository root, as in the
# commands); validates each run's config (no data is loaded) and checks
# that every analysis selects some run.
CHECK = """
import sys
from experiments.figures import build
from experiments.sweep import configured, load_sweep
from maxl_jax.training import contract

get_config, sweep, analyses = load_sweep(sys.argv[1])
runs = sweep()
names = [name for name, _ in runs]
assert runs and len(set(names)) == len(names), 'repeated run names'
for name, overrides in runs:
  try:
    contract.validate(configured(get_config, overrides))
  except Exception as e:
    raise AssertionError(f'{name}: {type(e).__name__}: {e}') from e
for subdir, prefixes, options in analyses():
  build.Options(**options)
  chosen = [n for n in names if n.startswith(tuple(prefixes or ['']))]
  assert chosen, f'analysis {subdir!r} selects no run'
print(f'{len(runs)} runs')
"""


def test_every_study_has_a_config_and_a_readme():
  folders = [p.parent for p in (ep.REPO / 'studies').glob('*/__init__.py')]
  assert folders and sorted(f / 'config.py' for f in folders) == STUDIES
  for folder in folders:
    readme = (folder / 'README.md').read_text()
    assert f'--config=studies/{folder.name}/config.py' in readme, folder
    assert 'docs/RESULTS.md' in readme, folder


@pytest.mark.parametrize('path', STUDIES, ids=lambda p: p.parent.name)
def test_study_config_loads_and_each_run_is_valid(path):
  config = path.relative_to(ep.REPO).as_posix()
  proc = subprocess.run(
    [sys.executable, '-c', CHECK, config],
    cwd=ep.REPO, env=ep.env(), capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.strip().endswith(' runs')


def test_every_config_that_results_names_exists():
  text = (ep.REPO / 'docs' / 'RESULTS.md').read_text()
  paths = CONFIG_FLAG.findall(text)
  assert paths
  missing = [p for p in paths if not os.path.isfile(ep.REPO / p)]
  assert not missing, missing


# The groups of each study's tiny pipeline in the default suite: one part
# of each (meta_signal: a run without g, one with g and the direction
# table); `-m slow` runs them all.
ONLY = {
  'controls': ('pairs/uniform/',),
  'evidence': ('single/',),
  'headroom': ('capture/human/',),
  'meta_signal': ('heldout/uniform/', 'heldout/k1/'),
}
COMMITS = re.compile(r'Runs at commit\(s\) ([0-9a-f]{40}(-dirty)?|unknown)')


def _idx(path, array):
  """An IDX file (Fashion-MNIST's format), gzipped."""
  dims = b''.join(d.to_bytes(4, 'big') for d in array.shape)
  header = bytes([0, 0, 8, array.ndim]) + dims
  with gzip.open(path, 'wb') as f:
    f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope='module')
def fashion_dir(tmp_path_factory):
  """Random images in Fashion-MNIST's files (6,000 train, 200 test)."""
  root = tmp_path_factory.mktemp('fashion')
  rng = np.random.default_rng(0)
  for prefix, n in (('train', 6000), ('t10k', 200)):
    _idx(root / f'{prefix}-images-idx3-ubyte.gz', rng.integers(
      0, 256, (n, 28, 28)))  # fmt: skip
    _idx(root / f'{prefix}-labels-idx1-ubyte.gz', np.arange(n) % 10)
  return root


def _study(name, workdir, fashion_dir, only=()):
  proc = subprocess.run(
    [sys.executable, '-m', f'studies.{name}', f'--workdir={workdir}',
     '--tiny', f'--set=data.local_dir={fashion_dir}',
     *(f'--only={o}' for o in only)],
    cwd=ep.REPO, env=ep.env(), capture_output=True, text=True, timeout=1800,
  )  # fmt: skip
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _check_pipeline(name, workdir):
  """Every selected run finished with its commit; each analysis that has
  runs wrote its tables (naming the commits) and figures."""
  results = sorted(workdir.glob('**/result.json'))
  assert results
  for path in results:
    commit = json.loads(path.read_text())['git_commit']
    assert commit is None or re.fullmatch(r'[0-9a-f]{40}(-dirty)?', commit)
  reports = sorted((workdir / 'analysis').glob('**/results.md'))
  assert reports
  for report in reports:
    assert COMMITS.search(report.read_text()), report
    assert list(report.parent.glob('*.png')), report.parent
  if name == 'meta_signal':
    out = workdir / 'analysis' / 'directions'
    assert COMMITS.search((out / 'directions.md').read_text())
    with (out / 'directions.csv').open() as f:
      groups = {row['group'] for row in csv.DictReader(f)}
    finished = {
      p.parent.parent.relative_to(workdir).as_posix() for p in results
    }
    prefixes = ('study/maxl', 'paper/maxl', 'heldout/')
    with_g = {g for g in finished if g.startswith(prefixes)}
    with_g -= {'heldout/uniform', 'heldout/human'}  # No generator.
    assert groups == with_g and groups


# meta_signal's pipeline (its own direction script included) runs in the
# default suite; the others are a config and the shared sweep, whose runs
# test_study_config_loads_and_each_run_is_valid checks: `-m slow` runs them.
DEFAULT = ('meta_signal',)


@pytest.mark.parametrize(
  'name',
  [n if n in DEFAULT else pytest.param(n, marks=pytest.mark.slow)
   for n in sorted(ONLY)],
)  # fmt: skip
def test_study_command_runs_its_pipeline_at_tiny_size(
  name, tmp_path, fashion_dir
):
  """A few groups of the study (`ONLY`), 2 steps each, then its tables,
  figures and (meta_signal) direction table."""
  _study(name, tmp_path, fashion_dir, ONLY[name])
  _check_pipeline(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize('name', sorted(ONLY))
def test_study_command_runs_every_group_at_tiny_size(
  name, tmp_path, fashion_dir
):
  """Every group of the study (its first seed), 2 steps each: every table
  and figure of docs/RESULTS.md it owns, at tiny size."""
  _study(name, tmp_path, fashion_dir)
  _check_pipeline(name, tmp_path)
  analyses = {p.parent.name for p in tmp_path.glob('analysis/*/results.md')}
  assert analyses == set(ANALYSES[name])


ANALYSES = {
  'controls': ('search', 'explore', 'pairs', 'parity'),
  'evidence': ('all', 'psi5'),
  'headroom': ('scan', 'capture', 'investigate'),
  'meta_signal': (
    'study',
    'paper',
    'heldout',
    'vgg16',
    'parity',
    'paper_parity',
  ),
}


def test_every_study_readme_gives_its_one_command():
  for folder in sorted(p.parent for p in STUDIES):
    readme = (folder / 'README.md').read_text()
    assert f'python -m studies.{folder.name} --workdir=' in readme, folder
    assert (folder / '__main__.py').is_file(), folder


def test_positive_control_paper_settings_crop_without_flipping():
  """A flip swaps digit_pairs' digits: Human's label would describe
  another image."""
  from studies.meta_signal import config

  assert config.PAPER['data.name'] == 'digit_pairs'
  assert config.PAPER['data.augment'] == 'crop'
  assert config.PAPER_OPTIMISATION['data.augment'] == 'crop_flip'
