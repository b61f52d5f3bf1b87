"""Generation pipeline: text embeddings (+ start image, + motion guidance) → denoised latents → frames.

Source: `tora_spec.md` §6.1 (the official SAT inference): the I2V start image is resized to the generation size (bicubic),
scaled to [-1, 1], VAE-encoded (posterior sample × 0.7), zero-padded to T latent frames and concatenated after the noisy
latents on channels, with no noise augmentation; the unconditional context is all zeros; the initial noise is a float32
[1, T, 16, h, w] draw made after the motion latents were encoded; latents stay float32 between steps while the network runs
in the model dtype; CFG runs cond and uncond in one batched forward in [uncond, cond] order. Decoding divides by 0.7.

Layouts: latents [1, T, 16, h, w] (T = (F - 1) // 4 + 1, h = H / c, w = W / c with c the VAE's spatial compression:
8 for CogVideoX), "scaled" = in the ×0.7 domain the
transformer sees; text embeddings [1, L, text_dim]; frames [F, H, W, 3] float32 in [0, 1].
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from .errors import ConfigError
from .generation_setup import check_generation_size, check_vae_pairing, placement, vae_tiling
from .sampling import ModelFn, ProgressFn, StepInfo, sample
from .speed import NetworkRunner, SpeedOptions
from .vae import SCALE

if TYPE_CHECKING:
    from .motion_guidance import MotionGuidance

log = logging.getLogger(__name__)

LATENT_CHANNELS = 16


def latent_frames(num_frames: int) -> int:
    """Latent frames T of a 4k+1 pixel-frame video (causal VAE: frame 0 alone, then groups of 4)."""
    return (num_frames - 1) // 4 + 1


def _image_tensor(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate a start image [H, W, 3] float in [0, 1] and return it as float32 [1, 3, H, W]."""
    tensor = torch.from_numpy(np.asarray(image)) if isinstance(image, np.ndarray) else image
    if tensor.ndim != 3 or tensor.shape[-1] != 3 or not tensor.is_floating_point():
        raise ConfigError(
            f"start image must be a float array [H, W, 3] with values in [0, 1], got {tuple(tensor.shape)} "
            f"{tensor.dtype}; for a ComfyUI IMAGE batch pass image[0], for uint8 pixels divide by 255"
        )
    low, high = tensor.min().item(), tensor.max().item()
    if low < 0.0 or high > 1.0:
        raise ConfigError(f"start image values must lie in [0, 1], got [{low:.4g}, {high:.4g}]")
    return rearrange(tensor.float(), "h w c -> 1 c h w")


