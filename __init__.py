"""Tora for ComfyUI: trajectory-controlled video generation (CogVideoX-5B T2V/I2V + Tora motion modules).

Loaded by ComfyUI from custom_nodes/<any folder name>/; every import inside the pack is relative.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web/js"
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
