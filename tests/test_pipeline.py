"""Generation pipeline on the CPU with tiny models: sizes, seeding, batched CFG order, I2V latents, interrupt, decode.

The fake model below is a real `nn.Module` with a known v-prediction, so the sampler's result can be computed by hand
from the schedule; the spy wraps the real tiny transformer and records what each network call received.
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from tora_model.config import ToraConfig
from tora_model.errors import ConfigError, GenerationInterrupted
from tora_model.generation_setup import check_generation_size, placement
from tora_model.motion_guidance import motion_from_trajectory
from tora_model.pipeline import decode_latents, encode_image_latents, generate, sample_latents
from tora_model.schedule import make_schedule
from tora_model.tiny.demo_models import build_demo_models, demo_trajectory
from tora_model.transformer import build_transformer
from tora_model.vae import CogVideoXVAE, VAEConfig

WIDTH, HEIGHT, FRAMES = 32, 32, 9  # latents [1, 3, 16, 4, 4]
SHAPE = (1, (FRAMES - 1) // 4 + 1, 16, HEIGHT // 8, WIDTH // 8)
TEXT = (1, 16, 32)  # tiny preset: 16 tokens of width 32


@pytest.fixture(scope="module")
def t2v():
    return build_demo_models(seed=5)


@pytest.fixture(scope="module")
def i2v():
    return build_demo_models(seed=6, i2v=True)


def _text(seed: int = 0) -> torch.Tensor:
    return torch.randn(TEXT, generator=torch.Generator().manual_seed(seed))


class ContextScaledModel(nn.Module):
    """v = x · mean(context row): cond context of ones → v = x, all-zero uncond → v = 0. Records every call."""

    def __init__(self, config: ToraConfig) -> None:
        super().__init__()
        self.config = config
        self.anchor = nn.Parameter(torch.zeros(()))  # gives the pipeline a device and dtype to read
        self.calls: list[dict] = []

    def forward(
        self, latents, timestep, text_embeds, motion_features=None, image_latents=None, motion_scale=1.0
    ):
        self.calls.append(dict(latents=latents, timestep=timestep, text=text_embeds, motion=motion_features))
        return latents * text_embeds.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)


class Spy(nn.Module):
    """Wraps a real transformer: records motion features / scale / image latents per call, then delegates."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.calls: list[dict] = []

    def forward(
        self, latents, timestep, text_embeds, motion_features=None, image_latents=None, motion_scale=1.0
    ):
        self.calls.append(
            dict(
                latents=latents,
                motion=motion_features,
                scale=motion_scale,
                image=image_latents,
                text=text_embeds,
            )
        )
        return self.inner(latents, timestep, text_embeds, motion_features, image_latents, motion_scale)


def test_generation_size_rules(caplog):
    with pytest.raises(
        ConfigError, match=r"width must be a positive multiple of 16, got 100 \(nearest valid: 96 or 112\)"
    ):
        check_generation_size(100, 480, 49)
    with pytest.raises(ConfigError, match=r"num_frames must be 8k\+1.*got 50 \(nearest valid: 49 or 57\)"):
        check_generation_size(720, 480, 50)
    with pytest.raises(ConfigError, match=r"got 13 \(nearest valid: 9 or 17\).*odd latent frame count"):
        check_generation_size(720, 480, 13)  # 4k+1, but 4 latent frames would decode to 16 frames
    with pytest.raises(ConfigError, match=r"got 1 \(nearest valid: 9\)"):
        check_generation_size(720, 480, 1)
    with caplog.at_level(logging.WARNING, logger="tora_model.generation_setup"):
        check_generation_size(720, 480, 49)
        assert not caplog.records
        check_generation_size(480, 480, 49)
    assert "720x480" in caplog.text
    # The warning is about the model in use: the released 5B at 720x480, the bundled tiny model at 96x64.
    assert ToraConfig.preset("cogvideox_5b_t2v").trained_size == (720, 480)
    assert ToraConfig.preset("tiny_st").trained_size == (96, 64)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tora_model.generation_setup"):
        check_generation_size(96, 64, 17, trained_size=(96, 64))
        assert not caplog.records
        check_generation_size(720, 480, 49, trained_size=(96, 64))
    assert "trained only at 96x64" in caplog.text


