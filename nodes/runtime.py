"""Putting the pack's models on the compute device for one node run and taking them off again.

The whole-model path goes through ComfyUI's memory manager (ModelPatcher + load_models_gpu); with block swap only
the resident part moves and the swapped blocks travel one at a time (see memory.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from . import comfy_glue, memory
from .types import ToraModel, ToraVAE


def _swapped(model: ToraModel) -> list[torch.nn.Module]:
    blocks = list(model.transformer.transformer_blocks)
    return blocks[len(blocks) - model.swapped_blocks :] if model.swapped_blocks else []


@contextmanager
def model_on_device(model: ToraModel) -> Iterator[torch.device]:
    """The transformer's resident weights are on the compute device inside the block."""
    swapped = _swapped(model)
    if swapped:
        comfy_glue.make_room(memory.resident_bytes(model.transformer, swapped))
        device = comfy_glue.compute_device()
        memory.move_resident(model.transformer, swapped, device)
    else:
        device = comfy_glue.load_on_device(model.transformer, model.patcher)
    try:
        yield device
    finally:
        if swapped:
            memory.move_resident(model.transformer, swapped, comfy_glue.offload_device())
            comfy_glue.empty_cache()
        else:
            comfy_glue.release(model.transformer, model.patcher)


@contextmanager
def vae_on_device(vae: ToraVAE) -> Iterator[torch.device]:
    device = comfy_glue.load_on_device(vae.vae, vae.patcher)
    try:
        yield device
    finally:
        comfy_glue.release(vae.vae, vae.patcher)
