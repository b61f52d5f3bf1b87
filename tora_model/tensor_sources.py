"""Named tensors in checkpoint files: keys and shapes without reading, and one tensor (or some of its rows) at a time.

Source: the safetensors format (huggingface/safetensors: an 8-byte little-endian header length, a JSON header of
dtype / shape / data_offsets per tensor, then the raw data) and `tora_spec.md` §7.3 (loader requirements). Which
tensors to read is planned by `checkpoints.py`; what a file is, is decided by `checkpoint_files.py`.

Sources: `SafetensorsSource` (one file or diffusers shards), `MappingSource` (a state dict passed in, or a
memory-mapped torch pickle), `PrefixedSource` (names under a prefix, e.g. SAT's `model.diffusion_model.`) and
`CombinedSource` (files with disjoint names seen as one, e.g. the kijai split layout); `LazyStateDict` shows a source
as a read-only mapping. `read(name, rows)` returns a fresh tensor of the stored dtype, optionally only the dim-0 row
ranges `rows` concatenated (one part of a fused SAT weight).

Memory: safetensors are read with plain file reads straight into the tensor's buffer (no mmap, so file pages never
count against the process); a memory-mapped pickle has the pages of each copied tensor released at once (Linux
`madvise`). Safetensors data is little-endian, as is every platform torch ships for.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import keymaps
from .errors import CheckpointError
from .json_files import json_object

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER_BYTES = 100 * 2**20
_MADV_DONTNEED = 4  # Linux value
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None  # symbols of libc
if _LIBC is not None:
    _LIBC.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


@dataclass(frozen=True)
class _Entry:
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    stop: int


class SafetensorsFile:
    """One `.safetensors` file: header parsed and validated up front, tensors read on demand with plain reads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries = self._read_header()
        self._mapping: torch.Tensor | None = (
            None  # [file bytes] uint8, a private memory map made on first use
        )

    def _fail(self, what: str) -> CheckpointError:
        return CheckpointError(
            f"{self.path} is not a readable safetensors file: {what}. Re-download it (the file may be cut short "
            "or be something else renamed to .safetensors)."
        )

    def _read_header(self) -> dict[str, _Entry]:
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise self._fail(f"only {size} bytes long")
            (length,) = struct.unpack("<Q", head)
            if length > _MAX_HEADER_BYTES or 8 + length > size:
                raise self._fail(f"header length field says {length} bytes but the file has {size}")
            header = json_object(f.read(length), lambda arrived: self._fail(f"its header {arrived}"))
        header.pop("__metadata__", None)
        entries = {name: self._entry(name, info, 8 + length) for name, info in header.items()}
        end = max((e.stop for e in entries.values()), default=8 + length)
        if end > size:
            raise self._fail(f"truncated — tensors need {end} bytes, the file has {size}")
        return entries

    def _entry(self, name: str, info: object, base: int) -> _Entry:
        try:
            dtype = _SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(int(n) for n in info["shape"])
            start, stop = (base + int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise self._fail(f"bad header entry for {name!r}: {info!r}") from None
        if stop - start != math.prod(shape) * dtype.itemsize:
            raise self._fail(f"tensor {name!r} has {stop - start} bytes for shape {list(shape)} {dtype}")
        return _Entry(dtype, shape, start, stop)

    def read(self, name: str, rows: list[tuple[int, int]] | None = None) -> torch.Tensor:
        """The tensor `name`, or the concatenation of its dim-0 row ranges `rows`, in a fresh buffer."""
        entry = self.entries[name]
        if rows is None or not entry.shape:
            rows = [(0, entry.shape[0] if entry.shape else 1)]
        row_bytes = (
            (entry.stop - entry.start) // max(entry.shape[0], 1) if entry.shape else entry.stop - entry.start
        )
        total = sum(stop - start for start, stop in rows)
        buffer = torch.empty(total * row_bytes, dtype=torch.uint8)
        view = memoryview(buffer.numpy())
        done = 0
        with open(self.path, "rb") as f:
            for start, stop in rows:
                f.seek(entry.start + start * row_bytes)
                want = (stop - start) * row_bytes
                if f.readinto(view[done : done + want]) != want:
                    raise self._fail(f"tensor {name!r} ends early")
                done += want
        out_shape = (total, *entry.shape[1:]) if entry.shape else ()
        return buffer.view(entry.dtype).reshape(out_shape)

    def mapped(self, name: str) -> torch.Tensor:
        """Tensor `name` as a view of a private (copy-on-write) memory map of the file: nothing is read or held in
        process memory until the bytes are used, and the pages are the page cache's, which the OS can drop. A tensor
        whose offset does not suit its dtype's alignment is read into a fresh buffer instead."""
        entry = self.entries[name]
        if entry.start % entry.dtype.itemsize:
            return self.read(name)
        if self._mapping is None:
            size = self.path.stat().st_size
            self._mapping = torch.from_file(str(self.path), shared=False, size=size, dtype=torch.uint8)
        return self._mapping[entry.start : entry.stop].view(entry.dtype).reshape(entry.shape)


class TensorSource:
    """Named tensors: `keys`, `meta` (shape + dtype, nothing read) and `read` (a fresh tensor, optionally only
    some dim-0 row ranges of it, never a view of the caller's dict or of a mapped file)."""

    def keys(self) -> list[str]:
        raise NotImplementedError

    def meta(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def read(self, name: str, rows: list[tuple[int, int]] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def mapped(self, name: str) -> torch.Tensor:
        """The tensor without a copy where the source is a memory-mapped file (read-only use!), else `read`."""
        return self.read(name)


class SafetensorsSource(TensorSource):
    """One or more safetensors files (diffusers shards) seen as one set of names."""

    def __init__(self, files: Sequence[SafetensorsFile]) -> None:
        self._files = {name: file for file in files for name in file.entries}

    def keys(self) -> list[str]:
        return list(self._files)

    def meta(self, name: str) -> torch.Tensor:
        entry = self._files[name].entries[name]
        return torch.empty(entry.shape, dtype=entry.dtype, device="meta")

    def read(self, name: str, rows: list[tuple[int, int]] | None = None) -> torch.Tensor:
        return self._files[name].read(name, rows)

    def mapped(self, name: str) -> torch.Tensor:
        return self._files[name].mapped(name)


class MappingSource(TensorSource):
    """Tensors already in a mapping: a state dict passed in, or a memory-mapped pickle (`mapped=True`)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], mapped: bool = False) -> None:
        self._tensors, self._mapped = tensors, mapped

    def keys(self) -> list[str]:
        return list(self._tensors)

    def meta(self, name: str) -> torch.Tensor:
        tensor = self._tensors[name]
        return torch.empty(tensor.shape, dtype=tensor.dtype, device="meta")

    def read(self, name: str, rows: list[tuple[int, int]] | None = None) -> torch.Tensor:
        tensor = self._tensors[name]
        if rows is None or tensor.dim() == 0:
            out = tensor.clone(memory_format=torch.contiguous_format)
        else:
            out = torch.cat([tensor[start:stop] for start, stop in rows], dim=0)
        if self._mapped:
            _forget_mapped_pages(tensor)
        return out

    def mapped(self, name: str) -> torch.Tensor:
        return self._tensors[name] if self._mapped else self.read(name)


class PrefixedSource(TensorSource):
    """Names relative to `prefix` of another source (SAT DiT keys are planned without `model.diffusion_model.`)."""

    def __init__(self, inner: TensorSource, prefix: str) -> None:
        self._inner, self._prefix = inner, prefix

    def keys(self) -> list[str]:
        return keymaps.strip_prefix(self._inner.keys(), self._prefix)

    def meta(self, name: str) -> torch.Tensor:
        return self._inner.meta(self._prefix + name)

    def read(self, name: str, rows: list[tuple[int, int]] | None = None) -> torch.Tensor:
        return self._inner.read(self._prefix + name, rows)

    def mapped(self, name: str) -> torch.Tensor:
        return self._inner.mapped(self._prefix + name)


class CombinedSource(TensorSource):
    """Several sources with disjoint names (kijai: base transformer + fuser file + extractor file)."""

    def __init__(self, *sources: TensorSource) -> None:
        self._owner: dict[str, TensorSource] = {}
        for source in sources:
            for key in source.keys():
                if key in self._owner:
                    raise CheckpointError(f"tensor {key!r} appears in two of the combined checkpoint files")
                self._owner[key] = source

    def keys(self) -> list[str]:
        return list(self._owner)

    def meta(self, name: str) -> torch.Tensor:
        return self._owner[name].meta(name)

    def read(self, name: str, rows: list[tuple[int, int]] | None = None) -> torch.Tensor:
        return self._owner[name].read(name, rows)

    def mapped(self, name: str) -> torch.Tensor:
        return self._owner[name].mapped(name)


def _forget_mapped_pages(tensor: torch.Tensor) -> None:
    """Tell Linux the file pages behind a memory-mapped tensor are no longer needed once it has been copied.

    Pages of a private read-only file mapping are re-read from the file if touched again, so this only stops the
    copied checkpoint from counting twice in the process's resident memory. Never used on anonymous memory.
    """
    if _LIBC is None:
        return
    storage = tensor.untyped_storage()
    page = mmap.PAGESIZE
    start = storage.data_ptr() // page * page
    stop = -(-(storage.data_ptr() + storage.nbytes()) // page) * page
    _LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(stop - start), _MADV_DONTNEED)


class LazyStateDict(Mapping):
    """Read-only mapping that reads a tensor from disk each time it is looked up."""

    def __init__(self, source: TensorSource) -> None:
        self._source = source
        self._keys = dict.fromkeys(source.keys())

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in self._keys:
            raise KeyError(key)
        return self._source.read(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def mapped(self) -> dict[str, torch.Tensor]:
        """Every tensor at once, as memory-mapped views where the file allows (see `SafetensorsFile.mapped`): for a
        consumer that copies the whole dict before using it (`nn.Module.load_state_dict`, ComfyUI's text encoder
        loader), so the file is not materialised in memory beside the model it fills. Read-only use."""
        return {key: self._source.mapped(key) for key in self._keys}