def test_cfg_batch_is_uncond_then_cond_with_zero_uncond_by_default():
    model = ContextScaledModel(ToraConfig.preset("tiny"))
    cond = torch.ones(TEXT)
    out = sample_latents(
        model, text_embeds=cond, width=WIDTH, height=HEIGHT, num_frames=FRAMES,
        steps=2, cfg=6.0, dynamic_cfg=False, sampler="ddim", seed=11,
    )  # fmt: skip
    for call in model.calls:
        assert call["latents"].shape == (2, *SHAPE[1:]) and call["latents"].dtype == torch.float32
        assert torch.equal(call["latents"][0], call["latents"][1])
        assert torch.count_nonzero(call["text"][0]) == 0  # row 0: the all-zero unconditional context
        assert torch.equal(call["text"][1], cond[0])  # row 1: the prompt
    assert [c["timestep"].tolist() for c in model.calls] == [[999, 999], [499, 499]]

    # By hand: x0 = s·x − √(1−s²)·v with v_uncond = 0 and v_cond = x, CFG x0 = x0_u + 6·(x0_c − x0_u), DDIM.
    schedule = make_schedule(2, "sat")
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(11))  # the seed's first draw is the noise
    for i in range(2):
        s = schedule.x0_sqrt_alphas[i]
        x0_u, x0_c = s * x, s * x - math.sqrt(1 - s * s) * x
        x0 = x0_u + 6.0 * (x0_c - x0_u)
        a, a_next = schedule.sqrt_alphas[i], schedule.sqrt_alphas[i + 1]
        x = (
            x0
            if a_next >= 1
            else math.sqrt((1 - a_next**2) / (1 - a**2)) * x
            + (a_next - a * math.sqrt((1 - a_next**2) / (1 - a**2))) * x0
        )
    torch.testing.assert_close(out, x, rtol=1e-5, atol=1e-5)

    explicit = ContextScaledModel(ToraConfig.preset("tiny"))
    uncond = torch.full(TEXT, 0.5)
    sample_latents(
        explicit, text_embeds=cond, uncond_embeds=uncond, width=WIDTH, height=HEIGHT, num_frames=FRAMES,
        steps=2, seed=11,
    )  # fmt: skip
    assert torch.equal(explicit.calls[0]["text"][0], uncond[0])


