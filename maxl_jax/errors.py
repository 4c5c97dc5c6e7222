"""The one exception type for problems a user can fix from the command line."""


class UsageError(ValueError):
  """Bad input: a config value, a hierarchy psi, a dataset that is missing.

  The message says what is wrong and how to fix it; the entry point prints it
  as a single `error:` line and exits with status 2.
  """
