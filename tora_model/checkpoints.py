"""Reading Tora checkpoints in every released layout and loading them into `ToraTransformer` with low memory.

Source: `tora_spec.md` §1.2–§1.3 (layouts), §7.1 and §7.3 (loader requirements); key maps in `keymaps.py`.

Layouts accepted by `load_transformer` (and `inspect_checkpoint`):
  * official SAT `mp_rank_00_model_states.pt` — a torch zip pickle `{'module': {...}}` of the whole engine; DiT + Tora
    modules sit under `model.diffusion_model.` (T5 and VAE under other prefixes, see
    `checkpoint_files.sub_state_dict`). Opened with `torch.load(weights_only=True, mmap=True)`: nothing is unpickled
    beyond tensors, nothing is read until used;
  * official diffusers `transformer/` folder (sharded `diffusion_pytorch_model-*.safetensors` + index json, or one
    file), or the pipeline root holding `transformer/`;
  * a single `.safetensors` / `.pt` file in the SAT or the canonical layout;
  * the third-party split layout (kijai `CogVideoX-5b-Tora/{fuser,traj_extractor}/*.safetensors`) combined with a
    stock CogVideoX-5B(-I2V) transformer (`transformer/` inside that folder, or `motion_source=` beside `source`);
  * a state dict passed directly;
  * the spatial-temporal DiT (`st_dit.py`, the trained tiny Tora): one `.safetensors` whose header names the
    backbone and stores its config, in the model's own key names.

Memory: the model is built on the meta device and each canonical tensor is read on its own — only the rows a split
needs — cast to `dtype`, moved to `device`, and assigned. Peak memory ≈ the model plus one tensor
(`bench/bench_load.py`). Files are identified and opened by `checkpoint_files.py`, their tensors read by
`tensor_sources.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import keymaps
from .checkpoint_files import (
    DIFFUSERS_FILE,
    DIFFUSERS_INDEX,
    SAT_FILE,
    WHERE_TO_GET,
    existing_path,
    file_source,
    safetensors_folder,
    single_safetensors,
)
from .config import PRESETS, ToraConfig
from .errors import CheckpointError, ConfigError
from .tensor_sources import (
    CombinedSource,
    MappingSource,
    PrefixedSource,
    SafetensorsFile,
    SafetensorsSource,
    TensorSource,
)

if TYPE_CHECKING:
    from .transformer import ToraTransformer

log = logging.getLogger(__name__)


# --- layouts -> (source, key plan) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A located checkpoint: where it is, which layout it has, and how its tensors become canonical ones."""

    location: str
    format: str
    source: TensorSource
    plan: keymaps.KeyPlan
    config: ToraConfig | None = None  # stored in the file's header (st_dit files); None: inferred from shapes

    def meta_state_dict(self) -> dict[str, torch.Tensor]:
        """Canonical names → meta tensors of the right shape and stored dtype (nothing is read)."""
        try:
            return {t: keymaps.apply_rule(r, self.source.meta(r.source)) for t, r in self.plan.rules.items()}
        except CheckpointError as err:  # a fused tensor that does not split evenly
            raise CheckpointError(f"{self.location} ({self.format}): {err}; the file is damaged") from None


def _plan_for(keys: list[str], location: str) -> tuple[str, keymaps.KeyPlan, str]:
    """(layout name, plan, source-key prefix) for the transformer keys of a flat state dict."""
    if any(k.startswith(keymaps.SAT_PREFIX) for k in keys):
        return "SAT", keymaps.sat_plan(keymaps.strip_prefix(keys, keymaps.SAT_PREFIX)), keymaps.SAT_PREFIX
    if any(k.startswith(("transformer.layers.", "mixins.")) for k in keys):
        return "SAT (DiT only)", keymaps.sat_plan(keys), ""
    if any(k.startswith("transformer_blocks.") for k in keys):
        return "diffusers", keymaps.identity_plan(keys), ""
    raise CheckpointError(
        f"{location} holds no transformer weights: none of its {len(keys)} keys starts with "
        f"'{keymaps.SAT_PREFIX}', 'transformer.layers.' or 'transformer_blocks.' (first keys: {keys[:4]}). It may be a "
        f"VAE, text-encoder or LoRA file; point at the Tora transformer instead. {WHERE_TO_GET}."
    )


