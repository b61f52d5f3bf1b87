"""The only module of the pack that talks to ComfyUI (folder_paths, comfy.model_management, comfy.utils, ...).

Everything here has a plain-torch fallback, so the node classes run unchanged outside ComfyUI (tests, scripts):
model folders then live under `$TORA_MODELS_DIR` (default `./models`), the compute device is CUDA when present,
there is no progress bar, no interruption and no temp-dir UI previews. In both cases the pack's own `models/`
folder (the bundled tiny Tora) is the last path of the `tora` folder.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..tora_model.errors import CheckpointError, ConfigError

try:  # ComfyUI puts these on sys.path; outside ComfyUI they do not exist
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.utils
    import folder_paths
except ImportError:
    mm = None
    folder_paths = None

HAS_COMFY = mm is not None
log = logging.getLogger(__name__)

MODEL_EXTENSIONS = {".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt"}
TORA_FOLDER = "tora"
# Where each kind of file is looked for; the first entry of every name in a combo is this folder key.
TRANSFORMER_FOLDERS = ("tora", "diffusion_models", "CogVideo")
VAE_FOLDERS = ("vae", "tora", "CogVideo")
TEXT_ENCODER_FOLDERS = ("text_encoders", "clip", "tora")
SHARD_INDEX_SUFFIX = ".index.json"
# Models shipped inside the pack (models/tiny_tora/), listed as tora/tiny_tora/... after the user's own tora paths.
PACK_MODELS = Path(__file__).resolve().parents[1] / "models"


def register_model_folders() -> None:
    """Register `models/tora` and `models/CogVideo`, then the pack's own `models/` as the last `tora` path.

    Appending keeps paths set in extra_model_paths.yaml first, so a user's file wins over a bundled one.
    """
    if not HAS_COMFY:
        return
    for name in (TORA_FOLDER, "CogVideo"):
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
        paths, extensions = folder_paths.folder_names_and_paths[name]
        folder_paths.folder_names_and_paths[name] = (paths, set(extensions) | MODEL_EXTENSIONS)
    folder_paths.add_model_folder_path(TORA_FOLDER, str(PACK_MODELS))


def folder_roots(kind: str) -> list[Path]:
    """Directories of one model folder kind ("tora", "vae", "diffusion_models", ...)."""
    if HAS_COMFY:
        if kind == "text_encoders" and "text_encoders" not in folder_paths.folder_names_and_paths:
            kind = "clip"  # older ComfyUI
        if kind not in folder_paths.folder_names_and_paths:
            return []
        return [Path(p) for p in folder_paths.get_folder_paths(kind)]
    roots = [Path(os.environ.get("TORA_MODELS_DIR", "models")) / kind]
    return [*roots, PACK_MODELS] if kind == TORA_FOLDER else roots


def _model_entries(root: Path) -> list[str]:
    """Relative names under `root`: single files, and folders holding a sharded, diffusers or split model as one entry."""
    if not root.is_dir():
        return []
    entries: set[str] = set()
    grouped: set[Path] = set()
    for index in root.rglob(f"*{SHARD_INDEX_SUFFIX}"):
        grouped.add(index.parent)
    for config in root.rglob("config.json"):
        if any(config.parent.glob("*.safetensors")) or any(config.parent.glob("*.bin")):
            grouped.add(config.parent)
    split = {p.parent for p in root.rglob("fuser") if (p.parent / "traj_extractor").is_dir()}
    for folder in grouped | split:
        entries.add(folder.relative_to(root).as_posix() + "/")
    for path in root.rglob("*"):
        inside = path.parent in grouped or path.parent.parent in split
        if path.suffix.lower() in MODEL_EXTENSIONS and path.is_file() and not inside:
            entries.add(path.relative_to(root).as_posix())
    return sorted(entries)


def list_motion_module_folders(kinds: Sequence[str]) -> list[str]:
    """Folders holding the split Tora modules (fuser/ and traj_extractor/), as "<kind>/<relative path>/"."""
    names = []
    for kind in kinds:
        for root in folder_roots(kind):
            if root.is_dir():
                for fuser in root.rglob("fuser"):
                    if (fuser.parent / "traj_extractor").is_dir():
                        names.append(f"{kind}/{fuser.parent.relative_to(root).as_posix()}/")
    return sorted(names)


def list_models(kinds: Sequence[str]) -> list[str]:
    """Combo entries "<kind>/<relative path>" for every model file or model folder in those folder kinds."""
    names: list[str] = []
    for kind in kinds:
        for root in folder_roots(kind):
            names.extend(f"{kind}/{entry}" for entry in _model_entries(root))
    return sorted(dict.fromkeys(names))


def resolve_model(name: str, kinds: Sequence[str]) -> Path:
    """Full path of a combo entry from `list_models`; a clear message when it is missing."""
    kind, _, rel = name.partition("/")
    if kind not in kinds or not rel:
        raise CheckpointError(
            f"model entry {name!r} should look like '<folder>/<file>' with <folder> one of {list(kinds)}"
        )
    roots = folder_roots(kind)
    for root in roots:
        path = root / rel
        if path.exists():
            return path
    where = ", ".join(str(r) for r in roots) or f"models/{kind}"
    raise CheckpointError(f"model file {rel!r} was not found in the {kind!r} folder ({where}); put it there")


# ---------------------------------------------------------------------------------------------------------- devices

HOST = torch.device("cpu")


def compute_device() -> torch.device:
    if HAS_COMFY:
        return mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where ComfyUI keeps models between nodes: the CPU, or the GPU itself under --highvram / --gpu-only."""
    if HAS_COMFY:
        return mm.unet_offload_device()
    return HOST


