"""The real-ComfyUI tier's venv builder (tests/comfy_venv.py), checked without ComfyUI."""

from __future__ import annotations

import pytest

from tests.comfy_venv import READY_MARKER, ensure_venv, server_requirements


def test_requirements_skip_blank_comment_and_torch_lines():
    text = (
        "# core\n\ncomfyui-frontend-package==1.27.10\n  \ntorch\ntorchvision>=0.20  # ours is a shim\n"
        "TorchAudio\nnumpy>=1.25.0 # pinned\nav>=14.2.0\nspandrel; python_version >= '3.10'\n"
        "pkg @ https://example.invalid/pkg.whl#sha256=00\n"
    )
    assert server_requirements(text) == [
        "comfyui-frontend-package==1.27.10",
        "numpy>=1.25.0",
        "av>=14.2.0",
        "spandrel; python_version >= '3.10'",
        "pkg @ https://example.invalid/pkg.whl#sha256=00",
    ]


def test_failed_build_is_not_taken_as_ready(tmp_path):
    venv = tmp_path / "venv"
    builds = []

    def failing(path):
        (path / "bin").mkdir(parents=True)
        (path / "bin" / "python").write_text("")  # half-built: the interpreter exists, packages do not
        builds.append("failed")
        raise RuntimeError("pip failed")

    with pytest.raises(RuntimeError, match="pip failed"):
        ensure_venv(venv, failing)
    assert not (venv / READY_MARKER).exists()

    def working(path):
        assert not path.exists()  # the half-built venv was removed first
        (path / "bin").mkdir(parents=True)
        builds.append("built")

    assert ensure_venv(venv, working) == venv / "bin" / "python"
    assert (venv / READY_MARKER).is_file()
    assert ensure_venv(venv, failing) == venv / "bin" / "python"  # ready: not built again
    assert builds == ["failed", "built"]
