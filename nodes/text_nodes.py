"""ToraTextEncode: a prompt → the T5-XXL embedding Tora was trained with, as ComfyUI CONDITIONING; ToraEmptyText.

Tora reads exactly 226 T5 tokens (prompt, </s>, then padding), with no attention mask, and uses the last hidden
state [1, 226, 4096] (tora_spec.md §1.4). The official negative is an all-zero embedding: ComfyUI's
ConditioningZeroOut on this node's output gives exactly that, and ToraEmptyText makes it from the model's text shape
without a T5 (the bundled tiny Tora was trained with an all-zero [1, 1, 16] context only).
"""

from __future__ import annotations

import torch

from . import comfy_glue
from .text_encoder import TextEncoder

TORA_TEXT_TOKENS = 226


class ToraTextEncode:
    """Encode a prompt with T5-XXL the way Tora expects."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": (
                    "CLIP",
                    {
                        "tooltip": f"T5-XXL: CLIPLoader with a t5xxl file and type '{comfy_glue.t5_clip_type()}' "
                        "(cogvideox where ComfyUI has it, sd3 otherwise), or Load Tora Text Encoder.",
                    },
                ),
                "prompt": (
                    "STRING",
                    {
                        "multiline": True,
                        "dynamicPrompts": True,
                        "tooltip": "What the video shows. Long, detailed prompts work best (up to ~225 T5 tokens).",
                    },
                ),
            },
        }

    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("T5 embedding [1, 226, 4096]; ConditioningZeroOut of it is the official negative.",)
    FUNCTION = "encode"
    CATEGORY = "Tora/text"

    def encode(self, clip, prompt):
        if isinstance(clip, TextEncoder):
            embeds = clip.encode(prompt)
        elif comfy_glue.is_comfy_clip(clip):
            embeds = comfy_glue.comfy_t5_embeddings(clip, prompt, TORA_TEXT_TOKENS)
        else:
            raise TypeError(
                f"clip must be a ComfyUI CLIP holding T5-XXL or a Tora text encoder, got {type(clip).__name__}; "
                f"connect CLIPLoader (a t5xxl file, type '{comfy_glue.t5_clip_type()}') or Load Tora Text Encoder"
            )
        return ([[embeds.to(comfy_glue.output_device()), {}]],)


class ToraEmptyText:
    """The all-zero text embedding of a model's text shape, as CONDITIONING (no text encoder needed)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    "TORA_MODEL",
                    {
                        "tooltip": "The model whose text shape [1, max_text_len, text_dim] the zeros take "
                        "([1, 226, 4096] for the released Tora, [1, 1, 16] for the bundled tiny model).",
                    },
                ),
            },
        }

    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = (
        "All-zero embedding: the official negative for the real Tora, and the only text the bundled tiny "
        "model was trained with (use it as positive and negative there).",
    )
    FUNCTION = "encode"
    CATEGORY = "Tora/text"
    DESCRIPTION = (
        "All-zero text conditioning. For the real Tora it is the official negative (same as ConditioningZeroOut "
        "of a Tora Text Encode output); the bundled tiny Tora knows no other text."
    )

    def encode(self, model):
        config = model.config
        zeros = torch.zeros(1, config.max_text_len, config.text_dim, device=comfy_glue.output_device())
        return ([[zeros, {}]],)


NODE_CLASS_MAPPINGS = {"ToraTextEncode": ToraTextEncode, "ToraEmptyText": ToraEmptyText}
NODE_DISPLAY_NAME_MAPPINGS = {"ToraTextEncode": "Tora Text Encode (T5)", "ToraEmptyText": "Tora Empty Text"}
