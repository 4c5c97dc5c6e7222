"""Every fenced ```python block of README.md and docs/*.md runs.

Blocks run in order, each in a fresh namespace, in this process. A block
that cannot run here (it needs a GPU, a download, a finished run) is
marked on the line above its fence with
`<!-- doc-test: skip REASON -->` and skipped with that reason shown.
"""

import pathlib
import re

import jax
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
FILES = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
SKIP = re.compile(r'<!--\s*doc-test:\s*skip\s*(.*?)\s*-->')
FENCE = re.compile(r'^```python\s*$')


def python_blocks(text: str):
  """[(first line number, code, skip reason or None)] of `text`."""
  lines, blocks, i = text.splitlines(), [], 0
  while i < len(lines):
    if FENCE.match(lines[i]):
      above = lines[i - 1] if i else ''
      skip = SKIP.search(above)
      end = next(j for j in range(i + 1, len(lines)) if lines[j] == '```')
      code = '\n'.join(lines[i + 1 : end]) + '\n'
      blocks.append((i + 2, code, skip.group(1) if skip else None))
      i = end
    i += 1
  return blocks


CASES = [
  pytest.param(path, line, code, skip, id=f'{path.name}:{line}')
  for path in FILES
  for line, code, skip in python_blocks(path.read_text())
]


def test_extraction_finds_blocks_and_markers():
  text = (
    'a\n```python\nx = 1\n```\n<!-- doc-test: skip needs a GPU -->\n'
    '```python\ny = 2\n```\n```bash\nls\n```\n'
  )
  assert python_blocks(text) == [
    (3, 'x = 1\n', None),
    (7, 'y = 2\n', 'needs a GPU'),
  ]
  assert any(p.values[0].name == 'README.md' for p in CASES)


@pytest.fixture
def _fast_compiles():
  """Tiny examples: XLA's optimisations cost more than they save."""
  before = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', before)


@pytest.mark.usefixtures('_fast_compiles')
@pytest.mark.parametrize('path, line, code, skip', CASES)
def test_python_block_runs(path, line, code, skip):
  if skip:
    pytest.skip(f'{path.name}:{line}: {skip}')
  name = f'{path.relative_to(REPO)}:{line}'
  exec(compile(code, name, 'exec'), {'__name__': '__doc_block__'})
