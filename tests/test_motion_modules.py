"""Trajectory extractor and motion-guidance fuser against the spec formulas (§3, §4.1) written with torch.nn.functional."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.weights import randomise as randomise_weights
from tora_model.config import ToraConfig
from tora_model.motion import MotionGuidanceFuser, TrajectoryExtractor

CONFIG = ToraConfig.preset("tiny")  # hidden 32, motion channels 16, fuser mid 8, 2 stages × 2 blocks


def randomise(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random weights and BatchNorm statistics (biases and vectors at 0.5·noise); a detached copy of the state."""
    return randomise_weights(module, seed, vector_scale=0.5)


def reference_extractor(
    state: dict, latents: torch.Tensor, stages: int, per_stage: int
) -> list[torch.Tensor]:
    """Spec §3: pad H, W to even, fold T into batch, PixelUnshuffle(2), conv_in, pre-activation residual blocks."""
    B, T, C, H, W = latents.shape
    x = F.pad(latents, (0, W % 2, 0, H % 2)).reshape(B * T, C, H + H % 2, W + W % 2)
    x = F.conv2d(F.pixel_unshuffle(x, 2), state["conv_in.weight"], state["conv_in.bias"], padding=1)

    def bn(name, y):
        return F.batch_norm(
            y,
            state[f"{name}.running_mean"],
            state[f"{name}.running_var"],
            state[f"{name}.weight"],
            state[f"{name}.bias"],
            eps=1e-5,
        )

    features = []
    for j in range(stages * per_stage):
        p = f"body.{j}."
        h = F.conv2d(
            F.relu(bn(p + "bn1", x)), state[p + "block1.weight"], state[p + "block1.bias"], padding=1
        )
        h = F.conv2d(
            F.relu(bn(p + "bn2", h)), state[p + "block2.weight"], state[p + "block2.bias"], padding=1
        )
        x = x + h
        if j % per_stage == per_stage - 1:
            features.append(x)
    return features


def reference_fuser(state: dict, h: torch.Tensor, feature: torch.Tensor, groups: int) -> torch.Tensor:
    """Spec §4.1: h `[B, T·H·W, D]`, feature `[(B·T), C_m, H, W]` → h + GroupNorm(h)·γ + β."""
    B, N, D = h.shape
    _, _, H, W = feature.shape
    T = N // (H * W)

    def modulation(kind: str) -> torch.Tensor:
        x = F.conv2d(
            feature, state[f"flow_{kind}_spatial.weight"], state[f"flow_{kind}_spatial.bias"], padding=1
        )
        x = (
            x.reshape(B, T, -1, H, W).permute(0, 3, 4, 2, 1).reshape(B * H * W, -1, T)
        )  # temporal conv per site
        x = F.pad(x, (1, 1), mode="replicate")
        x = F.conv1d(x, state[f"flow_{kind}_temporal.weight"], state[f"flow_{kind}_temporal.bias"])
        return x.reshape(B, H, W, D, T).permute(0, 4, 3, 1, 2).reshape(B * T, D, H, W)

    frames = h.reshape(B, T, H, W, D).permute(0, 1, 4, 2, 3).reshape(B * T, D, H, W)
    norm = F.group_norm(frames, groups, state["flow_cond_norm.weight"], state["flow_cond_norm.bias"], 1e-5)
    out = frames + norm * modulation("gamma") + modulation("beta")
    return out.reshape(B, T, D, H, W).permute(0, 1, 3, 4, 2).reshape(B, N, D)


@torch.no_grad()
@pytest.mark.parametrize(("height", "width", "per_stage"), [(8, 12, 2), (7, 9, 2), (6, 10, 3)])
def test_extractor_matches_spec(height, width, per_stage):
    config = CONFIG.replace(extractor_blocks_per_stage=per_stage)
    extractor = TrajectoryExtractor(config)
    state = randomise(extractor, seed=height)
    latents = torch.randn(2, 3, 16, height, width, generator=torch.Generator().manual_seed(1))
    ours = extractor(latents)
    expected = reference_extractor(state, latents, config.num_layers, per_stage)
    assert len(ours) == config.num_layers == len(expected)
    for a, b in zip(ours, expected, strict=True):
        assert a.shape == (6, 16, (height + 1) // 2, (width + 1) // 2)
        assert (a - b).abs().max() <= 1e-5
    assert (ours[0] - ours[1]).abs().max() > 0.1  # each stage adds its own blocks


@torch.no_grad()
def test_extractor_uses_running_statistics_even_in_train_mode():
    extractor = TrajectoryExtractor(CONFIG)
    state = randomise(extractor, seed=3)
    latents = torch.randn(1, 2, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    expected = reference_extractor(state, latents, CONFIG.num_layers, 2)
    ours = extractor.train()(latents)
    assert (ours[-1] - expected[-1]).abs().max() <= 1e-5
    assert torch.equal(extractor.body[0].bn1.running_mean, state["body.0.bn1.running_mean"])
    assert int(extractor.body[0].bn1.num_batches_tracked) == 0


@torch.no_grad()
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_fuser_matches_spec(strength):
    fuser = MotionGuidanceFuser(CONFIG)
    state = randomise(fuser, seed=7)
    gen = torch.Generator().manual_seed(4)
    tokens = torch.randn(2, 3 * 4 * 6, 32, generator=gen)  # B=2, T=3, 4×6 sites
    feature = torch.randn(2 * 3, 16, 4, 6, generator=gen)
    expected = tokens + strength * (reference_fuser(state, tokens, feature, 32) - tokens)
    ours = fuser(tokens, feature, strength=strength)
    assert (ours - expected).abs().max() <= 1e-5
    assert (ours - tokens).abs().max() > 0.1


@torch.no_grad()
def test_fuser_broadcasts_batch_one_features():
    fuser = MotionGuidanceFuser(CONFIG)
    randomise(fuser, seed=8)
    gen = torch.Generator().manual_seed(5)
    tokens = torch.randn(2, 2 * 4 * 6, 32, generator=gen)
    feature = torch.randn(2, 16, 4, 6, generator=gen)  # one sample, T=2
    repeated = feature.repeat(2, 1, 1, 1)
    assert (fuser(tokens, feature) - fuser(tokens, repeated)).abs().max() <= 1e-6


@torch.no_grad()
def test_fresh_fuser_is_identity():
    fuser = MotionGuidanceFuser(CONFIG)
    tokens = torch.randn(1, 2 * 4 * 6, 32)
    assert torch.equal(fuser(tokens, torch.randn(2, 16, 4, 6)), tokens)


@torch.no_grad()
def test_fuser_group_norm_runs_in_its_parameter_dtype():
    fuser = MotionGuidanceFuser(CONFIG)
    state = randomise(fuser, seed=9)
    fuser.to(torch.bfloat16).flow_cond_norm.float()
    gen = torch.Generator().manual_seed(6)
    tokens = torch.randn(1, 2 * 4 * 6, 32, generator=gen).bfloat16()
    feature = torch.randn(2, 16, 4, 6, generator=gen).bfloat16()
    ours = fuser(tokens, feature)
    assert ours.dtype == torch.bfloat16
    expected = reference_fuser(state, tokens.float(), feature.float(), 32)
    assert (ours.float() - expected).abs().max() <= 0.05 * expected.abs().max()
