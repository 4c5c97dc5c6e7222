"""Training: state, steps, metrics, checkpoints, the runs and the loop.

`contract` names what the loop needs of a run (`Run`), its kinds and their
builders: `maxl_run` (MAXL or a baseline) and `combiner_run` (a loss
combiner), from a config and a `DatasetInfo` (no data, no TensorFlow);
`loop.train_and_evaluate` trains either; `restore.restore_run` rebuilds a
run and its state from a workdir.
"""
