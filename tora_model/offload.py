"""GPU-memory options applied once when a model is loaded: fp8 weight storage and transformer block swap.

Pure torch (no ComfyUI). fp8 storage keeps the weight matrices of every nn.Linear inside the transformer blocks in
float8_e4m3fn (half the bytes of bf16) and upcasts one layer's weight to the activation dtype right before its
matmul; norms, biases, embeddings, the extractor and the fusers stay in the compute dtype. Block swap keeps the
last N transformer blocks in host memory and copies each to the compute device for its own forward only
(`block_swap.py`). Apply fp8 storage first: block swap copies the blocks' tensors into its host masters once, so the
masters (and every copy to the GPU) are then fp8, and a tensor replaced later is refused at the next forward.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .block_swap import BlockSwap
from .errors import ConfigError

log = logging.getLogger(__name__)


class UpcastLinear(nn.Linear):
    """nn.Linear whose stored weight may be narrower (fp8) than its input; computes in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight, bias)


def store_block_linears(blocks: nn.ModuleList, storage_dtype: torch.dtype) -> int:
    """Re-store every Linear weight in `blocks` as `storage_dtype` (biases untouched); returns how many."""
    count = 0
    for block in blocks:
        for module in block.modules():
            if type(module) is nn.Linear:
                module.__class__ = UpcastLinear
                module.weight = nn.Parameter(module.weight.detach().to(storage_dtype), requires_grad=False)
                count += 1
    log.info("stored %d linear weights as %s", count, storage_dtype)
    return count


def enable_block_swap(
    blocks: nn.ModuleList,
    count: int,
    compute_device: torch.device,
    offload_device: torch.device,
    prefetch: bool | None = None,
) -> BlockSwap:
    """Swap the last `count` blocks in around their forward; returns the handle (a sequence of the swapped blocks).

    The handle's `release()` drops any copy left on the compute device, `stats` counts bytes moved, `close()` undoes
    it. `prefetch` (default: for a "cuda" compute device) copies one block ahead, on a side stream on real CUDA.
    """
    if not 0 <= count <= len(blocks):
        raise ConfigError(
            f"blocks_to_swap must be between 0 and {len(blocks)} for this model (it has {len(blocks)} blocks), "
            f"got {count}"
        )
    return BlockSwap(blocks, count, compute_device, offload_device, prefetch)


def move_resident(model: nn.Module, swapped: Sequence[nn.Module], device: torch.device) -> None:
    """Move every parameter and buffer of `model` except those of the swapped blocks to `device`."""
    skip = {id(t) for block in swapped for t in [*block.parameters(), *block.buffers()]}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) not in skip and param.device != device:
                module._parameters[name] = nn.Parameter(param.detach().to(device), requires_grad=False)
        for name, buffer in module.named_buffers(recurse=False):
            if id(buffer) not in skip and buffer is not None and buffer.device != device:
                module._buffers[name] = buffer.to(device)


def resident_bytes(model: nn.Module, swapped: Sequence[nn.Module]) -> int:
    """Bytes that must fit on the compute device: everything but the swapped blocks, plus two swapped blocks
    (the one running and the next one being copied ahead)."""

    def size(m: nn.Module) -> int:
        return sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])

    visiting = sorted((size(b) for b in swapped), reverse=True)[:2]
    return size(model) - sum(size(b) for b in swapped) + sum(visiting)
