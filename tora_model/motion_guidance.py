"""Motion guidance: trajectory → flow video → VAE motion latents → extractor features, computed once.

Source: `tora_spec.md` §2.6 (the flow video is scaled to [-1, 1], encoded by the ordinary CogVideoX VAE, its
posterior is SAMPLED and multiplied by the latent scale 0.7) and §3 (the trajectory extractor is deterministic in eval
mode, so its 42 features are computed once per generation instead of inside every network call, an exact
optimisation). One encoding serves both CFG branches, as in the diffusers version (SAT encodes two copies with
independent posterior noise). The step window (`start`/`end`) and `strength` are the per-run settings ComfyUI users
know from other Tora packs.

Two official ways to encode the flow video (`FLOW_ENCODINGS`), equal up to 9 frames and different from 17 frames
up, because the VAE's group norms take statistics over the frames of one call: the SAT code encodes all frames in
one pass (the default here, and what the bundled tiny model was trained with); the diffusers-version pipeline
encodes them in 8-frame chunks [0:9], [9:17], … with the causal cache (a quarter of the activation memory at 49
frames). The flow video, the VAE encode and the extractor are separate steps, so a caller can hold only one of the
VAE or the extractor on the GPU at a time.

Layouts: flow RGB video uint8 [F, H, W, 3] (F = 8k + 1); VAE input [1, 3, F, H, W] in [-1, 1]; motion latents
[1, T, 16, H/8, W/8] with T = (F - 1) // 4 + 1; features: one tensor per transformer block,
[(B·T), motion_channels, H/16, W/16] with B = 1.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange

from .errors import ConfigError
from .flow import SIGMA, flow_to_rgb, flow_video_to_vae_input, render_flow
from .generation_setup import check_generation_size, check_vae_pairing, placement, vae_tiling
from .resample import resample
from .vae import SCALE

log = logging.getLogger(__name__)

# Frames per VAE pass when encoding the flow video: None = one pass (SAT), 8 = diffusers-version chunks.
FLOW_ENCODINGS: dict[str, int | None] = {"sat": None, "diffusers": 8}


@dataclass(frozen=True, eq=False)
class MotionGuidance:
    """Trajectory features for one generation plus the settings that say how strongly and when they apply.

    Compared by identity (eq=False): field-wise equality would compare feature tensors, which is ambiguous.
    """

    features: tuple[
        torch.Tensor, ...
    ]  # one per transformer block, each [(B·T), motion_channels, h/2, w/2], B = 1
    num_frames: int  # pixel frames F of the flow video (8k + 1)
    height: int  # generation size in pixels the flow was rendered at
    width: int
    strength: float = 1.0  # multiplier on the fusers' modulation
    start: float = 0.0  # fraction of the denoising steps where guidance starts (0..1)
    end: float = 1.0  # fraction where it ends; steps outside [start, end] run without motion

    def __post_init__(self) -> None:
        if not self.features:
            raise ConfigError("MotionGuidance needs one feature tensor per transformer block, got none")
        if not (math.isfinite(self.strength) and self.strength >= 0):
            raise ConfigError(f"motion strength must be a finite number >= 0, got {self.strength}")
        if not (0.0 <= self.start <= self.end <= 1.0):
            raise ConfigError(
                f"motion window must satisfy 0 <= start <= end <= 1, got start={self.start}, end={self.end}; "
                "e.g. start=0.0, end=0.2 guides only the first fifth of the steps"
            )

    @property
    def latent_frames(self) -> int:
        return (self.num_frames - 1) // 4 + 1

    def active_at(self, step_index: int, num_steps: int) -> bool:
        """True when step `step_index` (0-based) of `num_steps` lies in the window: start <= i / n <= end."""
        if not 0 <= step_index < num_steps:
            raise ConfigError(f"step index {step_index} is outside 0..{num_steps - 1}")
        if self.strength == 0:
            return False
        fraction = step_index / num_steps
        return self.start <= fraction <= self.end

    def with_settings(
        self, strength: float | None = None, start: float | None = None, end: float | None = None
    ) -> MotionGuidance:
        """A copy with new strength / window (validated); features are shared, not copied."""
        changes = {k: v for k, v in (("strength", strength), ("start", start), ("end", end)) if v is not None}
        return dataclasses.replace(self, **changes)


def _flow_video_tensor(flow_rgb: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate a colour-coded flow video and return it as a uint8 tensor [F, H, W, 3]."""
    video = torch.from_numpy(np.ascontiguousarray(flow_rgb)) if isinstance(flow_rgb, np.ndarray) else flow_rgb
    if video.dtype != torch.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise ConfigError(
            f"flow video must be uint8 [F, H, W, 3] (colour-coded flow, e.g. from flow_to_rgb), got "
            f"{tuple(video.shape)} {video.dtype}; convert a raw [F, H, W, 2] flow with tora_model.flow.flow_to_rgb"
        )
    frames, height, width = video.shape[:3]
    check_generation_size(width, height, frames, warn=False)
    return video


def flow_encoding_chunk(encoding: str) -> int | None:
    """Frames per VAE pass of a `FLOW_ENCODINGS` name; a clear error for anything else."""
    if encoding not in FLOW_ENCODINGS:
        raise ConfigError(
            f"flow encoding must be one of {sorted(FLOW_ENCODINGS)} (sat: one pass as the SAT code; diffusers: "
            f"8-frame chunks as the diffusers-version pipeline), got {encoding!r}"
        )
    return FLOW_ENCODINGS[encoding]


