"""Node contract tests: ids, INPUT_TYPES shape, tooltips, return types, categories, function signatures.

The pack is imported the way ComfyUI imports it — as a package under an arbitrary folder name — so the relative
imports inside it are exercised too. ComfyUI itself is absent here: nodes/comfy_glue.py falls back to plain torch.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "tora_pack_under_test"  # any folder name must work
FIXED_IDS = {
    "LoadToraModel",
    "TrajectoryCanvas",
    "TrajectoryToMotionLatent",
    "ToraSampler",
    "MotionVAEDecode",
}
COMFY_IMPORT = re.compile(
    r"^\s*(import|from)\s+(comfy\b|comfy_api|folder_paths|latent_preview|server\b)", re.M
)


def load_pack():
    """Import the repository root as a package named PACK_NAME (what ComfyUI does with custom_nodes/<dir>)."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


def all_inputs(cls) -> dict[str, tuple]:
    types = cls.INPUT_TYPES()
    return {
        name: spec for section in ("required", "optional") for name, spec in types.get(section, {}).items()
    }


@pytest.fixture(scope="module")
def pack():
    return load_pack()


def test_mappings_and_web_directory(pack):
    assert FIXED_IDS <= set(pack.NODE_CLASS_MAPPINGS)
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(pack.NODE_CLASS_MAPPINGS)
    assert pack.WEB_DIRECTORY == "./web/js"
    assert (PACK_ROOT / "web" / "js").is_dir()


def test_pack_imports_only_relatively():
    """Every pack-internal import is relative, so the pack works under any custom_nodes folder name."""
    for path in (PACK_ROOT / "nodes").glob("*.py"):
        source = path.read_text()
        assert "from tora_model" not in source and "import tora_model" not in source, path.name
        assert "from nodes" not in source, path.name


def test_only_glue_imports_comfy():
    for path in [*(PACK_ROOT / "nodes").glob("*.py"), *(PACK_ROOT / "tora_model").rglob("*.py")]:
        if path.name == "comfy_glue.py":
            continue
        assert not COMFY_IMPORT.search(path.read_text()), path.name


@pytest.mark.parametrize("node_id", sorted(load_pack().NODE_CLASS_MAPPINGS))
def test_node_contract(pack, node_id):
    cls = pack.NODE_CLASS_MAPPINGS[node_id]
    types = cls.INPUT_TYPES()
    assert set(types) <= {"required", "optional", "hidden"}, types.keys()
    assert cls.CATEGORY.startswith("Tora/")
    inputs = all_inputs(cls)
    for name, spec in inputs.items():
        assert isinstance(spec, tuple) and len(spec) == 2, (name, spec)
        kind, options = spec
        assert isinstance(kind, (str, list)), (name, kind)
        assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
        if kind in ("INT", "FLOAT"):
            assert options["min"] <= options["default"] <= options["max"], name
        if isinstance(kind, list) and "default" in options:
            assert options["default"] in kind, name
    assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
    assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
    function = getattr(cls, cls.FUNCTION)
    params = inspect.signature(function).parameters
    hidden = set(types.get("hidden", {}))
    for name in types["required"]:
        assert name in params and params[name].default is inspect.Parameter.empty, (node_id, name)
    for name in [*types.get("optional", {}), *hidden]:
        assert name in params and params[name].default is not inspect.Parameter.empty, (node_id, name)
    accepted = set(inputs) | hidden | {"self"}
    assert set(params) <= accepted, (node_id, set(params) - accepted)


def test_types_between_nodes_are_frozen(pack):
    import dataclasses

    from_types = pack.nodes.types
    for cls in (from_types.ToraModel, from_types.ToraVAE, pack.tora_model.trajectory.Trajectory):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls
    assert pack.tora_model.motion_guidance.MotionGuidance.__dataclass_params__.frozen


def test_sampler_defaults_follow_official_inference(pack):
    inputs = all_inputs(pack.NODE_CLASS_MAPPINGS["ToraSampler"])
    defaults = {name: spec[1].get("default") for name, spec in inputs.items()}
    assert (defaults["width"], defaults["height"], defaults["frames"]) == (720, 480, 49)
    assert (defaults["steps"], defaults["cfg"], defaults["dynamic_cfg"]) == (50, 6.0, True)
    assert defaults["sampler"] == "dpmpp_2m_sde"
    assert inputs["seed"][1]["control_after_generate"] is True