def _checkpoint_from_source(source: TensorSource, location: str, container: str) -> Checkpoint:
    layout, plan, prefix = _plan_for(source.keys(), location)
    if prefix:
        source = PrefixedSource(source, prefix)
    return Checkpoint(location, f"{layout} layout, {container}", source, plan)


def _kijai_checkpoint(base: Checkpoint, motion_folder: Path) -> Checkpoint:
    fuser = single_safetensors(motion_folder / "fuser")
    extractor = single_safetensors(motion_folder / "traj_extractor")
    if any(k.startswith((keymaps.FUSER_PREFIX, keymaps.EXTRACTOR_PREFIX)) for k in base.plan.rules):
        raise CheckpointError(
            f"{base.location} already contains Tora modules; do not combine it with the split files in {motion_folder}"
        )
    fuser_source, extractor_source = SafetensorsSource(fuser), SafetensorsSource(extractor)
    plan = base.plan.merged(keymaps.kijai_fuser_plan(fuser_source.keys()))
    plan = plan.merged(keymaps.kijai_extractor_plan(extractor_source.keys()))
    return Checkpoint(
        f"{base.location} + {motion_folder}",
        f"third-party split layout (CogVideoX transformer: {base.format}; fuser/ and traj_extractor/ files)",
        CombinedSource(base.source, fuser_source, extractor_source),
        plan,
    )


def _diffusers_checkpoint(folder: Path) -> Checkpoint | None:
    files = safetensors_folder(folder)
    if files is None:
        return None
    container = f"{len(files)} safetensors shard(s)" if len(files) > 1 else "single safetensors"
    return _checkpoint_from_source(SafetensorsSource(files), str(folder), container)


def _folder_checkpoint(folder: Path) -> Checkpoint:
    if (folder / "fuser").is_dir() and (folder / "traj_extractor").is_dir():
        for base in (folder / "transformer", folder):
            if (checkpoint := _diffusers_checkpoint(base)) is not None:
                return _kijai_checkpoint(checkpoint, folder)
        raise CheckpointError(
            f"{folder} holds the split Tora modules (fuser/, traj_extractor/) but no CogVideoX-5B transformer: looked "
            f"for {DIFFUSERS_INDEX} or {DIFFUSERS_FILE} in {folder / 'transformer'} and {folder}. Pass the "
            "CogVideoX-5B(-I2V) transformer folder as `source` and this folder as `motion_source`."
        )
    if (checkpoint := _diffusers_checkpoint(folder)) is not None:
        return checkpoint
    if (folder / "transformer").is_dir():
        return _folder_checkpoint(folder / "transformer")
    if (folder / SAT_FILE).is_file():
        return _file_checkpoint(folder / SAT_FILE)
    looked = [DIFFUSERS_INDEX, DIFFUSERS_FILE, "transformer/", SAT_FILE, "fuser/ + traj_extractor/"]
    nested = sorted(str(p.relative_to(folder)) for p in folder.glob(f"*/{SAT_FILE}"))
    hint = f" It has SAT checkpoints one level down — pick one: {nested}." if nested else ""
    raise CheckpointError(
        f"no checkpoint found in folder {folder.resolve()}: looked for {', '.join(looked)}.{hint} Point at the "
        f"transformer folder, the pipeline root, or the .pt/.safetensors file. {WHERE_TO_GET}."
    )


def _st_dit_checkpoint(path: Path) -> Checkpoint:
    from .st_dit import read_backbone

    _, config = read_backbone(path)
    source = SafetensorsSource([SafetensorsFile(path)])
    layout = "st_dit backbone (spatial-temporal DiT), safetensors file"
    return Checkpoint(str(path), layout, source, keymaps.identity_plan(source.keys()), config)


def _file_checkpoint(path: Path) -> Checkpoint:
    if is_st_dit_file(path):
        return _st_dit_checkpoint(path)
    source, container = file_source(path)
    return _checkpoint_from_source(source, str(path), container)


