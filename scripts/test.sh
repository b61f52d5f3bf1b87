#!/usr/bin/env bash
# The whole test suite: installs dependencies (pinned CPU torch), lints, runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
ruff check .
python -m pytest
