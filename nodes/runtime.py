"""Putting the pack's models on the compute device for one node run, and taking them off again on every exit path.

A node says what it runs (whole models, the transformer's resident part with block swap, or one submodule such as
the trajectory extractor) and how many activation bytes it will need (`tora_model.memory_estimate`). Whole models
with a ComfyUI ModelPatcher go through ComfyUI's memory manager in one `load_models_gpu` call that carries that
estimate, as core's sampling does, so ComfyUI unloads other models until weights *and* activations fit. Everything
else the pack moves itself, after asking ComfyUI to make room for it, and moves back afterwards.

Exit paths (issue 16): every step is registered for undoing before it is taken, and the undo runs in `finally`, so an
exception, an out-of-memory error or a Cancel anywhere — while loading, while moving the resident part, inside a
swapped block — leaves nothing of ours on the device: moved parts go back to the host, swapped blocks too (a
block whose forward raised never ran its post-hook), and after a failure the models ComfyUI loaded for this node
leave its loaded list. After a success ComfyUI keeps what it loaded and evicts it when others need the room.

Devices come from where the weights really are, checked after loading. ComfyUI's `--novram` loads none of a plain
torch module's weights (it streams only layers built from its own ops) while recording the model as loaded, so
under --novram the pack moves its models itself for the node's duration; `--lowvram` loads them whole (block swap
is the way to fit a small card); under `--highvram` / `--gpu-only` ComfyUI keeps them on the GPU between nodes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..tora_model import offload
from ..tora_model.block_swap import BlockSwap
from ..tora_model.errors import ConfigError
from . import comfy_glue
from .types import ToraModel, ToraVAE

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What one node run puts on the device.

    whole: (module, patcher) pairs loaded whole; resident: (transformer, its block-swap handle) with block swap;
    parts: submodules moved alone (the trajectory extractor); memory_required / minimum_memory_required: activation
    bytes.
    """

    device: torch.device
    whole: list[tuple[torch.nn.Module, object]] = field(default_factory=list)
    resident: tuple[torch.nn.Module, BlockSwap] | None = None
    parts: list[torch.nn.Module] = field(default_factory=list)
    memory_required: int = 0
    minimum_memory_required: int | None = None


def model_device(model: ToraModel) -> torch.device:
    """The compute device chosen when the model was loaded (block swap's hooks target it), else ComfyUI's."""
    return model.device if model.device is not None else comfy_glue.compute_device()


def transformer_plan(model: ToraModel, memory_required: int, minimum: int | None = None) -> Plan:
    plan = Plan(model_device(model), memory_required=memory_required, minimum_memory_required=minimum)
    if model.block_swap is not None:
        plan.resident = (model.transformer, model.block_swap)
    else:
        plan.whole.append((model.transformer, model.patcher))
    return plan


def vae_plan(vae: ToraVAE, memory_required: int) -> Plan:
    return Plan(comfy_glue.compute_device(), whole=[(vae.vae, vae.patcher)], memory_required=memory_required)


def extractor_plan(model: ToraModel, memory_required: int) -> Plan:
    """Only the trajectory extractor (tens of MiB), not the 42 blocks; the fusers stay with the transformer."""
    return Plan(
        model_device(model), parts=[model.transformer.traj_extractor], memory_required=memory_required
    )


def move(module: torch.nn.Module, device: torch.device) -> None:
    """The one place the pack moves a module (tests replace it to follow moves onto a device they do not have)."""
    module.to(device)


@contextmanager
def on_device(plan: Plan) -> Iterator[torch.device]:
    """Inside the block everything in `plan` is on `plan.device`; on leaving, by any path, it is released."""
    undo: list[Callable[[], None]] = []
    loaded: list[object] = []
    failed = False
    try:
        _enter(plan, undo, loaded)
        yield plan.device
    except BaseException:
        failed = True
        raise
    finally:
        _leave(undo, loaded if failed else [], failed)


def _enter(plan: Plan, undo: list[Callable[[], None]], loaded: list[object]) -> None:
    flag = comfy_glue.vram_flag()
    managed = [(m, p) for m, p in plan.whole if p is not None and flag != "--novram"]
    ours = [m for m, p in plan.whole if (m, p) not in managed]
    own_bytes = sum(comfy_glue.module_bytes(m) for m in [*ours, *plan.parts])
    if plan.resident is not None:
        own_bytes += offload.resident_bytes(*plan.resident)
    wanted = plan.memory_required + own_bytes
    minimum = wanted if plan.minimum_memory_required is None else plan.minimum_memory_required + own_bytes
    if managed:
        loaded.extend(
            p for _, p in managed
        )  # unloaded again on failure, also if loading itself fails half-way
        comfy_glue.load_models([p for _, p in managed], wanted, minimum)
    else:
        comfy_glue.make_room(wanted, plan.device)
    if plan.resident is not None:
        transformer, swap = plan.resident
        undo.append(lambda: _park_resident(transformer, swap))
        offload.move_resident(transformer, swap, plan.device)
    for module in [*ours, *plan.parts]:
        before = comfy_glue.weights_device(module)
        if before != plan.device:
            undo.append(lambda m=module, d=before: move(m, d))
            move(module, plan.device)
    _check_placement(plan, flag)


def _park_resident(transformer: torch.nn.Module, swap: BlockSwap) -> None:
    """Resident part back on the host, and no swapped block's copy left on the device: the handle drops any copy an
    interrupted forward left (its blocks point at their host masters again)."""
    offload.move_resident(transformer, swap, comfy_glue.HOST)
    swap.release()


def _check_placement(plan: Plan, flag: str | None) -> None:
    modules = [m for m, _ in plan.whole] + plan.parts + ([plan.resident[0]] if plan.resident else [])
    stray = {str(comfy_glue.weights_device(m)) for m in modules} - {str(plan.device)}
    if stray:
        raise ConfigError(
            f"expected the weights on {plan.device} for this node, but ComfyUI left some on {sorted(stray)}"
            + (f" (started with {flag})" if flag else "")
            + "; restart ComfyUI without that memory flag, or choose offload=block_swap in Load Tora Model to keep "
            "part of the transformer in CPU memory"
        )


def _leave(undo: list[Callable[[], None]], loaded: list[object], failed: bool) -> None:
    """Run every undo step even if one of them raises; re-raise the first such error unless one is propagating."""
    errors = []
    for patcher in loaded:
        errors += _attempt(lambda p=patcher: comfy_glue.unload(p))
    for step in reversed(undo):
        errors += _attempt(step)
    comfy_glue.empty_cache()
    if errors and not failed:
        raise errors[0]


def _attempt(step: Callable[[], None]) -> list[Exception]:
    try:
        step()
    except Exception as error:  # keep releasing the rest; reported by the caller
        log.error("releasing GPU memory failed: %s", error)
        return [error]
    return []
