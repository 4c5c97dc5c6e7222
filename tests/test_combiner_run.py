"""The loss-combiner experiment (maxl_jax/training/combiner_run.py): its steps
and its runs. (Its given tasks: test_combiner_problem.py.)

The runs go through `python -m experiments.run` in subprocesses (the
shared loop: every workdir file, checkpoints and bitwise resumption, the
non-finite guard) on a tiny digits setting, sharing `entry_point`'s
compilation cache; `restore_run` reads the finished workdir back.
"""

import json
import pathlib
import signal

import entry_point as ep
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import combine_fashion
from maxl_jax.data.info import DatasetInfo
from maxl_jax.errors import UsageError
from maxl_jax.training import carry, combiner_run, contract, evaluation, restore
from maxl_jax.training import timing as timing_lib
from maxl_jax.training.mesh import make_mesh

TINY_INFO = DatasetInfo('fashion_mnist', 10, (32, 32, 1), 100, 100, 10)
COMMAND = 'experiments.run'
# Digits, the 'random' task, a 4-8-8-8 ConvNet-4: 2 epochs of 3 θ steps
# with a φ step after every 2nd, checkpoints every 2 steps and at epoch ends.
TINY = (
  '--config=experiments/configs/combine_fashion.py',
  '--config.data.name=digits',
  '--config.data.train_fraction=1.0',
  '--config.data.batch_size=16',
  '--config.data.eval_batch_size=128',
  '--config.model.widths=(4,8,8,8)',
  '--config.model.head_hidden=8',
  '--config.combiner.tasks=random',
  '--config.combiner.meta_every=2',
  '--config.train.epochs=2',
  '--config.train.steps_per_epoch=3',
  '--config.train.eval_every_epochs=1',
  '--config.checkpoint.every_steps=2',
)
TOTAL_STEPS = 6


@pytest.fixture
def fast_compile():
  """XLA with most optimisations off (compiles ~2x faster), then restored."""
  before = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', before)


def tiny_config(form='linear', tasks='coarse,random'):
  """The experiment's config with a 4-8-8-8 ConvNet-4 and heads of 8."""
  config = combine_fashion.get_config()
  config.model.widths = (4, 8, 8, 8)
  config.model.head_hidden = 8
  config.combiner.form, config.combiner.tasks = form, tasks
  return config


def tiny_batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  return {
    'image': jnp.asarray(rng.normal(size=(n, 32, 32, 1)), jnp.float32),
    'label': jnp.asarray(rng.integers(0, 10, n), jnp.int32),
    'index': jnp.arange(n, dtype=jnp.int32),
  }


def test_task_names_are_checked():
  config = tiny_config()
  config.combiner.tasks, config.data.name = ' coarse, random', 'fashion_mnist'
  assert combiner_run.task_names(config) == ('coarse', 'random')
  for names, dataset in (
    ('coarse', 'digits'),  # Fashion-MNIST only.
    ('random,random', 'digits'),
    ('', 'digits'),
    ('fine', 'digits'),
  ):
    config.combiner.tasks, config.data.name = names, dataset
    with pytest.raises(UsageError, match='config.combiner.tasks'):
      combiner_run.task_names(config)
  config = tiny_config('mlp')
  config.data.meta_fraction = 0.0  # A learned φ needs the held-out split.
  with pytest.raises(UsageError, match='meta_fraction'):
    contract.validate(config)


def test_a_theta_step_then_a_combined_step(fast_compile):
  run = contract.build_run(tiny_config(), TINY_INFO)
  assert run.tasks == ('coarse', 'random')
  assert run.schedule.kinds() == ('primary', 'interleaved')  # meta_every 20.
  fns = run.jit_steps(make_mesh())
  batch, meta_batch = tiny_batch(), tiny_batch(seed=1)
  state = carry.start(run.create_state({}), run.zero_sums())
  theta0, phi0 = jax.device_get((state.state.theta1, state.state.phi))

  state = fns['primary'](state, batch)
  sums = jax.device_get(state.sums)
  assert sums['train/count'] == 1 and sums['meta/count'] == 0
  for name in ('loss', 'loss_pri', 'loss_aux', 'loss_coarse', 'loss_random'):
    assert np.isfinite(sums[f'train/{name}']) and sums[f'train/{name}'] > 0
  np.testing.assert_array_equal(state.state.phi['rho'], phi0['rho'])

  state = fns['interleaved'](state, batch, meta_batch)
  steps = (state.step, state.state.step1, state.state.step2)
  assert tuple(map(int, steps)) == (2, 2, 1)
  sums = jax.device_get(state.sums)
  assert sums['meta/count'] == 1 and sums['meta/hypergrad_norm'] > 0
  assert not np.allclose(state.state.phi['rho'], phi0['rho'])
  delta = jax.tree.map(
    lambda a, b: np.abs(a - b).max(), state.state.theta1, theta0
  )
  assert max(jax.tree.leaves(delta)) > 0
  assert int(state.guard['count']) == 0
  state = state.state

  weights = jax.device_get(fns['probe'](state, meta_batch))
  assert list(weights) == ['weight/coarse', 'weight/random']
  assert all(np.isfinite(w) and w > 0 for w in weights.values())