def output_device() -> torch.device:
    """Where IMAGE/LATENT tensors handed to other nodes live."""
    if HAS_COMFY:
        return mm.intermediate_device()
    return HOST


def vram_flag() -> str | None:
    """The ComfyUI memory flag in effect ("--novram", "--lowvram", "--highvram", "--gpu-only"), None without one.

    Read from ComfyUI's resulting state (comfy.model_management.vram_state), so a flag ComfyUI overrode (e.g.
    --lowvram on a card where it is unavailable) does not count.
    """
    if not HAS_COMFY:
        return None
    from comfy.cli_args import args

    state = mm.vram_state.name
    if state == "HIGH_VRAM":
        return "--gpu-only" if args.gpu_only else "--highvram"
    return {"NO_VRAM": "--novram", "LOW_VRAM": "--lowvram"}.get(state)


def supports_bf16(device: torch.device) -> bool:
    """ComfyUI's own answer (should_use_bf16) inside ComfyUI; outside, what torch says about the device."""
    if HAS_COMFY:
        return bool(mm.should_use_bf16(device))
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def weights_device(module: torch.nn.Module) -> torch.device:
    """Where a module's weights really are (its first parameter); ComfyUI's records may say otherwise."""
    first = next(module.parameters(), None)
    return first.device if first is not None else compute_device()


def wrap_model(module: torch.nn.Module, size_bytes: int | None = None):
    """A ComfyUI ModelPatcher around `module` so ComfyUI's memory manager can load/evict it; None outside ComfyUI."""
    if not HAS_COMFY:
        return None
    size = module_bytes(module) if size_bytes is None else size_bytes
    return comfy.model_patcher.ModelPatcher(
        module, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device(), size=size
    )


def load_models(patchers: Sequence[object], memory_required: int, minimum_memory_required: int) -> None:
    """ComfyUI loads these patchers' models whole and first unloads others until weights plus `memory_required`
    bytes of activations fit (at least `minimum_memory_required`), as core's sampling asks.

    force_full_load: the pack's layers are plain torch modules, which ComfyUI's partial (lowvram) loading cannot
    split; fp8 storage and block swap are the pack's own ways to fit a small card.
    """
    mm.load_models_gpu(
        list(patchers),
        memory_required=memory_required,
        minimum_memory_required=minimum_memory_required,
        force_full_load=True,
    )


def make_room(num_bytes: int, device: torch.device) -> None:
    """Ask ComfyUI to unload other models until `num_bytes` fit on `device` (no-op outside ComfyUI)."""
    if HAS_COMFY and device.type != "cpu":
        mm.free_memory(num_bytes + mm.extra_reserved_memory(), device)


def unload(patcher) -> None:
    """Take one model out of ComfyUI's loaded list (its weights go to the patcher's offload device).

    For failure paths: ComfyUI 0.3.64 has no public call for one model, so this walks `current_loaded_models`.
    """
    if patcher is None:
        return
    for index, loaded in enumerate(list(mm.current_loaded_models)):
        if loaded.model is patcher:
            mm.current_loaded_models.pop(index)
            loaded.model_unload()
            return
    patcher.detach()


