"""The tables and ratio lines of bench_steps.py's results (Markdown).

`print_table`: ms per step and its ratio to single; `print_memory`: XLA's
memory analysis beside the RSS (the peer's too); `print_ratios`: the ratios
of medians per backbone, each against its target; `print_peer`: ours / the
peer's per step, time and peak RSS. Columns and targets:
benchmarks/README.md.
"""

# Our kind -> the peer's kind it is compared with (peer_torch.py's kinds).
PEER_KINDS = {'single': 'single', 'theta1': 'theta1', 'meta_unrolled': 'meta2',
              'meta_structured': 'meta2', 'meta_first_order': 'fd',
              'interleaved_unrolled': 'interleaved2',
              'interleaved_structured': 'interleaved2',
              'interleaved_first_order': 'interleaved_fd'}  # fmt: skip
TARGETS = {'meta': 3.0, 'paper': 4.5, 'interleaved': 3.2}  # x single.
TARGET_BACKBONES = ('convnet4', 'vgg16')  # The ratio targets.
MAX_COMPILE_S, PEER_META_SPEEDUP = 30.0, 1.2
META_EVERY = (1, 5, 25)  # θ2 every k θ1 steps (interleaved), amortised.


def _fmt(value, spec):
  return '-' if value is None else format(value, spec)


def label(result):
  """'vgg16', or 'vgg16+blocks' with a remat setting other than none."""
  remat = result.get('remat', 'none')
  return result['backbone'] + ('' if remat == 'none' else f'+{remat}')


def print_memory(results, peer):
  """Markdown table: XLA's memory analysis, RSS, and the peer's RSS."""
  peer_rss = {(r['backbone'], r['kind']): r.get('peak_rss_mb') for r in peer}
  print("\nMemory (MB): XLA's buffer assignment and the process RSS\n")
  print('| backbone | kind | XLA temp | XLA args | XLA out | XLA alias |'
        ' XLA total | RSS compiled | peak RSS | steps peak RSS |'
        ' device peak | peer RSS | XLA total / peer RSS |'
        ' peak RSS / peer RSS | steps peak / peer RSS |')  # fmt: skip
  print('|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|')
  for r in results:
    if 'error' in r:
      continue
    p = peer_rss.get((r['backbone'], PEER_KINDS.get(r['kind'])))
    total, rss = r.get('xla_total_mb'), r.get('peak_rss_mb')
    cells = [r.get(f'xla_{n}_mb') for n in ('temp', 'argument', 'output')]
    steps = r.get('peak_rss_steps_mb')  # Compilation excluded.
    cells += [r.get('xla_alias_mb'), total, r.get('rss_compiled_mb'), rss]
    cells += [steps, r.get('device_peak_mb'), p]
    ratios = [total, rss, steps]
    print(
      f'| {label(r)} | {r["kind"]} | '
      + ' | '.join(_fmt(c, '.0f') for c in cells)
      + ''.join(f' | {_fmt(p and x and x / p, ".2f")}' for x in ratios)
      + ' |'
    )


def print_table(results, title):
  """Markdown table: ms per step, x single, GFLOP, compile s, peak RSS."""
  ms = {(label(r), r['kind']): r.get('median_ms') for r in results}
  print(f'\n{title}\n')
  print('| backbone | kind | median ms | min ms | max ms | x single | GFLOP |'
        ' compile s | peak RSS MB | other_cpu |')  # fmt: skip
  print('|---|---|--:|--:|--:|--:|--:|--:|--:|--:|')
  for r in results:
    if 'error' in r:
      print(f'| {label(r)} | {r["kind"]} | ERROR {r["error"][-80:]!r} |')
      continue
    if r.get('median_ms') is None:  # --memory_only: compiled, not run.
      continue
    single = ms.get((label(r), 'single'))
    print(
      f'| {label(r)} | {r["kind"]} | {r["median_ms"]:.1f} | '
      f'{r["min_ms"]:.1f} | {r["max_ms"]:.1f} | '
      f'{_fmt(single and r["median_ms"] / single, ".2f")} | '
      f'{_fmt(r.get("gflop"), ".1f")} | '
      f'{_fmt(r.get("compile_s"), ".1f")} | {r["peak_rss_mb"]:.0f} | '
      f'{_fmt(r.get("other_cpu"), ".2f")} |'
    )


