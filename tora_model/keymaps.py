"""Key maps from the released checkpoint layouts to the canonical (official diffusers-version) Tora names.

Source: `tora_spec.md` §7.1 and `reference/manifests/tora_sat_to_diffusers_key_map.tsv` (SAT → diffusers-version rules,
§5.3 for the adaLN chunk order), §7.3 for the third-party split layout (kijai `fuser/*.safetensors` with keys
`{i}.flow_*`, `traj_extractor/*.safetensors` with keys relative to the extractor).

Every rule makes ONE canonical tensor from ONE source tensor: split the source into `parts` equal pieces along dim 0
and concatenate the pieces listed in `take` (a plain copy is parts=1, take=(0,)). Rules only name tensors, so a plan
is built from the key list alone and tensors are produced one at a time (`apply_rule` on a tensor, or the loader
reading just the needed rows from disk) — memory stays at one tensor.

Canonical names (what `ToraTransformer.state_dict()` holds): `transformer_blocks.{i}.{norm1,norm2}.{norm,linear}`,
`…attn1.{to_q,to_k,to_v,to_out.0,norm_q,norm_k}`, `…ff.net.{0.proj,2}`, `patch_embed.{proj,text_proj,pos_embedding}`,
`time_embedding.linear_{1,2}`, `norm_final`, `norm_out.{norm,linear}`, `proj_out`, `traj_extractor.*`, `fuser.{i}.*`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from .errors import CheckpointError

SAT_PREFIX = "model.diffusion_model."  # DiT + Tora modules inside the SAT engine's `module` dict
SAT_T5_PREFIX = "conditioner.embedders.0.transformer."  # T5-XXL encoder in the same file
SAT_VAE_PREFIX = "first_stage_model."  # CogVideoX VAE in the same file

EXTRACTOR_PREFIX = "traj_extractor."
FUSER_PREFIX = "fuser."

# adaLN: SAT stores 12 chunks (§5.3): img shift/scale/gate msa, img shift/scale/gate mlp, then the same six for text.
ADALN_PARTS = 12
NORM1_CHUNKS = (0, 1, 2, 6, 7, 8)  # attention: img (shift, scale, gate), text (shift, scale, gate)
NORM2_CHUNKS = (3, 4, 5, 9, 10, 11)  # feed-forward: same order

FUSER_MODULES = (
    "flow_gamma_spatial",
    "flow_gamma_temporal",
    "flow_beta_spatial",
    "flow_beta_temporal",
    "flow_cond_norm",
)
FUSER_PARAMS = tuple(f"{module}.{kind}" for module in FUSER_MODULES for kind in ("weight", "bias"))


@dataclass(frozen=True)
class Rule:
    """Canonical tensor `target` = concat of chunks `take` of `source` split into `parts` along dim 0."""

    target: str
    source: str
    parts: int = 1
    take: tuple[int, ...] = (0,)

    def target_shape(self, source_shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.parts == 1:
            return tuple(source_shape)
        return (source_shape[0] // self.parts * len(self.take), *source_shape[1:])

    def row_ranges(self, source_rows: int) -> list[tuple[int, int]]:
        """Row ranges [start, stop) of the source that make up the target, in order."""
        rows = source_rows // self.parts
        return [(k * rows, (k + 1) * rows) for k in self.take]


@dataclass(frozen=True)
class KeyPlan:
    """Rules for every canonical key, plus the source keys dropped on purpose and those no rule knows."""

    rules: dict[str, Rule]
    dropped: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()

    def merged(self, other: KeyPlan) -> KeyPlan:
        clash = sorted(set(self.rules) & set(other.rules))
        if clash:
            raise CheckpointError(f"two sources produce the same canonical keys, e.g. {clash[:3]}")
        return KeyPlan(
            rules={**self.rules, **other.rules},
            dropped=self.dropped + other.dropped,
            unknown=self.unknown + other.unknown,
        )


# --- SAT (`model.diffusion_model.*`, prefix stripped) --------------------------------------------------------------

SAT_DROPPED = frozenset(
    {
        "mixins.pos_embed.freqs_sin",  # RoPE tables, recomputed
        "mixins.pos_embed.freqs_cos",
        "transformer.position_embeddings.weight",  # unused SAT leftover
    }
)

SAT_GLOBAL = {
    "mixins.patch_embed.proj.weight": "patch_embed.proj.weight",
    "mixins.patch_embed.proj.bias": "patch_embed.proj.bias",
    "mixins.patch_embed.text_proj.weight": "patch_embed.text_proj.weight",
    "mixins.patch_embed.text_proj.bias": "patch_embed.text_proj.bias",
    "mixins.pos_embed.pos_embedding": "patch_embed.pos_embedding",  # I2V only
    "time_embed.0.weight": "time_embedding.linear_1.weight",
    "time_embed.0.bias": "time_embedding.linear_1.bias",
    "time_embed.2.weight": "time_embedding.linear_2.weight",
    "time_embed.2.bias": "time_embedding.linear_2.bias",
    "transformer.final_layernorm.weight": "norm_final.weight",
    "transformer.final_layernorm.bias": "norm_final.bias",
    "mixins.final_layer.norm_final.weight": "norm_out.norm.weight",
    "mixins.final_layer.norm_final.bias": "norm_out.norm.bias",
    "mixins.final_layer.adaLN_modulation.1.weight": "norm_out.linear.weight",
    "mixins.final_layer.adaLN_modulation.1.bias": "norm_out.linear.bias",
    "mixins.final_layer.linear.weight": "proj_out.weight",
    "mixins.final_layer.linear.bias": "proj_out.bias",
}

# Per-block rules, for the module's `.weight` and `.bias` alike; `{i}` is the block index.
# SAT module -> the canonical modules it becomes: (name, parts, take).
SAT_BLOCK_MODULES: dict[str, tuple[tuple[str, int, tuple[int, ...]], ...]] = {
    "transformer.layers.{i}.input_layernorm": (("transformer_blocks.{i}.norm1.norm", 1, (0,)),),
    "transformer.layers.{i}.post_attention_layernorm": (("transformer_blocks.{i}.norm2.norm", 1, (0,)),),
    "transformer.layers.{i}.attention.query_key_value": (
        ("transformer_blocks.{i}.attn1.to_q", 3, (0,)),
        ("transformer_blocks.{i}.attn1.to_k", 3, (1,)),
        ("transformer_blocks.{i}.attn1.to_v", 3, (2,)),
    ),
    "transformer.layers.{i}.attention.dense": (("transformer_blocks.{i}.attn1.to_out.0", 1, (0,)),),
    "transformer.layers.{i}.mlp.dense_h_to_4h": (("transformer_blocks.{i}.ff.net.0.proj", 1, (0,)),),
    "transformer.layers.{i}.mlp.dense_4h_to_h": (("transformer_blocks.{i}.ff.net.2", 1, (0,)),),
    "mixins.adaln_layer.adaLN_modulations.{i}.1": (
        ("transformer_blocks.{i}.norm1.linear", ADALN_PARTS, NORM1_CHUNKS),
        ("transformer_blocks.{i}.norm2.linear", ADALN_PARTS, NORM2_CHUNKS),
    ),
    "mixins.adaln_layer.query_layernorm_list.{i}": (("transformer_blocks.{i}.attn1.norm_q", 1, (0,)),),
    "mixins.adaln_layer.key_layernorm_list.{i}": (("transformer_blocks.{i}.attn1.norm_k", 1, (0,)),),
    **{f"mixins.adaln_layer.fuser_list.{{i}}.{m}": ((f"fuser.{{i}}.{m}", 1, (0,)),) for m in FUSER_MODULES},
}
SAT_BLOCK = {
    f"{source}.{kind}": tuple((f"{target}.{kind}", parts, take) for target, parts, take in targets)
    for source, targets in SAT_BLOCK_MODULES.items()
    for kind in ("weight", "bias")
}

# The block index is the first all-digit component after one of these list names.
_BLOCK_INDEX = re.compile(r"^(transformer\.layers|mixins\.adaln_layer\.[A-Za-z_]+)\.(\d+)\.(.+)$")


def _block_template(key: str) -> tuple[str, int] | None:
    match = _BLOCK_INDEX.match(key)
    if match is None:
        return None
    return f"{match.group(1)}.{{i}}.{match.group(3)}", int(match.group(2))


def sat_plan(keys: Iterable[str]) -> KeyPlan:
    """Plan the SAT → canonical conversion for DiT keys WITHOUT the `model.diffusion_model.` prefix."""
    rules: dict[str, Rule] = {}
    dropped, unknown = [], []
    for key in keys:
        if key in SAT_DROPPED:
            dropped.append(key)
        elif key in SAT_GLOBAL:
            rules[SAT_GLOBAL[key]] = Rule(SAT_GLOBAL[key], key)
        elif key.startswith(EXTRACTOR_PREFIX):  # identical names in both official formats
            rules[key] = Rule(key, key)
        elif (found := _block_template(key)) is not None and found[0] in SAT_BLOCK:
            template, index = found
            for target, parts, take in SAT_BLOCK[template]:
                name = target.format(i=index)
                rules[name] = Rule(name, key, parts, take)
        else:
            unknown.append(key)
    return KeyPlan(rules, tuple(dropped), tuple(unknown))


# --- canonical and third-party split (kijai) ----------------------------------------------------------------------


def identity_plan(keys: Iterable[str]) -> KeyPlan:
    """Keys already in the canonical layout (official diffusers `transformer/`, stock CogVideoX transformer)."""
    return KeyPlan({key: Rule(key, key) for key in keys})


def prefixed_plan(keys: Iterable[str], prefix: str, known: Iterable[str] | None = None) -> KeyPlan:
    """Source keys relative to a sub-module (kijai files): canonical = prefix + key.

    `known` (optional) lists the allowed relative names with `{i}` for an index; other keys become `unknown`.
    """
    patterns = (
        None if known is None else [re.compile(re.escape(k).replace(r"\{i\}", r"\d+") + "$") for k in known]
    )
    rules, unknown = {}, []
    for key in keys:
        if patterns is None or any(p.match(key) for p in patterns):
            rules[prefix + key] = Rule(prefix + key, key)
        else:
            unknown.append(key)
    return KeyPlan(rules, (), tuple(unknown))


def kijai_fuser_plan(keys: Iterable[str]) -> KeyPlan:
    """kijai `fuser/fuser.safetensors`: a 42-element ModuleList saved alone, keys `{i}.flow_*` → `fuser.{i}.flow_*`."""
    return prefixed_plan(keys, FUSER_PREFIX, [f"{{i}}.{p}" for p in FUSER_PARAMS])


def kijai_extractor_plan(keys: Iterable[str]) -> KeyPlan:
    """kijai `traj_extractor/traj_extractor.safetensors`: keys relative to the extractor → `traj_extractor.*`."""
    return prefixed_plan(keys, EXTRACTOR_PREFIX)


# --- applying a plan to tensors -----------------------------------------------------------------------------------


def apply_rule(rule: Rule, tensor: torch.Tensor) -> torch.Tensor:
    """Canonical tensor from its whole source tensor (works on meta tensors, so shapes can be planned for free)."""
    if rule.parts == 1:
        return tensor
    if tensor.shape[0] % rule.parts:
        raise CheckpointError(
            f"{rule.source}: dim 0 of shape {tuple(tensor.shape)} does not split into {rule.parts} equal parts"
        )
    if tensor.is_meta:  # shape arithmetic only (torch.cat on meta tensors is slow to set up)
        return torch.empty(rule.target_shape(tuple(tensor.shape)), dtype=tensor.dtype, device="meta")
    pieces = [tensor[start:stop] for start, stop in rule.row_ranges(tensor.shape[0])]
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)


def apply_plan(plan: KeyPlan, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Eager conversion of a whole state dict with a plan (tests, small dicts, meta tensors)."""
    return {target: apply_rule(rule, state_dict[rule.source]) for target, rule in plan.rules.items()}


def strip_prefix(keys: Iterable[str], prefix: str) -> list[str]:
    return [k[len(prefix) :] for k in keys if k.startswith(prefix)]


def sat_to_diffusers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Convert a SAT DiT state dict (with or without the `model.diffusion_model.` prefix) to canonical names.

    Other prefixes (T5, VAE) are ignored; unknown DiT keys raise CheckpointError naming them.
    """
    keys = list(state_dict)
    prefixed = any(k.startswith(SAT_PREFIX) for k in keys)
    local = strip_prefix(keys, SAT_PREFIX) if prefixed else keys
    plan = sat_plan(local)
    if plan.unknown:
        raise CheckpointError(
            f"{len(plan.unknown)} SAT keys have no rule, e.g. {list(plan.unknown[:5])}; this is not an official "
            "Tora / CogVideoX SAT checkpoint (or a newer layout this pack does not know)"
        )
    source = {k: state_dict[SAT_PREFIX + k if prefixed else k] for k in local}
    return apply_plan(plan, source)
