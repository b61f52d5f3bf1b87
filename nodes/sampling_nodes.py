"""ToraSampler (text/trajectory/start image → LATENT) and MotionVAEDecode (LATENT → IMAGE frames).

LATENT is ComfyUI's dict {"samples": [B, 16, T, h, w]} holding scaled latents (×0.7 domain), B = 1.
Defaults follow the official inference: 50 steps, CFG 6 with dynamic CFG, stochastic DPM++(2M), all-zero negative.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from einops import rearrange

from ..tora_model.errors import ConfigError, GenerationInterrupted
from ..tora_model.generation_setup import check_generation_size, check_vae_pairing
from ..tora_model.memory_estimate import flow_encode_bytes, sampler_step_bytes, vae_decode_bytes
from ..tora_model.pipeline import decode_latents, encode_image_latents, sample_latents
from ..tora_model.speed import SpeedOptions
from ..tora_model.step_cache import find_fit
from ..tora_model.vae import Tiling
from . import comfy_glue, runtime
from .trajectory_nodes import FRAMES, SIZE

log = logging.getLogger(__name__)

SAMPLERS = ("dpmpp_2m_sde", "ddim")
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def text_embedding(conditioning, name: str, length: int, dim: int) -> torch.Tensor:
    """[1, length, dim] embedding out of a CONDITIONING list; clear error for anything else."""
    if not conditioning:
        raise ConfigError(
            f"{name}: the CONDITIONING is empty; connect Tora Text Encode (or ConditioningZeroOut)"
        )
    if len(conditioning) > 1:
        log.warning("%s: %d conditionings combined; Tora uses only the first", name, len(conditioning))
    embeds = conditioning[0][0]
    if tuple(embeds.shape) != (1, length, dim):
        raise ConfigError(
            f"{name}: expected a T5 embedding of shape [1, {length}, {dim}] (Tora Text Encode), got "
            f"{list(embeds.shape)}; CLIPTextEncode and other encoders give other lengths — use Tora Text Encode"
        )
    return embeds


def check_motion(motion, width: int, height: int, frames: int) -> None:
    found = (motion.width, motion.height, motion.num_frames)
    if found != (width, height, frames):
        raise ConfigError(
            f"the motion was encoded for {found[0]}x{found[1]}, {found[2]} frames but the sampler generates "
            f"{width}x{height}, {frames} frames; set Trajectory To Motion Latent's width/height/frames to the same "
            "values (or connect both to the same primitives)"
        )


def motion_on(motion, device: torch.device):
    """The same guidance with its features on `device` (a new value; the received one is untouched)."""
    if motion is None or motion.features[0].device == device:
        return motion
    return dataclasses.replace(motion, features=tuple(f.to(device) for f in motion.features))


class ToraSampler:
    """Generate Tora video latents (T2V, or I2V from a start image) with optional trajectory guidance."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("TORA_MODEL", {"tooltip": "From Load Tora Model (T2V or I2V weights)."}),
                "positive": ("CONDITIONING", {"tooltip": "Prompt embedding from Tora Text Encode."}),
                "negative": (
                    "CONDITIONING",
                    {
                        "tooltip": "Negative embedding. The official Tora uses all zeros: pass the positive "
                        "through ConditioningZeroOut.",
                    },
                ),
                "width": (
                    "INT",
                    {"default": 720, **SIZE, "tooltip": "Video width (multiple of 16; trained at 720)."},
                ),
                "height": (
                    "INT",
                    {"default": 480, **SIZE, "tooltip": "Video height (multiple of 16; trained at 480)."},
                ),
                "frames": (
                    "INT",
                    {**FRAMES, "tooltip": "Video length in frames, 8k+1: 9, 17, …, 49 (49 = 6 s at 8 fps)."},
                ),
                "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": "Denoising steps."}),
                "cfg": (
                    "FLOAT",
                    {
                        "default": 6.0,
                        "min": 1.0,
                        "max": 30.0,
                        "step": 0.1,
                        "tooltip": "Classifier-free guidance.",
                    },
                ),
                "dynamic_cfg": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Official cosine schedule of the CFG scale over the steps."},
                ),
                "sampler": (
                    list(SAMPLERS),
                    {
                        "default": "dpmpp_2m_sde",
                        "tooltip": "dpmpp_2m_sde: the official stochastic DPM-Solver++(2M). ddim: deterministic "
                        "(turn dynamic_cfg off with it).",
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 42,
                        "min": 0,
                        "max": MAX_SEED,
                        "control_after_generate": True,
                        "tooltip": "Seed of the initial noise and the sampler's noise.",
                    },
                ),
            },
            "optional": {
                "motion": (
                    "TORA_MOTION",
                    {"tooltip": "Trajectory guidance from Trajectory To Motion Latent."},
                ),
                "start_image": (
                    "IMAGE",
                    {"tooltip": "First frame for I2V weights (first image of the batch)."},
                ),
                "vae": (
                    "TORA_VAE",
                    {"tooltip": "VAE that encodes the start image (needed with start_image)."},
                ),
                "speed": (
                    "TORA_SPEED",
                    {
                        "tooltip": "Step cache, CFG mode, compiled blocks from Tora Speed Options (unconnected: "
                        "the exact official run)."
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("samples",)
    OUTPUT_TOOLTIPS = (
        "Video latents {'samples': [1, 16, T, H/c, W/c]} (c = the VAE's compression, 8 for CogVideoX) for Motion VAE Decode.",
    )
    FUNCTION = "sample"
    CATEGORY = "Tora/sampling"

    def sample(
        self,
        model,
        positive,
        negative,
        width,
        height,
        frames,
        steps,
        cfg,
        dynamic_cfg,
        sampler,
        seed,
        motion=None,
        start_image=None,
        vae=None,
        speed=None,
        unique_id=None,
    ):
        config = model.config
        # no size warning here: sample_latents warns against the model's own trained size
        check_generation_size(width, height, frames, warn=False)
        text = text_embedding(positive, "positive", config.max_text_len, config.text_dim)
        uncond = text_embedding(negative, "negative", config.max_text_len, config.text_dim)
        if motion is not None:
            check_motion(motion, width, height, frames)
        # one RNG stream, as in the official sampling: the start image's posterior sample first, then the noise
        generator = torch.Generator("cpu").manual_seed(seed)
        image_latents = self._image_latents(model, start_image, vae, width, height, frames, generator)
        progress = comfy_glue.Progress(steps, unique_id)
        speed = self._speed_with_fit(model, speed)
        plan = self._plan(model, width, height, frames, motion is not None, speed)
        with runtime.on_device(plan) as device:
            try:
                latents = sample_latents(
                    model.transformer,
                    text_embeds=text.to(device),
                    uncond_embeds=uncond.to(device),
                    width=width,
                    height=height,
                    num_frames=frames,
                    steps=steps,
                    cfg=cfg,
                    dynamic_cfg=dynamic_cfg,
                    sampler=sampler,
                    generator=generator,
                    motion=motion_on(motion, device),
                    image_latents=None if image_latents is None else image_latents.to(device),
                    progress=lambda step, total, x0: progress.update(step + 1, x0),
                    should_stop=comfy_glue.interrupted,
                    speed=speed,
                )
            except GenerationInterrupted:
                comfy_glue.raise_interrupt()  # ComfyUI's own "interrupted" exception when running inside it
                raise
        if model.compute_dtype == torch.float16 and not torch.isfinite(latents).all():
            raise ConfigError(
                "the fp16 run overflowed (the latents hold NaN/inf): this model was released in bf16; load it with "
                "precision bf16 (or fp8_e4m3fn, or fp32 on GPUs without bf16)"
            )
        samples = rearrange(latents, "b t c h w -> b c t h w")  # [1, 16, T, h, w]
        return ({"samples": samples.to(comfy_glue.output_device())},)

    @staticmethod
    def _speed_with_fit(model, speed: SpeedOptions | None) -> SpeedOptions | None:
        """The options with the step-cache fit shipped beside the model's weights (a new value)."""
        if speed is None or speed.threshold is None or speed.cache_fit is not None:
            return speed
        path = comfy_glue.resolve_model(model.source, comfy_glue.TRANSFORMER_FOLDERS)
        return dataclasses.replace(speed, cache_fit=find_fit(path))

    @staticmethod
    def _plan(model, width, height, frames, motion: bool, speed: SpeedOptions | None = None) -> runtime.Plan:
        """Weights plus one step's activations with the CFG batch (minimum: batch 1), as core's sampling asks;
        sequential CFG needs batch 1 only."""
        size = dict(dtype=model.compute_dtype, motion=motion, weight_upcast=model.storage == "fp8_e4m3fn")
        rows = 1 if speed is not None and speed.cfg_mode == "sequential" else 2
        needed = sampler_step_bytes(model.config, width, height, frames, rows, **size)
        minimum = sampler_step_bytes(model.config, width, height, frames, 1, **size)
        return runtime.transformer_plan(model, needed, minimum)

    @staticmethod
    def _image_latents(model, start_image, vae, width, height, frames, generator):
        if not model.is_i2v:
            if start_image is not None:
                raise ConfigError(
                    "start_image is connected but the model is a T2V checkpoint; load the I2V weights "
                    "(tora/i2v/mp_rank_00_model_states.pt) or disconnect start_image"
                )
            return None
        if start_image is None or vae is None:
            raise ConfigError(
                "this is an I2V checkpoint: connect a start_image and the vae (or load the T2V weights)"
            )
        check_vae_pairing(model.transformer, vae.vae)
        needed = flow_encode_bytes(vae.vae.config, width, height, 1, vae.dtype)
        with runtime.on_device(runtime.vae_plan(vae, needed)):
            return encode_image_latents(
                vae.vae, start_image[0], width=width, height=height, num_frames=frames, generator=generator
            )


class MotionVAEDecode:
    """Decode Tora video latents to frames."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("TORA_VAE", {"tooltip": "The CogVideoX VAE from Load Tora Model."}),
                "samples": ("LATENT", {"tooltip": "Latents from Tora Sampler."}),
                "tiling": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Decode in spatial tiles sized automatically (much less memory).",
                    },
                ),
            },
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)
    OUTPUT_TOOLTIPS = ("Video frames [F, H, W, 3] in [0, 1], ready for any video-save node.",)
    FUNCTION = "decode"
    CATEGORY = "Tora/sampling"

    def decode(self, vae, samples, tiling):
        latents = samples["samples"]
        if latents.ndim != 5 or latents.shape[1] != 16:
            raise ConfigError(
                f"expected Tora latents [B, 16, T, h, w] from Tora Sampler, got {list(latents.shape)}"
            )
        compression = vae.vae.config.spatial_compression
        size = (
            latents.shape[-1] * compression,
            latents.shape[-2] * compression,
            (latents.shape[2] - 1) * 4 + 1,
        )
        needed = vae_decode_bytes(vae.vae.config, *size, vae.dtype, tiling=Tiling() if tiling else None)
        with runtime.on_device(runtime.vae_plan(vae, needed)) as device:
            frames = [
                decode_latents(
                    vae.vae,
                    rearrange(one, "c t h w -> 1 t c h w").to(device),
                    tiling="auto" if tiling else False,
                )
                for one in latents
            ]
        return (torch.cat(frames).to(comfy_glue.output_device()),)


NODE_CLASS_MAPPINGS = {"ToraSampler": ToraSampler, "MotionVAEDecode": MotionVAEDecode}
NODE_DISPLAY_NAME_MAPPINGS = {"ToraSampler": "Tora Sampler", "MotionVAEDecode": "Motion VAE Decode (Tora)"}
