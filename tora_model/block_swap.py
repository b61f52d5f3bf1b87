"""Transformer block swap: the last N blocks live in host memory and visit the compute device one forward at a time.

Host masters. At enable time every swapped block's parameters and buffers are copied once into one flat byte buffer
per block on the offload device (tensors 64-byte aligned inside it) and the block's tensors become views of it. The
buffer is page-locked when the compute device is CUDA and `torch.cuda.is_available()`, so host→device copies can
run asynchronously. One buffer per block, from torch's own pinned allocator (`pin_memory=True`): that allocator
rounds each request up to a power of two, once per block here (5B: 252.1 → 256 MiB in bf16, 126.1 → 128 MiB with fp8
storage, +1.5 %) instead of once per tensor (72 → 128 MiB for the MLP matrices, ≈ +78 % per block). cudaHostRegister
on plain memory would be exact but goes through the raw CUDA runtime binding, needs every range unregistered by hand
and leaves locked pages behind on any missed path; the allocator route is documented torch API and its memory goes
back through torch (`BlockSwap.close` empties the pinned cache).

One forward. A swapped block's forward pre-hook copies its master to the compute device (one copy of the flat
buffer) and points the block's tensors at views of that copy; its forward hook (`always_call=True`, so also when the
forward raises) points them back at the host views and drops the copy. Nothing is ever copied back: the weights do
not change. On real CUDA the next swapped block's copy is issued on a side stream when a block starts (the first
swapped block's when the last resident block starts), so copies overlap compute; at most two swapped blocks are on
the device. The copy's target is allocated on the compute stream, the side stream first waits for the compute
stream (the allocator may hand out memory that queued kernels still read), and the compute stream waits on the
copy's event before it uses the copy or lets it go — so the allocator's per-stream reuse is safe without
`record_stream`, which would hold freed blocks until later copies finish and grow the pool. Everywhere else (CPU,
other devices, the simulated GPU of `simulated_gpu/`, where tensors say "cuda" but torch.cuda is unavailable) the
copy is synchronous and no stream or pinning API is called; the numbers are identical. The simulated GPU still makes
its copies at the prefetch points, so its memory peak holds two swapped blocks as a real run does. The hooks do no
host syncs and branch only on Python bookkeeping, never on tensor values.

Failure. If a swapped block's forward (or its pre-hook) raises, its copy and every prefetched copy are dropped, and
so is the prefetched first swapped block if the last resident block raises. What an exception between blocks or a
KeyboardInterrupt (which skips `always_call` hooks) leaves behind, `BlockSwap.release` drops — call it after a run
and on error — and the next forward drops it anyway.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ConfigError

log = logging.getLogger(__name__)

ALIGNMENT = 64  # bytes; a host cache line, and more than the 16 bytes CUDA kernels vectorise loads on


@dataclass(frozen=True)
class SwapStats:
    """Counters of one `BlockSwap`, read by the simulated GPU and by benchmarks. Bytes are exact."""

    blocks: int  # swapped blocks
    block_bytes: int  # their host buffers (tensors + alignment padding): one forward copies this much
    host_bytes: int  # host memory holding the masters, as requested (equals block_bytes)
    pinned_bytes: int  # page-locked memory torch's host allocator reserves for them (0 when not pinned)
    prefetch: bool  # copies issued one block ahead (on a side stream on real CUDA)
    forwards: int  # forwards that ran through the last swapped block
    host_to_device_bytes: int  # copied since enable
    last_forward_host_to_device_bytes: int  # copied in the last completed forward (and failed ones before it)
    device_to_host_bytes: int  # always 0: weights are never copied back
    on_device_bytes: int  # swapped-block copies on the compute device now (0 between forwards)
    peak_on_device_bytes: int  # the most swapped-block bytes on the compute device at once


@dataclass(frozen=True)
class _Slot:
    """Where one tensor of a block is registered and where its bytes sit in the block's flat buffer."""

    module: nn.Module
    table: str  # "_parameters" or "_buffers"
    name: str
    offset: int
    host: torch.Tensor  # the view of the host master registered between forwards

    def view(self, flat: torch.Tensor) -> torch.Tensor:
        nbytes = self.host.numel() * self.host.element_size()
        return flat.narrow(0, self.offset, nbytes).view(self.host.dtype).view(self.host.shape)


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGNMENT) * ALIGNMENT


