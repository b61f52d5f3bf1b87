"""The bundled tiny Tora from the nodes: Tora Empty Text, Tiny Tora Scene, and loading models/tiny_tora/ with
every Load Tora Model option (fp8 storage and block swap walk the st_dit blocks)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from tests.bundled_tiny import BUNDLED_TINY, needs_bundled_tiny, pack_with_bundled_models_only

TINY = "tora/tiny_tora/transformer.safetensors"
W, H, F = 96, 64, 17

pytestmark = needs_bundled_tiny


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """The pack with an empty user models folder: only the bundled models/ can answer."""
    with pack_with_bundled_models_only(tmp_path_factory.mktemp("models")) as pack:
        yield pack


def node(pack, name):
    return pack.NODE_CLASS_MAPPINGS[name]()


def load_tiny(pack, precision="fp32", offload="comfy", swap=0):
    return node(pack, "LoadToraModel").load(TINY, "(from model file)", precision, "sdpa", offload, swap)


def test_empty_text_has_the_model_text_shape_and_is_zero(pack):
    model, _ = load_tiny(pack)
    (conditioning,) = node(pack, "ToraEmptyText").encode(model)
    assert len(conditioning) == 1 and conditioning[0][1] == {}
    embeds = conditioning[0][0]
    assert embeds.shape == (1, 1, 16) and embeds.dtype == torch.float32 and not embeds.any()
    released = types.SimpleNamespace(config=pack.tora_model.config.ToraConfig.preset("cogvideox_5b_t2v"))
    assert node(pack, "ToraEmptyText").encode(released)[0][0][0].shape == (1, 226, 4096)


def test_tiny_scene_is_the_first_frame_of_the_synthetic_clip(pack):
    synthetic = pack.tora_model.tiny.synthetic
    scene = node(pack, "ToraTinyScene")
    image, trajectory = scene.make(8, 1)
    clip = synthetic.make_clips(8, 1, 1)[0]
    assert image.shape == (1, H, W, 3) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert torch.equal(image, torch.from_numpy(clip.frames[:1]).float() / 255)
    assert trajectory == clip.trajectory and (trajectory.width, trajectory.height) == (W, H)
    three, paths = scene.make(8, 3)
    assert len(paths.tracks) == 3 and not torch.equal(three, image)
    assert not torch.equal(scene.make(9, 1)[0], image)
    ConfigError = pack.tora_model.errors.ConfigError
    for seed, objects in ((8, 0), (8, 4), (-1, 1)):
        with pytest.raises(ConfigError, match="objects must be between 1 and 3|seed must be between"):
            scene.make(seed, objects)


def test_bundled_model_loads_as_i2v_with_its_vae_beside_it(pack):
    model, vae = load_tiny(pack)
    assert model.is_i2v and model.config.backbone == "st_dit" and model.config.num_layers % 2 == 0
    assert (model.config.max_text_len, model.config.text_dim) == (1, 16)
    assert vae.source == str(BUNDLED_TINY / "vae")


def _sample(pack, model, vae, steps=2):
    """A short I2V run from a tiny scene with zero text, cfg 1 (as the tiny model was trained)."""
    image, _ = node(pack, "ToraTinyScene").make(8, 1)
    (text,) = node(pack, "ToraEmptyText").encode(model)
    sampler = node(pack, "ToraSampler")
    (latent,) = sampler.sample(model, text, text, W, H, F, steps, 1.0, False, "ddim", 0, None, image, vae)
    return latent["samples"].float()


def test_fp8_storage_and_block_swap_run_the_st_dit(pack):
    """fp8 weights of every Linear in the blocks, bf16 compute: within 5 % (relative L2) of the bf16 latents
    (measured 1.8 %); block swap of 3 blocks on the CPU moves nothing, so it equals the whole-model run exactly."""
    bf16, vae = load_tiny(pack, "bf16")
    fp8, _ = load_tiny(pack, "fp8_e4m3fn")
    linears = [m for m in fp8.transformer.transformer_blocks.modules() if isinstance(m, torch.nn.Linear)]
    blocks = fp8.config.num_layers
    # 5 per block (modulation, qkv, proj, fc1, fc2) + cross-attention's qkv and proj in the spatial half
    assert len(linears) == blocks * 5 + blocks // 2 * 2
    assert all(m.weight.dtype == torch.float8_e4m3fn for m in linears)
    reference = _sample(pack, bf16, vae)
    relative = float((_sample(pack, fp8, vae) - reference).norm() / reference.norm())
    assert 0 < relative < 0.05, relative
    swapped, _ = load_tiny(pack, "bf16", "block_swap", 3)
    assert swapped.swapped_blocks == 3 and swapped.patcher is None
    assert torch.equal(_sample(pack, swapped, vae), reference)
    with pytest.raises(pack.tora_model.errors.ConfigError, match=f"has {blocks} transformer blocks"):
        load_tiny(pack, "bf16", "block_swap", blocks + 1)
    assert np.isfinite(reference.numpy()).all()


def test_motion_node_spreads_the_flow_with_the_models_own_sigma(pack):
    """The tiny Tora was trained on flow spread with its own σ (its header's flow_sigma): Trajectory To Motion Latent
    renders the same flow video the training and evaluation render (`Clip.flow_video`), not the release's σ = 10."""
    model, vae = load_tiny(pack)
    _, trajectory = node(pack, "ToraTinyScene").make(8, 2)
    clip = pack.tora_model.tiny.synthetic.make_clips(8, 1, 2)[0]
    motion_node = node(pack, "TrajectoryToMotionLatent")
    _, preview = motion_node.encode(model, vae, W, H, F, 1.0, 0.0, 1.0, "auto", True, trajectory=trajectory)
    sigma = model.transformer.config.flow_sigma
    expected = torch.from_numpy(clip.flow_video(sigma)).float() / 255
    assert torch.equal(preview, expected)
