"""Loading the CogVideoX VAE from every layout a user may have, and the SAT ↔ diffusers name table.

Source: `tora_spec.md` §7.2 (rename rules, verified on the two manifests), §7.3 (loader requirements), design.md
"Checkpoints a user already has": SAT `3d-vae.pt` (`{'state_dict': ...}`), the `first_stage_model.` part of an
official Tora SAT checkpoint (`{'module': ...}`), a diffusers `vae/` folder, or one safetensors file.

Canonical names are diffusers' (`encoder.down_blocks.0.resnets.0.conv1.conv.weight`); SAT names are renamed with
the explicit table below. Files are opened by `checkpoint_files.read_state_dict` (weights only; zip pickles
memory-mapped, legacy pickles read whole); the model is built on the meta device and its parameters are the loaded
tensors (`assign=True`), cast only if a dtype/device is asked for.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint_files import read_state_dict
from .errors import CheckpointError, ConfigError
from .json_files import Entry, entry_problems, finite_number, read_json_object
from .tensor_sources import LazyStateDict, SafetensorsFile, SafetensorsSource
from .vae import SCALE, CogVideoXVAE, VAEConfig

logger = logging.getLogger(__name__)

SAT_PREFIX = "first_stage_model."  # the VAE inside an official Tora SAT checkpoint's `module` dict

# SAT -> diffusers, applied in order as regex substitutions (DFconv VAE_KEYS_RENAME_DICT; decoder.up.{k} is
# handled separately because its index is reversed).
SAT_TO_CANONICAL: tuple[tuple[str, str], ...] = (
    (r"\.mid\.block_1\.", ".mid_block.resnets.0."),
    (r"\.mid\.block_2\.", ".mid_block.resnets.1."),
    (r"\.down\.", ".down_blocks."),
    (r"\.block\.", ".resnets."),
    (r"\.downsample\.", ".downsamplers.0."),
    (r"\.upsample\.", ".upsamplers.0."),
    (r"\.nin_shortcut\.", ".conv_shortcut."),
)
CANONICAL_TO_SAT: tuple[tuple[str, str], ...] = (
    (r"\.mid_block\.resnets\.0\.", ".mid.block_1."),
    (r"\.mid_block\.resnets\.1\.", ".mid.block_2."),
    (r"\.down_blocks\.", ".down."),
    (r"\.resnets\.", ".block."),
    (r"\.downsamplers\.0\.", ".downsample."),
    (r"\.upsamplers\.0\.", ".upsample."),
    (r"\.conv_shortcut\.", ".nin_shortcut."),
)
_SAT_DROPPED = re.compile(r"^loss")  # the SAT file also carries the training loss / discriminator


def _reverse_up(key: str, old: str, new: str, levels: int) -> str:
    match = re.match(rf"decoder\.{old}\.(\d+)\.", key)
    if match is None:
        return key
    return f"decoder.{new}.{levels - 1 - int(match[1])}." + key[match.end() :]


def sat_key_to_canonical(key: str, levels: int = 4) -> str | None:
    """SAT VAE name -> diffusers name; None for keys that are not part of the VAE (loss*)."""
    if _SAT_DROPPED.match(key):
        return None
    key = _reverse_up(key, "up", "up_blocks", levels)
    for pattern, repl in SAT_TO_CANONICAL:
        key = re.sub(pattern, repl, key)
    return key


def canonical_key_to_sat(key: str, levels: int = 4) -> str:
    """diffusers VAE name -> SAT name (the inverse of `sat_key_to_canonical` on VAE keys)."""
    key = _reverse_up(key, "up_blocks", "up", levels)
    for pattern, repl in CANONICAL_TO_SAT:
        key = re.sub(pattern, repl, key)
    return key


def is_sat_layout(keys) -> bool:
    return any(k.startswith(("encoder.down.", "decoder.up.")) or ".mid.block_" in k for k in keys)


def to_canonical(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip the Tora prefix, rename SAT names, drop non-VAE entries; canonical input passes through."""
    if any(k.startswith(SAT_PREFIX) for k in state_dict):
        state_dict = {k[len(SAT_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(SAT_PREFIX)}
    if not is_sat_layout(state_dict):
        return dict(state_dict)
    ups = [int(m[1]) for k in state_dict if (m := re.match(r"decoder\.up\.(\d+)\.", k))]
    levels = max(ups) + 1 if ups else 4
    renamed = ((sat_key_to_canonical(k, levels), v) for k, v in state_dict.items())
    return {k: v for k, v in renamed if k is not None}


def check_vae_folder(path: Path) -> tuple[Path, list[Path], VAEConfig | None]:
    """(folder, its weight files, the shape its config.json gives or None) of a diffusers VAE folder (or of a folder
    holding one as vae/), without reading any weights: cheap enough to refuse a broken folder before models load."""
    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
    weights = sorted(folder.glob("diffusion_pytorch_model*.safetensors")) or sorted(
        folder.glob("*.safetensors")
    )
    if not (folder / "config.json").is_file() or not weights:
        raise CheckpointError(
            f"{path} is a folder but not a diffusers VAE folder: expected config.json and "
            "diffusion_pytorch_model.safetensors (or a vae/ subfolder holding them)"
        )
    config = read_vae_config(folder / "config.json")
    # an empty object names no shape: it is inferred from the weights, as for a weights file
    return folder, weights, _config_from_diffusers(config, folder / "config.json") if config else None


def read_vae_state_dict(path: Path) -> tuple[dict[str, Tensor], VAEConfig | None, str]:
    """(raw state dict, the shape a diffusers folder's config.json gives or None, format description) of a file or
    folder."""
    if path.is_dir():
        folder, weights, vae_config = check_vae_folder(path)
        shards = SafetensorsSource([SafetensorsFile(file) for file in weights])  # headers checked here
        return dict(LazyStateDict(shards)), vae_config, f"diffusers folder {folder}"
    if not path.is_file():
        raise CheckpointError(
            f"VAE checkpoint {path} does not exist; expected the SAT 3d-vae.pt, a Tora SAT .pt, a diffusers vae/ "
            "folder or a .safetensors file (e.g. in ComfyUI/models/vae/)"
        )
    # By content, with the loaders' messages (LFS pointer, empty, truncated, pickled objects); a zip pickle is
    # memory-mapped, a legacy (non-zip) one read whole; {'state_dict': …} / {'module': …} wrappers removed.
    return dict(read_state_dict(path)), None, "weights file"


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _widths(value: object) -> bool:
    """Level widths VAEConfig can hold: it stores them as the first width times a whole multiplier."""
    return isinstance(value, list) and bool(value) and all(_whole(c) and c % value[0] == 0 for c in value)


# The entries of a diffusers AutoencoderKLCogVideoX config.json this loader reads: (what is expected, its check).
# Any of them may be absent: diffusers then takes its default (`DIFFUSERS_DEFAULTS`), and so does this loader.
CONFIG_ENTRIES: dict[str, Entry] = {
    "_class_name": ("a string", lambda v: isinstance(v, str)),
    "in_channels": ("a whole number >= 1", _whole),
    "out_channels": ("a whole number >= 1", _whole),
    "latent_channels": ("a whole number >= 1", _whole),
    "block_out_channels": ("a non-empty list of whole numbers >= 1, each a multiple of the first", _widths),
    "layers_per_block": ("a whole number >= 1", _whole),
    "norm_num_groups": ("a whole number >= 1", _whole),
    "norm_eps": ("a positive number", lambda v: finite_number(v) and v > 0),
    "temporal_compression_ratio": (
        "a whole number >= 1",
        lambda v: finite_number(v) and v >= 1 and v == int(v),
    ),
    "scaling_factor": ("a number or null", lambda v: v is None or finite_number(v)),
    "use_quant_conv": ("true or false", lambda v: isinstance(v, bool)),
    "use_post_quant_conv": ("true or false", lambda v: isinstance(v, bool)),
}
# diffusers' AutoencoderKLCogVideoX defaults, the CogVideoX-5B VAE: what an entry absent from config.json means
DIFFUSERS_DEFAULTS = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 16,
    "block_out_channels": [128, 256, 256, 512],
    "layers_per_block": 3,
    "norm_num_groups": 32,
    "norm_eps": 1e-6,
    "temporal_compression_ratio": 4,
}
CONFIG_FIX = (
    "Re-download config.json from the page the VAE folder came from (Tora: Hugging Face "
    "'Alibaba-Research-Intelligence-Computing/Tora_T2V_diffusers', vae/config.json); a diffusers VAE folder holds "
    "config.json beside diffusion_pytorch_model.safetensors (README, Model files)."
)


def read_vae_config(path: Path) -> dict:
    """A diffusers VAE folder's config.json: a JSON object of a CogVideoX VAE (`_class_name` absent or
    AutoencoderKLCogVideoX) whose entries in `CONFIG_ENTRIES` have the right type.

    A corrupt file (a cut-off download, an HTML error page saved under that name) gets a CheckpointError naming the
    file, the JSON error's line and column, and where to get the file again, not a raw JSONDecodeError.
    """
    config = read_json_object(path, "the diffusers AutoencoderKLCogVideoX config, a JSON object", CONFIG_FIX)
    if config.get("_class_name", "AutoencoderKLCogVideoX") != "AutoencoderKLCogVideoX":
        raise CheckpointError(
            f"{path.parent} holds a {config['_class_name']}, not a CogVideoX VAE (AutoencoderKLCogVideoX); "
            "point at the vae/ folder"
        )
    wrong = entry_problems(config, CONFIG_ENTRIES)
    if wrong:
        raise CheckpointError(f"{path} is not a CogVideoX VAE config: {'; '.join(wrong)}. {CONFIG_FIX}")
    return config


def _config_from_diffusers(config: Mapping, path: Path) -> VAEConfig:
    """The VAE shape a checked config.json (`read_vae_config`) describes; diffusers' defaults fill gaps."""
    if config.get("use_quant_conv") or config.get("use_post_quant_conv"):
        raise CheckpointError(
            f"{path}: VAE configs with quant_conv/post_quant_conv are not CogVideoX-5B VAEs; not supported"
        )
    scaling = config.get("scaling_factor")
    if scaling is not None and abs(scaling - SCALE) > 1e-6:
        logger.warning("VAE config scaling_factor %s ignored: Tora latents use %s", scaling, SCALE)
    entries = {**DIFFUSERS_DEFAULTS, **config}
    channels = entries["block_out_channels"]
    try:
        return VAEConfig(
            in_channels=entries["in_channels"],
            out_channels=entries["out_channels"],
            latent_channels=entries["latent_channels"],
            channels=channels[0],
            channel_mult=tuple(c // channels[0] for c in channels),
            layers_per_block=entries["layers_per_block"],
            norm_groups=entries["norm_num_groups"],
            norm_eps=entries["norm_eps"],
            temporal_compression=int(entries["temporal_compression_ratio"]),
        )
    except ConfigError as err:
        absent = ", ".join(f"{k}={v}" for k, v in DIFFUSERS_DEFAULTS.items() if k not in config)
        note = f" (entries it lacks take diffusers' CogVideoX-5B defaults: {absent})" if absent else ""
        raise CheckpointError(f"{path} describes no CogVideoX VAE: {err}{note}. {CONFIG_FIX}") from None


def config_from_state_dict(sd: Mapping[str, Tensor], norm_groups: int = 32) -> VAEConfig:
    """Infer widths, depth and latent size from canonical names (norm groups cannot be seen in shapes)."""
    try:
        widths = []
        while f"encoder.down_blocks.{len(widths)}.resnets.0.conv2.conv.weight" in sd:
            widths.append(sd[f"encoder.down_blocks.{len(widths)}.resnets.0.conv2.conv.weight"].shape[0])
        layers = len({k.split(".")[4] for k in sd if k.startswith("encoder.down_blocks.0.resnets.")})
        return VAEConfig(
            in_channels=sd["encoder.conv_in.conv.weight"].shape[1],
            out_channels=sd["decoder.conv_out.conv.weight"].shape[0],
            latent_channels=sd["decoder.conv_in.conv.weight"].shape[1],
            channels=widths[0],
            channel_mult=tuple(w // widths[0] for w in widths),
            layers_per_block=layers,
            norm_groups=norm_groups,
            temporal_compression=2 ** min(2, len(widths) - 1),
        )
    except (KeyError, IndexError) as exc:
        raise CheckpointError(f"state dict is not a CogVideoX VAE: missing {exc}") from exc
    except ConfigError as exc:
        raise CheckpointError(
            f"cannot infer the VAE shape from the weights ({exc}); pass config=VAEConfig(...)"
        ) from exc


def load_vae(
    source: str | Path | Mapping[str, Tensor],
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    config: VAEConfig | None = None,
) -> CogVideoXVAE:
    """Build the VAE on the meta device and fill it from `source` (file, folder, or state dict, any layout).

    dtype None keeps the checkpoint's floating dtype (the released weights are bf16); the model is in eval mode.
    """
    if isinstance(source, Mapping):
        raw, file_config, where = dict(source), None, "state dict"
    else:
        raw, file_config, fmt = read_vae_state_dict(Path(source))
        where = f"{source} ({fmt})"
    sd = to_canonical(raw)
    if config is None:
        config = file_config or config_from_state_dict(sd)
    with torch.device("meta"):
        model = CogVideoXVAE(config)
    _check_keys(
        model, sd, where, "SAT" if is_sat_layout(raw) or any(k.startswith(SAT_PREFIX) for k in raw) else ""
    )
    floats = {v.dtype for v in sd.values() if v.is_floating_point()}
    target = dtype or (floats.pop() if len(floats) == 1 else torch.float32)
    model.load_state_dict({k: v.to(device=device, dtype=target) for k, v in sd.items()}, assign=True)
    return model.eval()


def _check_keys(model: CogVideoXVAE, sd: Mapping[str, Tensor], where: str, layout: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = [
        f"{k}: file {tuple(sd[k].shape)} vs model {expected[k]}"
        for k in expected
        if k in sd and tuple(sd[k].shape) != expected[k]
    ]
    if missing or unexpected or wrong:
        layout = f" after renaming from the {layout} layout" if layout else ""
        raise CheckpointError(
            f"{where} does not fit the CogVideoX VAE ({model.config}){layout}: "
            f"{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}, "
            f"{len(wrong)} shape mismatches {wrong[:3]}. Is this a CogVideoX(-5B) VAE checkpoint?"
        )


def save_vae(vae: CogVideoXVAE, folder: Path) -> None:
    """A diffusers-style folder (config.json + diffusion_pytorch_model.safetensors) that `load_vae` reads."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = vae.config
    config = {
        "_class_name": "AutoencoderKLCogVideoX",
        "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels,
        "latent_channels": cfg.latent_channels,
        "block_out_channels": list(cfg.block_channels),
        "layers_per_block": cfg.layers_per_block,
        "norm_num_groups": cfg.norm_groups,
        "norm_eps": cfg.norm_eps,
        "temporal_compression_ratio": cfg.temporal_compression,
        "scaling_factor": SCALE,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tensors = {k: v.detach().contiguous() for k, v in vae.state_dict().items()}
    save_file(tensors, str(folder / "diffusion_pytorch_model.safetensors"))
