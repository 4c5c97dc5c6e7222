"""The commit a run ran at: result.json's `git_commit`."""

import os
import subprocess

# The checkout that holds this package (not the working directory).
_HERE = os.path.dirname(os.path.abspath(__file__))


def _git(*args: str, cwd: str) -> str:
  return subprocess.run(
    ['git', '-C', cwd, *args],
    capture_output=True,
    text=True,
    check=True,
    timeout=30,
  ).stdout.strip()


def git_commit(path: str = _HERE) -> str | None:
  """HEAD's hash of the git checkout holding `path`, with `-dirty` when
  tracked files have uncommitted changes; None outside a checkout (or
  without git). Never raises."""
  try:
    head = _git('rev-parse', 'HEAD', cwd=path)
    dirty = _git('status', '--porcelain', '--untracked-files=no', cwd=path)
  except (OSError, subprocess.SubprocessError, ValueError):
    return None
  return f'{head}-dirty' if dirty else head or None