def inspect_checkpoint(
    source: str | Path | Mapping[str, torch.Tensor], motion_source: str | Path | None = None
) -> Checkpoint:
    """Locate and identify a checkpoint without reading any tensor values."""
    if isinstance(source, Mapping):
        checkpoint = _checkpoint_from_source(MappingSource(source), "state dict", "passed in memory")
    else:
        path = existing_path(Path(source))
        checkpoint = _folder_checkpoint(path) if path.is_dir() else _file_checkpoint(path)
    if motion_source is not None:
        if checkpoint.config is not None:
            raise CheckpointError(
                f"{checkpoint.location} is a {checkpoint.config.backbone} checkpoint; the split fuser/ and "
                f"traj_extractor/ files in {motion_source} only go with a CogVideoX-5B transformer. Leave "
                "motion_modules at '(inside model)'."
            )
        checkpoint = _kijai_checkpoint(checkpoint, existing_path(Path(motion_source)))
    return checkpoint


# --- config inference and loading --------------------------------------------------------------------------------

# Fields `ToraConfig.from_state_dict` reads from shapes; a preset that agrees on them (layer count aside) supplies the
# rest (text length, sample size of the learned positional embedding, epsilons).
_SHAPE_FIELDS = (
    "num_heads",
    "head_dim",
    "in_channels",
    "out_channels",
    "patch_size",
    "text_dim",
    "time_embed_dim",
    "mlp_ratio",
    "has_learned_pos_embed",
)
_MOTION_FIELDS = ("motion_channels", "extractor_blocks_per_stage")


def infer_config(checkpoint: Checkpoint) -> ToraConfig:
    """Config from tensor shapes; fields shapes cannot tell come from the preset of the same shape, if any.

    A checkpoint whose header stores its config (st_dit) gives that config unchanged.
    """
    if checkpoint.config is not None:
        return checkpoint.config
    try:
        inferred = ToraConfig.from_state_dict(checkpoint.meta_state_dict())
    except ConfigError as err:
        raise CheckpointError(
            f"{checkpoint.location} ({checkpoint.format}): cannot infer the model shape — {err}. The file is "
            "incomplete or not a CogVideoX/Tora transformer; pass `config=` if it is a custom size."
        ) from None
    fields = _SHAPE_FIELDS + (_MOTION_FIELDS if inferred.has_motion_modules else ())
    for name, preset in PRESETS.items():
        if all(getattr(preset, f) == getattr(inferred, f) for f in fields):
            log.info("checkpoint shapes match preset %r (%d layers)", name, inferred.num_layers)
            keep = fields + ("num_layers", "has_motion_modules")
            return preset.replace(**{f: getattr(inferred, f) for f in keep})
    log.info("checkpoint shapes match no preset; using CogVideoX-5B defaults for non-shape settings")
    return inferred


def _first(items: list, count: int = 5) -> str:
    shown = ", ".join(str(i) for i in items[:count])
    return shown + (f", … ({len(items) - count} more)" if len(items) > count else "")


