"""Registry readiness of pyproject.toml: the rules `comfy node validate` (comfy-cli) and the registry spec apply.

comfy-cli parses [project] and [tool.comfy] and then runs `ruff check --select S102,S307,E702` (exec, eval, several
statements on one line); the registry spec (docs.comfy.org registry/specifications) asks for a name of letters,
digits and -_. not starting with a digit, a version, PublisherId, DisplayName, a square Icon of at most 400 px, a
PEP 440 `requires-comfyui`, a license and a Repository URL. The published files are what git tracks, minus
.comfyignore: the pack must still load from them.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from PIL import Image

from tests.test_nodes import PACK_ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; 3.10 skips this file

PYPROJECT = tomllib.loads((PACK_ROOT / "pyproject.toml").read_text())
COMFY = PYPROJECT["tool"]["comfy"]
ICON_PREFIX = "https://raw.githubusercontent.com/comfyui-tora/comfyui-tora/main/"


def test_project_fields():
    project = PYPROJECT["project"]
    assert re.fullmatch(r"[A-Za-z_.-][A-Za-z0-9_.-]{0,99}", project["name"])
    Version(project["version"])  # raises on anything that is not a version
    assert project["license"] and project["urls"]["Repository"].startswith("https://")
    assert not [d for d in project["dependencies"] if re.fullmatch(r"torch(vision|audio)?", d.strip())]


def test_tool_comfy_fields_and_icon():
    assert COMFY["PublisherId"] and re.fullmatch(r"[a-z0-9-]+", COMFY["PublisherId"])
    assert COMFY["DisplayName"].strip()
    assert "0.3.64" in SpecifierSet(COMFY["requires-comfyui"])  # the version the tests run on
    assert COMFY["Icon"].startswith(ICON_PREFIX)
    icon = PACK_ROOT / COMFY["Icon"][len(ICON_PREFIX) :]  # the URL serves this file once pushed
    with Image.open(icon) as image:
        assert image.width == image.height <= 400 and image.format in ("PNG", "JPEG", "GIF")


def test_comfy_cli_ruff_rules_pass():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed")
    run = subprocess.run(
        [ruff, "check", ".", "--select", "S102,S307,E702", "--no-cache", "--quiet"],
        cwd=PACK_ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-2000:]


def test_published_files_hold_the_pack():
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=PACK_ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    files = set(listed.stdout.split("\0"))  # NUL-separated: the example workflows' names hold spaces
    for needed in (
        "__init__.py",
        "pyproject.toml",
        "requirements.txt",
        "nodes/comfy_glue.py",
        "web/js/tora_canvas.js",
    ):
        assert needed in files, needed
    assert any(f.startswith("example_workflows/") and f.endswith(".json") for f in files)
