"""Every experiment config trains end to end for a few steps.

TFDS datasets run under `tfds.testing.mock_data`, CINIC-10 on a tiny image
folder, Fashion-MNIST on the real files where the Debian package is
installed, digits as they are. The default run swaps in a small ConvNet-4 to
keep compile and step time down; `-m slow` runs each config's own backbone.
"""

import importlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from experiments.run import run_methods

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = '/usr/share/datasets/fashion-mnist'
CONFIGS = [
  'mnist',
  'svhn',
  'cifar10',
  'cifar100',
  'imagenet32',
  'ucf101',
  'cinic10',
  'fashion_mnist',
  'quickstart',
]


def _tiny(config, tmp_path, own_backbone):
  """Shrinks a config to a few steps."""
  config.data.batch_size = 8
  config.data.eval_batch_size = 8
  config.train.epochs = 1
  config.train.steps_per_epoch = 2
  config.compare_methods = ''
  config.log.progress_every_steps = 1
  if not own_backbone:  # What is checked is the config, not the network.
    config.model.name = 'convnet4'
    config.model.widths = (8, 8, 8, 8)
    config.model.head_hidden = 16
  if config.data.name == 'fashion_mnist':  # The real 10,000 test images.
    config.data.eval_batch_size = 500
  if config.data.name == 'ucf101':  # Mock clips: 3, four frames each.
    config.data.video_frames, config.data.batch_size = 4, 4
  if config.data.name == 'cinic10':
    config.data.local_dir = str(tmp_path / 'cinic')
    for split in ('train', 'valid', 'test'):
      for label in range(10):
        folder = tmp_path / 'cinic' / split / f'class{label}'
        os.makedirs(folder)
        for i in range(2):
          pixels = np.full((32, 32, 3), 20 * label + i, np.uint8)
          Image.fromarray(pixels).save(folder / f'{i}.png')
  return config


def _run(name, tmp_path, own_backbone=False):
  config = importlib.import_module(f'experiments.configs.{name}').get_config()
  config = _tiny(config, tmp_path, own_backbone)
  if name == 'fashion_mnist' and not os.path.isdir(FASHION):
    pytest.skip(f'{FASHION} missing: apt-get install dataset-fashion-mnist')
  examples = 3 if name == 'ucf101' else 24
  policy = tfds.testing.MockPolicy.USE_CODE
  with tfds.testing.mock_data(num_examples=examples, policy=policy):
    (result,) = run_methods(config, str(tmp_path / 'work'))
  assert result['steps'] == (4 if config.method == 'maxl' else 2)
  assert 0.0 <= result['test_accuracy'] <= 1.0
  rows = (tmp_path / 'work' / 'metrics.jsonl').read_text().splitlines()
  row = json.loads(rows[-1])
  assert row['epoch'] == 1 and row['nonfinite_steps'] == 0
  assert np.isfinite(row['meta/meta_loss'])
  return result


@pytest.mark.parametrize('name', CONFIGS)
def test_config_trains_a_few_steps(name, tmp_path):
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    _run(name, tmp_path)
  finally:
    jax.config.update('jax_disable_most_optimizations', False)


@pytest.mark.slow
@pytest.mark.parametrize('name', CONFIGS)
def test_config_trains_with_its_own_backbone(name, tmp_path):
  _run(name, tmp_path, own_backbone=True)


def test_quickstart_through_the_command_line(tmp_path):
  """The README's first command, shortened: both methods and the table."""
  cmd = [
    sys.executable, '-m', 'experiments.run',
    '--config=experiments/configs/quickstart.py',
    f'--workdir={tmp_path}',
    '--config.train.epochs=1', '--config.train.steps_per_epoch=2',
    '--config.model.head_hidden=16', '--config.model.widths=(8,8,8,8)',
  ]  # fmt: skip
  # XLA's optimisations cost more than they save on 2 steps.
  env = dict(
    os.environ, JAX_PLATFORMS='cpu', JAX_DISABLE_MOST_OPTIMIZATIONS='1'
  )
  proc = subprocess.run(
    cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'single' in proc.stdout and 'maxl' in proc.stdout
  assert 'One seed, 360 test images' in proc.stdout  # How to read it.
  for method in ('single', 'maxl'):
    result = json.loads((tmp_path / method / 'result.json').read_text())
    assert result['method'] == method and result['dataset'] == 'digits'
    assert len(result['params_sha256']) == 64
    assert set(result['param_norms']) == {'theta1', 'theta2'}