def print_ratios(results, peer, methods):
  """Ratio lines per backbone (of medians), each with its target verdict.

  `methods`: the estimators (and variants) whose meta and interleaved kinds
  are reported, in order.
  """
  ms = {(label(r), r['kind']): r['median_ms'] for r in results if 'n' in r}
  pms = {(r['backbone'], r['kind']): r['median_ms'] for r in peer if 'n' in r}
  print()
  for bb in dict.fromkeys(label(r) for r in results):
    t = {k: v for (b, k), v in ms.items() if b == bb}
    base = bb.split('+')[0]

    def line(name, limit, pairs, at_most=True, bb=bb, base=base):
      parts = []
      for key, value in pairs:
        ok = value <= limit if at_most else value >= limit
        target = base in TARGET_BACKBONES
        verdict = (' ok' if ok else ' MISS') if target else ''
        parts.append(f'{key} {value:.2f}x{verdict}')
      if parts:
        sign = '<=' if at_most else '>='
        print(f'{bb} {name} (target {sign} {limit}): {", ".join(parts)}')

    one = t.get('single')
    meta = {m: t[f'meta_{m}'] for m in methods if f'meta_{m}' in t}
    inter = {
      m: t[f'interleaved_{m}'] for m in methods if f'interleaved_{m}' in t
    }
    if one:
      line(
        'meta/single', TARGETS['meta'], [(m, v / one) for m, v in meta.items()]
      )
      if 'theta1' in t:
        paper = [(m, (t['theta1'] + v) / one) for m, v in meta.items()]
        line('paper epoch/single', TARGETS['paper'], paper)
      line(
        'interleaved epoch/single',
        TARGETS['interleaved'],
        [(m, v / one) for m, v in inter.items()],
      )
      if 'theta1' in t:  # θ2 every k θ1 steps: (k-1) θ1 steps + 1 both.
        for m, v in inter.items():
          amortised = [
            (f'k={k}', ((k - 1) * t['theta1'] + v) / (k * one))
            for k in META_EVERY
          ]
          print(
            f'{bb} {m} every k, epoch/single: '
            + ', '.join(f'{key} {value:.2f}x' for key, value in amortised)
          )
    p = {
      k: pms[base, v]
      for k, v in PEER_KINDS.items()
      if (base, v) in pms and k in t
    }
    line(
      'ours/peer',
      1.0,
      [(f'{k}/{PEER_KINDS[k]}', t[k] / v) for k, v in p.items()],
    )
    fast = [(k, v / t[k]) for k, v in p.items() if PEER_KINDS[k] == 'meta2']
    line('peer meta2 / our meta', PEER_META_SPEEDUP, fast, at_most=False)
  done = [r for r in results if 'compile_s' in r]
  if done:
    worst = max(done, key=lambda r: r['compile_s'])
    print(
      f'compile (target <= {MAX_COMPILE_S:.0f} s per step function): max '
      f'{worst["compile_s"]:.1f} s ({worst["backbone"]} {worst["kind"]})'
      + (' ok' if worst['compile_s'] <= MAX_COMPILE_S else ' MISS')
    )
  others = [r['other_cpu'] for r in results + peer if 'other_cpu' in r]
  if others and max(others) > 0.05:
    print(f'WARNING: other_cpu up to {max(others):.2f}: machine busy; rerun.')


def print_peer(results, peer):
  """Markdown table: ours / the peer's per step, median time and peak RSS
  (each side's RSS is that of its own process)."""
  theirs = {(r['backbone'], r['kind']): r for r in peer if 'n' in r}
  rows = []
  for r in results:
    p = theirs.get((r['backbone'], PEER_KINDS.get(r['kind'])))
    if p is None or 'n' not in r:
      continue
    ms, rss = r['median_ms'], r.get('peak_rss_mb')
    steps, theirs_rss = r.get('peak_rss_steps_mb'), p['peak_rss_mb']
    rows.append(
      f'| {label(r)} | {r["kind"]} | {p["kind"]} | {ms:.1f} | '
      f'{p["median_ms"]:.1f} | {ms / p["median_ms"]:.2f} | '
      f'{_fmt(rss, ".0f")} | {_fmt(steps, ".0f")} | {theirs_rss:.0f} | '
      f'{_fmt(rss and rss / theirs_rss, ".2f")} | '
      f'{_fmt(steps and steps / theirs_rss, ".2f")} |'
    )
  if rows:
    print('\nOurs against the PyTorch peer (median ms, peak RSS MB; steps:'
          ' the peak while stepping, compilation excluded)\n')
    print('| backbone | ours | peer | ours ms | peer ms | ours / peer |'
          ' our RSS | our steps RSS | peer RSS | RSS ours / peer |'
          ' steps RSS / peer |')  # fmt: skip
    print('|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|')
    print('\n'.join(rows))
