# Sourced by scripts/install.sh, demo.sh and test.sh (not run on its own): chooses the Python they all use.
#
# Inside an active virtual environment (venv, virtualenv or conda) that environment is used. Otherwise the project's
# own .venv (git-ignored) is created on first use, with `python3` (or TORA_PYTHON=/path/to/python), so nothing is
# installed into the system Python — which Debian and Ubuntu refuse anyway (PEP 668, "externally-managed").
# Supported: Python 3.10 to 3.13, the versions torch 2.13.0 publishes wheels for.

tora_log() { printf '[tora] %s\n' "$*" >&2; }

# The interpreter that creates .venv: $TORA_PYTHON, else python3, else python.
tora_base_python() {
  local candidate
  if [ -n "${TORA_PYTHON:-}" ]; then
    command -v "$TORA_PYTHON" && return 0
    tora_log "TORA_PYTHON=$TORA_PYTHON: no such program; set it to a Python 3.10-3.13 interpreter, or unset it"
    return 1
  fi
  for candidate in python3 python; do
    command -v "$candidate" && return 0
  done
  tora_log "no python3 on the PATH: install Python 3.10-3.13 (Debian/Ubuntu: apt-get install python3 python3-venv)" \
    "or set TORA_PYTHON=/path/to/python3"
  return 1
}

# Exit status 0 when "$1" is a Python this project supports; otherwise says which version it found.
tora_check_version() {
  local version
  version=$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || return 1
  case "$version" in
    3.10 | 3.11 | 3.12 | 3.13) return 0 ;;
  esac
  tora_log "$1 is Python $version; this project needs Python 3.10-3.13 (torch 2.13.0 has wheels for those):" \
    "install one and set TORA_PYTHON=/path/to/python3.X"
  return 1
}

# Sets TORA_PY to the Python to install into and run with (see the top of this file).
tora_select_python() {
  local base
  base=$(tora_base_python) || return 1
  if "$base" -c 'import os, sys; sys.exit(not (sys.prefix != sys.base_prefix or os.environ.get("CONDA_PREFIX") == sys.prefix))'; then
    tora_check_version "$base" || return 1
    TORA_PY="$base"
    return 0
  fi
  if [ -x .venv/bin/python ] && .venv/bin/python -m pip --version >/dev/null 2>&1; then
    TORA_PY="$PWD/.venv/bin/python"
    return 0
  fi
  tora_check_version "$base" || return 1
  tora_log "creating the project's virtual environment .venv with $base (not inside one already)"
  rm -rf .venv
  if ! "$base" -m venv .venv; then
    rm -rf .venv
    tora_log "$base -m venv failed: install the venv module (Debian/Ubuntu: apt-get install python3-venv)," \
      "or activate a virtual environment of your own and run this again"
    return 1
  fi
  TORA_PY="$PWD/.venv/bin/python"
}
