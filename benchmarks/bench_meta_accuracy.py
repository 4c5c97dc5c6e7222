"""Float32 error of the meta-gradient estimators against `unrolled`, at init.

On the benchmark's synthetic batch (bench_steps.make_run: peer shapes,
batch 100, α = θ1's initial lr), computes ∇θ2 J by each estimator of
`meta_grad.ESTIMATORS` and prints its relative error
`‖g - g_unrolled‖ / ‖g_unrolled‖` and cosine with `unrolled`.
`structured` is exact, so its error is the float32 noise floor; DESIGN §2c
reports ~17% for `first_order` on VGG-16. The rows marked im2col_bf16 use
the same parameters with `model.conv_impl='im2col_bf16'` (bfloat16 matmul
operands), against the float32 `unrolled`; the last row compares the θ1
step's gradient ∇θ1 L_train with bfloat16 operands to float32's.
`--fd_eps` lists the finite-difference numerators to try (ε = fd_eps / ‖v‖).

COMMAND:
  python benchmarks/bench_meta_accuracy.py --backbones=convnet4,vgg16 \
    --fd_eps=0.01,0.1,1
"""

import dataclasses
import functools

import bench_steps  # Shares its --backbones and --batch flags.
import jax
import jax.numpy as jnp
from absl import app, flags

from maxl_jax import meta_grad
from maxl_jax.problem import train_loss

_FD_EPS = flags.DEFINE_list('fd_eps', ['0.01'], 'fd_eps values to try.')


def _flat(tree):
  return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def meta_grads(problem, inputs):
  """{label: ∇θ2 J} of MAXL's estimators (first_order once per fd_eps).

  `implicit` is left out: it estimates another objective (a held-out loss).
  """
  out = {}
  for name, estimator in meta_grad.ESTIMATORS.items():
    if name == 'implicit':
      continue
    epsilons = _FD_EPS.value if name == 'first_order' else [None]
    for eps in epsilons:
      p = problem
      if eps is not None:
        p = dataclasses.replace(problem, fd_eps=float(eps))
      fn = jax.jit(functools.partial(estimator, p))
      label = name if eps is None else f'{name}(fd_eps={eps})'
      out[label] = _flat(fn(inputs)[0])
  return out


def theta1_grad(problem, source, state, batch):
  """∇θ1 L_train with the MAXL label source's targets (the θ1 step's)."""
  targets = source.targets(
    state.label_state, state.theta2, state.model_state2, batch, problem=problem
  )
  grad_fn = jax.grad(train_loss, 1, has_aux=True)
  return _flat(
    jax.jit(
      lambda t1: grad_fn(problem, t1, state.model_state1, targets, batch)[0]
    )(state.theta1)
  )


def _report(label, g, ref):
  rel = jnp.linalg.norm(g - ref) / jnp.linalg.norm(ref)
  cos = jnp.dot(g, ref) / (jnp.linalg.norm(g) * jnp.linalg.norm(ref))
  print(f'  {label:28s} rel. error {rel:9.2e}   cosine {cos:.5f}')


def bf16_meta_grads(backbone, inputs):
  """{label: ∇θ2 J} of the once-differentiable estimators, bf16 matmuls."""
  run, _, _ = bench_steps.make_run(
    backbone, 'im2col_bf16', batch_size=bench_steps._BATCH.value
  )
  problem = run.problem
  return {
    f'{name} (im2col_bf16)': _flat(
      jax.jit(functools.partial(meta_grad.ESTIMATORS[name], problem))(inputs)[0]
    )
    for name in ('structured', 'first_order')
  }


def main(argv):
  del argv
  for backbone in bench_steps._BACKBONES.value or ['convnet4', 'vgg16']:
    run, state, (batch,) = bench_steps.make_run(
      backbone, batch_size=bench_steps._BATCH.value
    )
    problem = run.problem
    inputs = meta_grad.MetaInputs(
      state.theta1,
      state.model_state1,
      state.theta2,
      state.model_state2,
      batch,
      run.alpha_schedule(0),
    )
    grads = meta_grads(problem, inputs)
    grads.update(bf16_meta_grads(backbone, inputs))
    ref = grads.pop('unrolled')
    print(f'{backbone}: |grad unrolled| = {jnp.linalg.norm(ref):.4g}')
    for label, g in grads.items():
      _report(label, g, ref)
    run16, _, _ = bench_steps.make_run(
      backbone, 'im2col_bf16', batch_size=bench_steps._BATCH.value
    )
    _report(
      'theta1 grad (im2col_bf16)',
      theta1_grad(run16.problem, run16.label_source, state, batch),
      theta1_grad(problem, run.label_source, state, batch),
    )


if __name__ == '__main__':
  app.run(main)
