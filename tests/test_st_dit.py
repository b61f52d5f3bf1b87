"""The spatial-temporal DiT backbone (tora_model.st_dit): axes of attention, motion path, pipeline and loader."""

import pytest
import torch

from tora_model.checkpoints import infer_config, inspect_checkpoint, load_transformer
from tora_model.config import ToraConfig
from tora_model.errors import CheckpointError
from tora_model.pipeline import sample_latents
from tora_model.st_dit import STDiTTransformer, save_st_transformer

CONFIG = ToraConfig.preset("tiny_st")
SHAPE = (2, 3, 16, 4, 6)  # B, T, C, h, w


def _model(seed: int = 0) -> STDiTTransformer:
    torch.manual_seed(seed)
    model = STDiTTransformer(CONFIG).eval()
    with torch.no_grad():  # non-zero gates/outputs/fuser convs so every path contributes
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model


def _inputs(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(SHAPE, generator=gen)
    image = torch.randn(SHAPE, generator=gen)
    motion = torch.randn(SHAPE, generator=gen)
    text = torch.zeros(SHAPE[0], 1, CONFIG.text_dim)
    return latents, image, motion, text


def test_temporal_blocks_mix_frames_spatial_blocks_do_not():
    model = _model()
    latents, image, _, text = _inputs()
    t = torch.tensor([400, 700])
    base = model(latents, t, text, image_latents=image)
    changed = latents.clone()
    changed[:, 2] += 1.0  # perturb only the last frame
    out = model(changed, t, text, image_latents=image)
    assert (out[:, 0] - base[:, 0]).abs().max() > 1e-4  # temporal attention carries it to frame 0
    # Batch items stay independent.
    changed = latents.clone()
    changed[1] += 1.0
    out = model(changed, t, text, image_latents=image)
    torch.testing.assert_close(out[0], base[0], rtol=0, atol=1e-6)


def test_fresh_model_is_zero_and_motion_changes_trained_output():
    fresh = STDiTTransformer(CONFIG).eval()
    latents, image, motion, text = _inputs()
    t = torch.tensor([500, 500])
    assert fresh(latents, t, text, image_latents=image).abs().max() == 0  # DiT zero init of the output
    model = _model()
    features = model.extract_motion(motion)
    assert len(features) == CONFIG.num_layers and features[0].shape == (2 * 3, CONFIG.motion_channels, 2, 3)
    without = model(latents, t, text, image_latents=image)
    with_motion = model(latents, t, text, motion_features=features, image_latents=image)
    zero_strength = model(latents, t, text, motion_features=features, image_latents=image, motion_scale=0.0)
    assert (with_motion - without).abs().mean() > 1e-3
    torch.testing.assert_close(zero_strength, without, rtol=0, atol=1e-5)


def test_saved_file_loads_through_load_transformer_and_runs_the_pipeline(tmp_path):
    model = _model()
    path = tmp_path / "transformer.safetensors"
    save_st_transformer(model, path)
    loaded = load_transformer(path)
    assert isinstance(loaded, STDiTTransformer) and loaded.config == CONFIG
    latents, image, motion, text = _inputs()
    t = torch.tensor([300, 900])
    features = model.extract_motion(motion)
    torch.testing.assert_close(
        loaded(latents, t, text, features, image), model(latents, t, text, features, image), rtol=0, atol=0
    )
    out = sample_latents(
        loaded,
        text_embeds=torch.zeros(1, 1, CONFIG.text_dim),
        width=96,
        height=64,
        num_frames=17,
        steps=3,
        cfg=1.0,
        dynamic_cfg=False,
        seed=0,
        image_latents=torch.zeros(1, 5, 16, 16, 24),
    )
    assert out.shape == (1, 5, 16, 16, 24) and torch.isfinite(out).all()  # 96×64 on the ×4 VAE's latent grid


def test_inspect_checkpoint_reads_the_header_config_and_refuses_split_motion_modules(tmp_path):
    """What LoadToraModel calls before loading: layout and config of an st_dit file, without reading tensors."""
    path = tmp_path / "transformer.safetensors"
    save_st_transformer(STDiTTransformer(CONFIG), path)
    checkpoint = inspect_checkpoint(path)
    assert "st_dit" in checkpoint.format and infer_config(checkpoint) == CONFIG
    assert set(checkpoint.meta_state_dict()) == set(STDiTTransformer(CONFIG, device="meta").state_dict())
    split = tmp_path / "CogVideoX-5b-Tora"
    for part in ("fuser", "traj_extractor"):
        (split / part).mkdir(parents=True)
    for call in (
        lambda: inspect_checkpoint(path, split),
        lambda: load_transformer(path, motion_source=split),
    ):
        with pytest.raises(CheckpointError, match="st_dit checkpoint; the split fuser/"):
            call()


def test_fp8_storage_and_block_swap_find_the_blocks():
    """`transformer_blocks` is `blocks` (what the node layer's fp8 storage and block swap walk); keys unchanged."""
    model = _model()
    assert model.transformer_blocks is model.blocks and len(model.transformer_blocks) == CONFIG.num_layers
    assert not any(k.startswith("transformer_blocks.") for k in model.state_dict())
