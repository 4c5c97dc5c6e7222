"""The one door to a trained network: a restored run and its test images.

`restore_run(workdir, step)` returns `maxl_jax.training.restore.Restored`:
`.config` (ConfigDict), `.step`, `.state` (`.theta1`, `.state1`, `.theta2`,
`.state2`) and `.run` (`.f` the multi-task network, `.g` the label generator
or None, `.problem` a `MaxlProblem`, `.psi`, `.info`).
"""


def restore_run(workdir: str, step: int | None = None):
  """The run in `workdir` at checkpoint `step` (None: the newest)."""
  from maxl_jax.training import restore

  return restore.restore_run(workdir, step=step)


def test_split(config):
  """The run's whole test split: (uint8 [n, 32, 32, C], primary labels [n])."""
  from maxl_jax.data import pipeline

  return pipeline.load_test_split(config.data)
