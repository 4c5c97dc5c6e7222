"""Training: state, steps, metrics, checkpoints, the runs and the loop.

`protocol` names what the loop needs of a run (`Run`) and its state;
`contract` the kinds of run and their builders: `maxl_run` (MAXL or a
baseline, its checks in `maxl_checks`) and `combiner_run` (a loss
combiner), from a config and a `DatasetInfo` (no data, no TensorFlow);
`loop.train_and_evaluate` trains either; `restore.restore_run` rebuilds a
run and its state from a workdir.
"""
