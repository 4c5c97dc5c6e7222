"""result.json's `git_commit` (maxl_jax/training/provenance.py) and the
tables' line of their runs' commits."""

import re
import subprocess

from experiments.figures.table import commits_line
from maxl_jax.training import provenance


def _git(repo, *args):
  subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=1)


def test_this_checkout_has_a_commit():
  commit = provenance.git_commit()
  assert commit is None or re.fullmatch(r'[0-9a-f]{40}(-dirty)?', commit)


def test_head_then_dirty_then_no_checkout(tmp_path):
  repo = tmp_path / 'repo'
  repo.mkdir()
  _git(repo, 'init', '-q')
  (repo / 'a.txt').write_text('a')
  _git(repo, 'add', 'a.txt')
  _git(repo, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'a')
  head = subprocess.run(
    ['git', '-C', str(repo), 'rev-parse', 'HEAD'], capture_output=True,
    text=True, check=True,
  ).stdout.strip()  # fmt: skip
  (repo / 'new.txt').write_text('untracked: still clean')
  assert provenance.git_commit(str(repo)) == head
  (repo / 'a.txt').write_text('b')
  assert provenance.git_commit(str(repo)) == f'{head}-dirty'
  outside = tmp_path / 'plain'
  outside.mkdir()
  assert provenance.git_commit(str(outside)) is None
  assert provenance.git_commit(str(tmp_path / 'missing')) is None


def test_commits_line_names_each_commit_once():
  results = [{'git_commit': 'b'}, {'git_commit': 'a'}, {'git_commit': 'b'}, {}]
  assert commits_line(results) == 'Runs at commit(s) a, b, unknown.'
