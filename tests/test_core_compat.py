"""scripts/core_compat.py: the pack's core names against the recorded 0.38.1 signatures, a core tree, and a core
where a name is gone or a call no longer binds (written here as a tiny stand-in tree)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from tests.test_nodes import PACK_ROOT

SCRIPT = PACK_ROOT / "scripts" / "core_compat.py"
MANIFEST = PACK_ROOT / "scripts" / "core_signatures.json"


@pytest.fixture(scope="module")
def compat():
    spec = importlib.util.spec_from_file_location("core_compat", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["core_compat"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def statuses(compat, defs):
    uses = compat.pack_uses() + compat.instance_uses()
    return {
        use.qualified + ("()" if use.positional is not None else ""): status
        for status, use, _ in compat.run(defs, uses)
    }


def test_the_pack_uses_are_found(compat):
    names = {use.qualified for use in compat.pack_uses()}
    for name in (
        "comfy.model_management.load_models_gpu",
        "comfy.model_patcher.ModelPatcher",
        "folder_paths.add_model_folder_path",
        "comfy.sd.CLIPType.COGVIDEOX",
        "comfy.utils.ProgressBar",
        "comfy.ldm.modules.attention.optimized_attention",
    ):
        assert name in names


def test_recorded_newest_core_has_every_name_and_every_call_binds(compat):
    manifest = json.loads(MANIFEST.read_text())
    found = statuses(compat, compat.manifest_definitions(manifest))
    assert "GONE" not in found.values() and "NO-BIND" not in found.values(), found
    assert (
        found["comfy.sd.CLIPType.COGVIDEOX"] == "ok"
        and found["comfy.model_management.load_models_gpu()"] == "ok"
    )
    assert compat.main(["--manifest", str(MANIFEST)]) == 0


def test_a_gone_name_or_a_call_that_no_longer_binds_fails(compat, tmp_path):
    (tmp_path / "comfy").mkdir()
    (tmp_path / "comfyui_version.py").write_text('__version__ = "9.9.9"\n')
    (tmp_path / "comfy" / "model_management.py").write_text(
        "def load_models_gpu(models, memory_required=0):\n    pass\n"  # force_full_load removed; the rest gone
    )
    found = statuses(compat, compat.tree_definitions(tmp_path, {"comfy.model_management"}))
    assert found["comfy.model_management.load_models_gpu()"] == "NO-BIND"
    assert found["comfy.model_management.get_torch_device()"] == "GONE"
    assert compat.main(["--core", str(tmp_path)]) == 1


@pytest.mark.parametrize(
    ("params", "positional", "keywords", "why"),
    [
        (["a", "b="], 1, ("b",), None),
        (["a", "b="], 3, (), "3 positional arguments"),
        (["a", "**kw"], 1, ("z",), None),
        (["a", "b"], 1, (), "required ['b'] not given"),
        (["a"], 1, ("a",), "'a' given twice"),
        (["a", "^k"], 1, (), "required ['k'] not given"),
    ],
)
def test_binding_rules(compat, params, positional, keywords, why):
    result = compat.binds(params, positional, keywords)
    assert result == why or (why is not None and result.startswith(why))


@pytest.mark.skipif(
    not os.environ.get("COMFYUI_DIR"), reason="COMFYUI_DIR is not set (a ComfyUI source tree)"
)
def test_against_the_comfyui_tree_in_comfyui_dir(compat):
    found = statuses(
        compat,
        compat.tree_definitions(
            Path(os.environ["COMFYUI_DIR"]),
            {
                "comfy.model_management",
                "comfy.model_patcher",
                "comfy.utils",
                "comfy.sd",
                "comfy.cli_args",
                "folder_paths",
                "comfy.ldm.modules.attention",
            },
        ),
    )
    assert "GONE" not in found.values() and "NO-BIND" not in found.values(), found
