"""Imports run downward only (docs/library.md, Architecture).

The layers, lowest first: the core (the math, the networks, the label
sources, the data, the step functions and their state), the library API
on it, `training/` on the API or the core, then `experiments/`,
`benchmarks/` and `examples/`, and `studies/` on top. Every import
statement counts, function-level ones too. Nothing outside `studies/`
imports `studies/`, and the core's modules import one another without a
cycle.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ('maxl_jax', 'experiments', 'benchmarks', 'examples', 'studies')

# (layer, module prefixes), lowest first; the longest prefix decides.
LAYERS = (
  (0, ('maxl_jax.',)),  # The core: every maxl_jax module not named below.
  (1, ('maxl_jax.api', 'maxl_jax')),  # The library API (and the package).
  (2, ('maxl_jax.training',)),
  (3, ('experiments', 'benchmarks', 'examples')),
  (4, ('studies',)),
)


def _module(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix('').parts)
  if parts[-1] == '__init__':
    parts.pop()
  return '.'.join(parts)


def _layer(module: str) -> int:
  best, layer = -1, None
  for level, prefixes in LAYERS:
    for prefix in prefixes:
      exact = module == prefix.rstrip('.')
      inside = module.startswith(prefix.rstrip('.') + '.') or exact
      if prefix.endswith('.'):
        inside = module.startswith(prefix)
      if inside and len(prefix) > best:
        best, layer = len(prefix), level
  return layer


def _known(name: str) -> bool:
  return name.split('.')[0] in PACKAGES


def _resolve(node: ast.ImportFrom, name: str) -> str:
  """`from pkg import name`: the submodule pkg.name if there is one."""
  candidate = f'{node.module}.{name}'
  as_path = ROOT / candidate.replace('.', '/')
  if as_path.with_suffix('.py').exists() or as_path.is_dir():
    return candidate
  return node.module


def imports(path: pathlib.Path) -> set[str]:
  """The project modules that `path` imports, anywhere in the file."""
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names if _known(a.name))
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      if _known(node.module):
        out.update(_resolve(node, a.name) for a in node.names)
  return out


def graph() -> dict[str, set[str]]:
  edges = {}
  for package in PACKAGES:
    for path in sorted((ROOT / package).rglob('*.py')):
      edges[_module(path)] = imports(path)
  return edges


def test_imports_run_downward():
  upward = [
    f'{module} (layer {_layer(module)}) imports {target} '
    f'(layer {_layer(target)})'
    for module, targets in graph().items()
    for target in sorted(targets)
    if _layer(target) > _layer(module)
  ]
  assert not upward, '\n'.join(upward)


def test_the_core_has_no_import_cycle():
  edges = {
    m: {t for t in ts if _layer(t) == 0 and t != m}
    for m, ts in graph().items()
    if _layer(m) == 0
  }
  done, cycles = set(), []

  def visit(module, stack):
    if module in stack:
      cycles.append(' -> '.join([*stack[stack.index(module) :], module]))
      return
    if module in done:
      return
    for target in sorted(edges.get(module, ())):
      visit(target, [*stack, module])
    done.add(module)

  for module in sorted(edges):
    visit(module, [])
  assert not cycles, '\n'.join(cycles)


def test_the_check_sees_an_upward_import(tmp_path):
  """The api -> training import this test exists to catch."""
  path = tmp_path / 'api.py'
  path.write_text('def f():\n  from maxl_jax.training import step_fns\n')
  (target,) = imports(path)
  assert _layer('maxl_jax.api') < _layer(target) == _layer('maxl_jax.training')


# Modules that name what others implement: they import none of those
# implementations (nor the networks), so that every implementation can
# import them.
FLOORS = {
  'maxl_jax.training.protocol': (
    'maxl_jax.training.maxl_run',
    'maxl_jax.training.combiner_run',
    'maxl_jax.training.contract',
    'maxl_jax.networks',
  ),
  'maxl_jax.estimators.base': ('maxl_jax.estimators.', 'maxl_jax.networks'),
  'maxl_jax.labels.base': ('maxl_jax.labels.', 'maxl_jax.networks'),
}


def test_interfaces_sit_below_their_implementations():
  edges = graph()
  above = [
    f'{module} imports {target}'
    for module, banned in FLOORS.items()
    for target in sorted(edges[module])
    if any(target == b.rstrip('.') or target.startswith(b) for b in banned)
    and target != module
  ]
  assert not above, '\n'.join(above)
