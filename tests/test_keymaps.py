"""Key maps checked against the reference manifests (names and shapes, meta tensors only)."""

from __future__ import annotations

import pytest
import torch

from tests.shared_data import manifest_shapes, needs_manifests
from tora_model import keymaps
from tora_model.errors import CheckpointError


def meta_state_dict(shapes: dict[str, tuple[int, ...]], prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + key: torch.empty(shape, device="meta") for key, shape in shapes.items()}


def shapes_of(state_dict: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(t.shape) for key, t in state_dict.items()}


@needs_manifests
def test_sat_t2v_manifest_converts_to_official_diffusers_manifest():
    sat = manifest_shapes("tora_sat_t2v_diffusion_model.tsv")
    expected = manifest_shapes("tora_t2v_transformer_diffusers.tsv")
    converted = shapes_of(keymaps.sat_to_diffusers(meta_state_dict(sat, keymaps.SAT_PREFIX)))
    assert len(sat) == 2373 and len(expected) == 2622
    assert sorted(set(expected) - set(converted)) == []
    assert sorted(set(converted) - set(expected)) == []
    assert converted == expected


@needs_manifests
def test_sat_i2v_manifest_converts_to_cogvideox_i2v_plus_tora_modules():
    sat = manifest_shapes("tora_sat_i2v_diffusion_model.tsv")
    base = manifest_shapes("cogvideox5b_i2v_transformer_diffusers.tsv")
    extractor = manifest_shapes("tora_traj_extractor.tsv")
    fuser = manifest_shapes("tora_mgf_fuser.tsv")
    expected = dict(base)
    expected.update({keymaps.EXTRACTOR_PREFIX + k: s for k, s in extractor.items()})
    expected.update({f"fuser.{i}.{k}": s for i in range(42) for k, s in fuser.items()})
    converted = shapes_of(keymaps.sat_to_diffusers(meta_state_dict(sat)))  # prefix-free input works too
    assert converted == expected
    assert converted["patch_embed.pos_embedding"] == (1, 17776, 3072)
    assert converted["patch_embed.proj.weight"] == (3072, 32, 2, 2)


@needs_manifests
def test_sat_plan_drops_exactly_the_three_unused_tensors():
    plan = keymaps.sat_plan(manifest_shapes("tora_sat_t2v_diffusion_model.tsv"))
    assert sorted(plan.dropped) == [
        "mixins.pos_embed.freqs_cos",
        "mixins.pos_embed.freqs_sin",
        "transformer.position_embeddings.weight",
    ]
    assert plan.unknown == ()


@needs_manifests
def test_kijai_split_files_map_onto_the_official_tora_keys():
    fuser = manifest_shapes("tora_mgf_fuser.tsv")
    extractor = manifest_shapes("tora_traj_extractor.tsv")
    base = manifest_shapes("cogvideox5b_t2v_transformer_diffusers.tsv")
    fuser_file = {f"{i}.{k}": s for i in range(42) for k, s in fuser.items()}
    plan = (
        keymaps.identity_plan(base)
        .merged(keymaps.kijai_fuser_plan(fuser_file))
        .merged(keymaps.kijai_extractor_plan(extractor))
    )
    sources = {**base, **fuser_file, **extractor}
    converted = {t: sources[r.source] for t, r in plan.rules.items()}
    assert converted == manifest_shapes("tora_t2v_transformer_diffusers.tsv")


def test_qkv_split_takes_contiguous_thirds_in_q_k_v_order():
    qkv = torch.arange(9 * 2, dtype=torch.float32).reshape(9, 2)
    out = keymaps.sat_to_diffusers({"transformer.layers.0.attention.query_key_value.weight": qkv})
    assert torch.equal(out["transformer_blocks.0.attn1.to_q.weight"], qkv[0:3])
    assert torch.equal(out["transformer_blocks.0.attn1.to_k.weight"], qkv[3:6])
    assert torch.equal(out["transformer_blocks.0.attn1.to_v.weight"], qkv[6:9])


def test_adaln_split_follows_sat_chunk_order():
    # chunk c of the SAT modulation holds the value c everywhere.
    adaln = torch.arange(12, dtype=torch.float32).repeat_interleave(2)
    out = keymaps.sat_to_diffusers({"mixins.adaln_layer.adaLN_modulations.3.1.bias": adaln})
    norm1 = out["transformer_blocks.3.norm1.linear.bias"].reshape(6, 2)[:, 0].tolist()
    norm2 = out["transformer_blocks.3.norm2.linear.bias"].reshape(6, 2)[:, 0].tolist()
    assert norm1 == [0.0, 1.0, 2.0, 6.0, 7.0, 8.0]
    assert norm2 == [3.0, 4.0, 5.0, 9.0, 10.0, 11.0]


def test_unknown_sat_key_is_named():
    with pytest.raises(CheckpointError, match="mixins.adaln_layer.mystery.0.weight"):
        keymaps.sat_to_diffusers({"mixins.adaln_layer.mystery.0.weight": torch.zeros(1)})


def test_kijai_fuser_plan_rejects_foreign_keys():
    plan = keymaps.kijai_fuser_plan(["0.flow_cond_norm.weight", "0.something_else.weight"])
    assert list(plan.rules) == ["fuser.0.flow_cond_norm.weight"]
    assert plan.unknown == ("0.something_else.weight",)
