"""Training: state, steps, metrics, checkpoints, run assembly and the loop.

`assembly` builds a run from a config and a `DatasetInfo` (no data, no
TensorFlow), `combine` a loss-combiner run, `runs` the one a config names;
`loop.train_and_evaluate` trains either; `restore.restore_run` rebuilds a
run and its state from a workdir.
"""
