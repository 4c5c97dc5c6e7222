"""`python -m studies.meta_signal --workdir=DIR`: the study's runs, tables
and figures, then the direction table (studies/command.py; `--tiny`: the
pipeline at tiny size)."""

import os

from studies import command
from studies.meta_signal import directions


def write_directions(workdir: str, out: str, runs):
  """OUT/directions/: where the meta objectives point (`directions.py`),
  on one batch per state with K = 2 for `--tiny`."""
  del runs
  small = command.FLAGS.tiny
  text = directions.write(
    workdir,
    os.path.join(out, 'directions'),
    batches=1 if small else 4,
    ks=(2,) if small else directions.KS,
  )
  print(text)


if __name__ == '__main__':
  command.main('meta_signal', after=write_directions)
