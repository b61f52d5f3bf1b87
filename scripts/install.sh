#!/usr/bin/env bash
# Installs what the demo and the tests need, with torch pinned so pip never resolves a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -r requirements.txt
python - <<'PY' > /tmp/tora_test_requirements.txt
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["test"]))
PY
python -m pip install --quiet -r /tmp/tora_test_requirements.txt
