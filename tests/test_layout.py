"""docs/library.md's Architecture block names every module, so it cannot
drift from the package: each folder's listed `*.py` files are the files on
disk."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
FOLDER = re.compile(r'^(\S+/)\s')
FILE = re.compile(r'(?<![/\w])(\w+\.py)\b')  # Not 'benchmarks/x.py'.


def layout_block() -> list[str]:
  """The lines of the fenced block under docs/library.md's '## Architecture'."""
  text = (REPO / 'docs' / 'library.md').read_text()
  section = text.split('## Architecture', 1)[1]
  return section.split('```\n', 2)[1].splitlines()


def listed_files() -> dict[str, set[str]]:
  """{folder: the .py files its lines name}; a top-level line
  ('  api.py  ...') names its folder's file by its first word."""
  listed, folder = {}, None
  for line in layout_block():
    match = FOLDER.match(line)
    if match:
      folder, text = match.group(1), line[match.end() :]
      listed.setdefault(folder, set())
    elif line.startswith('  ') and not line.startswith('   '):
      listed[folder].add(line.split()[0])
      continue
    else:
      text = line
    if folder in ('maxl_jax/',):  # Its files are the first words.
      continue
    listed[folder] |= set(FILE.findall(text))
  return listed


def test_the_layout_names_every_module():
  listed = listed_files()
  packages = {
    f'{p.relative_to(REPO)}/'
    for p in (REPO / 'maxl_jax').rglob('__init__.py')
    for p in [p.parent]
  } | {'experiments/'}
  packages |= {  # studies/ and one folder per study.
    f'{p.parent.relative_to(REPO)}/'
    for p in (REPO / 'studies').rglob('__init__.py')
  }
  assert packages <= set(listed), packages - set(listed)
  for folder in packages:
    on_disk = {
      p.name for p in (REPO / folder).glob('*.py') if p.name != '__init__.py'
    }
    assert listed[folder] == on_disk, (folder, listed[folder] ^ on_disk)
