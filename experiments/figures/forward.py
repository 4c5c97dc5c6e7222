"""Trained networks on test images, in batches: features, generated labels.

Pure functions of a module or apply function, parameter pytrees and
normalised images; always in evaluation mode (BatchNorm running averages,
so each image's output is independent of the rest of its batch). Batches
are padded to one size so that each function compiles once; a tqdm bar
on stderr shows the progress.
"""

import functools

import jax
import numpy as np
from tqdm import tqdm

from maxl_jax import losses
from maxl_jax.problem import split_generator_outputs


def in_batches(fn, arrays: tuple, batch_size: int, desc: str) -> np.ndarray:
  """`fn(*batch)` over the rows of `arrays`, concatenated: [N, ...].

  The last batch is zero-padded to `batch_size` rows and the padding's
  outputs are dropped.
  """
  n = len(arrays[0])
  size = max(1, min(batch_size, n))
  outputs = []
  with tqdm(total=n, desc=desc, unit='img') as bar:
    for start in range(0, n, size):
      chunk = [a[start : start + size] for a in arrays]
      rows = len(chunk[0])
      chunk = [
        np.concatenate([c, np.zeros((size - rows, *c.shape[1:]), c.dtype)])
        for c in chunk
      ]
      outputs.append(np.asarray(fn(*chunk))[:rows])
      bar.update(rows)
  return np.concatenate(outputs)


def _trunk(module, images):
  return module.trunk(images, False)


def _features(f, variables, images):
  return f.apply(variables, images, method=_trunk)


def trunk_features(
  f, theta1, model_state1, images, batch_size: int = 256, desc: str = 'features'
):
  """The shared trunk's output of the multi-task network f(θ1).

  Args:
    f: the Flax multi-task network; its trunk is the submodule `trunk`.
    theta1: f's params; model_state1: its other collections ({'batch_stats'}).
    images: [N, H, W, C] float, normalised as the model saw them.
    batch_size: images per forward pass.
    desc: the progress bar's label.

  Returns:
    [N, D] float32 features.
  """
  fn = jax.jit(functools.partial(_features, f))
  variables = {'params': theta1, **model_state1}
  return in_batches(
    lambda x: fn(variables, x), (np.asarray(images),), batch_size, desc
  )


def _probs(problem, theta2, model_state2, images, labels):
  outputs, _ = problem.g_apply(theta2, model_state2, images, False)
  logits, _ = split_generator_outputs(problem, outputs)  # Weights unused.
  return losses.mask_softmax(logits, labels, problem.mask)


def generated_probs(
  problem,
  theta2,
  model_state2,
  images,
  labels,
  batch_size: int = 256,
  desc: str = 'labels',
):
  """The label generator's mask-softmax labels g(x, y; θ2).

  Args:
    problem: a `MaxlProblem` with `g_apply` and the [P, K] `mask`.
    theta2, model_state2: the generator's params and other collections.
    images: [N, H, W, C] float, normalised.
    labels: [N] int primary labels.
    batch_size: images per forward pass.
    desc: the progress bar's label.

  Returns:
    [N, K] float32: each row sums to 1 over its class's auxiliary classes.
  """
  fn = jax.jit(functools.partial(_probs, problem))
  arrays = (np.asarray(images), np.asarray(labels, np.int32))
  return in_batches(
    lambda x, y: fn(theta2, model_state2, x, y), arrays, batch_size, desc
  )
