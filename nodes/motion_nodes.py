"""TrajectoryToMotionLatent: trajectory, core TRACKS or a colour-coded flow video → TORA_MOTION for the sampler.

The flow video is rendered at the generation size, VAE-encoded and run through the trajectory extractor once;
the TORA_MOTION value (`MotionGuidance`, frozen) carries the 42 features plus strength and the step window.
On the GPU one thing at a time: the VAE alone while it encodes, then the trajectory extractor alone (tens of MiB;
the 42 blocks and their fusers stay where they are). The features are handed on from ComfyUI's intermediate
device (CPU memory unless --gpu-only), where its output cache can afford them; the sampler moves them over.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from ..tora_model.errors import ConfigError
from ..tora_model.generation_setup import check_generation_size
from ..tora_model.memory_estimate import extractor_bytes, flow_encode_bytes
from ..tora_model.motion_guidance import (
    FLOW_ENCODINGS,
    check_motion_model,
    encode_flow_video,
    flow_encoding_chunk,
    guidance_from_latents,
    trajectory_flow_rgb,
)
from ..tora_model.tracks import trajectory_from_tracks
from ..tora_model.vae import Tiling
from . import comfy_glue, drawing, runtime
from .trajectory_nodes import FRAMES, RESAMPLE_MODES, SIZE

log = logging.getLogger(__name__)

# The flow video's VAE posterior sample is drawn from a fixed seed: same trajectory, same motion.
ENCODE_SEED = 0


class TrajectoryToMotionLatent:
    """Encode a trajectory into Tora motion guidance."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    "TORA_MODEL",
                    {"tooltip": "Tora model (its trajectory extractor encodes the motion)."},
                ),
                "vae": ("TORA_VAE", {"tooltip": "CogVideoX VAE that encodes the flow video."}),
                "width": (
                    "INT",
                    {"default": 720, **SIZE, "tooltip": "Generation width; must match the sampler."},
                ),
                "height": (
                    "INT",
                    {"default": 480, **SIZE, "tooltip": "Generation height; must match the sampler."},
                ),
                "frames": (
                    "INT",
                    {**FRAMES, "tooltip": "Generation length in frames (8k+1); must match the sampler."},
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 10.0,
                        "step": 0.01,
                        "tooltip": "Multiplier on the motion.",
                    },
                ),
                "start_percent": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Fraction of the denoising steps after which motion guidance starts.",
                    },
                ),
                "end_percent": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Fraction of the steps where it ends (for I2V try 0.2-0.5 if motion is too rigid).",
                    },
                ),
                "resample": (
                    list(RESAMPLE_MODES),
                    {
                        "default": "auto",
                        "tooltip": "auto: official processing for official .txt trajectories, per-sample timing for "
                        "KJNodes coordinate strings (one sample per frame, pauses kept), smooth arc-length timing "
                        "for drawn paths. per_point: time any linear trajectory by its point index.",
                    },
                ),
                "tiling": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Encode the flow video in tiles (less memory)."},
                ),
            },
            "optional": {
                "flow_encoding": (
                    list(FLOW_ENCODINGS),
                    {
                        "default": "sat",
                        "tooltip": "How the VAE reads the flow video. sat (default): all frames in one pass, as the "
                        "official SAT code (and the bundled tiny model's training). diffusers: 8-frame chunks as the "
                        "official diffusers-version pipeline; about a quarter of the VAE's memory at 49 frames. Both "
                        "are the same up to 9 frames; from 17 frames the motion latents (and so the video) differ.",
                    },
                ),
                "trajectory": (
                    "TORA_TRAJECTORY",
                    {"tooltip": "Trajectory from Trajectory Canvas / Load Trajectory."},
                ),
                "flow_images": (
                    "IMAGE",
                    {
                        "tooltip": "Instead of a trajectory: a colour-coded flow video [F, H, W, 3] (dense motion), "
                        "used as given; sparse paths should be spread as the model was trained (σ = 10 px for the "
                        "released weights, 5 px for the bundled tiny model)."
                    },
                ),
                "tracks": (
                    "TRACKS",
                    {
                        "tooltip": "Instead of a trajectory: ComfyUI core TRACKS (GenerateTracks, WanMoveTracksFromCoords, "
                        "Trajectory Canvas …) in width × height pixels, one entry per frame; invisible or off-frame "
                        "entries add no motion. resample auto times them per entry.",
                    },
                ),
            },
        }

    RETURN_TYPES = ("TORA_MOTION", "IMAGE")
    RETURN_NAMES = ("motion", "flow_preview")
    OUTPUT_TOOLTIPS = ("Motion guidance for Tora Sampler.", "The colour-coded flow video in [0, 1].")
    FUNCTION = "encode"
    CATEGORY = "Tora/trajectory"

    def encode(
        self,
        model,
        vae,
        width,
        height,
        frames,
        strength,
        start_percent,
        end_percent,
        resample,
        tiling,
        flow_encoding="sat",
        trajectory=None,
        flow_images=None,
        tracks=None,
    ):
        check_generation_size(width, height, frames, trained_size=model.transformer.config.trained_size)
        self._check_sources(trajectory, flow_images, tracks, width, height)
        if tracks is not None:
            trajectory = trajectory_from_tracks(tracks, width, height)
        check_motion_model(model.transformer, vae.vae)
        chunk = flow_encoding_chunk(flow_encoding)
        if trajectory is not None:
            mode = "auto" if resample == "auto" else resample
            flow_rgb = trajectory_flow_rgb(
                trajectory,
                num_frames=frames,
                width=width,
                height=height,
                mode=mode,
                sigma=model.transformer.config.flow_sigma,
            )
        else:
            flow_rgb = self._flow_video(flow_images, width, height, frames)
        generator = torch.Generator("cpu").manual_seed(ENCODE_SEED)
        tiles = Tiling() if tiling else None
        size = (width, height, frames)
        encode_bytes = flow_encode_bytes(
            vae.vae.config, *size, vae.dtype, tiling=tiles, frames_per_chunk=chunk
        )
        with runtime.on_device(runtime.vae_plan(vae, encode_bytes)):
            latents = encode_flow_video(
                vae.vae, flow_rgb, generator=generator, tiling=tiling, encoding=flow_encoding
            )  # [1, T, 16, h, w] float32
        extract_bytes = extractor_bytes(model.config, *size, model.compute_dtype)
        with runtime.on_device(runtime.extractor_plan(model, extract_bytes)):
            motion = guidance_from_latents(
                model.transformer,
                latents,
                num_frames=frames,
                height=height,
                width=width,
                strength=strength,
                start=start_percent,
                end=end_percent,
            )
        kept = tuple(f.to(comfy_glue.output_device()) for f in motion.features)
        preview = torch.from_numpy(np.asarray(flow_rgb)).float() / 255.0  # [F, H, W, 3] in [0, 1]
        return (dataclasses.replace(motion, features=kept), preview.to(comfy_glue.output_device()))

    @staticmethod
    def _check_sources(trajectory, flow_images, tracks, width: int, height: int) -> None:
        sources = {"trajectory": trajectory, "tracks": tracks, "flow_images": flow_images}
        given = [name for name, value in sources.items() if value is not None]
        if len(given) != 1:
            found, fix = (
                (f"{' and '.join(given)} are connected", "disconnect all but one")
                if given
                else (
                    "none is connected",
                    "connect Trajectory Canvas / Load Trajectory, TRACKS, or flow video frames",
                )
            )
            raise ConfigError(
                f"connect exactly one of `trajectory`, `tracks` or `flow_images` ({found}); {fix}"
            )
        if trajectory is not None and (trajectory.width, trajectory.height) != (width, height):
            log.info(
                "trajectory canvas %dx%d differs from the generation size %dx%d: positions are rescaled",
                trajectory.width,
                trajectory.height,
                width,
                height,
            )

    @staticmethod
    def _flow_video(images: torch.Tensor, width: int, height: int, frames: int) -> np.ndarray:
        found = (images.shape[0], images.shape[2], images.shape[1])
        if found != (frames, width, height):
            raise ConfigError(
                f"flow_images has {found[0]} frames of {found[1]}x{found[2]}; expected {frames} frames of "
                f"{width}x{height} (resize/trim the flow video or change width/height/frames)"
            )
        return drawing.to_uint8(images)  # [F, H, W, 3] uint8 colour-coded flow


NODE_CLASS_MAPPINGS = {"TrajectoryToMotionLatent": TrajectoryToMotionLatent}
NODE_DISPLAY_NAME_MAPPINGS = {"TrajectoryToMotionLatent": "Trajectory To Motion Latent (Tora)"}
