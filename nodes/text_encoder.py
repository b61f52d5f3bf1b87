"""T5 text encoders that do not come from ComfyUI's CLIPLoader.

`load_text_encoder(path)` reads the T5 from the official SAT file (under `conditioner.embedders.0.transformer.`), a
T5 `.safetensors` file or a transformers T5 folder with its tokenizer. Inside ComfyUI a T5-XXL weights file becomes
a real ComfyUI CLIP (ComfyUI brings the tokenizer, and core text nodes work with it too); a folder, any other T5,
and everything outside ComfyUI become a `TextEncoder` running the pack's own T5 (`tora_model.text`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..tora_model.checkpoint_files import mapped_state_dict
from ..tora_model.text import TOKENIZER_FILES, T5TextEncoder, t5_weights
from . import comfy_glue, runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextEncoder:
    """The pack's own T5 encoder as a CLIP socket value."""

    encoder: T5TextEncoder
    patcher: object | None

    def encode(self, prompt: str) -> torch.Tensor:
        """[1, max_length, d_model] float32 last hidden state: padded to max length, no attention mask."""
        plan = runtime.Plan(comfy_glue.compute_device(), whole=[(self.encoder, self.patcher)])
        with runtime.on_device(plan) as device:
            return self.encoder.encode([prompt], device=device).float()


def load_text_encoder(path: Path, max_length: int):
    """A ComfyUI CLIP (inside ComfyUI, T5-XXL weights file) or a `TextEncoder` producing `max_length` tokens."""
    if path.is_file() and comfy_glue.HAS_COMFY:
        # memory-mapped views: ComfyUI copies the whole dict into its model, which must not double the host memory
        clip = comfy_glue.comfy_clip_from_t5_state_dict(t5_weights(mapped_state_dict(path)))
        if clip is not None:
            if max_length != 226:
                log.warning("a ComfyUI CLIP always gives Tora's 226 tokens; tokens=%d is ignored", max_length)
            return clip
    tokenizer = None if path.is_dir() else tokenizer_near(path)
    encoder = T5TextEncoder.load(path, tokenizer=tokenizer, device=comfy_glue.HOST, max_length=max_length)
    return TextEncoder(encoder, comfy_glue.wrap_model(encoder))


def _is_tokenizer_folder(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def tokenizer_near(path: Path) -> Path | None:
    """A T5 tokenizer folder for a weights file that has none: beside it, or anywhere in the text encoder folders
    (the official download's `t5-v1_1-xxl/` holds one)."""
    candidates = [path.parent, path.parent / "tokenizer", path.parent.parent / "tokenizer"]
    for kind in comfy_glue.TEXT_ENCODER_FOLDERS:
        for root in comfy_glue.folder_roots(kind):
            if root.is_dir():
                candidates += sorted({f.parent for name in TOKENIZER_FILES for f in root.rglob(name)})
    found = next((folder for folder in candidates if _is_tokenizer_folder(folder)), None)
    if found is not None:
        log.info("T5 tokenizer for %s: %s", path.name, found)
    return found
