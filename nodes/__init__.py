"""ComfyUI node classes of the Tora pack (thin: the work happens in `tora_model`)."""

from . import (
    comfy_glue,
    loaders,
    motion_nodes,
    sampling_nodes,
    speed_nodes,
    text_nodes,
    tiny_nodes,
    trajectory_nodes,
)

comfy_glue.register_model_folders()

_MODULES = (loaders, text_nodes, trajectory_nodes, motion_nodes, sampling_nodes, speed_nodes, tiny_nodes)
NODE_CLASS_MAPPINGS = {name: cls for m in _MODULES for name, cls in m.NODE_CLASS_MAPPINGS.items()}
NODE_DISPLAY_NAME_MAPPINGS = {
    name: title for m in _MODULES for name, title in m.NODE_DISPLAY_NAME_MAPPINGS.items()
}
