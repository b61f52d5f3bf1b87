"""What a generation checks and resolves before any network runs, shared by `pipeline.py` and `motion_guidance.py`.

Source: `tora_spec.md` §1.5 (sizes: width and height multiples of 16 — the VAE's ×8 and the 2×2 patches — and 8k+1
frames, an odd latent frame count; the released weights were trained at 720×480) and §9.8 (tiled VAE decoding bounds
GPU memory at full resolution). Here: the size rules (`check_generation_size`), the transformer/VAE pairing
(`check_vae_pairing`), where a model runs (`placement`: device and compute dtype) and the VAE tiling of a run
(`vae_tiling`). Neither the pipeline nor motion guidance is imported here, so both can import this module.

Layouts: sizes in pixels (width, height) and pixel frames; latent grids (h, w).
"""

from __future__ import annotations

import logging

import torch

from .errors import ConfigError
from .vae import Tiling

log = logging.getLogger(__name__)

SPATIAL_MULTIPLE = 16  # VAE ×8 then 2×2 patches
FRAME_STEP = 8  # pixel frames 8k + 1 ⇔ an odd number of latent frames (spec §1.5: 9, 11 or 13 latents)
TRAINED_SIZE = (720, 480)  # width, height of the released weights (spec §1.5)


def placement(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """(device, compute dtype) of a model: its `dtype` property when it has one (the transformer's compute dtype,
    also with fp8-stored block weights), else its first parameter's; the device is the first parameter's."""
    param = next(module.parameters())
    dtype = getattr(module, "dtype", None)
    return param.device, dtype if isinstance(dtype, torch.dtype) else param.dtype


def check_generation_size(
    width: int,
    height: int,
    num_frames: int,
    *,
    warn: bool = True,
    trained_size: tuple[int, int] = TRAINED_SIZE,
) -> None:
    """Raise ConfigError unless width/height are multiples of 16 and num_frames = 8k + 1; warn off the trained size
    (`ToraConfig.trained_size` of the model in use; the released weights' 720×480 by default)."""
    problems = []
    for name, value in (("width", width), ("height", height)):
        if value < SPATIAL_MULTIPLE or value % SPATIAL_MULTIPLE:
            lower = max(SPATIAL_MULTIPLE, value // SPATIAL_MULTIPLE * SPATIAL_MULTIPLE)
            problems.append(
                f"{name} must be a positive multiple of {SPATIAL_MULTIPLE}, got {value} "
                f"(nearest valid: {lower} or {lower + SPATIAL_MULTIPLE})"
            )
    if num_frames < FRAME_STEP + 1 or (num_frames - 1) % FRAME_STEP:
        lower = max(FRAME_STEP + 1, (num_frames - 1) // FRAME_STEP * FRAME_STEP + 1)
        nearest = f"{lower} or {lower + FRAME_STEP}" if lower < num_frames else str(lower)
        problems.append(
            f"num_frames must be 8k+1 (9, 17, 25, 33, 41, 49), got {num_frames} (nearest valid: {nearest}). That is "
            "4k+1 with an odd latent frame count T = (num_frames - 1) / 4 + 1: the CogVideoX VAE decodes an even T "
            "into 4·T frames instead of 4·T - 3 (the official demo allows 9, 11 or 13 latent frames)"
        )
    if problems:
        raise ConfigError("; ".join(problems))
    if warn and (width, height) != tuple(trained_size):
        log.warning(
            "generation size %dx%d: these Tora weights were trained only at %dx%d; other sizes may degrade",
            width,
            height,
            *trained_size,
        )


def check_vae_pairing(model, vae) -> None:
    """Raise ConfigError unless the VAE makes the latent grid the transformer was trained on."""
    expected, got = model.config.vae_spatial_compression, vae.config.spatial_compression
    if expected != got:
        raise ConfigError(
            f"this transformer denoises latents of a ×{expected} VAE but the VAE given compresses ×{got}; "
            "load the VAE that was released (or trained) with these transformer weights"
        )


def vae_tiling(vae, tiling: bool | str, latent_hw: tuple[int, int]) -> Tiling | None:
    """Resolve `tiling`: True/False, or "auto" = tile only on a CUDA device when the frame exceeds one tile.

    Untiled is exact (the official numerics); tiling bounds GPU memory at full resolution (spec §9.8).
    """
    if tiling == "auto":
        tile = Tiling()
        large = latent_hw[0] > tile.height or latent_hw[1] > tile.width
        return tile if large and next(vae.parameters()).device.type == "cuda" else None
    if isinstance(tiling, bool):
        return Tiling() if tiling else None
    raise ConfigError(f'tiling must be True, False or "auto", got {tiling!r}')
