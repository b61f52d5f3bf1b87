"""Measuring a simulated GPU run: device memory from the lifetime of storages, FLOPs, host↔device bytes, and checks.

`DeviceMemory` is a dispatch mode that sees every aten op. Each new storage an op returns is counted on its device
until the storage dies (a weak reference's callback), so the live and peak bytes are those of the real allocator's
"allocated" figure: every storage rounded up to the CUDA caching allocator's 512-byte granularity. Not modelled:
the allocator's reserved-but-free blocks (fragmentation), the CUDA context (≈ 0.3–0.5 GiB, outside torch) and library
workspaces (cuBLAS ≈ 8–32 MiB); `plan` adds a stated headroom for them.

Inside a stage marked `hot` (the denoising loop) it also raises `SimulatedGPUError` for a device→host copy (a host
sync) and for a large float32 activation computed from half-precision inputs (a dtype promotion on the hot path).
Every error names the op, the module that ran it and the line of this pack that called it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import traceback
import weakref
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from .fake_cuda import SimulatedGPUError
from .roofline import GPUS

CUDA_ALLOCATION_GRANULARITY = 512  # bytes; the caching allocator rounds every block up to this
FP32_PROMOTION_BYTES = 16 * 2**20  # float32 outputs from half inputs larger than this count as a promotion
HALF_DTYPES = (torch.float16, torch.bfloat16)
PACK_ROOT = Path(__file__).resolve().parents[2]
COPY_OPS = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}


@dataclass
class StageRecord:
    """What one stage of the run cost: device peak, FLOPs and host↔device traffic."""

    name: str
    start_bytes: int = 0  # device bytes live when the stage began (weights already resident)
    peak_bytes: int = 0  # highest device bytes live during the stage
    end_bytes: int = 0
    host_peak_bytes: int = 0
    flops: int = 0
    host_to_device_bytes: int = 0
    device_to_host_bytes: int = 0
    # Σ over the stage's GPU ops of max(FLOPs / peak, bytes / bandwidth) per named card (roofline.py), seconds
    roofline_seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def activation_bytes(self) -> int:
        """Peak above what was live at the start: the stage's own working memory."""
        return self.peak_bytes - self.start_bytes


