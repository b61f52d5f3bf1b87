"""A simulated CUDA device on a CPU-only PyTorch build: fake tensors with device `cuda`, shapes and dtypes, no storage.

PyTorch's `FakeTensorMode` already propagates shapes, dtypes and devices through every aten op without allocating, and
it raises where a real run would need data on the host (`.item()`, `.tolist()`, `if tensor:`) — exactly the host syncs
that must not happen inside the step loop. Three things stop it from running our pipeline on a build without CUDA, and
this module works around each at the op where it happens:

- Python indexing of a `cuda` tensor (`t[:, None]`, `t[0]`, `t[a:b] = v`) goes through a C++ path that asks for the
  CUDA runtime ("not linked with support for cuda devices"). `_CudaPythonOps` turns it into the aten ops it means
  (`select`, `slice`, `unsqueeze`, `index`, `copy_`, `index_put_`).
- `F.scaled_dot_product_attention` would take the math fallback (it materialises the [S, S] score matrix: 61 GB at
  the released size) because kernel selection needs the CUDA runtime. On a real GPU PyTorch picks a fused kernel;
  `_CudaPythonOps` calls the one it would pick (flash for fp16/bf16, memory-efficient otherwise), so memory and FLOPs
  are those of the fused kernel.
- Random numbers and module initialisation cannot run on fake `cuda`: modules are built on `meta` and `materialize`
  gives them fake parameters on the target device; the pipeline already draws its noise on a CPU generator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ..errors import ToraError

aten = torch.ops.aten
REAL_HOST_FACTORY_BYTES = 64 * 2**20
NO_CUDA_MESSAGE = "not linked with support for cuda devices"
FUSED_ATTENTION_DTYPES = (
    torch.float16,
    torch.bfloat16,
)  # flash attention's dtypes (sm80+); others: mem-efficient


class SimulatedGPUError(ToraError):
    """The simulated GPU run found a mistake a real GPU run would hit: a device mix, a host sync in the step loop,
    a large fp32 activation on the hot path, or a parameter off the compute device."""


def _spell_out(tensor: torch.Tensor, index) -> list:
    """`index` as one entry per consumed dimension: Ellipsis expanded to full slices, a scalar made a 1-tuple."""
    entries = list(index) if isinstance(index, tuple) else [index]
    consumed = sum(
        (e.ndim if isinstance(e, torch.Tensor) and e.dtype == torch.bool else 1)
        for e in entries
        if e is not None and e is not Ellipsis
    )
    spelled = []
    for entry in entries:
        if entry is Ellipsis:
            spelled.extend([slice(None)] * (tensor.ndim - consumed))
        else:
            spelled.append(entry)
    return spelled


def _index(tensor: torch.Tensor, index) -> torch.Tensor:
    """`tensor[index]` with aten ops only: basic indexing as views, one advanced index (tensor/list) via aten.index."""
    out, dim, advanced = tensor, 0, {}
    for entry in _spell_out(tensor, index):
        if entry is None:
            out, dim = aten.unsqueeze.default(out, dim), dim + 1
        elif isinstance(entry, slice):
            out = aten.slice.Tensor(out, dim, entry.start, entry.stop, entry.step or 1)
            dim += 1
        elif isinstance(entry, int) and not isinstance(entry, bool):
            out = aten.select.int(out, dim, entry)
        elif isinstance(entry, (torch.Tensor, list)):
            advanced[dim] = entry if isinstance(entry, torch.Tensor) else torch.tensor(entry)
            dim += 1
        else:
            raise SimulatedGPUError(
                f"simulated GPU: index entry {entry!r} of type {type(entry).__name__} is not supported"
            )
    if advanced:
        out = aten.index.Tensor(out, [advanced.get(d) for d in range(max(advanced) + 1)])
    return out


def _set_index(tensor: torch.Tensor, index, value) -> None:
    """`tensor[index] = value`: a copy into the basic-index view, or index_put_ for an advanced index."""
    entries = _spell_out(tensor, index)
    if any(isinstance(e, (torch.Tensor, list)) for e in entries):
        if len(entries) != 1:
            raise SimulatedGPUError(
                "simulated GPU: assignment through a mixed advanced index is not supported"
            )
        positions = entries[0] if isinstance(entries[0], torch.Tensor) else torch.tensor(entries[0])
        value = value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=tensor.dtype)
        aten.index_put_.default(tensor, [positions], value.to(tensor.device, tensor.dtype))
        return
    view = _index(tensor, index)
    if isinstance(value, torch.Tensor):
        aten.copy_.default(view, value)
    else:
        aten.fill_.Scalar(view, value)


def _fused_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """The fused SDPA kernel a CUDA build would select for these inputs; returns only the attention output.

    Flash attention for fp16/bf16 without a mask; the memory-efficient kernel otherwise (it takes an additive bias,
    e.g. T5's relative position bias, and float32).
    """
    if enable_gqa or (attn_mask is not None and attn_mask.dtype == torch.bool):
        raise SimulatedGPUError(
            "simulated GPU: boolean attention masks and GQA are not modelled (the pack uses neither)"
        )
    if attn_mask is None and q.dtype in FUSED_ATTENTION_DTYPES and q.shape[-1] <= 256:
        return aten._scaled_dot_product_flash_attention(q, k, v, dropout_p, is_causal, scale=scale)[0]
    if attn_mask is not None:
        attn_mask = attn_mask.expand(
            q.shape[0], q.shape[1], q.shape[2], k.shape[2]
        )  # the kernel wants 4-D bias
    return aten._scaled_dot_product_efficient_attention(
        q, k, v, attn_mask, False, dropout_p, is_causal, scale=scale
    )[0]


def _to(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """`Tensor.to(...)` as one aten._to_copy (or the tensor itself when nothing changes, as `to` does)."""
    device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
    device = tensor.device if device is None else torch.device(device)
    device = torch.device("cuda", 0) if device.type == "cuda" and device.index is None else device
    dtype = tensor.dtype if dtype is None else dtype
    if device == tensor.device and dtype == tensor.dtype and not kwargs.get("copy", False):
        return tensor
    return aten._to_copy.default(
        tensor,
        dtype=dtype,
        device=device,
        non_blocking=non_blocking,
        memory_format=memory_format or torch.preserve_format,
    )


def _touches_cuda(args, kwargs) -> bool:
    """Whether a `Tensor.to` call reads from or writes to a cuda device."""
    if args[0].device.type == "cuda":
        return True
    target = torch._C._nn._parse_to(*args[1:], **kwargs)[0]
    return target is not None and torch.device(target).type == "cuda"


class _CudaPythonOps(TorchFunctionMode):
    """Routes the Python-level entry points that need the CUDA runtime (indexing, `to`, SDPA) to plain aten ops."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to and _touches_cuda(args, kwargs):
            with torch._C.DisableTorchFunction():
                return _to(*args, **kwargs)
        on_cuda = bool(args) and isinstance(args[0], torch.Tensor) and args[0].device.type == "cuda"
        if on_cuda and func is torch.Tensor.__getitem__:
            with torch._C.DisableTorchFunction():
                return _index(*args)
        if on_cuda and func is torch.Tensor.__setitem__:
            with torch._C.DisableTorchFunction():
                return _set_index(*args)
        if on_cuda and func is F.scaled_dot_product_attention:
            with torch._C.DisableTorchFunction():
                return _fused_attention(*args, **kwargs)
        try:
            return func(*args, **kwargs)
        except RuntimeError as error:
            if NO_CUDA_MESSAGE not in str(error) or not hasattr(aten, func.__name__):
                raise
        # A Python binding that wants the CUDA runtime (e.g. `Tensor.contiguous`, `Tensor.cuda`): the aten op itself
        # runs fine on fake tensors.
        with torch._C.DisableTorchFunction():
            if func.__name__ == "cuda":
                return _to(args[0], "cuda")
            return getattr(aten, func.__name__)(*args, **kwargs)


def _contiguous(
    tensor: torch.Tensor, memory_format: torch.memory_format = torch.contiguous_format
) -> torch.Tensor:
    """`Tensor.contiguous` without its Python binding's CUDA device guard (decompositions call it inside dispatch,
    where no TorchFunctionMode runs)."""
    return aten.contiguous.default(tensor, memory_format=memory_format)


def _module_to(module: nn.Module, *args, **kwargs) -> nn.Module:
    """`nn.Module.to` for fake tensors: each tensor is replaced by its converted copy.

    The stock `Module._apply` swaps fake parameters in place with `torch.utils.swap_tensors`, which refuses tensors
    that FakeTensorMode holds weak references to. On a real GPU `to` keeps the Parameter objects (`param.data = …`);
    here they are new objects with the same shapes, dtypes and devices — what memory and device checks look at.
    """
    device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
    for sub in module.modules():
        for table in (sub._parameters, sub._buffers):
            for name, tensor in table.items():
                if tensor is None:
                    continue
                cast = dtype if dtype is not None and tensor.is_floating_point() else None
                with torch.no_grad():  # as Module._apply: a moved weight records no autograd history
                    moved = tensor.to(device=device, dtype=cast, non_blocking=non_blocking)
                if moved is not tensor:
                    is_param = isinstance(tensor, nn.Parameter)
                    table[name] = nn.Parameter(moved, tensor.requires_grad) if is_param else moved
    return module


class _HostDataStaysReal(TorchDispatchMode):
    """Host-side preprocessing runs for real: it branches on data (which pixels move, a start image's range) that
    fake tensors do not carry, and ends in numpy.

    An op runs for real when its tensor inputs are all real host tensors, and a factory call without tensor inputs
    when it makes a host tensor under `REAL_HOST_FACTORY_BYTES` (a flow video at 720×480×49 is 48 MiB). Larger host
    buffers (weights, block-swap masters) and everything that touches a fake tensor stay fake, so the simulation
    itself stays small.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        target = kwargs.get("device")
        leaves_host = target is not None and torch.device(target).type != "cpu"
        if leaves_host or any(isinstance(t, FakeTensor) or t.device.type != "cpu" for t in tensors):
            return func(*args, **kwargs)
        if tensors:
            with unset_fake_temporarily():
                return func(*args, **kwargs)
        out = func(*args, **kwargs)  # a factory: fake first, to see what it makes
        small_host = isinstance(out, torch.Tensor) and out.device.type == "cpu"
        if small_host and out.numel() * out.element_size() < REAL_HOST_FACTORY_BYTES:
            with unset_fake_temporarily():
                return func(*args, **kwargs)
        return out


@contextlib.contextmanager
def simulated_cuda() -> Iterator[FakeTensorMode]:
    """Inside, tensors are fake; `device="cuda"` gives shape/dtype/device-only tensors on a simulated GPU.

    While inside, `Tensor.contiguous` and `nn.Module.to` are replaced by the fake-safe versions above (restored on
    exit): both are called from places no TorchFunctionMode reaches (decompositions, module internals).
    """
    mode = FakeTensorMode(allow_non_fake_inputs=True)  # real constants (cached tables) join as fakes
    bindings = torch.Tensor.contiguous, nn.Module.to
    torch.Tensor.contiguous, nn.Module.to = _contiguous, _module_to
    try:
        with mode, _HostDataStaysReal(), _CudaPythonOps():
            yield mode
    finally:
        torch.Tensor.contiguous, nn.Module.to = bindings


def materialize(module: nn.Module, device: torch.device | str, dtype: torch.dtype | None = None) -> nn.Module:
    """Give a module built on `meta` fake parameters and buffers on `device` (floating ones cast to `dtype`).

    Call inside `simulated_cuda()`. Parameters stay `nn.Parameter` without grad; integer buffers keep their dtype.
    """
    device = torch.device(device)
    for sub in module.modules():
        for name, param in sub.named_parameters(recurse=False):
            cast = dtype if dtype is not None and param.is_floating_point() else param.dtype
            sub._parameters[name] = nn.Parameter(
                torch.empty(param.shape, dtype=cast, device=device), requires_grad=False
            )
        for name, buffer in sub.named_buffers(recurse=False):
            if buffer is not None:
                cast = dtype if dtype is not None and buffer.is_floating_point() else buffer.dtype
                sub._buffers[name] = torch.empty(buffer.shape, dtype=cast, device=device)
    return module
