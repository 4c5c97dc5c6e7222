"""What a run shows in the terminal, and the log file that keeps the rest.

A run's terminal shows a line when training starts, a live progress line
(steps/s, ETA; only when stderr is a terminal), one line per evaluation and
the result; warnings and errors too. Everything absl logs (CLU's writer, the
parameter tables, Orbax, the loop's progress) goes to `log.txt` in the
workdir, and with `verbose` to the terminal as well.

Library use (tests, notebooks) needs nothing from here: until the entry
point calls `configure`, `say` is a plain `logging.info`.
"""

import io
import sys

from absl import flags, logging
from etils import epath

from maxl_jax.training.workdir import LOG


class _Terminal:
  """The entry point's settings and what is on screen now."""

  configured = False
  verbose = False
  live = False  # A progress line without its newline is on screen.
  pending: io.StringIO | None = None  # The log until a workdir opens.
  log_file = None


def configure(verbose: bool):
  """Sends absl's log to a buffer (then `log.txt`); the terminal shows
  `say`'s lines and warnings, or with `verbose` the whole log."""
  handler = logging.get_absl_handler().python_handler
  _Terminal.configured, _Terminal.verbose = True, verbose
  _Terminal.pending = io.StringIO()
  handler.stream = _Terminal.pending
  if verbose:
    flags.FLAGS.alsologtostderr = True
  else:
    flags.FLAGS.stderrthreshold = 'warning'


def open_log(workdir: epath.Path):
  """From now on, the log goes to `workdir/log.txt` (appended)."""
  if not _Terminal.configured:
    return
  handler = logging.get_absl_handler().python_handler
  log_file = open(workdir / LOG, 'a')  # noqa: SIM115 - kept open.
  if _Terminal.pending is not None:  # The lines before the first workdir.
    log_file.write(_Terminal.pending.getvalue())
    _Terminal.pending = None
  handler.flush()
  handler.stream = log_file
  if _Terminal.log_file is not None:
    _Terminal.log_file.close()
  _Terminal.log_file = log_file


def _to_terminal(text: str):
  if _Terminal.live:  # Replace the progress line.
    text = '\r\033[K' + text
  sys.stderr.write(text)
  sys.stderr.flush()


def say(message: str, *args):
  """One line for the terminal, also kept in the log."""
  logging.info(message, *args)
  if _Terminal.configured and not _Terminal.verbose:
    _to_terminal((message % args if args else message) + '\n')
    _Terminal.live = False


def progress(step: int, total: int, steps_per_s: float):
  """Redraws the live progress line (only on a terminal)."""
  if not (_Terminal.configured and sys.stderr.isatty()):
    return
  eta = (total - step) / steps_per_s if steps_per_s > 0 else 0.0
  minutes, seconds = divmod(int(eta), 60)
  sys.stderr.write(
    f'\r  step {step}/{total}  {steps_per_s:.1f} steps/s  '
    f'ETA {minutes}:{seconds:02d}  '
  )
  sys.stderr.flush()
  _Terminal.live = True


def evaluation_line(row: dict, epochs: int) -> str:
  """One terminal line per evaluation: the epoch's losses, the test set."""
  parts = [f'epoch {row["epoch"]}/{epochs}', f'step {row["step"]}']
  if 'train/loss_pri' in row:
    parts.append(f'train loss {row["train/loss_pri"]:.4f}')
  if 'meta/meta_loss' in row:
    parts.append(f'meta loss {row["meta/meta_loss"]:.4f}')
  parts.append(f'test accuracy {100 * row["test/accuracy"]:.2f}%')
  parts.append(f'test loss {row["test/loss"]:.4f}')
  return '  '.join(parts)
