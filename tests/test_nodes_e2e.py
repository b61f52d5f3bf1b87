"""End to end through the node functions, in graph order, with tiny models written as real files.

The files go into a temporary models folder exactly where a user would put them (models/tora, models/vae,
models/text_encoders) and are read by the real loaders — nothing is mocked. Weights are random, so the frames are
noise; the checks are on shapes, ranges, determinism, the effect of motion guidance and the error messages.
fp8 storage and block swap are compared with bf16 / whole-model runs (tolerance stated at each test).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.test_nodes import load_pack

W, H, F = 96, 64, 9  # tiny generation: latents [1, 3, 16, 8, 12] (odd T: the VAE decodes 4T-3 frames)
TOKENS = 16  # the tiny transformer's max_text_len
TEXT_DIM = 32
CANVAS = {
    "version": 1,
    "width": 720,
    "height": 480,
    "tracks": [
        {
            "kind": "path",
            "points": [[100.0, 300.0], [360.0, 200.0], [620.0, 260.0]],
            "interpolation": "smooth",
            "start_frame": 0,
            "end_frame": None,
            "easing": "linear",
        }
    ],
}


def _randomized(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """State dict with every float tensor nudged by seeded noise (zero-initialised layers become active)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and "running_var" not in name:
            tensor = tensor + 0.05 * torch.randn(tensor.shape, generator=generator)
        state[name] = tensor.contiguous()
    return state


def write_tiny_models(root) -> None:
    """models/tora/tiny_{t2v,i2v}.safetensors, models/vae/tiny_vae/ (diffusers), models/text_encoders/tiny_t5/
    (the CLI demo's tiny T5 with its word-level tokenizer)."""
    pack = load_pack()
    from_config = pack.tora_model.config.ToraConfig.preset
    (root / "tora").mkdir(parents=True)
    for kind, seed in (("t2v", 1), ("i2v", 2)):
        model = pack.tora_model.transformer.build_transformer(
            from_config("tiny" if kind == "t2v" else "tiny_i2v")
        )
        save_file(_randomized(model, seed), str(root / "tora" / f"tiny_{kind}.safetensors"))
    vae_dir = root / "vae" / "tiny_vae"
    vae_dir.mkdir(parents=True)
    vae_config = pack.tora_model.vae.VAEConfig.preset("tiny")
    vae = pack.tora_model.vae.CogVideoXVAE(vae_config)
    save_file(_randomized(vae, 3), str(vae_dir / "diffusion_pytorch_model.safetensors"))
    diffusers_config = {
        "_class_name": "AutoencoderKLCogVideoX",
        "block_out_channels": list(vae_config.block_channels),
        "layers_per_block": vae_config.layers_per_block,
        "norm_num_groups": vae_config.norm_groups,
        "latent_channels": vae_config.latent_channels,
    }
    (vae_dir / "config.json").write_text(json.dumps(diffusers_config))
    demo_models = importlib.import_module(f"{pack.__name__}.tora_model.tiny.demo_models")
    demo_models.write_demo_t5(root / "text_encoders" / "tiny_t5", TEXT_DIM, seed=4)


def write_start_image(path, width: int, height: int) -> None:
    from PIL import Image

    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_tiny_models(root)
    mp = pytest.MonkeyPatch()
    mp.setenv("TORA_MODELS_DIR", str(root))
    yield load_pack()
    mp.undo()


def nodes(pack):
    return {name: cls() for name, cls in pack.NODE_CLASS_MAPPINGS.items()}


def load(pack, kind="t2v", precision="fp32", offload="comfy", swap=0):
    vae = "vae/tiny_vae/"
    return nodes(pack)["LoadToraModel"].load(
        f"tora/tiny_{kind}.safetensors", vae, precision, "sdpa", offload, swap
    )


@pytest.fixture(scope="module")
def conditioning(env):
    n = nodes(env)
    (clip,) = n["LoadToraTextEncoder"].load("text_encoders/tiny_t5/", TOKENS)
    (positive,) = n["ToraTextEncode"].encode(clip, "a red balloon on the grass")
    negative = [[torch.zeros_like(positive[0][0]), dict(positive[0][1])]]  # what ConditioningZeroOut returns
    return positive, negative


def sample(pack, model, conditioning, motion=None, seed=7, **extra):
    positive, negative = conditioning
    sampler = nodes(pack)["ToraSampler"]
    (latent,) = sampler.sample(
        model, positive, negative, W, H, F, 2, 6.0, True, "dpmpp_2m_sde", seed, motion, **extra
    )
    return latent


