"""Loader nodes: the Tora transformer (+ VAE) and the T5 text encoder, from the pack's model folders.

Files are looked for in `models/tora` (registered by this pack, appended to any paths in extra_model_paths.yaml),
`models/diffusion_models`, `models/CogVideo` (the third-party `CogVideoX-5b-Tora` split layout), `models/vae`,
`models/text_encoders`, and the pack's own `models/` (the bundled tiny Tora, listed under `tora/`). The checkpoint
layout (official SAT, official diffusers, single file, split, st_dit) and the model kind (T2V or I2V) are read from
the tensor names, shapes and safetensors header, never from the file name.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch

from ..tora_model import keymaps
from ..tora_model.checkpoint_files import read_state_dict
from ..tora_model.checkpoints import infer_config, inspect_checkpoint, is_st_dit_file, load_transformer
from ..tora_model.errors import CheckpointError, ConfigError
from ..tora_model.offload import enable_block_swap, store_block_linears
from ..tora_model.vae_loading import load_vae
from . import comfy_glue
from .text_encoder import load_text_encoder
from .types import ATTENTIONS, OFFLOAD_POLICIES, PRECISIONS, ToraModel, ToraVAE

log = logging.getLogger(__name__)

FROM_MODEL = "(from model file)"
INSIDE_MODEL = "(inside model)"
MOTION_FOLDERS = ("CogVideo", "tora")


def _is_st_dit(path: Path) -> bool:
    """`is_st_dit_file`, remembered per file version: combos are rebuilt on every refresh, headers rarely change."""
    stat = path.stat()
    return _is_st_dit_version(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=1024)
def _is_st_dit_version(path: str, mtime_ns: int, size: int) -> bool:
    return is_st_dit_file(path)


def _listed(kinds: tuple[str, ...], role: str) -> list[str]:
    """Combo entries of `kinds` that can hold a `role` ("transformer", "vae", "text encoder").

    A diffusers `vae/` folder (beside a transformer, as in the bundled tiny Tora) is only a VAE; an st_dit file
    (its safetensors header names the backbone) is only a transformer. Other files may hold everything (the SAT
    release) and stay in every list.
    """
    entries = []
    for entry in comfy_glue.list_models(kinds):
        if entry.endswith("/vae/"):
            keep = role == "vae"
        elif entry.endswith(".safetensors"):
            keep = role == "transformer" or not _is_st_dit(comfy_glue.resolve_model(entry, kinds))
        else:
            keep = True
        if keep:
            entries.append(entry)
    return entries


def _vae_inside(model_path: Path) -> Path | dict:
    """Where the VAE of a Tora release sits next to (or inside) its transformer checkpoint."""
    if model_path.is_file():
        keys = read_state_dict(model_path).keys()
        if any(k.startswith(keymaps.SAT_VAE_PREFIX) for k in keys):
            return model_path
    for folder in (model_path.parent / "vae", model_path / "vae", model_path.parent.parent / "vae"):
        if folder.is_dir():
            return folder
    raise CheckpointError(
        f"{model_path} has no VAE inside it and no vae/ folder beside it; choose a CogVideoX VAE file "
        "(e.g. 3d-vae.pt or the diffusers vae/ folder) in models/vae for the `vae` input"
    )


class LoadToraModel:
    """Load a Tora transformer (T2V or I2V, detected) and the CogVideoX VAE."""

    @classmethod
    def INPUT_TYPES(cls):
        transformers = _listed(comfy_glue.TRANSFORMER_FOLDERS, "transformer")
        vaes = _listed(comfy_glue.VAE_FOLDERS, "vae")
        splits = comfy_glue.list_motion_module_folders(MOTION_FOLDERS)
        return {
            "required": {
                "model": (
                    transformers,
                    {
                        "tooltip": "Tora checkpoint: official SAT mp_rank_00_model_states.pt (t2v or i2v), the "
                        "diffusers transformer/ folder, a single .safetensors, or a CogVideoX-5b-Tora split folder. "
                        "Looked for in models/tora, models/diffusion_models and models/CogVideo. "
                        "tora/tiny_tora/transformer.safetensors is the tiny CPU model shipped with the pack "
                        "(96x64, 17 frames, I2V; see the example workflow 'Tiny Tora, CPU, no download').",
                    },
                ),
                "vae": (
                    [FROM_MODEL, *vaes],
                    {
                        "tooltip": "CogVideoX VAE. '(from model file)' takes it from the official SAT file or the "
                        "vae/ folder beside a diffusers transformer; otherwise a file in models/vae.",
                    },
                ),
                "precision": (
                    list(PRECISIONS),
                    {
                        "default": "bf16",
                        "tooltip": "Weight storage. fp8_e4m3fn halves the transformer's memory (for 12-16 GB "
                        "cards) and computes in bf16, upcasting one layer at a time.",
                    },
                ),
                "attention": (
                    list(ATTENTIONS),
                    {
                        "default": "sdpa",
                        "tooltip": "sdpa: PyTorch scaled_dot_product_attention. comfy: the attention ComfyUI was "
                        "started with (e.g. --use-sage-attention).",
                    },
                ),
                "offload": (
                    list(OFFLOAD_POLICIES),
                    {
                        "default": "comfy",
                        "tooltip": "comfy: ComfyUI loads and evicts the whole model as memory allows. block_swap: "
                        "the last `blocks_to_swap` blocks stay in CPU memory and are copied to the GPU for their "
                        "turn only, the next one while the current one runs (two of them on the GPU at a time).",
                    },
                ),
                "blocks_to_swap": (
                    "INT",
                    {
                        "default": 20,
                        "min": 0,
                        "max": 64,
                        "tooltip": "Transformer blocks kept in CPU memory with offload=block_swap (5B has 42).",
                    },
                ),
            },
            "optional": {
                "motion_modules": (
                    [INSIDE_MODEL, *splits],
                    {
                        "tooltip": "Only for the split layout: the CogVideoX-5b-Tora folder holding fuser/ and "
                        "traj_extractor/, added to a stock CogVideoX-5B transformer chosen as `model`.",
                    },
                ),
            },
        }

    RETURN_TYPES = ("TORA_MODEL", "TORA_VAE")
    RETURN_NAMES = ("model", "vae")
    OUTPUT_TOOLTIPS = (
        "The Tora transformer with its trajectory modules.",
        "The CogVideoX VAE (latent scale 0.7).",
    )
    FUNCTION = "load"
    CATEGORY = "Tora/loaders"
    DESCRIPTION = "Loads Tora weights from local files; nothing is downloaded."

    def load(self, model, vae, precision, attention, offload, blocks_to_swap, motion_modules=INSIDE_MODEL):
        path = comfy_glue.resolve_model(model, comfy_glue.TRANSFORMER_FOLDERS)
        split = (
            None
            if motion_modules == INSIDE_MODEL
            else comfy_glue.resolve_model(motion_modules, MOTION_FOLDERS)
        )
        checkpoint = inspect_checkpoint(path, split)
        config = infer_config(checkpoint)
        log.info("%s: %s, %s", model, "I2V" if config.is_i2v else "T2V", checkpoint.format)
        if offload == "block_swap" and blocks_to_swap > config.num_layers:
            raise ConfigError(
                f"blocks_to_swap={blocks_to_swap} but {model} has {config.num_layers} transformer blocks; "
                f"set blocks_to_swap to at most {config.num_layers}"
            )
        vae_source = (
            _vae_inside(path) if vae == FROM_MODEL else comfy_glue.resolve_model(vae, comfy_glue.VAE_FOLDERS)
        )
        device = comfy_glue.compute_device()
        check_precision(precision, device)
        transformer = self._transformer(path, split, precision, attention)
        swapped = []
        if offload == "block_swap" and blocks_to_swap > 0:
            if comfy_glue.vram_flag() in ("--highvram", "--gpu-only"):
                log.info(
                    "%s keeps models on the GPU; block swap still keeps %d blocks in CPU memory as chosen",
                    comfy_glue.vram_flag(),
                    blocks_to_swap,
                )
            swapped = enable_block_swap(
                transformer.transformer_blocks, blocks_to_swap, device, comfy_glue.HOST
            )
        patcher = None if swapped else comfy_glue.wrap_model(transformer)
        compute = transformer.dtype
        handle = ToraModel(
            transformer, patcher, compute, precision, attention, len(swapped), model, device, swapped or None
        )
        return (handle, load_tora_vae(vae_source, compute))

    @staticmethod
    def _transformer(path: Path, split: Path | None, precision: str, attention: str) -> torch.nn.Module:
        storage = PRECISIONS[precision]
        compute = torch.bfloat16 if storage == torch.float8_e4m3fn else storage
        # built in CPU memory even under --highvram: fp8 storage converts there, ComfyUI moves the result
        transformer = load_transformer(path, dtype=compute, device=comfy_glue.HOST, motion_source=split)
        if storage != compute:
            store_block_linears(transformer.transformer_blocks, storage)
        if attention == "comfy":
            kernel = comfy_glue.comfy_attention()
            if kernel is None:
                log.warning("attention 'comfy' needs ComfyUI; using PyTorch SDPA")
            else:
                transformer.attention_fn = kernel  # our own freshly loaded model, not one we received
        return transformer


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a compute precision the device cannot run, and warn that fp16 overflows in this model.

    bf16 (also fp8 storage, which computes in bf16) needs bf16 support (ComfyUI's should_use_bf16: Ampere or newer
    on NVIDIA, no RDNA2 on AMD). fp16 is allowed with a warning: CogVideoX-5B was released in bf16 (its authors
    recommend bf16 for the 5B model) and fp16's range ends at 65504; the sampler node refuses a non-finite result.
    """
    if precision in ("bf16", "fp8_e4m3fn") and device.type != "cpu" and not comfy_glue.supports_bf16(device):
        raise ConfigError(
            f"precision {precision} computes in bf16, which {device} does not support; choose fp32 (exact, twice "
            "the memory) or fp16 (may overflow to NaN/black frames with this model)"
        )
    if precision == "fp16":
        log.warning(
            "precision fp16: CogVideoX-5B / Tora was trained in bf16 and can overflow in fp16 (NaN, black frames); "
            "use bf16 where the GPU supports it"
        )


