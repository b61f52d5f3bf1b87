#!/usr/bin/env bash
# The demo on a fresh machine: installs what the demo needs (pinned CPU torch, the pack, imageio + imageio-ffmpeg
# for the .mp4 files; see scripts/install.sh), then runs the trained tiny Tora on the CPU.
# Outputs go to ./tora_demo (or the folder given as the first argument).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh demo
# shellcheck source=scripts/python_env.sh
source scripts/python_env.sh
tora_select_python
"$TORA_PY" -m tora_model demo --out "${1:-tora_demo}"