def motion_for(pack, model, vae, trajectory, strength=1.0):
    node = nodes(pack)["TrajectoryToMotionLatent"]
    return node.encode(model, vae, W, H, F, strength, 0.0, 1.0, "auto", True, trajectory=trajectory)


def test_t2v_chain_in_graph_order(env, conditioning):
    n = nodes(env)
    model, vae = load(env)
    assert not model.is_i2v and model.config.num_layers == 2
    positive, _ = conditioning
    assert tuple(positive[0][0].shape) == (1, TOKENS, TEXT_DIM)
    trajectory, coordinates, canvas_preview, _ = n["TrajectoryCanvas"].run(W, H, F, json.dumps(CANVAS))[
        "result"
    ]
    tracks = json.loads(coordinates)
    assert len(tracks) == 1 and len(tracks[0]) == F
    assert tracks[0][0] == pytest.approx(
        {"x": 100 * W / 720, "y": 300 * H / 480}, abs=0.01
    )  # rescaled canvas
    assert canvas_preview.shape == (1, H, W, 3)
    motion, flow_preview = motion_for(env, model, vae, trajectory)
    assert len(motion.features) == 2 and (motion.width, motion.height, motion.num_frames) == (W, H, F)
    assert flow_preview.shape == (F, H, W, 3) and 0 <= flow_preview.min() and flow_preview.max() <= 1
    assert flow_preview[0].std() == 0 and flow_preview[1:].std() > 0  # frame 0 carries no displacement
    latent = sample(env, model, conditioning, motion)
    assert tuple(latent["samples"].shape) == (1, 16, (F - 1) // 4 + 1, H // 8, W // 8)
    (frames,) = n["MotionVAEDecode"].decode(vae, latent, True)
    assert frames.shape == (F, H, W, 3) and frames.dtype == torch.float32
    assert torch.isfinite(frames).all() and 0 <= frames.min() and frames.max() <= 1 and frames.std() > 0
    (overlay,) = n["TrajectoryPreview"].draw(frames, trajectory, F, 3, 2)
    assert overlay.shape == frames.shape and not torch.equal(overlay, frames)
    again = sample(env, model, conditioning, motion)
    assert torch.equal(again["samples"], latent["samples"])  # same seed, same video


def test_motion_changes_the_video_and_strength_zero_does_not(env, conditioning):
    model, vae = load(env)
    trajectory = env.tora_model.trajectory.trajectory_from_json(CANVAS)
    motion, _ = motion_for(env, model, vae, trajectory)
    plain = sample(env, model, conditioning)["samples"]
    guided = sample(env, model, conditioning, motion)["samples"]
    assert (guided - plain).abs().max() > 1e-3
    silent, _ = motion_for(env, model, vae, trajectory, strength=0.0)
    assert torch.equal(sample(env, model, conditioning, silent)["samples"], plain)
    assert len(motion.features) == 2  # the received motion object was not modified by the sampler


def test_load_trajectory_preset_and_kjnodes_string(env):
    n = nodes(env)
    sources = n["LoadTrajectory"].INPUT_TYPES()["required"]["source"][0]
    assert "preset/orbit.json" in sources and "preset/zigzag_256.txt" in sources
    for source in sources:
        trajectory, preview, _ = n["LoadTrajectory"].load(source, 720, 480)
        assert preview.shape == (1, trajectory.height, trajectory.width, 3)
    assert n["LoadTrajectory"].load("preset/zigzag_256.txt", 720, 480)[0].official
    kj = json.dumps([[{"x": 10, "y": 20}, {"x": 200, "y": 100}], [{"x": 50, "y": 50}, {"x": 50, "y": 50}]])
    trajectory, _, _ = n["LoadTrajectory"].load("preset/orbit.json", 256, 128, coordinates=kj)
    assert (trajectory.width, trajectory.height) == (256, 128)
    assert [t.kind for t in trajectory.tracks] == ["path", "hold"]


def test_i2v_needs_a_start_image_and_t2v_refuses_one(env, conditioning, tmp_path):
    ConfigError = env.tora_model.errors.ConfigError
    model, vae = load(env, "i2v")
    assert model.is_i2v
    image = torch.rand(1, 40, 60, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="start_image"):
        sample(env, model, conditioning)
    latent = sample(env, model, conditioning, start_image=image, vae=vae)
    assert tuple(latent["samples"].shape) == (1, 16, 3, H // 8, W // 8)
    t2v, _ = load(env)
    with pytest.raises(ConfigError, match="T2V"):
        sample(env, t2v, conditioning, start_image=image, vae=vae)


def test_clear_errors_for_bad_settings(env, conditioning):
    errors = env.tora_model.errors
    model, vae = load(env)
    positive, negative = conditioning
    sampler = nodes(env)["ToraSampler"]
    with pytest.raises(errors.ConfigError, match="num_frames must be"):
        sampler.sample(model, positive, negative, W, H, 10, 2, 6.0, True, "ddim", 0)
    with pytest.raises(errors.ConfigError, match="multiple of 16"):
        sampler.sample(model, positive, negative, 100, H, F, 2, 6.0, True, "ddim", 0)
    trajectory = env.tora_model.trajectory.trajectory_from_json(CANVAS)
    motion, _ = nodes(env)["TrajectoryToMotionLatent"].encode(
        model, vae, 128, H, F, 1.0, 0.0, 1.0, "auto", True, trajectory=trajectory
    )
    with pytest.raises(errors.ConfigError, match="motion was encoded for 128x64"):
        sample(env, model, conditioning, motion)
    with pytest.raises(errors.ConfigError, match="Tora Text Encode"):
        sampler.sample(
            model, [[torch.zeros(1, 77, TEXT_DIM), {}]], negative, W, H, F, 2, 6.0, True, "ddim", 0
        )
    loader = nodes(env)["LoadToraModel"]
    root = Path(os.environ["TORA_MODELS_DIR"])
    shutil.copy(
        root / "vae" / "tiny_vae" / "diffusion_pytorch_model.safetensors", root / "tora" / "a_vae.safetensors"
    )
    with pytest.raises(errors.CheckpointError, match="a_vae.safetensors"):  # a VAE put where transformers go
        loader.load("tora/a_vae.safetensors", "vae/tiny_vae/", "fp32", "sdpa", "comfy", 0)
    with pytest.raises(errors.ConfigError, match="has 2 transformer blocks"):
        loader.load("tora/tiny_t2v.safetensors", "vae/tiny_vae/", "fp32", "sdpa", "block_swap", 3)
    with pytest.raises(errors.CheckpointError, match="missing.safetensors.*tora"):
        loader.load("tora/missing.safetensors", "vae/tiny_vae/", "fp32", "sdpa", "comfy", 0)


def _forward(model, seed=0):
    """One transformer call on fixed inputs with motion features, in the model's compute dtype → float32."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 3, 16, H // 8, W // 8, generator=generator)
    text = torch.randn(1, TOKENS, TEXT_DIM, generator=generator)
    flow = torch.randn(1, 3, 16, H // 8, W // 8, generator=generator)
    with torch.no_grad():
        features = model.transformer.extract_motion(flow.to(model.compute_dtype))
        return model.transformer(latents, torch.tensor([500]), text, motion_features=features).float()


def test_fp8_storage_is_within_tolerance_of_bf16(env):
    """fp8_e4m3fn weights (3 mantissa bits) computed in bf16: relative L2 error under 3 % of the bf16 output
    (0.6 % measured on the tiny model)."""
    bf16, _ = load(env, precision="bf16")
    fp8, _ = load(env, precision="fp8_e4m3fn")
    linears = [m for m in fp8.transformer.transformer_blocks.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.float8_e4m3fn for m in linears)
    assert fp8.compute_dtype == torch.bfloat16
    reference, result = _forward(bf16), _forward(fp8)
    relative = (result - reference).norm() / reference.norm()
    assert 0 < relative < 0.03, relative


def test_block_swap_matches_the_whole_model(env, conditioning):
    """On the CPU block swap moves nothing, so it must equal the whole-model run exactly (bf16)."""
    whole, _ = load(env, precision="bf16")
    swapped, _ = load(env, precision="bf16", offload="block_swap", swap=1)
    assert swapped.swapped_blocks == 1 and swapped.patcher is None
    assert torch.equal(_forward(swapped), _forward(whole))
    assert torch.equal(
        sample(env, swapped, conditioning)["samples"], sample(env, whole, conditioning)["samples"]
    )
    assert all(p.device.type == "cpu" for p in swapped.transformer.transformer_blocks[-1].parameters())


def test_flow_video_input_gives_the_same_motion_as_its_trajectory(env):
    """The dense path: the colour-coded flow video of a trajectory, fed back as IMAGE, encodes to equal features."""
    model, vae = load(env)
    trajectory = env.tora_model.trajectory.trajectory_from_json(CANVAS)
    motion, flow_preview = motion_for(env, model, vae, trajectory)
    node = nodes(env)["TrajectoryToMotionLatent"]
    dense, _ = node.encode(model, vae, W, H, F, 1.0, 0.0, 1.0, "auto", True, flow_images=flow_preview)
    for a, b in zip(motion.features, dense.features, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(env.tora_model.errors.ConfigError, match="exactly one"):
        node.encode(model, vae, W, H, F, 1.0, 0.0, 1.0, "auto", True)
    with pytest.raises(env.tora_model.errors.ConfigError, match="flow_images has 9 frames of 96x64"):
        node.encode(model, vae, 128, H, F, 1.0, 0.0, 1.0, "auto", True, flow_images=flow_preview)


def test_diffusers_folder_layout_takes_the_vae_beside_it(env):
    """Tora_T2V_diffusers/{transformer,vae}/ in models/tora: one combo entry, VAE '(from model file)'."""
    root = Path(os.environ["TORA_MODELS_DIR"])
    release = root / "tora" / "Tora_T2V_diffusers"
    (release / "transformer").mkdir(parents=True)
    shutil.copy(
        root / "tora" / "tiny_t2v.safetensors",
        release / "transformer" / "diffusion_pytorch_model.safetensors",
    )
    (release / "transformer" / "config.json").write_text(
        json.dumps({"_class_name": "ToraTransformer3DModel"})
    )
    shutil.copytree(root / "vae" / "tiny_vae", release / "vae")
    loader = nodes(env)["LoadToraModel"]
    entries = loader.INPUT_TYPES()["required"]["model"][0]
    assert "tora/Tora_T2V_diffusers/transformer/" in entries
    assert not any(e.startswith("tora/Tora_T2V_diffusers/transformer/diffusion") for e in entries)
    model, vae = loader.load(
        "tora/Tora_T2V_diffusers/transformer/", "(from model file)", "fp32", "sdpa", "comfy", 0
    )
    reference, _ = load(env)
    assert vae.source.endswith("Tora_T2V_diffusers/vae") and not model.is_i2v
    assert torch.equal(_forward(model), _forward(reference))


def test_t5_weights_file_finds_its_tokenizer(env):
    """A single T5 weights file (like the T5 inside the SAT file) uses a tokenizer folder from models/text_encoders."""
    root = Path(os.environ["TORA_MODELS_DIR"])
    weights = root / "text_encoders" / "tiny_t5" / "model.safetensors"
    shutil.copy(weights, root / "text_encoders" / "t5_only.safetensors")
    n = nodes(env)
    (from_file,) = n["LoadToraTextEncoder"].load("text_encoders/t5_only.safetensors", TOKENS)
    (from_folder,) = n["LoadToraTextEncoder"].load("text_encoders/tiny_t5/", TOKENS)
    prompt = "a red cat runs on the grass"
    a = n["ToraTextEncode"].encode(from_file, prompt)[0][0][0]
    b = n["ToraTextEncode"].encode(from_folder, prompt)[0][0][0]
    assert a.shape == (1, TOKENS, TEXT_DIM) and torch.equal(a, b)


def test_nodes_do_not_change_the_models_they_receive(env, conditioning, caplog):
    """Motion encoding, sampling (with block swap) and decoding leave every weight and attribute as it was."""
    model, vae = load(env, precision="bf16", offload="block_swap", swap=1)
    before = {
        k: v.clone() for k, v in [*model.transformer.state_dict().items(), *vae.vae.state_dict().items()]
    }
    attributes = (dict(vars(model.transformer)), dict(vars(vae.vae)))
    trajectory = env.tora_model.trajectory.trajectory_from_json(CANVAS)
    with caplog.at_level("INFO"):
        motion, _ = motion_for(env, model, vae, trajectory)
    assert "trajectory canvas 720x480 differs from the generation size 96x64" in caplog.text
    nodes(env)["MotionVAEDecode"].decode(vae, sample(env, model, conditioning, motion), True)
    after = {**model.transformer.state_dict(), **vae.vae.state_dict()}
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert (dict(vars(model.transformer)), dict(vars(vae.vae))) == attributes
