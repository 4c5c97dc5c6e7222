#!/usr/bin/env bash
# One prepared accelerator check (benchmarks/device_check.py): at most ~8
# minutes, nothing downloaded. Writes OUT_DIR/device_check.md (one table),
# device_check.json and the runs' logs.
#
#   benchmarks/device_check.sh OUT_DIR
#
# Environment:
#   DEVICE_CHECK_TINY=1     CPU dry-run sizes (tests/test_device_check.py).
#   DEVICE_CHECK_BUDGET_S   seconds for the whole check (default 450).
#   DEVICE_CHECK_WHEELS     a directory of wheels to install, offline and
#                           without dependencies, when ml_collections or clu
#                           is missing (default: benchmarks/wheels if it
#                           exists). Prepare it on a networked machine:
#     pip download --no-deps -d benchmarks/wheels ml-collections==1.1.0 \
#       clu==0.0.12 PyYAML wrapt
#                           (never committed: .gitignore'd; carry it).
set -euo pipefail
OUT="${1:?usage: benchmarks/device_check.sh OUT_DIR}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
PY="${PYTHON:-python}"

missing() {
  "$PY" - <<'EOF'
import importlib.util
print(' '.join(m for m in ('ml_collections', 'yaml', 'clu', 'wrapt')
               if importlib.util.find_spec(m) is None))
EOF
}

WHEELS="${DEVICE_CHECK_WHEELS:-benchmarks/wheels}"
need="$(missing)"
if [[ -n "$need" ]]; then
  if [[ -d "$WHEELS" ]]; then
    echo "installing from $WHEELS (missing: $need)"
    "$PY" -m pip install --quiet --no-index --no-deps "$WHEELS"/*.whl
    need="$(missing)"
  fi
  if [[ -n "$need" ]]; then
    echo "error: missing $need and no wheel for it in $WHEELS (see the" \
      "header of benchmarks/device_check.sh)." >&2
    exit 2
  fi
fi

args=(--out "$OUT" --budget_s "${DEVICE_CHECK_BUDGET_S:-450}")
[[ "${DEVICE_CHECK_TINY:-0}" == 1 ]] && args+=(--tiny)
exec "$PY" benchmarks/device_check.py "${args[@]}"
