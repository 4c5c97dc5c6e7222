"""The training loop (maxl_jax/training/loop.py) in process.

Runs through the entry point, resumption and the multi-process loop are in
test_run.py, test_resume.py and test_distributed.py.
"""

import json

import jax
import numpy as np

from experiments.configs import smoke
from maxl_jax.training import loop, restore


def test_implicit_every_k_steps_trains_with_a_held_out_split(tmp_path):
  """AuxiLearn's setting: θ2 by the IFT hypergradient every 2 θ1 steps."""
  config = smoke.get_config()
  config.maxl.update(meta_grad='implicit', schedule='interleaved', meta_every=2)
  config.data.meta_fraction = 0.2
  config.train.epochs, config.train.steps_per_epoch = 1, 4
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    result = loop.train_and_evaluate(config, str(tmp_path))
  finally:
    jax.config.update('jax_disable_most_optimizations', False)
  assert result['steps'] == 4
  (row,) = [json.loads(x) for x in (tmp_path / 'metrics.jsonl').open()]
  assert row['nonfinite_steps'] == 0 and np.isfinite(row['meta/meta_loss'])
  info = json.loads((tmp_path / 'dataset.json').read_text())
  assert info['num_meta'] == round(0.2 * 1437)
  assert info['num_train'] == 1437 - info['num_meta']
  restored = restore.restore_run(str(tmp_path))
  assert int(restored.state.step1) == 4 and int(restored.state.step2) == 2
