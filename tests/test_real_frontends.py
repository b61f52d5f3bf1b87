"""Real-frontend tier on two frontends: the one ComfyUI 0.3.64 pins (1.27.10) and the newest on PyPI (1.5x).

Skipped unless COMFYUI_DIR points at a ComfyUI source tree (and node, npm playwright-core and /usr/bin/chromium are
there). For each frontend a ComfyUI server starts with the pack linked in (the newest through `--front-end-root`,
which 0.3.64 has), and then:
  - tests/js/comfyui.browser.test.mjs drives the Trajectory Canvas with real mouse and keyboard events: it draws,
    edits, saves and reloads, opens the example workflows and the template browser; on the newest frontend also in
    the Vue node renderer (1.27.10 renders no DOM widget there). Nothing may be skipped but that Vue test on 1.27.10;
  - every example workflow loads unchanged and queues the prompt to_api() builds (test_real_comfyui's check).

The newest frontend is `pip install --target`-ed once into TORA_NEWEST_FRONTEND (default /tmp/tora-frontend-newest;
delete it to fetch a newer one). A few minutes per frontend on 2 CPU cores.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.comfy_venv import build_server_venv, ensure_venv
from tests.test_nodes import PACK_ROOT
from tests.test_nodes_e2e import write_start_image
from tests.test_real_comfyui import (
    COMFY,
    PACK_LINK_NAME,
    VENV,
    Server,
    browser_tools,
    check_workflows_in_frontend,
)

pytestmark = pytest.mark.skipif(
    not COMFY, reason="COMFYUI_DIR is not set (path of a ComfyUI 0.3.64 source tree)"
)
NEWEST = Path(os.environ.get("TORA_NEWEST_FRONTEND", "/tmp/tora-frontend-newest"))
PACKAGE = "comfyui-frontend-package"
DIST_INFO = re.compile(r"comfyui_frontend_package-(.+)\.dist-info")


def installed_version(site: Path) -> str:
    (version,) = [m.group(1) for p in site.iterdir() if (m := DIST_INFO.fullmatch(p.name))]
    return version


def newest_frontend(python: Path) -> tuple[list[str], str]:
    """`--front-end-root <static dir>` of the newest frontend on PyPI, installed on first use, and its version."""

    def build(target: Path) -> None:
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--target", str(target), PACKAGE], check=True
        )

    ensure_venv(NEWEST, build)  # only a finished install is marked ready
    static = NEWEST / "comfyui_frontend_package" / "static"
    return ["--front-end-root", str(static)], installed_version(NEWEST)


def pinned_frontend(python: Path) -> tuple[list[str], str]:
    site = subprocess.run(
        [
            str(python),
            "-c",
            "import comfyui_frontend_package as p, pathlib; print(pathlib.Path(p.__file__).parents[1])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return [], installed_version(Path(site))


@pytest.mark.parametrize("frontend", ["pinned", "newest"])
def test_canvas_and_workflows_in_the_frontend(frontend, tmp_path):
    node = browser_tools()
    python = ensure_venv(VENV, build_server_venv(Path(COMFY)))
    args, version = (pinned_frontend if frontend == "pinned" else newest_frontend)(python)
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "custom_nodes" / PACK_LINK_NAME).symlink_to(PACK_ROOT, target_is_directory=True)
    (base / "input").mkdir()
    write_start_image(
        base / "input" / "tora_start_image.png", 96, 64
    )  # a LoadImage choice for the canvas test
    (base / "extra_model_paths.yaml").write_text("{}\n")
    server = Server(base)
    server.start(python, tuple(args))
    try:
        vue = frontend == "newest"
        env = {
            **os.environ,
            "TORA_COMFYUI_URL": server.url,
            "TORA_COMFYUI_FRONTEND": version,
            "TORA_COMFYUI_VUE": "1" if vue else "0",
            "TORA_REQUIRE_BROWSER": "1",
        }
        run = subprocess.run(
            [node, "--test", "tests/js/comfyui.browser.test.mjs"],
            cwd=PACK_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert "# fail 0" in run.stdout and f"# skipped {0 if vue else 1}" in run.stdout, run.stdout[-2000:]
        check_workflows_in_frontend(server, tmp_path)
    finally:
        server.stop()
