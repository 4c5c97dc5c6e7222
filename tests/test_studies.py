"""studies/: every study's sweep config loads as `python -m experiments.sweep`
loads it, each of its runs is a valid config, and every config that
docs/RESULTS.md names exists.

The configs load in a subprocess: `experiments.sweep` defines the same
flags as `experiments.run`, which other tests import.
"""

import os
import re
import subprocess
import sys

import entry_point as ep
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