def test_tiny_generate_end_to_end_and_seeding(t2v):
    model, vae = t2v
    motion, _ = motion_from_trajectory(
        model, vae, demo_trajectory(), num_frames=FRAMES, width=WIDTH, height=HEIGHT,
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    run = dict(text_embeds=_text(), width=WIDTH, height=HEIGHT, num_frames=FRAMES, steps=3, motion=motion)
    frames = generate(model, vae, seed=1, **run)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and frames.dtype == torch.float32
    assert frames.device.type == "cpu" and torch.isfinite(frames).all()
    assert frames.min() >= 0.0 and frames.max() <= 1.0 and frames.std() > 0.01
    torch.testing.assert_close(generate(model, vae, seed=1, **run), frames, rtol=0, atol=0)
    assert (generate(model, vae, seed=2, **run) - frames).abs().max() > 0.05
    # The trajectory changes the result (the demo's fusers are not the identity).
    assert (generate(model, vae, seed=1, **{**run, "motion": None}) - frames).abs().max() > 1e-4


def test_motion_only_inside_window_and_computed_once(t2v):
    model, vae = t2v
    motion, _ = motion_from_trajectory(
        model, vae, demo_trajectory(), num_frames=FRAMES, width=WIDTH, height=HEIGHT,
        generator=torch.Generator().manual_seed(2), strength=0.7, start=0.2, end=0.5,
    )  # fmt: skip
    spy = Spy(model)
    extracted = []
    model.traj_extractor.register_forward_hook(lambda *args: extracted.append(1))
    sample_latents(
        spy,
        text_embeds=_text(),
        width=WIDTH,
        height=HEIGHT,
        num_frames=FRAMES,
        steps=10,
        seed=0,
        motion=motion,
    )
    active = [i for i, call in enumerate(spy.calls) if call["motion"] is not None]
    assert active == [2, 3, 4, 5] and len(spy.calls) == 10
    assert all(
        spy.calls[i]["motion"][0] is motion.features[0] for i in active
    )  # the same tensors, not recomputed
    assert [spy.calls[i]["scale"] for i in active] == [0.7] * 4
    assert not extracted  # the extractor never runs during sampling


def test_image_latents_are_scaled_posterior_samples_zero_padded(i2v):
    _, vae = i2v
    image = torch.rand(HEIGHT, WIDTH, 3, generator=torch.Generator().manual_seed(4))
    latents = encode_image_latents(
        vae, image, width=WIDTH, height=HEIGHT, num_frames=FRAMES, generator=torch.Generator().manual_seed(9)
    )
    assert latents.shape == SHAPE and latents.dtype == torch.float32
    posterior = vae.encode((image * 2 - 1).permute(2, 0, 1)[None, :, None])  # [1, 3, 1, H, W]
    eps = torch.randn(posterior.mean.shape, generator=torch.Generator().manual_seed(9))
    expected = ((posterior.mean + posterior.std * eps) * 0.7)[:, :, 0]  # [1, 16, h, w]
    torch.testing.assert_close(latents[:, 0], expected, rtol=0, atol=1e-5)
    assert torch.count_nonzero(latents[:, 1:]) == 0


def test_image_is_resized_bicubic_to_generation_size(i2v):
    from PIL import Image

    _, vae = i2v
    big = np.random.default_rng(0).random((2 * HEIGHT, 2 * WIDTH, 3)).astype(np.float32)
    resized = np.stack(
        [
            np.asarray(Image.fromarray(big[..., c], mode="F").resize((WIDTH, HEIGHT), Image.BICUBIC))
            for c in range(3)
        ],
        axis=-1,
    ).clip(0, 1)  # PIL's bicubic, per channel
    kwargs = dict(width=WIDTH, height=HEIGHT, num_frames=FRAMES)
    from_big = encode_image_latents(vae, big, generator=torch.Generator().manual_seed(1), **kwargs)
    from_pil = encode_image_latents(vae, resized, generator=torch.Generator().manual_seed(1), **kwargs)
    assert (from_big - from_pil).abs().max() < 0.05 * from_pil.abs().max()
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        encode_image_latents(vae, big * 255, generator=torch.Generator(), **kwargs)


def test_i2v_and_t2v_refuse_the_wrong_conditioning(t2v, i2v):
    run = dict(text_embeds=_text(), width=WIDTH, height=HEIGHT, num_frames=FRAMES, steps=2, seed=0)
    t2v_model, vae = t2v
    with pytest.raises(ConfigError, match="text-to-video"):
        sample_latents(t2v_model, image_latents=torch.zeros(SHAPE), **run)
    with pytest.raises(ConfigError, match="text-to-video"):
        generate(t2v_model, vae, start_image=np.zeros((HEIGHT, WIDTH, 3), np.float32), **run)
    i2v_model, vae = i2v
    with pytest.raises(ConfigError, match="image-to-video"):
        sample_latents(i2v_model, **run)
    spy = Spy(i2v_model)
    image = np.full((HEIGHT, WIDTH, 3), 0.5, np.float32)
    frames = generate(spy, vae, start_image=image, **run)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and torch.isfinite(frames).all()
    expected = encode_image_latents(vae, image, width=WIDTH, height=HEIGHT, num_frames=FRAMES,
                                    generator=torch.Generator().manual_seed(0))  # fmt: skip
    for call in spy.calls:  # the same image latents for uncond and cond, drawn first from the run's generator
        torch.testing.assert_close(call["image"], expected, rtol=0, atol=0)


def test_interrupt_stops_within_one_step_and_progress_reports_each_step():
    model = ContextScaledModel(ToraConfig.preset("tiny"))
    seen = []
    with pytest.raises(GenerationInterrupted):
        sample_latents(
            model, text_embeds=torch.ones(TEXT), width=WIDTH, height=HEIGHT, num_frames=FRAMES, steps=10, seed=0,
            progress=lambda i, n, x0: seen.append((i, n, tuple(x0.shape))),
            should_stop=lambda: len(seen) >= 2,
        )  # fmt: skip
    assert seen == [(0, 10, SHAPE), (1, 10, SHAPE)]
    assert len(model.calls) == 2


def test_seed_and_generator_are_exclusive_and_text_is_checked():
    model = ContextScaledModel(ToraConfig.preset("tiny"))
    run = dict(width=WIDTH, height=HEIGHT, num_frames=FRAMES, steps=2)
    with pytest.raises(ConfigError, match="either seed or generator"):
        sample_latents(model, text_embeds=torch.ones(TEXT), seed=1, generator=torch.Generator(), **run)
    with pytest.raises(ConfigError, match=r"text_embeds must be \[1, L, 32\]"):
        sample_latents(model, text_embeds=torch.ones(1, 16, 64), seed=1, **run)
    a = sample_latents(model, text_embeds=torch.ones(TEXT), generator=torch.Generator().manual_seed(3), **run)
    torch.testing.assert_close(
        sample_latents(model, text_embeds=torch.ones(TEXT), seed=3, **run), a, rtol=0, atol=0
    )


@pytest.mark.parametrize("cfg", [math.nan, math.inf, -math.inf])
def test_a_non_finite_cfg_is_refused_before_the_network_runs(cfg):
    """nan or ±inf would turn every latent into nan without an error; the CLI's and the node's own checks are not
    the only guard, sample_latents (and generate, which calls it) refuses it too."""
    model = ContextScaledModel(ToraConfig.preset("tiny"))
    expected = rf"^cfg: expected a finite guidance scale, got {cfg}; pass a number such as the official 6\.0$"
    run = dict(text_embeds=torch.ones(TEXT), width=WIDTH, height=HEIGHT, num_frames=FRAMES, steps=2, seed=0)
    for dynamic_cfg in (True, False):
        with pytest.raises(ConfigError, match=expected):
            sample_latents(model, cfg=cfg, dynamic_cfg=dynamic_cfg, **run)
    assert model.calls == []
    assert sample_latents(model, cfg=6.0, **run).isfinite().all() and len(model.calls) == 2


def test_decode_divides_by_scale_and_maps_to_unit_range(t2v):
    _, vae = t2v
    latents = torch.randn(SHAPE, generator=torch.Generator().manual_seed(8))
    frames = decode_latents(vae, latents, tiling=False)
    video = vae.decode(latents.permute(0, 2, 1, 3, 4) / 0.7)  # [1, 3, F, H, W]
    expected = ((video + 1) / 2).clamp(0, 1)[0].permute(1, 2, 3, 0)  # [F, H, W, 3]
    torch.testing.assert_close(frames, expected, rtol=0, atol=0)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    with pytest.raises(ConfigError, match="tiling"):
        decode_latents(vae, latents, tiling="yes")
    with pytest.raises(ConfigError, match="odd T"):
        decode_latents(vae, latents[:, :2])


def test_placement_prefers_the_models_compute_dtype():
    class Fp8Stored(nn.Module):  # fp8 weight storage, bf16 compute (the node layer's low-memory mode)
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(2, dtype=torch.float8_e4m3fn), requires_grad=False)

        @property
        def dtype(self) -> torch.dtype:
            return torch.bfloat16

    assert placement(Fp8Stored()) == (torch.device("cpu"), torch.bfloat16)
    assert placement(nn.Linear(2, 2, dtype=torch.float16)) == (torch.device("cpu"), torch.float16)


