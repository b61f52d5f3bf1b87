"""Every example workflow checked against the node definitions it uses.

Node types must be ours or one of the core nodes listed below (their definitions written out from ComfyUI
0.3.64's nodes.py / comfy_extras, plus the frontend-only Note). Links must join an output and an input of the
same declared type; widgets_values must match the widget inputs in count, type, range and combo choices; the
`models` list must name every model file a widget refers to.
"""

from __future__ import annotations

import base64
import inspect
import io
import json

import numpy as np
import pytest

from tests.test_nodes import PACK_ROOT, load_pack

WORKFLOWS = sorted((PACK_ROOT / "example_workflows").glob("*.json"))
FILES = "<model files>"  # a combo filled from a model folder
CONTROL_VALUES = ["fixed", "increment", "decrement", "randomize"]
CLIP_TYPES = [
    "stable_diffusion",
    "stable_cascade",
    "sd3",
    "stable_audio",
    "mochi",
    "ltxv",
    "pixart",
    "cosmos",
    "lumina2",
    "wan",
    "hidream",
    "chroma",
    "ace",
    "omnigen2",
    "qwen_image",
    "hunyuan_image",
]
# Core nodes the examples use: inputs in declaration order (ComfyUI V1 style) and output types.
CORE_NODES = {
    "CLIPLoader": (
        {
            "required": {"clip_name": (FILES, {"folder": "text_encoders"}), "type": (CLIP_TYPES, {})},
            "optional": {"device": (["default", "cpu"], {})},
        },
        ("CLIP",),
    ),
    "ConditioningZeroOut": ({"required": {"conditioning": ("CONDITIONING", {})}}, ("CONDITIONING",)),
    "LoadImage": ({"required": {"image": (FILES, {"image_upload": True})}}, ("IMAGE", "MASK")),
    "PreviewImage": ({"required": {"images": ("IMAGE", {})}}, ()),
    "SaveAnimatedWEBP": (
        {
            "required": {
                "images": ("IMAGE", {}),
                "filename_prefix": ("STRING", {}),
                "fps": ("FLOAT", {"min": 0.01, "max": 1000.0}),
                "lossless": ("BOOLEAN", {}),
                "quality": ("INT", {"min": 0, "max": 100}),
                "method": (["default", "fastest", "slowest"], {}),
            }
        },
        (),
    ),
    "ImageScaleBy": (
        {
            "required": {
                "image": ("IMAGE", {}),
                "upscale_method": (["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], {}),
                "scale_by": ("FLOAT", {"min": 0.01, "max": 8.0}),
            }
        },
        ("IMAGE",),
    ),
    "Note": ({"required": {"text": ("STRING", {})}}, ()),
}
PYTHON_TYPES = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}
# Width, height, frames of each workflow: Tora's training size, except the bundled tiny model's.
TINY = "Tiny Tora, CPU, no download"  # the bundled tiny model's workflow
SIZES = {TINY: (96, 64, 17)}


def is_widget(spec: tuple) -> bool:
    kind, options = spec
    return (kind == FILES or isinstance(kind, list) or kind in PYTHON_TYPES) and not options.get("forceInput")


def definition(pack, node_type: str) -> tuple[dict, tuple]:
    if node_type in pack.NODE_CLASS_MAPPINGS:
        cls = pack.NODE_CLASS_MAPPINGS[node_type]
        return cls.INPUT_TYPES(), cls.RETURN_TYPES
    assert node_type in CORE_NODES, f"unknown node type {node_type!r}: neither ours nor a listed core node"
    return CORE_NODES[node_type]


def expected_widgets(types: dict) -> list[tuple[str, tuple]]:
    """(name, spec) per widgets_values slot, in the frontend's order, with the extra seed/upload slots."""
    slots = []
    for section in ("required", "optional"):
        for name, spec in types.get(section, {}).items():
            if not is_widget(spec):
                continue
            slots.append((name, spec))
            if spec[1].get("control_after_generate"):
                slots.append((f"{name}:control_after_generate", (CONTROL_VALUES, {})))
            if spec[1].get("image_upload"):
                slots.append((f"{name}:upload", (["image"], {})))
    return slots


def check_value(where: str, spec: tuple, value, model_names: set[str]) -> None:
    kind, options = spec
    if kind == FILES:
        assert isinstance(value, str) and value, where
        if "folder" in options:
            assert value in model_names, f"{where}: {value!r} is not in the workflow's models list"
        return
    if isinstance(kind, list):
        assert value in kind, f"{where}: {value!r} is not one of {kind}"
        return
    assert isinstance(value, PYTHON_TYPES[kind]) and not (kind != "BOOLEAN" and isinstance(value, bool)), (
        where
    )
    if "min" in options:
        assert options["min"] <= value <= options["max"], (
            f"{where}: {value} outside [{options['min']}, {options['max']}]"
        )


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """The pack with a models folder holding (empty) files named as in the workflows' `models` lists."""
    root = tmp_path_factory.mktemp("models")
    for path in WORKFLOWS:
        for model in json.loads(path.read_text())["models"]:
            target = root / model["directory"] / model["name"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    mp = pytest.MonkeyPatch()
    mp.setenv("TORA_MODELS_DIR", str(root))
    yield load_pack()
    mp.undo()


def test_there_are_four_workflows_and_a_readme():
    names = {p.stem for p in WORKFLOWS}
    # The template browser titles each card with the file name (both frontends): words, not identifiers.
    assert names == {
        "Tora text to video, drawn path",
        "Tora image to video, drawn path",
        "Tora text to video, path file",
        TINY,
    }
    readme = (PACK_ROOT / "example_workflows" / "README.md").read_text()
    for name in names:
        assert f"{name}.json" in readme
    # The frontend keys open workflow tabs and their saved state by this id: two files with one id collide.
    ids = [json.loads(p.read_text())["id"] for p in WORKFLOWS]
    assert len(set(ids)) == len(ids), ids


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_matches_node_definitions(pack, path):
    workflow = json.loads(path.read_text())
    assert workflow["version"] == 0.4
    models = workflow["models"]
    assert models and all(set(m) >= {"name", "url", "directory"} for m in models)
    assert all(m["url"].startswith("https://") for m in models)
    model_names = {m["name"] for m in models} | {f"{m['directory']}/{m['name']}" for m in models}
    nodes = {n["id"]: n for n in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]) and workflow["last_node_id"] >= max(nodes)
    for node in nodes.values():
        types, returns = definition(pack, node["type"])
        declared = {
            name: spec
            for section in ("required", "optional")
            for name, spec in types.get(section, {}).items()
        }
        slots = expected_widgets(types)
        values = node["widgets_values"]
        assert len(values) == len(slots), (
            f"{node['type']}: {len(values)} widget values for {[s[0] for s in slots]}"
        )
        for (name, spec), value in zip(slots, values, strict=True):
            check_value(f"{path.stem} node {node['id']} {node['type']}.{name}", spec, value, model_names)
        validate = getattr(pack.NODE_CLASS_MAPPINGS.get(node["type"]), "VALIDATE_INPUTS", None)
        if validate is not None:
            named = dict(zip([s[0] for s in slots], values, strict=True))
            wanted = inspect.signature(validate).parameters
            assert validate(**{k: named[k] for k in wanted}) is True, node["type"]
        for socket in node["inputs"]:
            assert socket["name"] in declared, f"{node['type']} has no input {socket['name']!r}"
            assert socket["type"] == declared[socket["name"]][0], (node["type"], socket)
        for name, spec in types.get("required", {}).items():
            if not is_widget(spec):
                linked = [s for s in node["inputs"] if s["name"] == name and s["link"] is not None]
                assert linked, f"{path.stem}: required input {node['type']}.{name} is not connected"
        assert [o["type"] for o in node["outputs"]] == list(returns), node["type"]
    link_ids = set()
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        link_ids.add(link_id)
        source, target = nodes[src], nodes[dst]
        assert definition(pack, source["type"])[1][src_slot] == kind, (link_id, source["type"], kind)
        assert link_id in source["outputs"][src_slot]["links"], link_id
        socket = target["inputs"][dst_slot]
        assert socket["link"] == link_id and socket["type"] == kind, (link_id, target["type"], socket)
    assert workflow["last_link_id"] >= max(link_ids)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_sizes_agree_across_nodes(path):
    """Canvas, motion and sampler share width/height/frames: mismatches are the top user complaint."""
    workflow = json.loads(path.read_text())
    sizes = {
        tuple(n["widgets_values"][:3])
        for n in workflow["nodes"]
        if n["type"] in ("TrajectoryCanvas", "TrajectoryToMotionLatent", "ToraSampler")
    }
    assert sizes == {SIZES.get(path.stem, (720, 480, 49))}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_note_names_the_run_button(path):
    """Both frontends (1.27 and 1.5x) label the button Run; older notes said Queue."""
    (note,) = [n["widgets_values"][0] for n in json.loads(path.read_text())["nodes"] if n["type"] == "Note"]
    assert "press Run" in note and "Queue" not in note, note


def test_tiny_videos_are_saved_upscaled_nearest():
    """96x64 frames are too small to see in a save node: each is enlarged 4x, nearest-exact (pixels kept)."""
    workflow = json.loads((PACK_ROOT / "example_workflows" / f"{TINY}.json").read_text())
    nodes = {n["id"]: n for n in workflow["nodes"]}
    sources = {link[0]: nodes[link[1]] for link in workflow["links"]}
    saves = [n for n in nodes.values() if n["type"] == "SaveAnimatedWEBP"]
    assert len(saves) == 2
    for save in saves:
        scale = sources[save["inputs"][0]["link"]]
        assert scale["type"] == "ImageScaleBy" and scale["widgets_values"] == ["nearest-exact", 4.0]


def test_tiny_scene_picture_stored_in_the_workflow_is_the_scene(pack):
    """The canvas shows this picture before the first run (web/js/tora_canvas.js): it must be what Tiny Tora
    Scene outputs for the stored seed and objects, pixel for pixel."""
    from PIL import Image

    workflow = json.loads((PACK_ROOT / "example_workflows" / f"{TINY}.json").read_text())
    (scene,) = [n for n in workflow["nodes"] if n["type"] == "ToraTinyScene"]
    preview = scene["properties"]["tora_scene_preview"]
    seed, _, objects = scene["widgets_values"]
    assert (preview["seed"], preview["objects"]) == (seed, objects)
    header, data = preview["image"].split(",", 1)
    assert header == "data:image/png;base64"
    stored = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
    image, _ = pack.NODE_CLASS_MAPPINGS["ToraTinyScene"]().make(seed, objects)
    assert np.array_equal(stored, (image[0].cpu().numpy() * 255).round().astype(np.uint8))


def test_each_workflow_has_its_thumbnail_in_the_web_folder():
    """Newer cores serve only <name>.json from /workflow_templates/<pack>/ (ComfyUI 0.3.64 served every file), so
    the template browser's pictures live in web/js/example_thumbnails/, served by every core, where
    web/js/template_thumbnails.js sends the frontend's thumbnail requests."""
    folder = PACK_ROOT / "web" / "js" / "example_thumbnails"
    assert sorted(p.stem for p in folder.glob("*.jpg")) == sorted(p.stem for p in WORKFLOWS)
    jpeg = b"\xff\xd8\xff"  # the frontend asks for .jpg
    assert all(p.read_bytes()[:3] == jpeg for p in folder.glob("*.jpg"))
    beside = {p.suffix for p in (PACK_ROOT / "example_workflows").iterdir()}
    assert beside == {".json", ".md"}, beside
