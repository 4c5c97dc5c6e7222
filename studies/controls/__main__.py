"""`python -m studies.controls --workdir=DIR`: the study's runs, tables and
figures (studies/command.py; `--tiny`: the pipeline at tiny size)."""

from studies import command

if __name__ == '__main__':
  command.main('controls')
