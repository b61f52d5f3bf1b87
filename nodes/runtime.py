"""Putting the pack's models on the compute device for one node run and taking them off again.

Whole models go through ComfyUI's memory manager (ModelPatcher + load_models_gpu), all models a node needs in one
call so loading the second cannot evict the first. With block swap only the transformer's resident part moves;
its swapped blocks travel one at a time (tora_model/offload.py) and everything returns to the offload device afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..tora_model import offload
from . import comfy_glue
from .types import ToraModel, ToraVAE


def _swapped(model: ToraModel) -> list[torch.nn.Module]:
    blocks = list(model.transformer.transformer_blocks)
    return blocks[len(blocks) - model.swapped_blocks :] if model.swapped_blocks else []


@contextmanager
def on_device(model: ToraModel | None = None, vae: ToraVAE | None = None) -> Iterator[torch.device]:
    """Inside the block the given models (the transformer's resident part with block swap) are on the device."""
    whole = [(vae.vae, vae.patcher)] if vae is not None else []
    swapped = _swapped(model) if model is not None else []
    if model is not None and not swapped:
        whole.append((model.transformer, model.patcher))
    if swapped:
        extra = sum(comfy_glue.module_bytes(m) for m, _ in whole)
        comfy_glue.make_room(offload.resident_bytes(model.transformer, swapped) + extra)
        offload.move_resident(model.transformer, swapped, comfy_glue.compute_device())
    device = comfy_glue.load_on_device(whole) if whole else comfy_glue.compute_device()
    try:
        yield device
    finally:
        if swapped:
            offload.move_resident(model.transformer, swapped, comfy_glue.offload_device())
        for module, patcher in whole:
            comfy_glue.release(module, patcher)