class _Master:
    """One swapped block's host master: a flat byte buffer, and its tensors as views of it."""

    def __init__(self, block: nn.Module, device: torch.device, pin: bool) -> None:
        entries, offsets, size = [], {}, 0
        for module in block.modules():
            for table in ("_parameters", "_buffers"):
                for name, tensor in getattr(module, table).items():
                    if tensor is None:
                        continue
                    if id(tensor) not in offsets:  # a tensor registered twice keeps one copy
                        offsets[id(tensor)] = size
                        size += _aligned(tensor.numel() * tensor.element_size())
                    entries.append((module, table, name, tensor))
        self.flat = _host_buffer(size, device, pin)  # [size] uint8
        self.pinned = self.flat.is_pinned() if pin else False
        views: dict[int, torch.Tensor] = {}
        self.slots = []
        with torch.no_grad():
            for module, table, name, tensor in entries:
                offset = offsets[id(tensor)]
                if offset not in views:
                    view = self.flat.narrow(0, offset, tensor.numel() * tensor.element_size())
                    view = view.view(tensor.dtype).view(tensor.shape).copy_(tensor.detach())
                    is_param = table == "_parameters"
                    views[offset] = nn.Parameter(view, tensor.requires_grad) if is_param else view
                self.slots.append(_Slot(module, table, name, offset, views[offset]))
        self.restore()

    @property
    def nbytes(self) -> int:
        return self.flat.numel()

    def install(self, flat: torch.Tensor) -> None:
        """Point the block's tensors at views of `flat`, a copy of the master on the compute device."""
        views: dict[int, torch.Tensor] = {}
        for slot in self.slots:
            if slot.offset not in views:
                view = slot.view(flat)
                views[slot.offset] = nn.Parameter(view, False) if slot.table == "_parameters" else view
            getattr(slot.module, slot.table)[slot.name] = views[slot.offset]

    def restore(self) -> None:
        """Point the block's tensors back at the host master (any device copy is then unreferenced)."""
        for slot in self.slots:
            getattr(slot.module, slot.table)[slot.name] = slot.host

    def intact(self) -> bool:
        """Whether the block still holds the master views (nobody replaced a tensor after enable)."""
        return all(getattr(slot.module, slot.table).get(slot.name) is slot.host for slot in self.slots)

    def unpin(self) -> None:
        """Give the block ordinary host tensors (copies of the master views) and drop the master."""
        with torch.no_grad():
            for slot in self.slots:
                copy = slot.host.detach().clone()
                if slot.table == "_parameters":
                    copy = nn.Parameter(copy, slot.host.requires_grad)
                getattr(slot.module, slot.table)[slot.name] = copy
        self.slots, self.flat = [], None


def _host_buffer(size: int, device: torch.device, pin: bool) -> torch.Tensor:
    if pin:
        try:
            return torch.empty(size, dtype=torch.uint8, device=device, pin_memory=True)
        except RuntimeError as error:  # e.g. a locked-memory limit (WSL, containers): correct, only slower
            log.warning("block swap: cannot page-lock %d MiB (%s); using pageable memory", size >> 20, error)
    return torch.empty(size, dtype=torch.uint8, device=device)


def _empty_pinned_cache() -> None:
    """Hand torch's cached page-locked blocks back to the driver (an API of newer torch; older torch keeps them)."""
    empty = getattr(getattr(torch, "accelerator", None), "empty_host_cache", None)
    if empty is not None:
        empty()


