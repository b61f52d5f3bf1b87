"""ToraTinyScene: a start image from the synthetic scenes the bundled tiny Tora was trained on.

The tiny model (`models/tiny_tora/`) only knows `tora_model.tiny.synthetic` clips — 1–3 coloured textured objects over a
grey textured background at 96×64, 17 frames. This node gives the first frame of such a clip (and the paths its
objects take in the clip) so the example workflow needs no image file in ComfyUI/input.
"""

from __future__ import annotations

import torch

from ..tora_model.errors import ConfigError
from ..tora_model.tiny import synthetic
from . import comfy_glue

MAX_OBJECTS = 3
MAX_SEED = 0xFFFFFFFFFFFFFFFF


class ToraTinyScene:
    """First frame of a synthetic training-style clip for the bundled tiny Tora."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": MAX_SEED,
                        "control_after_generate": True,
                        "tooltip": "Which scene (background, objects, colours, shapes). Keep it fixed while you "
                        "draw paths that start on its objects.",
                    },
                ),
                "objects": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": MAX_OBJECTS,
                        "tooltip": "Number of coloured objects in the scene (1-3), as in training.",
                    },
                ),
            },
        }

    RETURN_TYPES = ("IMAGE", "TORA_TRAJECTORY")
    RETURN_NAMES = ("image", "trajectory")
    OUTPUT_TOOLTIPS = (
        f"Start image [1, {synthetic.HEIGHT}, {synthetic.WIDTH}, 3] in [0, 1]: use it as Tora Sampler's "
        "start_image and as the canvas background.",
        "The paths the objects take in the synthetic clip (a ground truth to compare with, or to generate from).",
    )
    FUNCTION = "make"
    CATEGORY = "Tora/tiny"
    DESCRIPTION = (
        f"A {synthetic.WIDTH}x{synthetic.HEIGHT} scene from the synthetic data the bundled tiny Tora was trained on; "
        "the tiny model does not know other images."
    )

    def make(self, seed, objects):
        if not 1 <= objects <= MAX_OBJECTS:
            raise ConfigError(
                f"objects must be between 1 and {MAX_OBJECTS} (the tiny model's scenes), got {objects}"
            )
        if not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
        clip = synthetic.make_clips(seed, 1, objects)[0]
        image = torch.from_numpy(clip.frames[:1]).float() / 255.0  # [1, H, W, 3] in [0, 1]
        return (image.to(comfy_glue.output_device()), clip.trajectory)


NODE_CLASS_MAPPINGS = {"ToraTinyScene": ToraTinyScene}
NODE_DISPLAY_NAME_MAPPINGS = {"ToraTinyScene": "Tiny Tora Scene"}
