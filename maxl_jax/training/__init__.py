"""Training: state, steps, metrics, checkpoints, run assembly and the loop.

`assembly` builds a run from a config and a `DatasetInfo` (no data, no
TensorFlow); `loop.train_and_evaluate` trains it; `restore.restore_run`
rebuilds a run and its state from a workdir.
"""