def pinned_reservation(nbytes: int) -> int:
    """What torch's CachingHostAllocator reserves for a request: the next power of two."""
    return 1 << max(nbytes - 1, 0).bit_length()


@dataclass(frozen=True)
class _Copy:
    """A master's copy on the compute device and the event that marks it complete (None when synchronous)."""

    flat: torch.Tensor
    done: object | None
    nbytes: int


class _SyncCopier:
    """Copies on the calling thread's stream: CPU, other devices, the simulated GPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def start(self, host: torch.Tensor) -> _Copy:
        flat = host.to(self.device)
        if flat is host:  # same device: still a separate copy, so every device follows one code path
            flat = host.clone()
        return _Copy(flat, None, host.numel())

    def ready(self, copy: _Copy) -> torch.Tensor:
        return copy.flat

    def discard(self, copy: _Copy) -> None:
        pass

    def finish(self) -> None:
        pass


class _StreamCopier:
    """Copies from pinned memory on a side CUDA stream, ordered against the compute stream by events."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def start(self, host: torch.Tensor) -> _Copy:
        compute = torch.cuda.current_stream(self.device)
        flat = torch.empty(host.shape, dtype=host.dtype, device=self.device)  # from the compute stream's pool
        self.stream.wait_stream(compute)  # kernels queued on the compute stream may still read that memory
        with torch.cuda.stream(self.stream):
            flat.copy_(host, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.stream)
        return _Copy(flat, done, host.numel())

    def ready(self, copy: _Copy) -> torch.Tensor:
        torch.cuda.current_stream(self.device).wait_event(copy.done)
        return copy.flat

    def discard(self, copy: _Copy) -> None:
        self.ready(copy)  # the memory goes back to the compute stream's pool only after the copy has landed

    def finish(self) -> None:
        self.stream.synchronize()


