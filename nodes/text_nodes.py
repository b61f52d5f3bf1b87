"""ToraTextEncode: a prompt → the T5-XXL embedding Tora was trained with, as ComfyUI CONDITIONING.

Tora reads exactly 226 T5 tokens (prompt, </s>, then padding), with no attention mask, and uses the last hidden
state [1, 226, 4096] (tora_spec.md §1.4). The official negative is an all-zero embedding: ComfyUI's
ConditioningZeroOut on this node's output gives exactly that.
"""

from __future__ import annotations

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
                        "tooltip": "T5-XXL: CLIPLoader with a t5xxl file and type 'sd3', or Load Tora Text "
                        "Encoder.",
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
                "connect CLIPLoader (a t5xxl file, type 'sd3') or Load Tora Text Encoder"
            )
        return ([[embeds.to(comfy_glue.output_device()), {}]],)


NODE_CLASS_MAPPINGS = {"ToraTextEncode": ToraTextEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"ToraTextEncode": "Tora Text Encode (T5)"}
