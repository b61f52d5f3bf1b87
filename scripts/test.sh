#!/usr/bin/env bash
# The whole test suite: installs dependencies (pinned CPU torch), lints, runs pytest, then the JS tests
# (geometry with node --test, the editor in headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
ruff check .
ruff format --check .
python -m pytest
bash scripts/test_js.sh
