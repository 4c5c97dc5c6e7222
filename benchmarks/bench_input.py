"""Input-pipeline throughput: images/s of `TrainIterator` batches on CPU.

Times shuffling, gathering, augmentation (crop + flip) and normalisation of
training batches, i.e. everything the training loop waits for per step. By
default on synthetic CIFAR-shaped data (50,000 uint8 images 32x32x3, so no
dataset is needed); `--dataset=NAME` loads a real one via `get_datasets`.

COMMAND:
  python benchmarks/bench_input.py --batch_size=100 --steps=2000
  python benchmarks/bench_input.py --dataset=fashion_mnist

Target: >= 5,000 images/s at batch 100 with crop_flip on 2 CPU cores.
"""

import time

import numpy as np
import repo_path  # noqa: F401 - experiments/ from the checkout.
from absl import app, flags

from experiments.configs import default
from maxl_jax.data import pipeline

_DATASET = flags.DEFINE_string(
  'dataset', '', 'config.data.name to load; empty = synthetic CIFAR data.'
)
_BATCH = flags.DEFINE_integer('batch_size', 100, 'Global batch size.')
_STEPS = flags.DEFINE_integer('steps', 2000, 'Batches timed per setting.')
_NUM = flags.DEFINE_integer('num_train', 50000, 'Synthetic training images.')


def make_iterator(augment: str) -> pipeline.TrainIterator:
  """A training iterator over synthetic or real data."""
  if _DATASET.value:
    config = default.get_config().data
    config.name, config.batch_size = _DATASET.value, _BATCH.value
    config.augment = augment
    return pipeline.get_datasets(config, seed=0, device_count=1).train
  rng = np.random.default_rng(0)
  n = _NUM.value
  images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, n)
  return pipeline.TrainIterator(
    images, labels, np.arange(n), batch_size=_BATCH.value, augment=augment
  )


def images_per_second(train: pipeline.TrainIterator, steps: int) -> float:
  """Times `steps` batches after a short warm-up."""
  for _ in range(5):
    next(train)
  start = time.perf_counter()
  for _ in range(steps):
    batch = next(train)
  elapsed = time.perf_counter() - start
  return steps * len(batch['label']) / elapsed


def main(argv):
  del argv
  name = _DATASET.value or f'synthetic {_NUM.value}x32x32x3'
  for augment in pipeline.AUGMENTATIONS:
    rate = images_per_second(make_iterator(augment), _STEPS.value)
    print(
      f'{name}, batch {_BATCH.value}, augment={augment}: {rate:,.0f} images/s'
    )


if __name__ == '__main__':
  app.run(main)
