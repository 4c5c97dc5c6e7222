"""`python -m experiments.analyze`: figures, their numbers, tables, bad input.

One tiny Single + MAXL run (`entry_point.TINY`, both methods) is trained and
analysed once for the module; the checks read the files written. The
table, the top-k choice and the forward passes are also checked on data
made here by hand.
"""

import csv
import json
import math
import shutil
import subprocess
import sys

import entry_point as ep
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from toy_problems import TinyConvBN, TwoHeads, make_problem

from experiments.figures import finished as finished_lib
from experiments.figures import forward, invented, table, tsne
from maxl_jax import losses
from maxl_jax.training import restore

TSNE_IMAGES, TOPK, CLASSES = 100, 3, (0, 3)


def analyze(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, '-m', 'experiments.analyze', *args],
    cwd=ep.REPO,
    env=ep.env(),
    capture_output=True,
    text=True,
    timeout=240,
  )


@pytest.fixture(scope='module')
def parent(tmp_path_factory):
  """A compare_methods parent holding finished `single` and `maxl` runs."""
  path = tmp_path_factory.mktemp('analyze') / 'runs'
  proc = ep.run(
    *ep.TINY, '--config.compare_methods=single,maxl', f'--workdir={path}'
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return path


@pytest.fixture(scope='module')
def analysed(parent):
  """(output folder, completed analysis process) of the whole parent."""
  out = parent.parent / 'out'
  proc = analyze(
    f'--workdir={parent}',
    f'--out={out}',
    f'--tsne_images={TSNE_IMAGES}',
    f'--topk={TOPK}',
    f'--classes={",".join(map(str, CLASSES))}',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out, proc


def metrics(run_dir) -> list[dict]:
  lines = (run_dir / 'metrics.jsonl').read_text().splitlines()
  return [json.loads(line) for line in lines]


def read_csv(path) -> list[dict]:
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


FIGURES = {
  'learning_curves.png': 'learning_curves.csv',
  'time_to_accuracy.png': 'time_to_accuracy.csv',
  'grad_cosine.png': 'grad_cosine.csv',
  'aux_usage.png': 'aux_usage.csv',
  'label_knowledge.png': 'label_knowledge.csv',
  'tsne.png': 'tsne.csv',
  'argmax_usage.png': 'argmax_usage.json',
  'invented_runs_maxl.png': 'invented_runs_maxl.json',
}


def test_every_figure_has_its_data_and_is_in_the_report(analysed):
  out, proc = analysed
  report = (out / 'report.md').read_text()
  for png, data in FIGURES.items():
    assert (out / png).read_bytes()[:4] == b'\x89PNG', png
    assert (out / data).stat().st_size > 0, data
    assert f']({png})' in report and f']({data})' in report
  assert '| digits | maxl | 3 | 100% | 1 |' in report
  assert '| digits | maxl |' in (out / 'results.md').read_text()
  assert '| Information (nats) | Recovery NMI | Recovery ARI |' in report
  # The single run has no generator: one warning, no error, other figures.
  (warning,) = [
    line for line in proc.stderr.splitlines() if line.startswith('warning:')
  ]
  assert 'runs/single' in warning and 'no label generator' in warning
  assert not ep.error_lines(proc.stderr)
  assert not list(out.glob('invented_runs_single*'))


def test_plotted_curves_equal_the_metrics(analysed, parent):
  out, _ = analysed
  curves = read_csv(out / 'learning_curves.csv')
  cosine = read_csv(out / 'grad_cosine.csv')
  usage = read_csv(out / 'aux_usage.csv')
  for method in ('single', 'maxl'):
    rows = metrics(parent / method)
    plotted = [r for r in curves if r['runs'] == f'runs/{method}']
    assert [int(r['epoch']) for r in plotted] == [r['epoch'] for r in rows]
    for got, row in zip(plotted, rows, strict=True):
      assert float(got['test_accuracy_mean_pct']) == pytest.approx(
        100 * row['test/accuracy'], rel=1e-12
      )
      assert float(got['test_accuracy_std_pct']) == 0 and got['n'] == '1'
  timed = read_csv(out / 'time_to_accuracy.csv')
  for method in ('single', 'maxl'):
    path = parent / method / 'timing.jsonl'
    lines = path.read_text().splitlines()
    seconds = [json.loads(line)['train_s'] for line in lines]
    plotted = [r for r in timed if r['runs'] == f'runs/{method}']
    assert [float(r['train_seconds_mean']) for r in plotted] == pytest.approx(
      seconds, rel=1e-12
    )
    assert seconds == sorted(seconds) and seconds[0] == 0 < seconds[-1]
  knows = read_csv(out / 'label_knowledge.csv')
  assert {(r['metric'], r['runs']) for r in knows} == {
    ('test/aux_information', 'runs/maxl')  # Single has no labels; no fine.
  }
  assert [float(r['mean']) for r in knows] == [
    r['test/aux_information'] for r in metrics(parent / 'maxl')
  ]
  rows = metrics(parent / 'maxl')
  assert [float(r['grad_cosine']) for r in cosine] == [
    r['grad_cosine']
    for r in rows
    if 'grad_cosine' in r  # Not at step 0.
  ]
  assert {r['run'] for r in cosine} == {'runs/maxl'}
  trained = [r for r in rows if 'meta/aux_hist' in r]  # Not at step 0.
  for got, row in zip(usage, trained, strict=True):  # From meta/aux_hist.
    hist = np.asarray(row['meta/aux_hist']).reshape(10, 3)
    m = hist.ravel() / hist.sum()
    q = hist / hist.sum(1, keepdims=True)
    h_class = -np.sum(q * np.log(q), 1)
    assert float(got['entropy_nats']) == pytest.approx(-np.sum(m * np.log(m)))
    assert float(got['usage']) == pytest.approx(np.mean(np.exp(h_class) / 3))


def test_tsne_and_topk_files_describe_the_same_images(analysed, parent):
  out, _ = analysed
  points = read_csv(out / 'tsne.csv')
  expected = tsne.pick_images(360, TSNE_IMAGES).tolist()
  for run in ('runs/single', 'runs/maxl'):
    index = [int(p['image_index']) for p in points if p['run'] == run]
    assert index == expected
  topk = json.loads((out / 'invented_runs_maxl.json').read_text())
  assert [r['class'] for r in topk['rows']] == [0] * 3 + [3] * 3
  assert [r['aux'] for r in topk['rows']] == [0, 1, 2, 9, 10, 11]
  for row in topk['rows']:
    assert len(row['index']) == TOPK
    assert row['prob'] == sorted(row['prob'], reverse=True)
  counts = json.loads((out / 'argmax_usage.json').read_text())[0]['counts']
  assert np.asarray(counts).sum() == 360  # Every test image once.


def _to64(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def test_tsne_features_equal_a_direct_forward_pass(parent):
  restored = restore.restore_run(str(parent / 'maxl'))
  f, state = restored.run.f, restored.state
  rng = np.random.default_rng(0)
  images = rng.normal(size=(11, *restored.run.info.image_shape))
  # float64 (the restored network and state, computed in float64): batches
  # of 4 under jit and one eager batch of 11 sum in different orders, ~1e-5
  # apart in float32 through 4 conv layers (CPU-dependent), ~1e-14 here.
  with jax.enable_x64(True):
    f = f.clone(dtype=jnp.float64, trunk=f.trunk.clone(dtype=jnp.float64))
    theta1, model_state1 = _to64((state.theta1, state.model_state1))
    got = forward.trunk_features(f, theta1, model_state1, images, batch_size=4)
    _, captured = f.apply(
      {'params': theta1, **model_state1},
      images,
      False,
      capture_intermediates=True,
      mutable=['intermediates'],
    )
  (direct,) = captured['intermediates']['trunk']['__call__']
  assert got.dtype == direct.dtype == np.float64
  np.testing.assert_allclose(got, direct, rtol=1e-10, atol=1e-10)


def test_trunk_features_of_a_tiny_net_in_padded_batches():
  # float64: jitted padded batches and one eager batch round differently,
  # ~1e-16 here (float32: ~1e-7, up to ~1e-6 worst case), 1e-12 on any CPU.
  with jax.enable_x64(True):
    f = TwoHeads(TinyConvBN(), 2, 5)
    images = np.random.default_rng(1).normal(size=(7, 5, 5, 2))
    variables = _to64(f.init(jax.random.key(0), images, False))
    params = variables['params']
    state = {
      'batch_stats': jax.tree.map(lambda s: s + 0.3, variables['batch_stats'])
    }
    got = forward.trunk_features(f, params, state, images, batch_size=3)
    direct = TinyConvBN().apply(
      {
        'params': params['trunk'],
        'batch_stats': state['batch_stats']['trunk'],
      },
      images,
      False,
    )
  np.testing.assert_allclose(got, direct, rtol=1e-12, atol=1e-12)


def test_generated_probs_are_the_mask_softmax_in_eval_mode():
  # float64: jitted padded batches and one eager batch round differently,
  # ~1e-16 here (float32: ~1e-7), so 1e-12 holds on any CPU.
  with jax.enable_x64(True):
    problem, _, _, theta2, model_state2, batch = make_problem(
      kind='conv', n=7, dtype=jnp.float64
    )
    images, labels = batch['image'], batch['label']
    got = forward.generated_probs(
      problem, theta2, model_state2, images, labels, batch_size=3
    )
    logits, _ = problem.g_apply(theta2, model_state2, images, False)
    expected = losses.mask_softmax(logits, labels, problem.mask)
  np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
  np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-12)


def test_top_k_picks_exactly_the_k_most_probable_images():
  # psi = [2, 3]: class 0 owns aux 0-1, class 1 owns aux 2-4.
  labels = np.array([0, 1, 0, 0, 1, 0, 1, 0])
  probs = np.zeros((8, 5))
  probs[labels == 0, 0] = [0.2, 0.9, 0.5, 0.7, 0.1]  # Images 0, 2, 3, 5, 7.
  probs[labels == 0, 1] = 1 - probs[labels == 0, 0]
  probs[labels == 1, 2] = [0.3, 0.6, 0.1]  # Images 1, 4, 6.
  probs[labels == 1, 3] = [0.7, 0.4, 0.9]
  assert invented.top_k(probs, labels, 0, 0, 3).tolist() == [2, 5, 3]
  assert invented.top_k(probs, labels, 1, 0, 2).tolist() == [7, 0]
  assert invented.top_k(probs, labels, 3, 1, 2).tolist() == [6, 1]
  # Fewer images of the class than k; zero-probability images still count.
  assert invented.top_k(probs, labels, 4, 1, 8).tolist() == [1, 4, 6]
  rows = invented.invented_rows(probs, labels, [2, 3], [1], 1)
  assert [(r['aux'], r['index'], r['prob']) for r in rows] == [
    (2, [4], [0.6]),
    (3, [6], [0.9]),
    (4, [1], [0.0]),
  ]


# Digits grouped into 0-4 and 5-9: 2 primary classes with 5 hidden fine
# classes each, psi = 5 (the hierarchy's).
HIERARCHY = ('--config.data.hierarchy=halves', '--config.maxl.psi=hierarchy')
SCORES = ('aux_information', 'aux_recovery_nmi', 'aux_recovery_ari')


@pytest.fixture(scope='module')
def hierarchy_parent(tmp_path_factory):
  """Finished `uniform` and `maxl` runs with hidden fine labels."""
  path = tmp_path_factory.mktemp('hierarchy') / 'runs'
  proc = ep.run(
    *ep.TINY,
    *HIERARCHY,
    '--config.compare_methods=uniform,maxl',
    f'--workdir={path}',
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return path


def test_uniform_labels_know_nothing_and_maxl_logs_both_scores(
  hierarchy_parent,
):
  uniform, maxl = (metrics(hierarchy_parent / m) for m in ('uniform', 'maxl'))
  assert len(uniform) == len(maxl) == 3  # Step 0 and each epoch's end.
  for row in uniform:
    assert abs(row['test/aux_information']) < 1e-6
    # The argmax of a uniform label is its class's first auxiliary class:
    # one cluster against 5 fine classes, no mutual information.
    assert row['test/aux_recovery_nmi'] == row['test/aux_recovery_ari'] == 0
  for row in maxl:
    assert 0 < row['test/aux_information'] <= math.log(5) + 1e-6
    assert 0 <= row['test/aux_recovery_nmi'] <= 1
    assert -1 <= row['test/aux_recovery_ari'] <= 1
  for method, rows in (('uniform', uniform), ('maxl', maxl)):
    path = hierarchy_parent / method / 'result.json'
    result = json.loads(path.read_text())
    for key in SCORES:
      assert result[f'test_{key}'] == rows[-1][f'test/{key}']


def test_maxl_scores_equal_a_direct_computation(hierarchy_parent):
  """The final scores from the restored generator on the test split."""
  from sklearn import metrics as sk

  from maxl_jax.data import pipeline
  from maxl_jax.data.images import normalize

  restored = restore.restore_run(str(hierarchy_parent / 'maxl'))
  split = pipeline.load_test_split(restored.config.data)
  probs = forward.generated_probs(
    restored.run.problem,
    restored.state.theta2,
    restored.state.model_state2,
    normalize(split.images),
    split.labels,
  ).astype(np.float64)
  info, nmi, ari = [], [], []
  for c in np.unique(split.labels):
    p = probs[split.labels == c]
    mean = p.mean(0)
    h_mean = -np.sum(mean[mean > 0] * np.log(mean[mean > 0]))
    h_each = -np.sum(p * np.log(np.where(p > 0, p, 1.0)), 1)
    info.append(h_mean - h_each.mean())
    fine, aux = split.fine_labels[split.labels == c], np.argmax(p, 1)
    nmi.append(sk.normalized_mutual_info_score(fine, aux))
    ari.append(sk.adjusted_rand_score(fine, aux))
  result = json.loads((hierarchy_parent / 'maxl' / 'result.json').read_text())
  assert result['test_aux_information'] == pytest.approx(
    np.mean(info), rel=1e-4, abs=1e-6
  )
  assert result['test_aux_recovery_nmi'] == pytest.approx(np.mean(nmi))
  assert result['test_aux_recovery_ari'] == pytest.approx(np.mean(ari))


def test_analysis_shows_recovery_with_a_hierarchy(hierarchy_parent):
  out = hierarchy_parent.parent / 'out'
  proc = analyze(
    f'--workdir={hierarchy_parent}', f'--out={out}', '--tsne_images=0'
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  knows = read_csv(out / 'label_knowledge.csv')
  for method in ('uniform', 'maxl'):
    rows = metrics(hierarchy_parent / method)
    for key in SCORES:
      plotted = [
        r
        for r in knows
        if r['metric'] == f'test/{key}' and r['runs'] == f'runs/{method}'
      ]
      assert [float(r['mean']) for r in plotted] == [
        r[f'test/{key}'] for r in rows
      ]
  result = json.loads((hierarchy_parent / 'maxl' / 'result.json').read_text())
  scores = ' | '.join(f'{result[f"test_{k}"]:.3f}' for k in SCORES)
  text = (out / 'results.md').read_text()
  assert f'| {scores} |' in text
  assert '| digits | uniform | halves | 100% | 1 |' in text  # psi's name.
  assert (out / 'label_knowledge.png').read_bytes()[:4] == b'\x89PNG'


def write_run(
  path, method, seed, accuracy, wall, fraction=1.0, scores=None, **maxl
):
  path.mkdir(parents=True)
  config = {
    'seed': seed,
    'method': method,
    'data': {'name': 'digits', 'train_fraction': fraction, 'per_class': 0},
    'maxl': {'psi_per_class': 3, **maxl},
    'checkpoint': {'keep': seed},  # Bookkeeping: does not split a group.
  }
  (path / 'config.json').write_text(json.dumps(config))
  (path / 'metrics.jsonl').write_text(
    json.dumps({'epoch': 1, 'test/accuracy': accuracy}) + '\n'
  )
  result = {'method': method, 'test_accuracy': accuracy, 'wall_time_s': wall}
  result.update(scores or {})
  (path / 'result.json').write_text(json.dumps(result))


def _rows(folder):
  return table.table_rows(
    finished_lib.group_runs(finished_lib.find_runs([str(folder)]))
  )


@pytest.mark.parametrize('human', [0.94, 0.9005])
def test_share_of_headroom_by_hand(tmp_path, human):
  # Uniform 90, MAXL 91, Single 89; Human 94 (headroom 4 pp: MAXL reaches a
  # quarter of it) or 90.05 (below MIN_HEADROOM: no share reported).
  for method, acc in (('uniform', 0.90), ('human', human), ('maxl', 0.91)):
    write_run(tmp_path / method, method, 0, acc, 10)
  write_run(tmp_path / 'single', 'single', 0, 0.89, 10)
  by = {r['method']: r for r in _rows(tmp_path)}
  assert by['maxl']['delta_uniform'] == pytest.approx(1.0)
  assert by['uniform']['delta_uniform'] is None
  if human < 0.9 + table.MIN_HEADROOM / 100:
    assert all(r['headroom_share'] is None for r in by.values())
    return
  assert by['maxl']['headroom_share'] == pytest.approx(0.25)
  assert by['human']['headroom_share'] == pytest.approx(1.0)
  assert by['single']['headroom_share'] == pytest.approx(-0.25)


def test_table_mean_and_sample_std_by_hand(tmp_path):
  for seed, (acc, wall) in enumerate([(0.90, 10), (0.92, 20), (0.94, 60)]):
    write_run(tmp_path / f'single{seed}', 'single', seed, acc, wall)
  for seed, (acc, info) in enumerate([(0.95, 0.5), (0.96, 0.7)]):
    scores = {'test_aux_information': info, 'test_aux_recovery_nmi': 0.25}
    if seed:  # ARI logged by one seed only: the mean of that one.
      scores['test_aux_recovery_ari'] = 0.125
    write_run(tmp_path / f'maxl{seed}', 'maxl', seed, acc, 40, scores=scores)
  write_run(tmp_path / 'low', 'maxl', 0, 0.5, 5, fraction=0.05)
  write_run(tmp_path / 'other', 'maxl', 0, 0.9, 50, schedule='interleaved')
  runs = finished_lib.find_runs([str(tmp_path)])
  groups = finished_lib.group_runs(runs)
  assert sorted(g.detail for g in groups) == [
    '',
    '',
    '',
    'schedule=interleaved',
  ]
  rows = table.table_rows(groups)
  single, maxl, low = (
    next(r for r in rows if r['method'] == 'single'),
    next(r for r in rows if r['method'] == 'maxl' and r['n'] == 2),
    next(r for r in rows if r['data'] == '5%'),
  )
  assert (single['n'], maxl['n'], low['n']) == (3, 2, 1)
  assert single['mean'] == pytest.approx(92.0)
  assert single['std'] == pytest.approx(2.0)  # sqrt((4 + 0 + 4) / 2).
  assert single['wall_time_s'] == pytest.approx(30.0)
  assert maxl['mean'] == pytest.approx(95.5)
  assert maxl['std'] == pytest.approx(math.sqrt(0.5))
  assert maxl['delta'] == pytest.approx(3.5)
  assert maxl['information'] == pytest.approx(0.6)
  assert maxl['information_std'] == pytest.approx(math.sqrt(0.02))
  assert (maxl['nmi'], maxl['nmi_std']) == (0.25, 0.0)
  assert (maxl['ari'], maxl['ari_std']) == (0.125, None)
  assert single['information'] is None and single['nmi'] is None
  assert low['std'] is None and low['delta'] is None  # No Single at 5%.
  text = table.results_markdown(groups, runs)
  assert (
    '| digits | single | — | 100% | 3 | 92.00 ± 2.00 | — | — | — | 30 '
    '| — | — | — |'
  ) in text
  assert (
    '| digits | maxl | 3 | 100% | 2 | 95.50 ± 0.71 | +3.50 | — | — | 40 '
    '| 0.600 ± 0.141 | 0.250 ± 0.000 | 0.125 |'
  ) in text
  assert '| digits | maxl (schedule=interleaved) | 3 | 100% | 1 |' in text
  assert '| digits | maxl | 3 | 5% | 1 | 50.00 | — | — | — | 5 |' in text


def test_paired_comparisons_by_hand(tmp_path):
  """Pairs by seed: differences (+3, +1, +2) pp -> mean 2, sd 1, t = 2√3."""
  for seed, acc in enumerate([0.80, 0.82, 0.84]):
    write_run(tmp_path / f'single{seed}', 'single', seed, acc, 10)
  for seed, acc in enumerate([0.83, 0.83, 0.86]):
    write_run(tmp_path / f'maxl{seed}', 'maxl', seed, acc, 10)
  write_run(tmp_path / 'maxl9', 'maxl', 9, 0.99, 10)  # No partner seed.
  groups = finished_lib.group_runs(finished_lib.find_runs([str(tmp_path)]))
  (row,) = table.paired_rows(groups, 'single')
  assert row['n'] == 3
  assert row['diff'] == pytest.approx(2.0)
  assert row['sd'] == pytest.approx(1.0)
  assert row['t'] == pytest.approx(2 * math.sqrt(3))
  assert row['p'] == pytest.approx(0.0742, abs=1e-4)  # t(2) two-sided.
  # 95% CI: t(0.975, 2) = 4.3027 times sd / √3.
  assert row['ci95'] == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
  assert table.paired_rows(groups, 'uniform') == []  # No Uniform group.
  assert '| single | 3 | +2.00 | [-0.48, +4.48] | 1.00 | 3.46 | 0.074 |' in (
    table.results_markdown(groups, finished_lib.find_runs([str(tmp_path)]))
  )


def unfinished(tmp_path, parent):
  run = tmp_path / 'unfinished'
  shutil.copytree(parent / 'maxl', run)
  (run / 'result.json').unlink()
  return [f'--workdir={run}']


BAD_INPUT = {
  'unfinished_run': (unfinished, 'no result.json'),
  'no_run': (lambda tmp, _: [f'--workdir={tmp}'], 'holds no run'),
  'workdir_not_there': (lambda tmp, _: [f'--workdir={tmp}/none'], 'no such'),
  'missing_workdir': (lambda *_: [], '--workdir is required'),
  'no_checkpoint_at_step': (
    lambda _, p: [f'--workdir={p}/maxl', '--step=5'],
    'no checkpoint at that step',
  ),
  'class_out_of_range': (
    lambda _, p: [f'--workdir={p}', '--classes=0,10'],
    'class 10 is out of range',
  ),
  'class_not_a_number': (
    lambda _, p: [f'--workdir={p}', '--classes=zero'],
    '--classes=zero',
  ),
  'bad_topk': (lambda _, p: [f'--workdir={p}', '--topk=0'], '--topk'),
  'missing_out': (lambda _, p: [f'--workdir={p}', '--out='], '--out'),
}


@pytest.mark.parametrize('name', sorted(BAD_INPUT))
def test_bad_input_is_one_error_line(name, tmp_path, parent):
  make_args, expected = BAD_INPUT[name]
  out = tmp_path / 'out'
  proc = analyze(f'--out={out}', *make_args(tmp_path, parent))
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = ep.error_lines(proc.stderr)
  assert expected in line, line
  assert 'Traceback' not in proc.stderr
  assert not out.exists()


def test_generator_runs_pair_with_entropy_only_on_the_same_split(tmp_path):
  """Against entropy_only: only maxl/frozen groups, and only the control
  with the same data.meta_fraction (the held-out split)."""
  for seed in range(2):
    write_run(tmp_path / f'eo{seed}', 'entropy_only', seed, 0.80, 10)
    write_run(tmp_path / f'maxl{seed}', 'maxl', seed, 0.83 + seed / 100, 10)
    write_run(tmp_path / f'uniform{seed}', 'uniform', seed, 0.90, 10)
    held = tmp_path / f'maxl_held{seed}'
    write_run(held, 'maxl', seed, 0.70, 10, balance='normalized')
    config = json.loads((held / 'config.json').read_text())
    config['data']['meta_fraction'] = 0.1
    (held / 'config.json').write_text(json.dumps(config))
  groups = finished_lib.group_runs(finished_lib.find_runs([str(tmp_path)]))
  (row,) = table.paired_rows(groups, 'entropy_only')  # Not uniform, not held.
  assert row['label'].split()[2] == 'maxl' and row['n'] == 2
  assert row['diff'] == pytest.approx(3.5)