def encode_flow_video(
    vae,
    flow_rgb: np.ndarray | torch.Tensor,
    *,
    generator: torch.Generator,
    tiling: bool | str = "auto",
    encoding: str = "sat",
) -> torch.Tensor:
    """Colour-coded flow video uint8 [F, H, W, 3] → motion latents [1, T, 16, H/c, W/c] (c = VAE spatial
    compression) (posterior sample × 0.7); `encoding` names the frame chunking (`FLOW_ENCODINGS`)."""
    per_chunk = flow_encoding_chunk(encoding)
    video = _flow_video_tensor(flow_rgb)
    device, dtype = placement(vae)
    pixels = flow_video_to_vae_input(video, dtype=dtype, device=device)  # [1, 3, F, H, W] in [-1, 1]
    with torch.no_grad():
        posterior = vae.encode(
            pixels,
            frames_per_chunk=per_chunk,
            tiling=vae_tiling(
                vae, tiling, tuple(n // vae.config.spatial_compression for n in video.shape[1:3])
            ),
        )
        latents = posterior.sample(generator) * SCALE  # [1, 16, T, h, w]
    return rearrange(latents.float(), "b c t h w -> b t c h w")  # [1, T, 16, h, w]


def check_motion_model(model, vae) -> None:
    """Raise ConfigError unless `model` has the Tora motion modules and `vae` makes its latent grid."""
    if not model.config.has_motion_modules:
        raise ConfigError(
            "this transformer has no Tora motion modules (traj_extractor / fuser weights); load a Tora checkpoint "
            "to use trajectories, or generate without motion guidance"
        )
    check_vae_pairing(model, vae)


def guidance_from_latents(
    model,
    latents: torch.Tensor,
    *,
    num_frames: int,
    height: int,
    width: int,
    strength: float = 1.0,
    start: float = 0.0,
    end: float = 1.0,
) -> MotionGuidance:
    """Run the trajectory extractor once on motion latents [1, T, 16, h, w]; features on the extractor's device,
    in the model's compute dtype (only `model.traj_extractor` needs to be on the compute device)."""
    device = next(model.traj_extractor.parameters()).device
    with torch.no_grad():
        features = model.extract_motion(latents.to(device=device, dtype=model.dtype))
    log.info("motion features: %d blocks of %s", len(features), tuple(features[0].shape))
    return MotionGuidance(
        features=tuple(features),
        num_frames=num_frames,
        height=height,
        width=width,
        strength=strength,
        start=start,
        end=end,
    )


def motion_from_flow(
    model,
    vae,
    flow_rgb: np.ndarray | torch.Tensor,
    *,
    generator: torch.Generator,
    strength: float = 1.0,
    start: float = 0.0,
    end: float = 1.0,
    tiling: bool | str = "auto",
    encoding: str = "sat",
) -> MotionGuidance:
    """Encode a colour-coded flow video and run the trajectory extractor once; features in the model dtype/device."""
    check_motion_model(model, vae)
    video = _flow_video_tensor(flow_rgb)
    frames, height, width = video.shape[:3]
    latents = encode_flow_video(vae, video, generator=generator, tiling=tiling, encoding=encoding)
    return guidance_from_latents(
        model, latents, num_frames=frames, height=height, width=width, strength=strength, start=start, end=end
    )


def trajectory_flow_rgb(
    trajectory,
    *,
    num_frames: int,
    width: int,
    height: int,
    mode: str = "auto",
    sigma: float = SIGMA,
) -> np.ndarray:
    """Trajectory → per-frame points → Gaussian-spread flow → colour-coded flow video uint8 [F, H, W, 3].

    `sigma`: the spreading the model was trained with (`ToraConfig.flow_sigma`; 10 px for the release).
    """
    # "auto" (None for resample): official processing for official .txt trajectories, smooth resampling otherwise.
    points = resample(trajectory, num_frames, width, height, None if mode == "auto" else mode)  # [N, F, 2]
    flow = render_flow(points, height, width, sigma)  # [F, H, W, 2] float32
    return flow_to_rgb(flow)  # [F, H, W, 3] uint8


def motion_from_trajectory(
    model,
    vae,
    trajectory,
    *,
    num_frames: int,
    width: int,
    height: int,
    mode: str = "auto",
    generator: torch.Generator,
    strength: float = 1.0,
    start: float = 0.0,
    end: float = 1.0,
    tiling: bool | str = "auto",
    encoding: str = "sat",
) -> tuple[MotionGuidance, np.ndarray]:
    """Trajectory → flow RGB (`trajectory_flow_rgb`, spread with the model's `flow_sigma`) → motion guidance; also
    returns the flow RGB."""
    flow_rgb = trajectory_flow_rgb(
        trajectory,
        num_frames=num_frames,
        width=width,
        height=height,
        mode=mode,
        sigma=model.config.flow_sigma,
    )
    motion = motion_from_flow(
        model,
        vae,
        flow_rgb,
        generator=generator,
        strength=strength,
        start=start,
        end=end,
        tiling=tiling,
        encoding=encoding,
    )
    return motion, flow_rgb
