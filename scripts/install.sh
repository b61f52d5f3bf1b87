#!/usr/bin/env bash
# Installs what the tests need (`bash scripts/install.sh`, or `… test`) or only what the demo needs (`… demo`).
#
# Where: an active virtual environment, else the project's .venv, created on first use (scripts/python_env.sh).
# What, in order, each step logged:
#   1. torch, pinned in scripts/constraints.txt, from PyTorch's CPU index (TORA_TORCH_INDEX_URL overrides it), named
#      for this one command so no other package's source changes. A matching wheel on pip's find-links is taken
#      from disk. Skipped when that torch is already installed.
#   2. the pack itself, editable (`pip install -e ".[test]"` or ".[demo]"), with requirements from pyproject.toml,
#      constrained by scripts/constraints.txt so pip never resolves an unpinned torch.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/python_env.sh
source scripts/python_env.sh

extra="${1:-test}"
case "$extra" in
  test | demo) ;;
  *)
    tora_log "unknown argument '$extra': expected 'test' (what the tests need, the default) or 'demo'"
    exit 2
    ;;
esac
tora_select_python
pin=$(grep -m1 '^torch==' scripts/constraints.txt)
index="${TORA_TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
pip=("$TORA_PY" -m pip install --quiet --constraint scripts/constraints.txt)

if "$TORA_PY" -c "import importlib.metadata as m, sys; sys.exit(m.version('torch').split('+')[0] != '${pin#torch==}')" \
  2>/dev/null; then
  tora_log "1/2 $pin is already installed in $TORA_PY"
else
  tora_log "1/2 installing $pin (CPU build, from $index) into $TORA_PY — about a minute"
  # One retry: an unreachable index (offline, with the wheel on disk) costs seconds instead of minutes.
  if ! "${pip[@]}" --retries 1 --index-url "$index" "$pin"; then
    tora_log "could not install $pin for $("$TORA_PY" -V 2>&1) from $index: check that this machine reaches it," \
      "set TORA_TORCH_INDEX_URL to another PyTorch index, or activate an environment that already has $pin"
    exit 1
  fi
fi
tora_log "2/2 installing the pack (editable) with what the $extra needs (pyproject.toml [project.optional-dependencies] $extra)"
"${pip[@]}" --editable ".[$extra]"
case "$TORA_PY" in
  "$PWD/.venv/"*) tora_log "ready: run the pack's Python as .venv/bin/python, or first: source .venv/bin/activate" ;;
  *) tora_log "ready: installed into $TORA_PY" ;;
esac
