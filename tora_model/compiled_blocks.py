"""Regional compilation: one `torch.compile`d function runs the body of every transformer block.

Source: PyTorch's "regional compilation" recipe (compile the repeated block, not the whole model): the 42 CogVideoX
blocks share one compiled graph because parameters are graph inputs, so compile time is that of one block. The
compiled function is handed to `model.run_blocks(inputs, run=...)`; each block's `__call__` still runs first, so
forward hooks (block swap's copies to the device, `block_swap.py`) stay outside the graph, and fp8-stored weights
(`offload.UpcastLinear`) are upcast inside it. Nothing is set on the model: the compiled function lives in this
module, per backend, for the life of the process.

Availability is probed once per (backend, device type) with a two-op function; when compile cannot run (no C++
compiler for inductor on the CPU, no Triton on the GPU, an unsupported Python) one log line says so and the blocks
run eagerly — the same numbers, without the speed-up.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

_COMPILED: dict[str, object] = {}
_AVAILABLE: dict[tuple[str, str], bool] = {}
# what a failed compile raises: backend failures (TorchDynamoException is a RuntimeError), a missing toolchain
_COMPILE_ERRORS = (RuntimeError, OSError, ImportError)


def _block_body(block, *args):
    """The block's own forward body (`run=None`); hooks already ran in the caller's `block(...)`."""
    return block.forward(*args)


def _probe(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(x * 2.0 + 1.0)


def available(backend: str = "inductor", device: torch.device | str = "cpu") -> bool:
    """Whether `torch.compile(backend=backend)` works on this device type (probed once, then remembered)."""
    device = torch.device(device)
    key = (backend, device.type)
    if key not in _AVAILABLE:
        try:
            x = torch.ones(4, device=device)
            torch.compile(_probe, backend=backend, fullgraph=True)(x)
            _AVAILABLE[key] = True
        except _COMPILE_ERRORS as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            log.warning(
                "compiled blocks unavailable on %s (torch.compile backend %r: %s); running blocks eagerly",
                device.type,
                backend,
                first_line[:200],
            )
            _AVAILABLE[key] = False
    return _AVAILABLE[key]


def block_runner(device: torch.device | str, backend: str = "inductor"):
    """The compiled block body for `run_blocks(..., run=)`, or None (eager) when compile is unavailable."""
    if not available(backend, device):
        return None
    if backend not in _COMPILED:
        _COMPILED[backend] = torch.compile(_block_body, backend=backend)
    return _COMPILED[backend]
