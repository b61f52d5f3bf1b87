"""Reading Tora checkpoints in every released layout and loading them into `ToraTransformer` with low memory.

Source: `tora_spec.md` §1.2–§1.3 (layouts), §7.1 and §7.3 (loader requirements); key maps in `keymaps.py`.

Layouts accepted by `load_transformer` (and `inspect_checkpoint`):
  * official SAT `mp_rank_00_model_states.pt` — a torch zip pickle `{'module': {...}}` of the whole engine; DiT + Tora
    modules sit under `model.diffusion_model.` (T5 and VAE under other prefixes, see `sub_state_dict`). Opened with
    `torch.load(weights_only=True, mmap=True)`: nothing is unpickled beyond tensors, nothing is read until used;
  * official diffusers `transformer/` folder (sharded `diffusion_pytorch_model-*.safetensors` + index json, or one
    file), or the pipeline root holding `transformer/`;
  * a single `.safetensors` / `.pt` file in the SAT or the canonical layout;
  * the third-party split layout (kijai `CogVideoX-5b-Tora/{fuser,traj_extractor}/*.safetensors`) combined with a
    stock CogVideoX-5B(-I2V) transformer (`transformer/` inside that folder, or `motion_source=` beside `source`);
  * a state dict passed directly;
  * the spatial-temporal DiT (`st_dit.py`, the trained tiny Tora): one `.safetensors` whose header names the
    backbone and stores its config, in the model's own key names.

Memory: the model is built on the meta device and each canonical tensor is read on its own — only the rows a split
needs — cast to `dtype`, moved to `device`, and assigned. Safetensors are read with plain file reads straight into the
tensor's buffer (no mmap, so file pages never count against the process); a memory-mapped SAT pickle has the pages
of each copied tensor released at once (Linux `madvise`). Peak memory ≈ the model plus one tensor
(`bench/bench_load.py`). Safetensors data is little-endian, as is every platform torch ships for.
"""

from __future__ import annotations

import ctypes
import json
import logging
import math
import mmap
import pickle
import re
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import keymaps
from .config import PRESETS, ToraConfig
from .errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from .transformer import ToraTransformer

log = logging.getLogger(__name__)

SAT_FILE = "mp_rank_00_model_states.pt"
DIFFUSERS_FILE = "diffusion_pytorch_model.safetensors"
DIFFUSERS_INDEX = "diffusion_pytorch_model.safetensors.index.json"
WHERE_TO_GET = (
    "Tora weights: Hugging Face 'Alibaba-Research-Intelligence-Computing/Tora' (SAT: tora/t2v|i2v/"
    f"{SAT_FILE}) or 'Alibaba-Research-Intelligence-Computing/Tora_T2V_diffusers' (transformer/ folder)"
)

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
_ZIP_MAGIC = b"PK\x03\x04"
_MADV_DONTNEED = 4  # Linux value
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None  # symbols of libc
if _LIBC is not None:
    _LIBC.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_PICKLE_PROTO = b"\x80"


# --- tensor sources: keys, shapes, and reading (parts of) one tensor ---------------------------------------------


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
            try:
                header = json.loads(f.read(length))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise self._fail(f"header is not JSON ({err})") from None
        if not isinstance(header, dict):
            raise self._fail("header is not a JSON object")
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


class TensorSource:
    """Named tensors: `keys`, `meta` (shape + dtype, nothing read) and `read` (a fresh tensor, optionally only
    some dim-0 row ranges of it, never a view of the caller's dict or of a mapped file)."""

    def keys(self) -> list[str]:
        raise NotImplementedError

    def meta(self, name: str) -> torch.Tensor:
        raise NotImplementedError

    def read(self, name: str, rows: list[tuple[int, int]] | None = None) -> torch.Tensor:
        raise NotImplementedError


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


class _LazyStateDict(Mapping):
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


# --- files -> sources ---------------------------------------------------------------------------------------------


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(_ZIP_MAGIC):
        return "torch"
    if head.startswith(_PICKLE_PROTO):
        return "torch-legacy"
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    hint = ""
    if head.startswith(b"version https://git-lfs"):
        hint = " It is a Git LFS pointer: the real weights were never downloaded (run `git lfs pull` there)."
    raise CheckpointError(
        f"{path} is not a model checkpoint: expected a .safetensors file or a torch .pt/.pth/.bin file, but it "
        f"starts with {head[:40]!r}.{hint} Check that the path points at the downloaded weights. {WHERE_TO_GET}."
    )