def loaded_bytes(patcher) -> int:
    """Bytes ComfyUI's records show of this patcher's model on its load device (0 when not in its loaded list)."""
    if patcher is None or not HAS_COMFY:
        return 0
    return sum(m.model_loaded_memory() for m in mm.current_loaded_models if m.model is patcher)


def empty_cache() -> None:
    if HAS_COMFY:
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------- progress, cancelling


def interrupted() -> bool:
    """True once the user pressed Cancel in ComfyUI (never outside ComfyUI)."""
    return HAS_COMFY and mm.processing_interrupted()


def raise_interrupt() -> None:
    """Turn our GenerationInterrupted into ComfyUI's own interrupt exception (shown as 'interrupted', not an error)."""
    if HAS_COMFY:
        mm.throw_exception_if_processing_interrupted()


def previews_enabled() -> bool:
    if not HAS_COMFY:
        return False
    from comfy.cli_args import LatentPreviewMethod, args

    return args.preview_method != LatentPreviewMethod.NoPreviews


class Progress:
    """Step counter for the ComfyUI progress bar, with an optional rough preview image per step."""

    def __init__(self, total: int, node_id: str | None = None):
        self.total = total
        self.bar = comfy.utils.ProgressBar(total, node_id=node_id) if HAS_COMFY else None
        self.send_previews = previews_enabled()

    def update(self, step: int, preview_latents: torch.Tensor | None = None) -> None:
        if self.bar is None:
            log.debug("step %d/%d", step, self.total)
            return
        preview = None
        if self.send_previews and preview_latents is not None:
            preview = ("JPEG", latent_preview_image(preview_latents), 512)
        self.bar.update_absolute(step, self.total, preview)


def latent_preview_image(latents: torch.Tensor):
    """Rough RGB look at the middle latent frame of [1, T, 16, h, w]: three channels stretched to [0, 255].

    It shows composition and motion while sampling; it is not a colour-accurate decode.
    """
    from PIL import Image

    frame = latents[0, latents.shape[1] // 2, :3].float()  # [3, h, w]
    low = frame.amin(dim=(1, 2), keepdim=True)
    high = frame.amax(dim=(1, 2), keepdim=True)
    rgb = ((frame - low) / (high - low).clamp_min(1e-6) * 255).byte()
    return Image.fromarray(rgb.permute(1, 2, 0).cpu().numpy())


# --------------------------------------------------------------------------------------------------- UI images


def save_temp_image(image: torch.Tensor | np.ndarray, prefix: str) -> dict | None:
    """Save one [H, W, 3] image in [0, 1] as a PNG in ComfyUI's temp dir; returns its /view reference."""
    if not HAS_COMFY:
        return None
    from PIL import Image

    array = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    pixels = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    folder = Path(folder_paths.get_temp_directory())
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}.png"
    Image.fromarray(pixels).save(folder / name, compress_level=1)
    return {"filename": name, "subfolder": "", "type": "temp"}


def input_files(extensions: Iterable[str]) -> list[str]:
    """Files in ComfyUI's input directory with one of these extensions (empty outside ComfyUI)."""
    if not HAS_COMFY:
        return []
    root = Path(folder_paths.get_input_directory())
    if not root.is_dir():
        return []
    wanted = {e.lower() for e in extensions}
    return sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in wanted)


def input_file_path(name: str) -> Path:
    if not HAS_COMFY:
        raise ConfigError(
            f"{name!r}: ComfyUI's input folder only exists inside ComfyUI; use a 'preset/' source here"
        )
    return Path(folder_paths.get_input_directory()) / name


# ----------------------------------------------------------------------------------------------------- text (CLIP)


def is_comfy_clip(clip) -> bool:
    return HAS_COMFY and hasattr(clip, "tokenize") and hasattr(clip, "encode_from_tokens")


def t5_clip_type() -> str:
    """CLIPLoader `type` to pick for T5-XXL: `cogvideox` where the running ComfyUI has it (226-token T5, no mask,
    as CogVideoX and Tora were trained), `sd3` otherwise (and outside ComfyUI)."""
    if HAS_COMFY:
        import comfy.sd

        if hasattr(comfy.sd.CLIPType, "COGVIDEOX"):
            return "cogvideox"
    return "sd3"