def load_tora_vae(source: Path, dtype: torch.dtype) -> ToraVAE:
    vae = load_vae(source, dtype=dtype, device=comfy_glue.HOST)
    return ToraVAE(vae, comfy_glue.wrap_model(vae), dtype, str(source))


class LoadToraTextEncoder:
    """Load the T5 v1.1 XXL text encoder from the official SAT file, a T5 file, or a transformers T5 folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text_encoder": (
                    _listed(comfy_glue.TEXT_ENCODER_FOLDERS, "text encoder"),
                    {
                        "tooltip": "T5-XXL encoder weights: the official Tora SAT file (T5 is inside it), a "
                        "t5xxl .safetensors, or a transformers T5 folder (with its tokenizer). Looked for in "
                        "models/text_encoders, models/clip and models/tora.",
                    },
                ),
                "tokens": (
                    "INT",
                    {
                        "default": 226,
                        "min": 1,
                        "max": 512,
                        "tooltip": "Padded prompt length. Tora was trained with 226; change it only for other models.",
                    },
                ),
            },
        }

    RETURN_TYPES = ("CLIP",)
    RETURN_NAMES = ("clip",)
    OUTPUT_TOOLTIPS = ("The text encoder; connect it to Tora Text Encode.",)
    FUNCTION = "load"
    CATEGORY = "Tora/loaders"
    DESCRIPTION = (
        "Alternative to CLIPLoader (type cogvideox, or sd3 in ComfyUI without it) when the T5 comes with the Tora "
        "download."
    )

    def load(self, text_encoder, tokens):
        path = comfy_glue.resolve_model(text_encoder, comfy_glue.TEXT_ENCODER_FOLDERS)
        return (load_text_encoder(path, tokens),)


NODE_CLASS_MAPPINGS = {"LoadToraModel": LoadToraModel, "LoadToraTextEncoder": LoadToraTextEncoder}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadToraModel": "Load Tora Model",
    "LoadToraTextEncoder": "Load Tora Text Encoder (T5)",
}
