#!/usr/bin/env bash
# JS tests of the TrajectoryCanvas editor: geometry unit tests + shared resample vectors, and the headless
# Chromium browser test (web/js mounted in tests/js/editor_page.html, driven with real mouse/keyboard).
# Installs Debian chromium when missing (needs root/apt) and the pinned playwright-core (npm ci).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v node >/dev/null 2>&1 || { echo "node (>= 20) and npm are needed for the JS tests" >&2; exit 1; }
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_PATH" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium fonts-liberation
  else
    echo "chromium not found at $CHROMIUM_PATH and no apt-get to install it" >&2
  fi
fi
# Fail (not skip) the browser test when chromium or playwright-core is missing; TORA_REQUIRE_BROWSER=0 opts out.
export TORA_REQUIRE_BROWSER="${TORA_REQUIRE_BROWSER:-1}"
npm ci --no-audit --no-fund
export CHROMIUM_PATH
node --test tests/js/
