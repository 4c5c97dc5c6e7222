"""The entry point's exit statuses: bad commands (2) and non-finite runs (1).

A usage or config error prints exactly one `error:` line, exits with status
2 and writes nothing into the workdir. A NaN/Inf step with
`train.on_nonfinite=stop` exits with status 1, names the step and keeps only
checkpoints from before it; with `skip_step` the run goes on to the end.
"""

import json

import entry_point as ep
import pytest

# name: (overrides, a part of the expected error line).
BAD_COMMANDS = {
  'unknown_field': (['--config.train.epochz=3'], "config field 'epochz'"),
  'wrong_type': (['--config.train.epochs=three'], 'config.train.epochs'),
  'unknown_dataset': (['--config.data.name=no_such'], 'no_such'),
  'unknown_model': (['--config.model.name=no_such'], 'no_such'),
  'unknown_method': (['--config.method=no_such'], 'no_such'),
  'unknown_compared_method': (
    ['--config.compare_methods=single,no_such'],
    'no_such',
  ),
  'bad_number': (['--config.train.epochs=0'], 'config.train.epochs'),
  'implicit_without_held_out_split': (
    ['--config.maxl.meta_grad=implicit'],
    '--config.data.meta_fraction',
  ),
  'meta_every_with_the_paper_schedule': (
    ['--config.maxl.meta_every=5'],
    'schedule=interleaved',
  ),
  'bad_hierarchy': (
    ['--config.data.hierarchy=0,1'],
    'gives 2 coarse ids, but digits has 10 classes',
  ),
  'human_without_a_hierarchy': (
    ['--config.method=human'],
    '--config.data.hierarchy',
  ),
  'hierarchy_psi_without_a_hierarchy': (
    ['--config.maxl.psi=hierarchy'],
    '--config.data.hierarchy',
  ),
  'bf16_conv_with_unrolled': (
    [
      '--config.model.conv_impl=im2col_bf16',
      '--config.maxl.meta_grad=unrolled',
    ],
    'meta_grad=structured',
  ),
}


@pytest.mark.parametrize('name', sorted(BAD_COMMANDS))
def test_bad_config_is_one_error_line_and_writes_nothing(name, tmp_path):
  workdir = tmp_path / 'run'
  overrides, expected = BAD_COMMANDS[name]
  proc = ep.run(*ep.TINY, *overrides, f'--workdir={workdir}')
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = ep.error_lines(proc.stderr)
  assert expected in line, line
  assert 'Traceback' not in proc.stderr
  assert not workdir.exists()


# name: (file text or None for a missing file, a part of the error line).
BAD_CONFIG_FILES = {
  'missing': (None, 'does not exist'),
  'syntax_error': ('def get_config(:\n', 'SyntaxError'),
  'raises': (
    'def get_config():\n  raise RuntimeError("boom")\n',
    'RuntimeError: boom',
  ),
}


@pytest.mark.parametrize('name', sorted(BAD_CONFIG_FILES))
def test_bad_config_file_is_one_error_line(name, tmp_path):
  text, expected = BAD_CONFIG_FILES[name]
  path = tmp_path / f'{name}.py'
  if text is not None:
    path.write_text(text)
  workdir = tmp_path / 'run'
  proc = ep.run(f'--config={path}', f'--workdir={workdir}')
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = ep.error_lines(proc.stderr)
  assert expected in line and str(path) in line, line
  assert 'Traceback' not in proc.stderr
  assert not workdir.exists()


@pytest.mark.parametrize('where', ['file', 'under_a_file'])
def test_workdir_that_cannot_be_a_directory(where, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  workdir = blocker if where == 'file' else blocker / 'run'
  proc = ep.run(*ep.TINY, f'--workdir={workdir}')
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = ep.error_lines(proc.stderr)
  assert str(blocker) in line and 'file' in line, line
  assert 'Traceback' not in proc.stderr
  assert blocker.read_text() == 'not a directory'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['a_file']


def test_missing_workdir_is_one_error_line():
  proc = ep.run(*ep.TINY)
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = ep.error_lines(proc.stderr)
  assert '--workdir is required' in line


# θ2's first update (step 4) is huge; the next θ2 step is non-finite.
EXPLODE = ('--config.label_opt.lr=1e30', '--config.checkpoint.every_steps=1')


def test_nonfinite_stops_with_the_step_and_keeps_good_checkpoints(tmp_path):
  workdir = tmp_path / 'run'
  proc = ep.run(*ep.TINY, *EXPLODE, f'--workdir={workdir}')
  assert proc.returncode == 1, proc.stderr[-3000:]
  (line,) = ep.error_lines(proc.stderr)
  assert 'non-finite values at step ' in line and 'nan' in line, line
  bad = int(line.split('at step ')[1].split(':')[0])
  saved = ep.checkpoint_steps(workdir)
  assert saved and max(saved) < bad, (saved, line)
  assert f'the last good checkpoint (step {max(saved)}) is kept' in line
  assert not (workdir / 'result.json').exists()


def test_nonfinite_skip_step_trains_to_the_end(tmp_path):
  workdir = tmp_path / 'run'
  proc = ep.run(
    *ep.TINY,
    *EXPLODE,
    '--config.train.on_nonfinite=skip_step',
    f'--workdir={workdir}',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads((workdir / 'result.json').read_text())
  assert result['steps'] == ep.TOTAL_STEPS
  rows = (workdir / 'metrics.jsonl').read_text().splitlines()
  assert json.loads(rows[-1])['nonfinite_steps'] > 0
