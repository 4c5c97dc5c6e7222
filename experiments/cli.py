"""Command-line plumbing shared by the entry points: one `error:` line.

Every user mistake on the command line (an unknown flag or config field, a
config file that is missing or fails to load, a missing required flag) ends
the program with one `error:` line on stderr and exit status 2, never a
traceback.
"""

import ast
import contextlib
import os
import sys

from absl import flags

FLAGS = flags.FLAGS


def fail(message: str, status: int = 2):
  """Prints `error: message` and exits with `status`.

  One write, so that no other thread's output can split the line.
  """
  sys.stderr.write(f'error: {message}\n')
  sys.stderr.flush()
  sys.exit(status)


def _config_files(argv) -> list[str]:
  """The files named by `--config=path[:arg]` (or `--config path`)."""
  files = []
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      files.append(arg[len('--config=') :])
    elif arg == '--config' and i + 1 < len(argv):
      files.append(argv[i + 1])
  return [f.split(':', 1)[0] for f in files]


def _last_line(text: str) -> str:
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  return lines[-1] if lines else ''


def flag_error(error: Exception, config_file: str | None) -> str:
  """One line for an error raised while parsing the flags."""
  text = str(error)
  if isinstance(error, (KeyError, AttributeError)):  # --config.<unknown>=...
    with contextlib.suppress(ValueError, SyntaxError):
      text = ast.literal_eval(text)  # ml_collections quotes its message.
    text = ' '.join(text.split()).replace(' Did you', '; did you')
    return f'unknown config field {text} (see --helpfull).'
  if 'Error whilst parsing config file' in text:  # get_config(arg) raised.
    last = _last_line(text).removeprefix('maxl_jax.errors.UsageError: ')
    return f'config file {config_file} failed: {last}'
  if not isinstance(error, flags.Error) and config_file:  # Loading raised.
    return (
      f'config file {config_file} failed to load: '
      f'{type(error).__name__}: {text.strip().splitlines()[0]}'
    )
  return f'{text.strip().splitlines()[0]} (see --helpfull).'


def parse_flags(argv, required: tuple[str, ...], example: str):
  """absl flag parsing for `app.run(flags_parser=...)`: errors as one line.

  Args:
    argv: the command line.
    required: flags that must be given.
    example: a full command to show when a required flag is missing.
  """
  configs = _config_files(argv)
  for path in configs:
    if not os.path.isfile(path):
      fail(
        f'config file {path} does not exist; give a path such as '
        'experiments/configs/quickstart.py.'
      )
  try:
    rest = FLAGS(argv)
  except Exception as e:  # noqa: BLE001 - any parse error is a usage error.
    fail(flag_error(e, configs[-1] if configs else None))
  for name in required:
    if FLAGS[name].value is None:
      fail(f'--{name} is required, e.g. {example}')
  if len(rest) > 1:
    fail(f'unexpected arguments {rest[1:]}; options are --flag=value.')
  return rest