def encode_image_latents(
    vae,
    image: np.ndarray | torch.Tensor,
    *,
    width: int,
    height: int,
    num_frames: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Start image [H, W, 3] in [0, 1] → I2V image latents [1, T, 16, h, w] float32 (frame 0 encoded, rest zero)."""
    check_generation_size(width, height, num_frames, warn=False)
    device, dtype = placement(vae)
    pixels = _image_tensor(image).to(device)  # [1, 3, H0, W0]
    # Bicubic with antialiasing approximates PIL's resize; bicubic overshoot is clamped back into the pixel range.
    pixels = F.interpolate(pixels, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    pixels = pixels.clamp(0.0, 1.0) * 2.0 - 1.0  # [1, 3, H, W] in [-1, 1]
    pixels = rearrange(pixels, "b c h w -> b c 1 h w").to(dtype)  # [1, 3, 1, H, W]
    with torch.no_grad():
        latents = vae.encode(pixels).sample(generator) * SCALE  # [1, 16, 1, h, w]
    latents = rearrange(latents.float(), "b c t h w -> b t c h w")  # [1, 1, 16, h, w]
    padding = latents.new_zeros(1, latent_frames(num_frames) - 1, *latents.shape[2:])
    return torch.cat([latents, padding], dim=1)  # [1, T, 16, h, w]


def decode_latents(vae, latents: torch.Tensor, *, tiling: bool | str = "auto") -> torch.Tensor:
    """Scaled latents [1, T, 16, h, w] → frames [F, H, W, 3] float32 in [0, 1] on the CPU (F = 4T − 3)."""
    if latents.ndim != 5 or latents.shape[2] != LATENT_CHANNELS or latents.shape[1] % 2 == 0:
        raise ConfigError(
            f"latents must be [B, T, {LATENT_CHANNELS}, h, w] with an odd T (the VAE turns an even T into 4·T frames "
            f"instead of 4·T - 3), got {tuple(latents.shape)}"
        )
    device, dtype = placement(vae)
    z = rearrange(latents, "b t c h w -> b c t h w") / SCALE  # [B, 16, T, h, w], unscaled
    tiles = vae_tiling(vae, tiling, tuple(latents.shape[-2:]))
    with torch.no_grad():
        video = vae.decode(z.to(device=device, dtype=dtype), tiling=tiles)  # [B, 3, F, H, W]
    frames = ((video.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    return rearrange(frames, "b c f h w -> (b f) h w c").cpu()  # [F, H, W, 3]


def _make_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """The run's RNG: the caller's generator, or a CPU generator seeded with `seed` (random seed if None, logged)."""
    if generator is not None:
        if seed is not None:
            raise ConfigError(
                "pass either seed or generator, not both (a generator already carries its seed)"
            )
        return generator
    generator = torch.Generator("cpu")
    if seed is None:
        log.info("no seed given: using random seed %d", generator.seed())
    else:
        generator.manual_seed(seed)
    return generator


def _check_image_mode(config, has_image: bool) -> None:
    if config.is_i2v and not has_image:
        raise ConfigError(
            "this is an image-to-video (I2V) model: give a start image (encode_image_latents) or load the T2V model"
        )
    if not config.is_i2v and has_image:
        raise ConfigError(
            "a start image was given to a text-to-video (T2V) model; load the I2V model to use one"
        )


def _check_conditioning(
    model,
    text_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor | None,
    shape: tuple[int, ...],
    motion: MotionGuidance | None,
    image_latents: torch.Tensor | None,
) -> None:
    """Refuse mismatched inputs before any noise is drawn or any step runs."""
    config = model.config
    expected_text = (1, text_embeds.shape[1] if text_embeds.ndim == 3 else "L", config.text_dim)
    if text_embeds.ndim != 3 or tuple(text_embeds.shape) != expected_text:
        raise ConfigError(
            f"text_embeds must be [1, L, {config.text_dim}] (T5 hidden states for one prompt), got "
            f"{tuple(text_embeds.shape)}"
        )
    if uncond_embeds is not None and uncond_embeds.shape != text_embeds.shape:
        raise ConfigError(
            f"uncond_embeds must have the shape of text_embeds {tuple(text_embeds.shape)}, got "
            f"{tuple(uncond_embeds.shape)}; or pass None for the official all-zero unconditional context"
        )
    _check_image_mode(config, image_latents is not None)
    if image_latents is not None and tuple(image_latents.shape) != shape:
        raise ConfigError(
            f"image_latents must be {list(shape)} for this size, got {list(image_latents.shape)}"
        )
    if motion is not None:
        if not config.has_motion_modules:
            raise ConfigError(
                "motion guidance needs a Tora model (traj_extractor/fuser weights); this one has none"
            )
        _, frames, _, h, w = shape
        c = config.vae_spatial_compression
        size = (motion.num_frames, motion.width, motion.height)
        if size != ((frames - 1) * 4 + 1, w * c, h * c):
            raise ConfigError(
                f"motion guidance was encoded for {size[0]} frames at {size[1]}x{size[2]} but the generation is "
                f"{(frames - 1) * 4 + 1} frames at {w * c}x{h * c}; encode the trajectory at the generation size"
            )


def _model_fn(
    model,
    motion: MotionGuidance | None,
    image_latents: torch.Tensor | None,
    runner: NetworkRunner | None = None,
) -> ModelFn:
    """The sampler's network callback: float32 x → model dtype/device, motion only inside its step window.

    Without a runner it is the model's own forward; a runner (speed options: step cache, compiled blocks) gets the
    same arguments plus the step."""
    device, dtype = placement(model)
    image = None if image_latents is None else image_latents.to(device=device, dtype=dtype)
    network = model if runner is None else functools.partial(runner, model)

    def model_fn(
        x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, step: StepInfo
    ) -> torch.Tensor:
        active = motion is not None and motion.active_at(step.index, step.total)
        arguments = () if runner is None else (step,)
        return network(
            *arguments,
            x.to(device=device, dtype=dtype),  # [B', T, 16, h, w]
            timestep.to(device),  # [B']
            context.to(device=device, dtype=dtype),  # [B', L, D]
            motion_features=motion.features if active else None,  # B = 1 rows broadcast over [uncond, cond]
            image_latents=image,  # [1, T, 16, h, w], the same for uncond and cond (spec §6.1)
            motion_scale=motion.strength if active else 1.0,
        )

    return model_fn


def sample_latents(
    model,
    *,
    text_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor | None = None,
    width: int,
    height: int,
    num_frames: int,
    steps: int = 50,
    cfg: float = 6.0,
    dynamic_cfg: bool = True,
    sampler: str = "dpmpp_2m_sde",
    seed: int | None = None,
    generator: torch.Generator | None = None,
    motion: MotionGuidance | None = None,
    image_latents: torch.Tensor | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    numerics: str = "sat",
    speed: SpeedOptions | NetworkRunner | None = None,
) -> torch.Tensor:
    """Denoise from seeded noise to scaled latents [1, T, 16, h, w] float32 (see the module docstring).

    uncond_embeds None = an all-zero unconditional context (official SAT). The initial noise is drawn from the
    run's generator on the generator's device and moved to the model's device; the sampler's per-step noise
    follows from the same generator. progress(step, total, x0) runs after every step; should_stop() before
    every step (GenerationInterrupted when it answers True). speed: step cache, CFG mode and compiled blocks
    (`speed.SpeedOptions`; None = the exact defaults), or a `NetworkRunner` made for this run (to read its counters).
    """
    check_generation_size(width, height, num_frames, trained_size=model.config.trained_size)
    if not math.isfinite(cfg):  # nan or ±inf would turn every latent into nan: a blank video, no error
        raise ConfigError(
            f"cfg: expected a finite guidance scale, got {cfg}; pass a number such as the official 6.0"
        )
    compression = model.config.vae_spatial_compression
    shape = (1, latent_frames(num_frames), LATENT_CHANNELS, height // compression, width // compression)
    _check_conditioning(model, text_embeds, uncond_embeds, shape, motion, image_latents)
    generator = _make_generator(seed, generator)
    device, _ = placement(model)
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=torch.float32).to(device)
    text_embeds = text_embeds.to(device)
    uncond = torch.zeros_like(text_embeds) if uncond_embeds is None else uncond_embeds.to(device)
    runner = speed
    if isinstance(speed, SpeedOptions):
        runner = None if speed.plain_forward else NetworkRunner(speed, steps, motion, device)
    options = speed if isinstance(speed, SpeedOptions) else getattr(speed, "options", SpeedOptions())
    latents = sample(
        _model_fn(model, motion, image_latents, runner),
        noise,
        cond=text_embeds,
        uncond=uncond,
        steps=steps,
        cfg_scale=cfg,
        dynamic_cfg=dynamic_cfg,
        sampler=sampler,
        numerics=numerics,
        generator=generator,
        callback=progress,
        should_stop=should_stop,
        **options.sampler_kwargs(),
    )
    if runner is not None:
        log.info("sampling: %s", runner.summary())
    return latents


def generate(
    model,
    vae,
    *,
    text_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor | None = None,
    width: int,
    height: int,
    num_frames: int,
    start_image: np.ndarray | torch.Tensor | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    tiling: bool | str = "auto",
    **sampling,
) -> torch.Tensor:
    """Text (+ start image, + motion) → frames [F, H, W, 3] float32 in [0, 1] on the CPU.

    The start image is encoded with the run's generator before the initial noise is drawn; `sampling` takes the
    remaining `sample_latents` arguments (steps, cfg, dynamic_cfg, sampler, motion, progress, should_stop, numerics).
    """
    check_generation_size(width, height, num_frames, warn=False)
    _check_image_mode(model.config, start_image is not None)
    check_vae_pairing(model, vae)
    generator = _make_generator(seed, generator)
    image_latents = None
    if start_image is not None:
        image_latents = encode_image_latents(
            vae, start_image, width=width, height=height, num_frames=num_frames, generator=generator
        )
    latents = sample_latents(
        model,
        text_embeds=text_embeds,
        uncond_embeds=uncond_embeds,
        width=width,
        height=height,
        num_frames=num_frames,
        generator=generator,
        image_latents=image_latents,
        **sampling,
    )
    return decode_latents(vae, latents, tiling=tiling)