class BlockSwap(Sequence[nn.Module]):
    """The swapped blocks (a sequence of modules, last `count` of `blocks`) and the hooks that move them.

    prefetch: issue each copy one block ahead. Default: on for a "cuda" compute device — on real CUDA the copies
    then overlap compute; on the simulated GPU they stay synchronous but are made at the same points, so its memory
    peak includes the second block as a real run's does. Off elsewhere (CPU); results never change.
    """

    def __init__(
        self,
        blocks: nn.ModuleList,
        count: int,
        compute_device: torch.device,
        offload_device: torch.device,
        prefetch: bool | None = None,
    ) -> None:
        compute, offload = torch.device(compute_device), torch.device(offload_device)
        streams = compute.type == "cuda" and torch.cuda.is_available()
        first = self._first = len(blocks) - count
        self._blocks = list(blocks)[first:]
        pin = streams and offload.type == "cpu"
        self._masters = [_Master(block, offload, pin) for block in self._blocks]
        self._copier = _StreamCopier(compute) if streams else _SyncCopier(compute)
        self.prefetch = compute.type == "cuda" if prefetch is None else prefetch
        self._in_use: dict[int, int] = {}  # swapped index → bytes of its installed copy (held by the block)
        self._pending: dict[int, _Copy] = {}  # swapped index → prefetched copy, not yet installed
        self._copied = self._copied_before = self._last_forward = self._forwards = self._peak = 0
        self._hooks = []
        for index, block in enumerate(self._blocks):
            self._hooks.append(block.register_forward_pre_hook(functools.partial(self._enter, index)))
            self._hooks.append(
                block.register_forward_hook(functools.partial(self._leave, index), always_call=True)
            )
        if self.prefetch and first > 0 and count > 0:  # the last resident block fetches the first swapped one
            self._hooks.append(blocks[first - 1].register_forward_pre_hook(self._prefetch_first))
            last_resident = blocks[first - 1]
            self._hooks.append(last_resident.register_forward_hook(self._after_resident, always_call=True))
        log.info(
            "block swap: %d blocks, %.1f MiB in %s host memory, %s",
            count,
            sum(m.nbytes for m in self._masters) / 2**20,
            "pinned" if pin else "pageable",
            "prefetched on a side stream" if streams and self.prefetch else "copied synchronously",
        )

    # ---- the sequence of swapped blocks ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._blocks)

    def __getitem__(self, index: int) -> nn.Module:
        return self._blocks[index]

    # ---- hooks ----------------------------------------------------------------------------------------------------
    def _start(self, index: int) -> _Copy:
        copy = self._copier.start(self._masters[index].flat)
        self._copied += copy.nbytes
        self._peak = max(self._peak, self._on_device() + copy.nbytes)
        return copy

    def _enter(self, index: int, _module: nn.Module, _args) -> None:
        master = self._masters[index]
        # copies of a forward that stopped early (a KeyboardInterrupt skips the post-hooks)
        self._drop_leftovers(keep=index)
        if not master.intact():
            raise ConfigError(
                f"transformer block {self._first + index} is swapped, but a tensor of it was replaced after block "
                "swap was enabled (block swap would bring back the old weights); apply fp8 storage "
                "(store_block_linears) or any other weight change before enable_block_swap"
            )
        copy = self._pending.pop(index, None) or self._start(index)
        self._in_use[index] = copy.nbytes
        master.install(self._copier.ready(copy))
        if self.prefetch and index + 1 < len(self._masters) and index + 1 not in self._pending:
            self._pending[index + 1] = self._start(index + 1)

    def _leave(self, index: int, _module: nn.Module, _args, _output) -> None:
        if self._in_use.pop(index, None) is not None:
            self._masters[index].restore()
        if sys.exc_info()[0] is not None:  # called from nn.Module's exception path: the forward is over
            self.release()  # (also if the model runs inside an `except` block: costs a re-copy, never a result)
        elif index == len(self._masters) - 1:
            self._forwards += 1
            self._last_forward, self._copied_before = self._copied - self._copied_before, self._copied

    def _prefetch_first(self, _module: nn.Module, _args) -> None:
        if 0 not in self._pending:
            self._pending[0] = self._start(0)

    def _after_resident(self, _module: nn.Module, _args, _output) -> None:
        if sys.exc_info()[0] is not None:
            self.release()

    def _on_device(self) -> int:
        return sum(self._in_use.values()) + sum(c.nbytes for c in self._pending.values())

    def _drop_leftovers(self, keep: int | None) -> None:
        """Point every block in use back at its master; discard prefetched copies other than `keep`'s."""
        for index in list(self._in_use):
            del self._in_use[index]
            self._masters[index].restore()
        for index in [i for i in self._pending if i != keep]:
            self._copier.discard(self._pending.pop(index))

    # ---- public ---------------------------------------------------------------------------------------------------
    def release(self) -> None:
        """Drop every copy on the compute device (in use or prefetched); the blocks point at their masters again."""
        self._drop_leftovers(keep=None)

    def close(self) -> None:
        """Undo block swap: remove the hooks, give the blocks ordinary host tensors, free the (pinned) masters."""
        self.release()
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self._copier.finish()  # no copy may still read a master
        pinned = any(m.pinned for m in self._masters)
        for master in self._masters:
            master.unpin()
        self._masters, self._blocks = [], []
        if pinned:
            _empty_pinned_cache()

    @property
    def stats(self) -> SwapStats:
        block_bytes = sum(m.nbytes for m in self._masters)
        return SwapStats(
            blocks=len(self._masters),
            block_bytes=block_bytes,
            host_bytes=block_bytes,
            pinned_bytes=sum(pinned_reservation(m.nbytes) for m in self._masters if m.pinned),
            prefetch=self.prefetch,
            forwards=self._forwards,
            host_to_device_bytes=self._copied,
            last_forward_host_to_device_bytes=self._last_forward,
            device_to_host_bytes=0,
            on_device_bytes=self._on_device(),
            peak_on_device_bytes=self._peak,
        )
