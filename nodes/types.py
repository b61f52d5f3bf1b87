"""Typed values passed between the pack's nodes (ComfyUI socket types TORA_MODEL, TORA_VAE).

Frozen dataclasses: a node never changes what it receives. Per-run choices (strength, window, tiling) travel in
the objects a node returns, never as attributes set on a shared model. TORA_TRAJECTORY is
`tora_model.trajectory.Trajectory` and TORA_MOTION is `tora_model.motion_guidance.MotionGuidance`, both frozen.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..tora_model.block_swap import BlockSwap
from ..tora_model.errors import ConfigError

PRECISIONS = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "fp8_e4m3fn": torch.float8_e4m3fn,
}
ATTENTIONS = ("sdpa", "comfy")
OFFLOAD_POLICIES = ("comfy", "block_swap")


@dataclass(frozen=True)
class ToraModel:
    """A loaded Tora transformer (DiT + trajectory extractor + fusers) and how to run it.

    transformer: the `ToraTransformer`; between runs its parameters live where ComfyUI keeps models (the CPU, or the
    GPU under --highvram), its swapped blocks in CPU memory.
    patcher: ComfyUI ModelPatcher that lets ComfyUI load/evict it (None outside ComfyUI and with block swap).
    compute_dtype: dtype activations run in (bf16 for fp8 storage); storage: the precision name chosen.
    swapped_blocks: transformer blocks that stay in CPU memory and visit the GPU (at most two at a time).
    device: the compute device chosen at load time (block swap's hooks target it); None = ComfyUI's current one.
    block_swap: the block-swap handle (`tora_model.block_swap.BlockSwap`) of exactly the swapped blocks when
    swapped_blocks > 0, else None (checked on construction): the node layer moves the resident part around it and
    calls its `release()` after every run, which drops any block copy an interrupted forward left on the device.
    """

    transformer: nn.Module
    patcher: object | None
    compute_dtype: torch.dtype
    storage: str
    attention: str
    swapped_blocks: int
    source: str
    device: torch.device | None = None
    block_swap: BlockSwap | None = None

    def __post_init__(self) -> None:
        """The handle is the one record of which blocks are swapped: the node layer moves and releases them through
        it only, so a model whose `swapped_blocks` and handle disagree would leave blocks unmanaged."""
        handled = 0 if self.block_swap is None else len(self.block_swap)
        if handled != self.swapped_blocks or (self.block_swap is not None and not handled):
            raise ConfigError(
                f"expected a block-swap handle of {self.swapped_blocks} blocks for swapped_blocks="
                f"{self.swapped_blocks} (none when 0), got "
                + ("none" if self.block_swap is None else f"one of {handled} blocks")
                + "; build it with tora_model.offload.enable_block_swap on the transformer's blocks, as Load Tora "
                "Model does, and pass block_swap=None when no block is swapped"
            )

    @property
    def config(self):
        return self.transformer.config

    @property
    def is_i2v(self) -> bool:
        return self.transformer.config.is_i2v


@dataclass(frozen=True)
class ToraVAE:
    """The CogVideoX VAE (latent scale 0.7) and its ComfyUI ModelPatcher (None outside ComfyUI)."""

    vae: nn.Module
    patcher: object | None
    dtype: torch.dtype
    source: str