def _check_fit(
    checkpoint: Checkpoint,
    config: ToraConfig,
    found: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
) -> None:
    """Raise one CheckpointError listing every missing, unexpected and mis-shaped key."""
    missing = [k for k in expected if k not in found and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in found if k not in expected] + [f"{k} (no rule)" for k in checkpoint.plan.unknown]
    mismatched = [
        f"{k}: file {list(found[k].shape)} vs model {list(expected[k].shape)}"
        for k in expected
        if k in found and found[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [
        f"{checkpoint.location} ({checkpoint.format}) does not fit the Tora transformer built for it "
        f"({config.num_layers} layers, width {config.hidden_dim}, in_channels {config.in_channels}, "
        f"motion modules {'yes' if config.has_motion_modules else 'no'}):"
    ]
    if missing:
        lines.append(f"  missing {len(missing)} of {len(expected)} model keys: {_first(missing)}")
    if unexpected:
        lines.append(f"  unexpected {len(unexpected)} checkpoint keys: {_first(unexpected)}")
    if mismatched:
        lines.append(f"  {len(mismatched)} shape mismatches: {_first(mismatched, 3)}")
    lines.append(
        "How to fix: make sure every shard / split file was downloaded and that this is a Tora or CogVideoX-5B(-I2V) "
        "transformer (not CogVideoX-2B or 1.5); if you passed `config=`, let it be inferred instead."
    )
    raise CheckpointError("\n".join(lines))


def _read_canonical(checkpoint: Checkpoint, rule: keymaps.Rule) -> torch.Tensor:
    if rule.parts == 1:
        return checkpoint.source.read(rule.source)
    rows = checkpoint.source.meta(rule.source).shape[0]
    if rows % rule.parts:
        raise CheckpointError(
            f"{checkpoint.location}: {rule.source} has {rows} rows, not divisible into {rule.parts} equal parts"
        )
    return checkpoint.source.read(rule.source, rule.row_ranges(rows))


def is_st_dit_file(source: object) -> bool:
    """True for a safetensors file whose header names the spatial-temporal backbone (tora_model.st_dit)."""
    if (
        not isinstance(source, (str, Path))
        or Path(source).suffix != ".safetensors"
        or not Path(source).is_file()
    ):
        return False
    from .st_dit import header_backbone

    try:
        return header_backbone(source) == "st_dit"
    except CheckpointError:
        return False  # not readable as safetensors: the ordinary path reports what the file is


def load_transformer(
    source: str | Path | Mapping[str, torch.Tensor],
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    config: ToraConfig | None = None,
    motion_source: str | Path | None = None,
) -> ToraTransformer:
    """Build a `ToraTransformer` and fill it from a checkpoint in any supported layout; returned in eval mode.

    Args:
        source: file, folder (transformer/, pipeline root, SAT folder, kijai folder) or a state dict.
        dtype: cast floating-point tensors to this dtype (None keeps the stored dtype, bf16 for the releases).
            Integer buffers (BatchNorm `num_batches_tracked`) keep theirs.
        device: where the weights go; each tensor is moved as soon as it is read.
        config: model shape; inferred from the tensor shapes when None.
        motion_source: a kijai `CogVideoX-5b-Tora` folder (fuser/, traj_extractor/) to add to a stock CogVideoX
            transformer given as `source`.
    """
    from .transformer import build_transformer  # deferred: reading/inspecting files does not need the model

    if is_st_dit_file(source):
        from .st_dit import load_st_transformer

        inspect_checkpoint(source, motion_source)  # refuses split motion modules for this backbone
        return load_st_transformer(source, dtype=dtype, device=device, config=config)
    checkpoint = inspect_checkpoint(source, motion_source)
    found = checkpoint.meta_state_dict()
    config = config or infer_config(checkpoint)
    if not config.has_motion_modules:
        log.info(
            "%s has no Tora modules (traj_extractor/fuser): loading a plain CogVideoX transformer "
            "(has_motion_modules=False); trajectories will have no effect",
            checkpoint.location,
        )
    model = build_transformer(config, device="meta")
    expected = model.state_dict()
    _check_fit(checkpoint, config, found, expected)
    device = torch.device(device) if device is not None else torch.device("cpu")
    tensors = {}
    for name, slot in expected.items():
        rule = checkpoint.plan.rules.get(name)
        if rule is None:  # only num_batches_tracked may be absent (checked above); eval-mode BN ignores it
            tensors[name] = torch.zeros(slot.shape, dtype=slot.dtype, device=device)
            continue
        tensor = _read_canonical(checkpoint, rule)
        tensors[name] = tensor.to(
            device=device, dtype=dtype if dtype and tensor.is_floating_point() else None
        )
    model.load_state_dict(tensors, strict=True, assign=True)
    _check_materialized(model, checkpoint)
    log.info("loaded %s (%s), %d tensors", checkpoint.location, checkpoint.format, len(tensors))
    return model.eval()


def _check_materialized(model: torch.nn.Module, checkpoint: Checkpoint) -> None:
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError(
            f"after loading {checkpoint.location}, {len(left)} tensors were never filled: {_first(left)}. "
            "This is a bug in the loader (a tensor the checkpoint does not store); please report it."
        )
