#!/usr/bin/env bash
# The demo on a fresh machine: installs the dependencies (pinned CPU torch), then runs the whole pipeline on the CPU.
# Outputs go to ./tora_demo (or the folder given as the first argument).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python -m tora_model demo --out "${1:-tora_demo}"
