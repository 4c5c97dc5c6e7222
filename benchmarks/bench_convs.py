"""One 3x3 convolution, im2col against XLA's own, forward and backward.

For each (input size, channels) of VGG-16's and ResNet-32's layers: the
forward pass (batch `--forward_batch`) and the backward pass alone
(`jax.grad` of <conv(x, w), ct> with respect to x and w: XLA drops the
unused forward; batch `--backward_batch`), float32, SAME padding, the
minimum of `--repeats` calls. This is what `conv_impl=mixed` rests on
(maxl_jax/networks/layers.py; benchmarks/README.md, "Convolutions").
Then each backbone's evaluation step (f's and g's forward passes: the
`eval` step of `maxl_run.jit_steps` on bench_steps.py's MAXL runs) per
10,000 images with `im2col` and with `mixed` (what `auto` infers with).

COMMAND:
  python benchmarks/bench_convs.py
"""

import time

import bench_steps
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax import lax

from maxl_jax.networks import layers
from maxl_jax.training import mesh as mesh_lib

_FORWARD_BATCH = flags.DEFINE_integer('forward_batch', 500, 'Forward batch.')
_BACKWARD_BATCH = flags.DEFINE_integer('backward_batch', 100, 'Backward batch.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls (the minimum).')

# (input height = width, Cin, Cout): VGG-16's blocks, then ResNet-32's.
SHAPES = (
  (32, 64, 64),
  (16, 128, 128),
  (8, 256, 256),
  (4, 512, 512),
  (2, 512, 512),
  (32, 16, 16),
  (16, 32, 32),
  (8, 64, 64),
)
_NHWC = ('NHWC', 'HWIO', 'NHWC')
CONVS_EVAL = ('im2col', 'mixed')
CONVS = {
  'im2col': layers.im2col_conv_general_dilated,
  'xla': lax.conv_general_dilated,
}


def _conv(name):
  return lambda x, w: CONVS[name](x, w, (1, 1), 'SAME', dimension_numbers=_NHWC)


def _min_ms(fn, *args) -> float:
  jax.block_until_ready(fn(*args))  # Compiles.
  times = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * min(times)


def eval_seconds(backbone: str, conv_impl: str, batch: int) -> float:
  """Seconds per 10,000 test images of `backbone`'s evaluation step."""
  run, start, _ = bench_steps.make_run(backbone, conv_impl)
  state = start.state
  mesh = mesh_lib.make_mesh()
  step = run.jit_steps(mesh)['eval']
  channels = bench_steps.BACKBONES[backbone][0]
  images = np.random.default_rng(0).standard_normal(
    (batch, 32, 32, channels), np.float32
  )
  test_batch = {
    'image': images,
    'label': np.zeros(batch, np.int32),
    'mask': np.ones(batch, np.float32),
    'index': np.arange(batch, dtype=np.int32),
  }
  state = jax.device_put(state, mesh_lib.replicated(mesh))
  test_batch = jax.device_put(test_batch, mesh_lib.sharded(mesh))
  return _min_ms(step, state, test_batch) / 1e3 * (10_000 / batch)


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  print(
    '| input | channels | forward im2col / xla ms | backward im2col / '
    'xla ms |\n|---|---|--:|--:|'
  )
  for size, cin, cout in SHAPES:
    w = jnp.asarray(rng.standard_normal((3, 3, cin, cout), np.float32))
    cells = []
    for batch, backward in ((_FORWARD_BATCH.value, False), (
        _BACKWARD_BATCH.value, True)):  # fmt: skip
      x = jnp.asarray(rng.standard_normal((batch, size, size, cin), np.float32))
      ct = jnp.asarray(
        rng.standard_normal((batch, size, size, cout), np.float32)
      )
      ms = {}
      for name in CONVS:
        fn = _conv(name)
        if backward:
          grad = jax.grad(lambda x, w, ct, f=fn: jnp.vdot(f(x, w), ct), (0, 1))
          ms[name] = _min_ms(jax.jit(grad), x, w, ct)
        else:
          ms[name] = _min_ms(jax.jit(fn), x, w)
      cells.append(f'{ms["im2col"]:,.0f} / {ms["xla"]:,.0f}')
    print(f'| {size}x{size} | {cin} → {cout} | {cells[0]} | {cells[1]} |')
  print('\n| backbone | eval s / 10k images, im2col | mixed |\n|---|--:|--:|')
  for backbone in bench_steps.BACKBONES:
    secs = [eval_seconds(backbone, i, _FORWARD_BATCH.value) for i in CONVS_EVAL]
    print(f'| {backbone} | {secs[0]:.1f} | {secs[1]:.1f} |')


if __name__ == '__main__':
  app.run(main)
