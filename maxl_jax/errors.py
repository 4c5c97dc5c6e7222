"""Every exception type of maxl_jax, in one place.

`UsageError` is for problems a user can fix from the command line; the
other two end a training run on purpose and the entry points map each to
an exit status (docs/DESIGN.md §7).
"""


class UsageError(ValueError):
  """Bad input: a config value, a hierarchy psi, a dataset that is missing.

  The message says what is wrong and how to fix it; the entry point prints it
  as a single `error:` line and exits with status 2.
  """


class NonFiniteError(RuntimeError):
  """A loss or gradient went NaN/Inf with `train.on_nonfinite='stop'`.

  Raised before any checkpoint after the bad step is written (exit status 1).
  """


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint was written before stopping (exit 143)."""