def test_model_folders_list_files_and_model_folders(pack, tmp_path, monkeypatch):
    """Loose files are entries; a sharded/diffusers folder and a split CogVideoX-5b-Tora folder are one entry each."""
    glue = pack.nodes.comfy_glue
    monkeypatch.setenv("TORA_MODELS_DIR", str(tmp_path))
    files = [
        "tora/t2v/mp_rank_00_model_states.pt",
        "tora/notes.txt",
        "diffusion_models/Tora_T2V_diffusers/transformer/diffusion_pytorch_model.safetensors.index.json",
        "diffusion_models/Tora_T2V_diffusers/transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
        "diffusion_models/Tora_T2V_diffusers/transformer/diffusion_pytorch_model-00002-of-00002.safetensors",
        "CogVideo/CogVideoX-5b-Tora/fuser/fuser.safetensors",
        "CogVideo/CogVideoX-5b-Tora/traj_extractor/traj_extractor.safetensors",
    ]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    assert glue.list_models(glue.TRANSFORMER_FOLDERS) == [
        "CogVideo/CogVideoX-5b-Tora/",
        "diffusion_models/Tora_T2V_diffusers/transformer/",
        "tora/t2v/mp_rank_00_model_states.pt",
        "tora/tiny_tora/transformer.safetensors",  # bundled with the pack (models/ is the last tora path)
        "tora/tiny_tora/vae/",
    ]
    assert glue.list_motion_module_folders(("CogVideo", "tora")) == ["CogVideo/CogVideoX-5b-Tora/"]
    assert glue.resolve_model("tora/t2v/mp_rank_00_model_states.pt", ("tora",)) == tmp_path / files[0]
    with pytest.raises(
        pack.tora_model.errors.CheckpointError, match="i2v/mp_rank_00_model_states.pt.*'tora' folder"
    ):
        glue.resolve_model("tora/i2v/mp_rank_00_model_states.pt", ("tora",))


def test_bundled_tiny_model_is_listed_once_in_the_right_combos(pack, tmp_path, monkeypatch):
    """models/tiny_tora/ of the pack: the transformer in `model`, its vae/ in `vae`, nothing in the T5 list, no
    README; a user's own tora/tiny_tora/ comes first and is found first."""
    monkeypatch.setenv("TORA_MODELS_DIR", str(tmp_path))
    glue, loaders = pack.nodes.comfy_glue, pack.nodes.loaders
    assert glue.folder_roots("tora") == [tmp_path / "tora", PACK_ROOT / "models"]
    assert glue.folder_roots("vae") == [tmp_path / "vae"]
    model_inputs = loaders.LoadToraModel.INPUT_TYPES()["required"]
    assert model_inputs["model"][0] == ["tora/tiny_tora/transformer.safetensors"]
    assert model_inputs["vae"][0] == ["(from model file)", "tora/tiny_tora/vae/"]
    assert loaders.LoadToraTextEncoder.INPUT_TYPES()["required"]["text_encoder"][0] == []
    assert not any("README" in e for e in glue.list_models(("tora",)))
    mine = tmp_path / "tora" / "tiny_tora" / "transformer.safetensors"
    mine.parent.mkdir(parents=True)
    mine.touch()
    assert glue.resolve_model("tora/tiny_tora/transformer.safetensors", ("tora",)) == mine


def test_combo_roles_follow_a_replaced_file(pack, tmp_path, monkeypatch):
    """The st_dit check behind the combos is remembered per file version: replacing a file changes its lists."""
    monkeypatch.setenv("TORA_MODELS_DIR", str(tmp_path))
    loaders = pack.nodes.loaders
    user_file = tmp_path / "tora" / "mine.safetensors"
    user_file.parent.mkdir(parents=True)
    shutil.copyfile(PACK_ROOT / "models" / "tiny_tora" / "transformer.safetensors", user_file)
    assert "tora/mine.safetensors" not in loaders.LoadToraModel.INPUT_TYPES()["required"]["vae"][0]
    save_file({"weight": torch.zeros(2)}, str(user_file))  # same name, now a plain checkpoint
    assert "tora/mine.safetensors" in loaders.LoadToraModel.INPUT_TYPES()["required"]["vae"][0]