def _torch_load(path: Path, kind: str) -> Mapping[str, torch.Tensor]:
    try:
        # mmap only for the zip format; old-style pickles cannot be mapped and are read whole.
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "torch")
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as err:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if refused or "weights_only" in str(err).lower():
            found = f" (found {refused.group(1)})" if refused else ""
            raise CheckpointError(
                f"{path} contains pickled Python objects other than tensors{found}, so it was NOT opened: loading it "
                "would run code from the file. Use the official weights, or re-save this file as a plain state dict "
                "or as safetensors."
            ) from None
        raise CheckpointError(
            f"{path} could not be read as a torch checkpoint ({err}). The file may be truncated or corrupt; "
            "re-download it."
        ) from None
    return _unwrap(obj, path)


def _unwrap(obj: object, path: Path) -> Mapping[str, torch.Tensor]:
    """DeepSpeed/SAT files hold {'module': sd}, the SAT VAE {'state_dict': sd}; plain files are the sd itself."""
    if isinstance(obj, Mapping):
        for wrapper in ("module", "state_dict"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise CheckpointError(
        f"{path} holds no tensors (found {type(obj).__name__}); expected a state dict, or a dict with a "
        "'module' or 'state_dict' entry."
    )


def _safetensors_folder(folder: Path) -> list[SafetensorsFile] | None:
    """Files of a diffusers component folder (index json + shards, or one file), or None if neither is there."""
    index = folder / DIFFUSERS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(
                f"{index} is not a valid safetensors index ({err}); re-download it"
            ) from None
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(
                f"{index} lists {len(names)} shards but {len(missing)} are missing from {folder}: {missing[:4]}. "
                "Download every shard of the transformer folder."
            )
        return [SafetensorsFile(folder / n) for n in names]
    if (folder / DIFFUSERS_FILE).is_file():
        return [SafetensorsFile(folder / DIFFUSERS_FILE)]
    return None


def _file_source(path: Path) -> tuple[TensorSource, str]:
    """(source, container description) of one weights file, by content rather than by extension."""
    kind = _sniff(path)
    if kind == "safetensors":
        return SafetensorsSource([SafetensorsFile(path)]), "safetensors file"
    if kind == "torch":
        return MappingSource(_torch_load(path, kind), mapped=True), "torch pickle (weights_only, mmap)"
    return MappingSource(_torch_load(path, kind)), "legacy torch pickle (weights_only, read whole)"


def _single_safetensors(folder: Path) -> list[SafetensorsFile]:
    files = sorted(folder.glob("*.safetensors"))
    if len(files) != 1:
        raise CheckpointError(
            f"expected exactly one .safetensors file in {folder}, found {[f.name for f in files] or 'none'}"
        )
    return [SafetensorsFile(files[0])]


def read_state_dict(path: str | Path) -> Mapping[str, torch.Tensor]:
    """Raw tensors of a checkpoint file or diffusers component folder, names as stored (SAT wrappers removed).

    Safetensors are read lazily (each lookup reads that tensor); pickles are memory-mapped.
    """
    path = _existing(Path(path))
    if path.is_dir():
        files = _safetensors_folder(path)
        if files is None:
            raise CheckpointError(
                f"{path} is a folder without {DIFFUSERS_INDEX} or {DIFFUSERS_FILE}; point at the weights file itself"
            )
        return _LazyStateDict(SafetensorsSource(files))
    kind = _sniff(path)
    if kind == "safetensors":
        return _LazyStateDict(SafetensorsSource([SafetensorsFile(path)]))
    return _torch_load(path, kind)


def sub_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Tensors under `prefix`, prefix removed — e.g. `keymaps.SAT_VAE_PREFIX` / `SAT_T5_PREFIX` of a SAT file."""
    return {k[len(prefix) :]: state_dict[k] for k in state_dict if k.startswith(prefix)}


def _existing(path: Path) -> Path:
    if not path.exists():
        raise CheckpointError(
            f"checkpoint not found: looked for {path.resolve()} (no such file or folder). Put the weights there "
            f"or pass the right path. {WHERE_TO_GET}."
        )
    return path


# --- layouts -> (source, key plan) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A located checkpoint: where it is, which layout it has, and how its tensors become canonical ones."""

    location: str
    format: str
    source: TensorSource
    plan: keymaps.KeyPlan
    config: ToraConfig | None = None  # stored in the file's header (st_dit files); None: inferred from shapes

    def meta_state_dict(self) -> dict[str, torch.Tensor]:
        """Canonical names → meta tensors of the right shape and stored dtype (nothing is read)."""
        try:
            return {t: keymaps.apply_rule(r, self.source.meta(r.source)) for t, r in self.plan.rules.items()}
        except CheckpointError as err:  # a fused tensor that does not split evenly
            raise CheckpointError(f"{self.location} ({self.format}): {err}; the file is damaged") from None


def _plan_for(keys: list[str], location: str) -> tuple[str, keymaps.KeyPlan, str]:
    """(layout name, plan, source-key prefix) for the transformer keys of a flat state dict."""
    if any(k.startswith(keymaps.SAT_PREFIX) for k in keys):
        return "SAT", keymaps.sat_plan(keymaps.strip_prefix(keys, keymaps.SAT_PREFIX)), keymaps.SAT_PREFIX
    if any(k.startswith(("transformer.layers.", "mixins.")) for k in keys):
        return "SAT (DiT only)", keymaps.sat_plan(keys), ""
    if any(k.startswith("transformer_blocks.") for k in keys):
        return "diffusers", keymaps.identity_plan(keys), ""
    raise CheckpointError(
        f"{location} holds no transformer weights: none of its {len(keys)} keys starts with "
        f"'{keymaps.SAT_PREFIX}', 'transformer.layers.' or 'transformer_blocks.' (first keys: {keys[:4]}). It may be a "
        f"VAE, text-encoder or LoRA file; point at the Tora transformer instead. {WHERE_TO_GET}."
    )


def _checkpoint_from_source(source: TensorSource, location: str, container: str) -> Checkpoint:
    layout, plan, prefix = _plan_for(source.keys(), location)
    if prefix:
        source = PrefixedSource(source, prefix)
    return Checkpoint(location, f"{layout} layout, {container}", source, plan)


def _kijai_checkpoint(base: Checkpoint, motion_folder: Path) -> Checkpoint:
    fuser = _single_safetensors(motion_folder / "fuser")
    extractor = _single_safetensors(motion_folder / "traj_extractor")
    if any(k.startswith((keymaps.FUSER_PREFIX, keymaps.EXTRACTOR_PREFIX)) for k in base.plan.rules):
        raise CheckpointError(
            f"{base.location} already contains Tora modules; do not combine it with the split files in {motion_folder}"
        )
    fuser_source, extractor_source = SafetensorsSource(fuser), SafetensorsSource(extractor)
    plan = base.plan.merged(keymaps.kijai_fuser_plan(fuser_source.keys()))
    plan = plan.merged(keymaps.kijai_extractor_plan(extractor_source.keys()))
    return Checkpoint(
        f"{base.location} + {motion_folder}",
        f"third-party split layout (CogVideoX transformer: {base.format}; fuser/ and traj_extractor/ files)",
        CombinedSource(base.source, fuser_source, extractor_source),
        plan,
    )


def _diffusers_checkpoint(folder: Path) -> Checkpoint | None:
    files = _safetensors_folder(folder)
    if files is None:
        return None
    container = f"{len(files)} safetensors shard(s)" if len(files) > 1 else "single safetensors"
    return _checkpoint_from_source(SafetensorsSource(files), str(folder), container)


def _folder_checkpoint(folder: Path) -> Checkpoint:
    if (folder / "fuser").is_dir() and (folder / "traj_extractor").is_dir():
        for base in (folder / "transformer", folder):
            if (checkpoint := _diffusers_checkpoint(base)) is not None:
                return _kijai_checkpoint(checkpoint, folder)
        raise CheckpointError(
            f"{folder} holds the split Tora modules (fuser/, traj_extractor/) but no CogVideoX-5B transformer: looked "
            f"for {DIFFUSERS_INDEX} or {DIFFUSERS_FILE} in {folder / 'transformer'} and {folder}. Pass the "
            "CogVideoX-5B(-I2V) transformer folder as `source` and this folder as `motion_source`."
        )
    if (checkpoint := _diffusers_checkpoint(folder)) is not None:
        return checkpoint
    if (folder / "transformer").is_dir():
        return _folder_checkpoint(folder / "transformer")
    if (folder / SAT_FILE).is_file():
        return _file_checkpoint(folder / SAT_FILE)
    looked = [DIFFUSERS_INDEX, DIFFUSERS_FILE, "transformer/", SAT_FILE, "fuser/ + traj_extractor/"]
    nested = sorted(str(p.relative_to(folder)) for p in folder.glob(f"*/{SAT_FILE}"))
    hint = f" It has SAT checkpoints one level down — pick one: {nested}." if nested else ""
    raise CheckpointError(
        f"no checkpoint found in folder {folder.resolve()}: looked for {', '.join(looked)}.{hint} Point at the "
        f"transformer folder, the pipeline root, or the .pt/.safetensors file. {WHERE_TO_GET}."
    )


def _st_dit_checkpoint(path: Path) -> Checkpoint:
    from .st_dit import read_backbone

    _, config = read_backbone(path)
    source = SafetensorsSource([SafetensorsFile(path)])
    layout = "st_dit backbone (spatial-temporal DiT), safetensors file"
    return Checkpoint(str(path), layout, source, keymaps.identity_plan(source.keys()), config)


def _file_checkpoint(path: Path) -> Checkpoint:
    if is_st_dit_file(path):
        return _st_dit_checkpoint(path)
    source, container = _file_source(path)
    return _checkpoint_from_source(source, str(path), container)


def inspect_checkpoint(
    source: str | Path | Mapping[str, torch.Tensor], motion_source: str | Path | None = None
) -> Checkpoint:
    """Locate and identify a checkpoint without reading any tensor values."""
    if isinstance(source, Mapping):
        checkpoint = _checkpoint_from_source(MappingSource(source), "state dict", "passed in memory")
    else:
        path = _existing(Path(source))
        checkpoint = _folder_checkpoint(path) if path.is_dir() else _file_checkpoint(path)
    if motion_source is not None:
        if checkpoint.config is not None:
            raise CheckpointError(
                f"{checkpoint.location} is a {checkpoint.config.backbone} checkpoint; the split fuser/ and "
                f"traj_extractor/ files in {motion_source} only go with a CogVideoX-5B transformer. Leave "
                "motion_modules at '(inside model)'."
            )
        checkpoint = _kijai_checkpoint(checkpoint, _existing(Path(motion_source)))
    return checkpoint


# --- config inference and loading --------------------------------------------------------------------------------

# Fields `ToraConfig.from_state_dict` reads from shapes; a preset that agrees on them (layer count aside) supplies the
# rest (text length, sample size of the learned positional embedding, epsilons).
_SHAPE_FIELDS = (
    "num_heads",
    "head_dim",
    "in_channels",
    "out_channels",
    "patch_size",
    "text_dim",
    "time_embed_dim",
    "mlp_ratio",
    "has_learned_pos_embed",
)
_MOTION_FIELDS = ("motion_channels", "extractor_blocks_per_stage")


def infer_config(checkpoint: Checkpoint) -> ToraConfig:
    """Config from tensor shapes; fields shapes cannot tell come from the preset of the same shape, if any.

    A checkpoint whose header stores its config (st_dit) gives that config unchanged.
    """
    if checkpoint.config is not None:
        return checkpoint.config
    try:
        inferred = ToraConfig.from_state_dict(checkpoint.meta_state_dict())
    except ConfigError as err:
        raise CheckpointError(
            f"{checkpoint.location} ({checkpoint.format}): cannot infer the model shape — {err}. The file is "
            "incomplete or not a CogVideoX/Tora transformer; pass `config=` if it is a custom size."
        ) from None
    fields = _SHAPE_FIELDS + (_MOTION_FIELDS if inferred.has_motion_modules else ())
    for name, preset in PRESETS.items():
        if all(getattr(preset, f) == getattr(inferred, f) for f in fields):
            log.info("checkpoint shapes match preset %r (%d layers)", name, inferred.num_layers)
            keep = fields + ("num_layers", "has_motion_modules")
            return preset.replace(**{f: getattr(inferred, f) for f in keep})
    log.info("checkpoint shapes match no preset; using CogVideoX-5B defaults for non-shape settings")
    return inferred


def _first(items: list, count: int = 5) -> str:
    shown = ", ".join(str(i) for i in items[:count])
    return shown + (f", … ({len(items) - count} more)" if len(items) > count else "")


def _check_fit(
    checkpoint: Checkpoint,
    config: ToraConfig,
    found: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
) -> None:
    """Raise one CheckpointError listing every missing, unexpected and mis-shaped key."""
    missing = [k for k in expected if k not in found and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in found if k not in expected] + [f"{k} (no rule)" for k in checkpoint.plan.unknown]
    mismatched = [
        f"{k}: file {list(found[k].shape)} vs model {list(expected[k].shape)}"
        for k in expected
        if k in found and found[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [
        f"{checkpoint.location} ({checkpoint.format}) does not fit the Tora transformer built for it "
        f"({config.num_layers} layers, width {config.hidden_dim}, in_channels {config.in_channels}, "
        f"motion modules {'yes' if config.has_motion_modules else 'no'}):"
    ]
    if missing:
        lines.append(f"  missing {len(missing)} of {len(expected)} model keys: {_first(missing)}")
    if unexpected:
        lines.append(f"  unexpected {len(unexpected)} checkpoint keys: {_first(unexpected)}")
    if mismatched:
        lines.append(f"  {len(mismatched)} shape mismatches: {_first(mismatched, 3)}")
    lines.append(
        "How to fix: make sure every shard / split file was downloaded and that this is a Tora or CogVideoX-5B(-I2V) "
        "transformer (not CogVideoX-2B or 1.5); if you passed `config=`, let it be inferred instead."
    )
    raise CheckpointError("\n".join(lines))


def _read_canonical(checkpoint: Checkpoint, rule: keymaps.Rule) -> torch.Tensor:
    if rule.parts == 1:
        return checkpoint.source.read(rule.source)
    rows = checkpoint.source.meta(rule.source).shape[0]
    if rows % rule.parts:
        raise CheckpointError(
            f"{checkpoint.location}: {rule.source} has {rows} rows, not divisible into {rule.parts} equal parts"
        )
    return checkpoint.source.read(rule.source, rule.row_ranges(rows))


def is_st_dit_file(source: object) -> bool:
    """True for a safetensors file whose header names the spatial-temporal backbone (tora_model.st_dit)."""
    if (
        not isinstance(source, (str, Path))
        or Path(source).suffix != ".safetensors"
        or not Path(source).is_file()
    ):
        return False
    from .st_dit import read_backbone

    try:
        return read_backbone(source)[0] == "st_dit"
    except CheckpointError:
        return False  # not readable as safetensors: the ordinary path reports what the file is


def load_transformer(
    source: str | Path | Mapping[str, torch.Tensor],
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    config: ToraConfig | None = None,
    motion_source: str | Path | None = None,
) -> ToraTransformer:
    """Build a `ToraTransformer` and fill it from a checkpoint in any supported layout; returned in eval mode.

    Args:
        source: file, folder (transformer/, pipeline root, SAT folder, kijai folder) or a state dict.
        dtype: cast floating-point tensors to this dtype (None keeps the stored dtype, bf16 for the releases).
            Integer buffers (BatchNorm `num_batches_tracked`) keep theirs.
        device: where the weights go; each tensor is moved as soon as it is read.
        config: model shape; inferred from the tensor shapes when None.
        motion_source: a kijai `CogVideoX-5b-Tora` folder (fuser/, traj_extractor/) to add to a stock CogVideoX
            transformer given as `source`.
    """
    from .transformer import build_transformer  # deferred: reading/inspecting files does not need the model

    if is_st_dit_file(source):
        from .st_dit import load_st_transformer

        inspect_checkpoint(source, motion_source)  # refuses split motion modules for this backbone
        return load_st_transformer(source, dtype=dtype, device=device, config=config)
    checkpoint = inspect_checkpoint(source, motion_source)
    found = checkpoint.meta_state_dict()
    config = config or infer_config(checkpoint)
    if not config.has_motion_modules:
        log.info(
            "%s has no Tora modules (traj_extractor/fuser): loading a plain CogVideoX transformer "
            "(has_motion_modules=False); trajectories will have no effect",
            checkpoint.location,
        )
    model = build_transformer(config, device="meta")
    expected = model.state_dict()
    _check_fit(checkpoint, config, found, expected)
    device = torch.device(device) if device is not None else torch.device("cpu")
    tensors = {}
    for name, slot in expected.items():
        rule = checkpoint.plan.rules.get(name)
        if rule is None:  # only num_batches_tracked may be absent (checked above); eval-mode BN ignores it
            tensors[name] = torch.zeros(slot.shape, dtype=slot.dtype, device=device)
            continue
        tensor = _read_canonical(checkpoint, rule)
        tensors[name] = tensor.to(
            device=device, dtype=dtype if dtype and tensor.is_floating_point() else None
        )
    model.load_state_dict(tensors, strict=True, assign=True)
    _check_materialized(model, checkpoint)
    log.info("loaded %s (%s), %d tensors", checkpoint.location, checkpoint.format, len(tensors))
    return model.eval()


def _check_materialized(model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(
            f"after loading {checkpoint.location}, {len(left)} tensors were never filled: {_first(left)}. "
            "This is a bug in the loader (a tensor the checkpoint does not store); please report it."
        )