def _hf_t5_tokenizer(clip, key: str):
    """The transformers T5 tokenizer inside a ComfyUI CLIP, or None.

    ComfyUI keeps it under the token key (`t5xxl`, SD3's tokenizer) or under `clip_<key>` (single-encoder
    wrappers such as the `cogvideox` type's), each holding the transformers tokenizer as `.tokenizer`.
    """
    for name in (key, f"clip_{key}"):
        inner = getattr(getattr(clip.tokenizer, name, None), "tokenizer", None)
        if inner is not None and callable(inner):
            return inner
    return None


def comfy_t5_embeddings(clip, prompt: str, length: int) -> torch.Tensor:
    """Tora's text embedding from a ComfyUI CLIP holding T5-XXL: exactly `length` tokens, no attention mask.

    Tokens are made the way Tora was trained: the T5 tokenizer on the whole prompt with max_length=226,
    truncation and padding to max length (prompt, </s>, <pad>...). ComfyUI's own T5 tokenizer object does this
    when it can be reached (CLIPLoader types `sd3` and `cogvideox`); otherwise ComfyUI's tokens are re-batched to
    that layout. Other encoders the CLIP may hold (CLIP-L/G of a full SD3 set) get no tokens, so only T5 runs.
    """
    tokens = clip.tokenize(prompt)
    key = next((k for k in ("t5xxl", "t5") if k in tokens), None)
    if key is None:
        raise ConfigError(
            f"this CLIP holds {sorted(tokens)} but no T5-XXL; load t5xxl with CLIPLoader (type "
            f"'{t5_clip_type()}') or use 'Load Tora Text Encoder'"
        )
    hf_tokenizer = _hf_t5_tokenizer(clip, key)
    if hf_tokenizer is not None:
        ids = hf_tokenizer(prompt, max_length=length, padding="max_length", truncation=True)["input_ids"]
        words = [(int(i), 1.0) for i in ids]
    else:
        log.info("no T5 tokenizer found in this CLIP; re-batching ComfyUI's tokens to %d", length)
        words = _rebatched(tokens[key], length)
    fixed = {k: ([] if k != key else [words]) for k in tokens}
    out = clip.encode_from_tokens(fixed, return_dict=True)
    if out.get("attention_mask") is not None:
        log.warning(
            "this CLIP applies a T5 attention mask; Tora was trained without one (use CLIPLoader type '%s')",
            t5_clip_type(),
        )
    return out["cond"]  # [1, length, 4096]


def _rebatched(batches: list, length: int) -> list[tuple[int, float]]:
    """ComfyUI's T5 token batches as one list: words cut to length-1, then </s>, then <pad> up to `length`."""
    pad_id, end_id = 0, 1  # T5 v1.1 vocabulary
    words = [(t, w) for batch in batches for t, w, *_ in batch if t not in (pad_id, end_id)]
    if len(words) > length - 1:
        log.warning("prompt has %d T5 tokens; Tora reads %d, the rest is cut", len(words), length - 1)
    words = words[: length - 1] + [(end_id, 1.0)]
    return words + [(pad_id, 1.0)] * (length - len(words))


def comfy_clip_from_t5_state_dict(state_dict: dict):
    """A ComfyUI CLIP (type SD3, T5 only) built from HF-named T5-XXL weights, or None if ComfyUI cannot take them."""
    if not HAS_COMFY:
        return None
    import comfy.sd

    if "encoder.block.23.layer.1.DenseReluDense.wi_1.weight" not in state_dict:
        return None  # not a T5-XXL (tiny test encoders, T5-base): the pack's own encoder handles it
    return comfy.sd.load_text_encoder_state_dicts(
        [state_dict], clip_type=comfy.sd.CLIPType.SD3, model_options={}
    )


def comfy_attention():
    """ComfyUI's chosen attention kernel as f(q, k, v [B, heads, S, d]) -> [B, S, heads * d]; None outside ComfyUI."""
    if not HAS_COMFY:
        return None
    from comfy.ldm.modules.attention import optimized_attention

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return optimized_attention(q, k, v, q.shape[1], skip_reshape=True)  # [B, S, heads * head_dim]

    return attend
