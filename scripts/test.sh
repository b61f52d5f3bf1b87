#!/usr/bin/env bash
# The whole test suite: installs what the tests need (pinned CPU torch; see scripts/install.sh), lints, runs
# pytest, then the JS tests (geometry with node --test, the editor in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
# shellcheck source=scripts/python_env.sh
source scripts/python_env.sh
tora_select_python
"$TORA_PY" -m ruff check .
"$TORA_PY" -m ruff format --check .
"$TORA_PY" -m pytest
bash scripts/test_js.sh