def test_forms_without_parameters_take_theta_steps_only():
  for form, probed in (('fixed', True), ('none', False)):
    run = contract.build_run(tiny_config(form), TINY_INFO)
    assert run.schedule.kinds() == ('primary',) and not run.held_out
    assert run.state_shapes().phi == {}
    fns = set(run.jit_steps(make_mesh()))
    assert fns == {'primary', 'eval'} | ({'probe'} if probed else set())


def test_bad_form_is_one_error_line(tmp_path):
  workdir = tmp_path / 'run'
  proc = ep.run(
    '--config=experiments/configs/combine_fashion.py',
    f'--workdir={workdir}',
    '--config.combiner.form=quadratic',
    module=COMMAND,
    timeout=120,
  )
  assert proc.returncode == 2, proc.stderr
  lines = ep.error_lines(proc.stderr)
  assert len(lines) == 1 and 'config.combiner.form' in lines[0], proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not workdir.exists()


# ----------------------------------------------------- the entry point ---


def _rows(workdir, name='metrics.jsonl') -> list[dict]:
  text = (pathlib.Path(workdir) / name).read_text()
  return [json.loads(line) for line in text.splitlines()]


def _result(workdir) -> dict:
  return json.loads((pathlib.Path(workdir) / 'result.json').read_text())


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  """An uninterrupted tiny run: (workdir, result, stdout)."""
  workdir = tmp_path_factory.mktemp('combine') / 'run'
  proc = ep.run(*TINY, f'--workdir={workdir}', module=COMMAND)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, _result(workdir), proc.stdout


def test_a_run_writes_every_file_of_a_workdir(reference):
  workdir, result, stdout = reference
  assert ep.sha_printed(stdout) == result['params_sha256']
  assert 'task weights random' in stdout
  assert result['steps'] == TOTAL_STEPS and result['method'] == 'combiner'
  assert result['form'] == 'linear' and result['tasks'] == ['random']
  rows = _rows(workdir)
  assert [r['step'] for r in rows] == [0, 3, 6]
  for key in ('train/loss_random', 'meta/meta_loss', 'test/accuracy'):
    assert np.isfinite(rows[-1][key]), key
  assert result['weights'] == {'random': rows[-1]['weight/random']}
  timing = _rows(workdir, 'timing.jsonl')
  phases = {f'{phase}_s' for phase in timing_lib.PHASES}
  assert [set(t) for t in timing] == [{'epoch', 'step', 'train_s', *phases}] * 3
  # The study's configs write no TensorBoard events (log.tensorboard).
  assert not list(workdir.glob('events.out.tfevents.*'))
  assert ep.checkpoint_steps(workdir)[-1] == TOTAL_STEPS
  assert 'Training combiner on digits' in (workdir / 'log.txt').read_text()


def test_sigkill_then_rerun_matches_uninterrupted(reference, tmp_path):
  workdir = tmp_path / 'run'
  proc = ep.start(
    *TINY, f'--workdir={workdir}', logs=tmp_path / 'killed', module=COMMAND
  )
  try:
    ep.wait_for_checkpoint(proc, workdir)
    proc.send_signal(signal.SIGKILL)
  finally:
    ep.finish(proc)
  assert proc.returncode == -signal.SIGKILL, 'the run ended before the kill'
  assert 0 < max(ep.checkpoint_steps(workdir)) < TOTAL_STEPS

  again = ep.run(*TINY, f'--workdir={workdir}', module=COMMAND)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'Resuming from the checkpoint at step' in again.stderr
  ref_workdir, ref_result, _ = reference
  assert _result(workdir)['params_sha256'] == ref_result['params_sha256']
  assert _rows(workdir) == _rows(ref_workdir)


def test_restore_run_gives_the_saved_parameters(reference):
  workdir, result, _ = reference
  restored = restore.restore_run(str(workdir))
  assert isinstance(restored.run, combiner_run.CombinerRun)
  assert restored.step == TOTAL_STEPS
  sha, _ = evaluation.params_digest(restored.state.theta1, restored.state.phi)
  assert sha == result['params_sha256']


@pytest.mark.parametrize('mode', ['stop', 'skip_step'])
def test_nonfinite_steps_honour_on_nonfinite(mode, tmp_path):
  workdir = tmp_path / 'run'
  proc = ep.run(
    *TINY,
    f'--workdir={workdir}',
    '--config.combiner.form=fixed',  # Only θ steps: less to compile.
    '--config.train.epochs=1',
    '--config.primary_opt.lr=1e30',  # θ overflows at the second step.
    f'--config.train.on_nonfinite={mode}',
    module=COMMAND,
  )
  if mode == 'stop':
    assert proc.returncode == 1, proc.stderr[-3000:]
    (line,) = ep.error_lines(proc.stderr)
    assert 'non-finite values at step 2' in line
    assert not (workdir / 'result.json').exists()
  else:
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, row = _rows(workdir)
    assert row['nonfinite_steps'] == 2  # Steps 2 and 3, not applied.