def test_network_runs_in_model_dtype_while_latents_stay_float32(t2v):
    model, _ = t2v
    spy = Spy(copy.deepcopy(model).to(torch.bfloat16))
    run = dict(text_embeds=_text(), width=WIDTH, height=HEIGHT, num_frames=FRAMES, steps=3, seed=0)
    out = sample_latents(spy, **run)
    assert out.dtype == torch.float32
    assert all(c["latents"].dtype == c["text"].dtype == torch.bfloat16 for c in spy.calls)
    reference = sample_latents(model, **run)  # float32 network
    assert (out - reference).abs().max() < 0.05 * reference.abs().max()


def test_latent_grid_follows_the_transformers_vae_and_mismatched_vaes_are_refused(t2v):
    """A transformer trained on a ×4 VAE samples a 2× finer latent grid at the same pixel size; pairing it with the
    ×8 VAE (or the ×8 transformer with the ×4 VAE) is an error naming both factors, not a silently wrong video."""
    model_x8, vae_x8 = t2v
    torch.manual_seed(3)
    model_x4 = build_transformer(ToraConfig.preset("tiny").replace(vae_spatial_compression=4))
    vae_x4 = CogVideoXVAE(
        VAEConfig(channels=8, channel_mult=(1, 2, 2), layers_per_block=1, norm_groups=4)
    ).eval()
    run = dict(text_embeds=_text(), width=WIDTH, height=HEIGHT, num_frames=FRAMES, steps=2, seed=0)
    latents = sample_latents(model_x4, **run)
    assert latents.shape == (*SHAPE[:3], HEIGHT // 4, WIDTH // 4)
    frames = generate(model_x4, vae_x4, **run)
    assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3)
    for model, vae, expected, got in ((model_x4, vae_x8, 4, 8), (model_x8, vae_x4, 8, 4)):
        with pytest.raises(
            ConfigError, match=rf"latents of a ×{expected} VAE but the VAE given compresses ×{got}"
        ):
            generate(model, vae, **run)
        with pytest.raises(ConfigError, match=rf"×{expected} VAE"):
            motion_from_trajectory(
                model, vae, demo_trajectory(), num_frames=FRAMES, width=WIDTH, height=HEIGHT,
                generator=torch.Generator().manual_seed(2),
            )  # fmt: skip
    with pytest.raises(ConfigError, match="power of two"):
        ToraConfig.preset("tiny").replace(vae_spatial_compression=6)
