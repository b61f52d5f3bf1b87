"""Opening checkpoint files safely: what a weights file is (by its bytes, not its name), its tensors as a source.

Source: `tora_spec.md` §1.2–§1.3 (file names and wrappers of the releases) and §7.3 (loader requirements), design.md
"Checkpoints a user already has". Pickles are opened with `torch.load(weights_only=True)` — nothing is unpickled
beyond tensors, a file holding other Python objects is refused, not run — and memory-mapped when they are zip files.

Files recognised: safetensors (one file, or a diffusers component folder: `diffusion_pytorch_model.safetensors`, or
an index json + shards); torch zip pickles (`.pt`/`.pth`/`.bin`, e.g. SAT `mp_rank_00_model_states.pt`); legacy
torch pickles. Wrappers removed: `{'module': sd}` (DeepSpeed/SAT engine) and `{'state_dict': sd}` (SAT VAE). Which
layout the names inside follow is `checkpoints.py`'s concern; reading the tensors is `tensor_sources.py`'s.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from .errors import CheckpointError
from .json_files import Entry, entry_problems, read_json_object, shown
from .tensor_sources import LazyStateDict, MappingSource, SafetensorsFile, SafetensorsSource, TensorSource

SAT_FILE = "mp_rank_00_model_states.pt"
DIFFUSERS_FILE = "diffusion_pytorch_model.safetensors"
DIFFUSERS_INDEX = "diffusion_pytorch_model.safetensors.index.json"
WHERE_TO_GET = (
    "Tora weights: Hugging Face 'Alibaba-Research-Intelligence-Computing/Tora' (SAT: tora/t2v|i2v/"
    f"{SAT_FILE}) or 'Alibaba-Research-Intelligence-Computing/Tora_T2V_diffusers' (transformer/ folder)"
)
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"


def _sniff(path: Path) -> str:
    """'safetensors', 'torch' (zip pickle) or 'torch-legacy' from the first bytes; anything else is refused."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(_ZIP_MAGIC):
        return "torch"
    if head.startswith(_PICKLE_PROTO):
        return "torch-legacy"
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    if not head:
        raise CheckpointError(
            f"{path} is empty (0 bytes): expected model weights, so the download or copy did not finish; "
            f"download it again. {WHERE_TO_GET}."
        )
    hint = ""
    if head.startswith(b"version https://git-lfs"):
        hint = " It is a Git LFS pointer: the real weights were never downloaded (run `git lfs pull` there)."
    raise CheckpointError(
        f"{path} is not a model checkpoint: expected a .safetensors file or a torch .pt/.pth/.bin file, but it "
        f"starts with {head[:40]!r}.{hint} Check that the path points at the downloaded weights. {WHERE_TO_GET}."
    )


def refused_pickle(path: Path, err: Exception) -> CheckpointError | None:
    """Our message for torch's weights-only refusal of `path` (never torch's advice to turn weights_only off), or
    None when `err` is another failure."""
    # older torch: "Unsupported global: GLOBAL a.b"; 2.13: "unsupported GLOBAL a.b whose module a is blocked"
    refused = re.search(r"GLOBAL ([\w.]+)", str(err))
    if refused is None and "weights_only" not in str(err).lower():
        return None
    found = f" (found {refused.group(1)})" if refused else ""
    return CheckpointError(
        f"{path} contains pickled Python objects other than tensors{found}, so it was NOT opened: loading it "
        "would run code from the file. Use the official weights, or re-save this file as a plain state dict "
        "or as safetensors."
    )


def _torch_load(path: Path, kind: str) -> Mapping[str, torch.Tensor]:
    try:
        # mmap only for the zip format; old-style pickles cannot be mapped and are read whole.
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "torch")
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError) as err:
        refused = refused_pickle(path, err)
        if refused is not None:
            raise refused from None
        raise CheckpointError(
            f"{path} could not be read as a torch checkpoint ({err}). The file may be truncated or corrupt; "
            "re-download it."
        ) from None
    return _unwrap(obj, path)


