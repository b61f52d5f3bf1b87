"""The real-ComfyUI tier's server venv: built from ComfyUI's requirements.txt, and marked ready only once complete.

Used by `tests/test_real_comfyui.py`; `tests/test_comfy_venv.py` checks it without ComfyUI. torch is the project's
pin (`scripts/constraints.txt`, the CPU build from PyTorch's CPU index, like `scripts/install.sh`); ComfyUI's own
torch, torchvision and torchaudio lines are dropped, so pip never resolves an unpinned (CUDA) torch.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.test_nodes import PACK_ROOT

CONSTRAINTS = PACK_ROOT / "scripts" / "constraints.txt"
TORCH_INDEX = os.environ.get("TORA_TORCH_INDEX_URL", "https://download.pytorch.org/whl/cpu")
READY_MARKER = "tora-venv-ready"  # written into the venv after every install step succeeded
TORCH_PACKAGES = ("torch", "torchvision", "torchaudio")
COMMENT = re.compile(r"(^|\s)#.*$")  # pip's rule: '#' at the start or after whitespace starts a comment
NAME = re.compile(r"[A-Za-z0-9._-]+")


def server_requirements(text: str) -> list[str]:
    """The requirements of a requirements.txt as pip arguments: no blank or comment lines, no torch packages."""
    requirements = []
    for line in text.splitlines():
        requirement = COMMENT.sub("", line).strip()
        name = NAME.match(requirement)
        if name and name.group(0).lower() not in TORCH_PACKAGES:
            requirements.append(requirement)
    return requirements


def ensure_venv(venv: Path, build: Callable[[Path], None]) -> Path:
    """The venv's python; `build(venv)` fills a new venv, and only a build that finished marks it ready.

    A venv without the marker is the remains of a build that failed or was interrupted: it is removed and built
    again, never taken as ready because `bin/python` exists.
    """
    python = venv / "bin" / "python"
    if (venv / READY_MARKER).is_file():
        return python
    if venv.exists():
        shutil.rmtree(venv)
    build(venv)
    (venv / READY_MARKER).write_text("built by tests/comfy_venv.py\n")
    return python


def build_server_venv(comfy_dir: Path) -> Callable[[Path], None]:
    """A `build` for `ensure_venv`: ComfyUI's requirements + the pack's, with the pinned CPU torch."""

    def build(venv: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = str(venv / "bin" / "python")
        pip = [python, "-m", "pip", "install", "-q", "--constraint", str(CONSTRAINTS)]
        pin = next(line for line in CONSTRAINTS.read_text().splitlines() if line.startswith("torch=="))
        subprocess.run([*pip, "--retries", "1", "--index-url", TORCH_INDEX, pin], check=True)
        requirements = server_requirements((comfy_dir / "requirements.txt").read_text())
        subprocess.run(
            [*pip, *requirements, "requests", "-r", str(PACK_ROOT / "requirements.txt")], check=True
        )
        subprocess.run([python, "-m", "pip", "uninstall", "-y", "-q", "torchvision"], check=False)

    return build
