"""Motion guidance: flow video → posterior-sampled ×0.7 motion latents → extractor features once; the step window.

Tiny random models on the CPU (the `tiny` transformer preset and the `tiny` VAE preset). References are computed
here from the VAE's own posterior and a freshly seeded generator, so a wrong scale, the posterior mean instead of a
sample, or a wrong layout fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tora_model.config import ToraConfig
from tora_model.errors import ConfigError
from tora_model.flow import flow_to_rgb, render_flow
from tora_model.motion_guidance import (
    MotionGuidance,
    encode_flow_video,
    motion_from_flow,
    motion_from_trajectory,
)
from tora_model.resample import resample
from tora_model.tiny.demo_models import build_demo_models, demo_trajectory
from tora_model.trajectory import Track, Trajectory
from tora_model.transformer import build_transformer

WIDTH, HEIGHT, FRAMES = 32, 32, 9  # latents [1, 3, 16, 4, 4]


@pytest.fixture(scope="module")
def models():
    return build_demo_models(seed=3)


@pytest.fixture(scope="module")
def flow_rgb() -> np.ndarray:
    points = resample(demo_trajectory(), FRAMES, WIDTH, HEIGHT)  # [2, F, 2]
    return flow_to_rgb(render_flow(points, HEIGHT, WIDTH))  # [F, H, W, 3] uint8


def _guidance(**settings) -> MotionGuidance:
    return MotionGuidance(features=(torch.zeros(3, 16, 2, 3),), num_frames=9, height=32, width=48, **settings)


def test_window_selects_steps_by_fraction_inclusive():
    motion = _guidance(start=0.2, end=0.5)
    assert [i for i in range(10) if motion.active_at(i, 10)] == [2, 3, 4, 5]
    full = _guidance()
    assert all(full.active_at(i, 50) for i in range(50))
    early = _guidance(end=0.2)  # kijai's advice for I2V: guide only the first fifth
    assert [i for i in range(50) if early.active_at(i, 50)] == list(range(11))
    assert not any(_guidance(strength=0.0).active_at(i, 10) for i in range(10))


def test_settings_are_validated_and_features_shared():
    motion = _guidance()
    changed = motion.with_settings(strength=0.5, end=0.3)
    assert (changed.strength, changed.start, changed.end) == (0.5, 0.0, 0.3)
    assert changed.features[0] is motion.features[0]
    assert motion.strength == 1.0  # frozen original untouched
    with pytest.raises(ConfigError, match="start <= end"):
        motion.with_settings(start=0.6, end=0.4)
    with pytest.raises(ConfigError, match="strength"):
        motion.with_settings(strength=-1.0)
    with pytest.raises(ConfigError, match="outside"):
        motion.active_at(10, 10)


def test_encode_flow_video_is_scaled_posterior_sample(models, flow_rgb):
    _, vae = models
    latents = encode_flow_video(vae, flow_rgb, generator=torch.Generator().manual_seed(7))
    assert latents.shape == (1, 3, 16, HEIGHT // 8, WIDTH // 8) and latents.dtype == torch.float32

    pixels = torch.from_numpy(flow_rgb).float() / 255 * 2 - 1  # [F, H, W, 3]
    posterior = vae.encode(pixels.permute(3, 0, 1, 2)[None])  # [1, 3, F, H, W] in
    eps = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(7))
    expected = ((posterior.mean + posterior.std * eps) * 0.7).permute(0, 2, 1, 3, 4)  # [1, T, 16, h, w]
    torch.testing.assert_close(latents, expected, rtol=0, atol=1e-6)
    # A sample, not the mode: the posterior noise is visible at this std.
    assert (latents - posterior.mean.permute(0, 2, 1, 3, 4) * 0.7).abs().max() > 1e-3


def test_motion_from_flow_runs_extractor_once_on_those_latents(models, flow_rgb):
    model, vae = models
    motion = motion_from_flow(model, vae, flow_rgb, generator=torch.Generator().manual_seed(7), end=0.4)
    latents = encode_flow_video(vae, flow_rgb, generator=torch.Generator().manual_seed(7))
    expected = model.extract_motion(latents)
    assert len(motion.features) == model.config.num_layers
    for got, want in zip(motion.features, expected, strict=True):
        assert got.shape == (3, model.config.motion_channels, HEIGHT // 16, WIDTH // 16)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert (motion.num_frames, motion.width, motion.height, motion.end) == (FRAMES, WIDTH, HEIGHT, 0.4)


def _motion_at_test_size(model, vae, trajectory):
    """motion_from_trajectory at WIDTH × HEIGHT × FRAMES, posterior drawn from seed 1: (guidance, flow RGB)."""
    return motion_from_trajectory(
        model,
        vae,
        trajectory,
        num_frames=FRAMES,
        width=WIDTH,
        height=HEIGHT,
        generator=torch.Generator().manual_seed(1),
    )


def test_motion_from_trajectory_returns_the_flow_it_encoded(models):
    model, vae = models
    official = Trajectory(
        256, 256, (Track(points=((30.0, 40.0), (200.0, 180.0)), interpolation="linear"),), official=True
    )
    motion, rgb = _motion_at_test_size(model, vae, official)
    points = resample(
        official, FRAMES, WIDTH, HEIGHT, "official"
    )  # "auto" picks official for .txt trajectories
    np.testing.assert_array_equal(rgb, flow_to_rgb(render_flow(points, HEIGHT, WIDTH)))
    assert (rgb[0] == 255).all()  # frame 0 carries no motion: pure white
    direct = motion_from_flow(model, vae, rgb, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(motion.features[-1], direct.features[-1], rtol=0, atol=0)


def test_a_model_with_its_own_flow_sigma_reads_flow_spread_at_that_sigma():
    """A model trained on another spreading (ToraConfig.flow_sigma, as the tiny Tora) gets its flow video spread so."""
    model, vae = build_demo_models(seed=3)
    model.config = model.config.replace(flow_sigma=2.0)
    trajectory = demo_trajectory()
    _, rgb = _motion_at_test_size(model, vae, trajectory)
    points = resample(trajectory, FRAMES, WIDTH, HEIGHT)
    np.testing.assert_array_equal(rgb, flow_to_rgb(render_flow(points, HEIGHT, WIDTH, sigma=2.0)))
    assert (rgb != flow_to_rgb(render_flow(points, HEIGHT, WIDTH))).any()  # not the release's σ = 10


def test_bad_flow_inputs_are_refused(models, flow_rgb):
    model, vae = models
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ConfigError, match="uint8"):
        motion_from_flow(model, vae, flow_rgb.astype(np.float32), generator=gen)
    with pytest.raises(ConfigError, match="8k\\+1"):
        motion_from_flow(model, vae, flow_rgb[:5], generator=gen)  # 4k+1 frames but an even latent count
    plain = build_transformer(ToraConfig.preset("tiny").replace(has_motion_modules=False))
    with pytest.raises(ConfigError, match="motion modules"):
        motion_from_flow(plain, vae, flow_rgb, generator=gen)