def check_weights_file(path: Path) -> None:
    """Cheap checks of a weights file before any model is built: its kind by content, a safetensors header and
    size, a zip pickle's directory. Raises the CheckpointError loading would raise, without reading the tensors."""
    kind = _sniff(path)
    if kind == "safetensors":
        SafetensorsFile(path)
    elif kind == "torch" and not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is a torch zip checkpoint with its end missing (truncated): download it again. {WHERE_TO_GET}."
        )


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


# The entry of a diffusers shard index this loader reads (its "metadata", the total size, is not read)
INDEX_ENTRIES: dict[str, Entry] = {
    "weight_map": ("a non-empty object, tensor name -> shard file", lambda v: bool(v) and isinstance(v, dict))
}


def read_shard_index(index: Path) -> dict[str, str]:
    """The `weight_map` (tensor name -> shard file) of a diffusers `*.safetensors.index.json`, checked: a file that
    is not a shard index gets a CheckpointError naming it, what arrived and how to get it again."""
    fix = f"Re-download the index and every shard beside it. {WHERE_TO_GET}."
    data = read_json_object(index, "a diffusers safetensors index, a JSON object with a weight_map", fix)
    wrong = entry_problems(data, INDEX_ENTRIES, required=["weight_map"])
    if not wrong:
        unnamed = {name: shard for name, shard in data["weight_map"].items() if not isinstance(shard, str)}
        if unnamed:
            wrong = [f"weight_map must name each tensor's shard file (a string), got {shown(unnamed)}"]
    if wrong:
        raise CheckpointError(f"{index} is not a valid safetensors index: {'; '.join(wrong)}. {fix}")
    return data["weight_map"]


def safetensors_folder(folder: Path) -> list[SafetensorsFile] | None:
    """Files of a diffusers component folder (index json + shards, or one file), or None if neither is there."""
    index = folder / DIFFUSERS_INDEX
    if index.is_file():
        names = sorted(set(read_shard_index(index).values()))
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


def file_source(path: Path) -> tuple[TensorSource, str]:
    """(source, container description) of one weights file, by content rather than by extension."""
    kind = _sniff(path)
    if kind == "safetensors":
        return SafetensorsSource([SafetensorsFile(path)]), "safetensors file"
    if kind == "torch":
        return MappingSource(_torch_load(path, kind), mapped=True), "torch pickle (weights_only, mmap)"
    return MappingSource(_torch_load(path, kind)), "legacy torch pickle (weights_only, read whole)"


def single_safetensors(folder: Path) -> list[SafetensorsFile]:
    """The one `.safetensors` file of a kijai split-module folder (`fuser/`, `traj_extractor/`)."""
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
    path = existing_path(Path(path))
    if path.is_dir():
        files = safetensors_folder(path)
        if files is None:
            raise CheckpointError(
                f"{path} is a folder without {DIFFUSERS_INDEX} or {DIFFUSERS_FILE}; point at the weights file itself"
            )
        return LazyStateDict(SafetensorsSource(files))
    kind = _sniff(path)
    if kind == "safetensors":
        return LazyStateDict(SafetensorsSource([SafetensorsFile(path)]))
    return _torch_load(path, kind)


def mapped_state_dict(path: str | Path) -> Mapping[str, torch.Tensor]:
    """`read_state_dict` with every tensor a memory-mapped view where the file format allows (safetensors, zip
    pickles): nothing is copied into process memory. For consumers that turn the mapping into a dict first."""
    state = read_state_dict(path)
    return state.mapped() if isinstance(state, LazyStateDict) else state


def sub_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Tensors under `prefix`, prefix removed — e.g. `keymaps.SAT_VAE_PREFIX` / `SAT_T5_PREFIX` of a SAT file."""
    return {k[len(prefix) :]: state_dict[k] for k in state_dict if k.startswith(prefix)}


def existing_path(path: Path) -> Path:
    """The path if it exists; otherwise a CheckpointError saying where it was looked for and where to get weights."""
    if not path.exists():
        raise CheckpointError(
            f"checkpoint not found: looked for {path.resolve()} (no such file or folder). Put the weights there "
            f"or pass the right path. {WHERE_TO_GET}."
        )
    return path