def _allocated(nbytes: int, device: torch.device) -> int:
    if device.type != "cuda":
        return nbytes
    return -(-nbytes // CUDA_ALLOCATION_GRANULARITY) * CUDA_ALLOCATION_GRANULARITY


def _caller() -> str:
    """The innermost line of this pack's own code on the stack (file:line in function)."""
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        # A venv inside the checkout (scripts/install.sh's .venv) holds torch's files too: those are not the pack's.
        if PACK_ROOT in path.parents and not {"simulated_gpu", "site-packages"} & set(path.parts):
            return f"{path.relative_to(PACK_ROOT)}:{frame.lineno} in {frame.name}"
    return "outside the pack"


class DeviceMemory(TorchDispatchMode):
    """Counts live storage bytes per device and runs the hot-path checks (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[str, int] = defaultdict(int)
        self._storages: dict[int, weakref.ref] = {}
        self._stage: StageRecord | None = None
        self._hot = False
        self._module_path: list[str] = []
        self._names: dict[int, str] = {}
        self._hooks: list = []
        self.records: list[StageRecord] = []

    # ---- storages ------------------------------------------------------------------------------------------------
    def track(self, tensors) -> None:
        """Count tensors made before this mode was entered (e.g. parameters materialised earlier)."""
        for tensor in tensors:
            self._count(tensor)

    def _count(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._storages and self._storages[key]() is storage:
            return
        device = tensor.device
        nbytes = _allocated(storage.nbytes(), device)
        kind = device.type

        def release(_ref, kind=kind, nbytes=nbytes, key=key) -> None:
            self.live[kind] -= nbytes
            if self._storages.get(key) is _ref:
                del self._storages[key]

        self._storages[key] = weakref.ref(storage, release)
        self.live[kind] += nbytes
        self._note_peak()

    def _note_peak(self) -> None:
        if self._stage is not None:
            self._stage.peak_bytes = max(self._stage.peak_bytes, self.live["cuda"])
            self._stage.host_peak_bytes = max(self._stage.host_peak_bytes, self.live["cpu"])

    # ---- stages --------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str, hot: bool = False) -> Iterator[StageRecord]:
        """Record the peak, FLOPs and transfers of the code inside; `hot` turns on the step-loop checks."""
        record = StageRecord(name, start_bytes=self.live["cuda"], peak_bytes=self.live["cuda"])
        record.host_peak_bytes = self.live["cpu"]
        outer, outer_hot = self._stage, self._hot
        self._stage, self._hot = record, hot
        try:
            yield record
        finally:
            self._stage, self._hot = outer, outer_hot
        record.end_bytes = self.live["cuda"]
        if outer is not None:
            outer.peak_bytes = max(outer.peak_bytes, record.peak_bytes)
            outer.host_peak_bytes = max(outer.host_peak_bytes, record.host_peak_bytes)
            outer.flops += record.flops
            outer.host_to_device_bytes += record.host_to_device_bytes
            outer.device_to_host_bytes += record.device_to_host_bytes
            for gpu, seconds in record.roofline_seconds.items():
                outer.roofline_seconds[gpu] = outer.roofline_seconds.get(gpu, 0.0) + seconds
        self.records.append(record)

    # ---- module names for messages -------------------------------------------------------------------------------
    def name_modules(self, model: nn.Module, prefix: str) -> None:
        """Name `model`'s submodules in error messages (`prefix.transformer_blocks.3.attn1`)."""
        for name, module in model.named_modules():
            self._names[id(module)] = f"{prefix}.{name}" if name else prefix
        self._hooks.append(nn.modules.module.register_module_forward_pre_hook(self._enter_module))
        self._hooks.append(
            nn.modules.module.register_module_forward_hook(self._leave_module, always_call=True)
        )

    def _enter_module(self, module, _args) -> None:
        self._module_path.append(self._names.get(id(module), type(module).__name__))

    def _leave_module(self, _module, _args, _output) -> None:
        if self._module_path:
            self._module_path.pop()

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        return super().__exit__(*exc)

    # ---- dispatch ------------------------------------------------------------------------------------------------
    def _where(self, func) -> str:
        module = self._module_path[-1] if self._module_path else "no module"
        stage = self._stage.name if self._stage is not None else "no stage"
        return f"op {func} in {module} (stage '{stage}', called from {_caller()})"

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            out = func(*args, **kwargs)
        except SimulatedGPUError:
            raise
        except Exception as error:  # fake tensors raise these for device mixes and data-dependent host reads
            raise SimulatedGPUError(f"simulated GPU: {self._where(func)} failed: {error}") from error
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if func in COPY_OPS:
            self._count_transfer(func, inputs, outputs)
        if self._hot:
            self._check_promotion(func, inputs, outputs)
        if self._stage is not None and any(t.device.type == "cuda" for t in outputs):
            self._add_roofline(func, args, kwargs, out, inputs, outputs)
        for tensor in outputs:
            self._count(tensor)
        return out

    def _add_roofline(self, func, args, kwargs, out, inputs, outputs) -> None:
        """Add one GPU op's FLOPs (torch's own per-op formulas: matmuls, convolutions, attention) and roofline time;
        views (outputs sharing an input's storage) move no data.

        Not torch's FlopCounterMode: to count an op without a formula it runs the op's Python decomposition instead,
        which allocates intermediates the real kernel never makes (upsampling upcast to float32, index tensors) and
        would inflate the measured memory."""
        sources = {id(t.untyped_storage()) for t in inputs}
        written = [t for t in outputs if id(t.untyped_storage()) not in sources]
        if not written and func not in COPY_OPS and not func._schema.is_mutable:
            return
        nbytes = sum(t.numel() * t.element_size() for t in (*inputs, *written))
        count = flop_registry.get(func._overloadpacket)
        flops = count(*args, **kwargs, out_val=out) if count is not None else 0
        self._stage.flops += flops
        for gpu in GPUS:
            times = self._stage.roofline_seconds
            times[gpu.name] = times.get(gpu.name, 0.0) + gpu.op_seconds(flops, nbytes)

    def _count_transfer(self, func, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> None:
        source = inputs[1] if func is torch.ops.aten.copy_.default else inputs[0]
        target = outputs[0]
        if source.device.type == target.device.type or self._stage is None:
            return
        nbytes = source.numel() * source.element_size()
        if target.device.type == "cuda":
            self._stage.host_to_device_bytes += nbytes
        else:
            self._stage.device_to_host_bytes += nbytes
            if self._hot:
                raise SimulatedGPUError(
                    f"simulated GPU: device-to-host copy inside the step loop: {self._where(func)} copies "
                    f"{tuple(source.shape)} from the GPU to the host (a host sync, or with non_blocking PCIe traffic "
                    "and pinned host memory every step); keep per-step tensors on the device"
                )

    def _check_promotion(self, func, inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> None:
        if not any(t.dtype in HALF_DTYPES and t.device.type == "cuda" for t in inputs):
            return
        for tensor in outputs:
            nbytes = tensor.numel() * tensor.element_size()
            if (
                tensor.dtype == torch.float32
                and tensor.device.type == "cuda"
                and nbytes > FP32_PROMOTION_BYTES
            ):
                raise SimulatedGPUError(
                    f"simulated GPU: {self._where(func)} promotes a half-precision activation to float32 "
                    f"{tuple(tensor.shape)} ({nbytes / 2**20:.0f} MiB) on the hot path; compute it in the model dtype"
                )
