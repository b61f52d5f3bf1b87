"""State-dict names, shapes and dtypes of the 5B builds equal the official manifests (meta device, no weights)."""

from __future__ import annotations

import pytest
import torch

from tests.shared_data import read_manifest
from tora_model.config import ToraConfig
from tora_model.transformer import build_transformer

TORA_PREFIXES = ("traj_extractor.", "fuser.")


def meta_state(preset: str) -> dict[str, tuple[tuple[int, ...], str]]:
    model = build_transformer(ToraConfig.preset(preset), device="meta")
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}


def split_tora(rows: dict) -> tuple[dict, dict]:
    tora = {k: v for k, v in rows.items() if k.startswith(TORA_PREFIXES)}
    return {k: v for k, v in rows.items() if k not in tora}, tora


def test_t2v_matches_official_diffusers_version_manifest():
    expected = read_manifest("tora_t2v_transformer_diffusers.tsv")
    ours = meta_state("cogvideox_5b_t2v")
    assert len(expected) == 2622
    assert sorted(set(ours) ^ set(expected)) == []
    assert ours == expected


def test_t2v_base_part_matches_cogvideox_manifest():
    base, _ = split_tora(meta_state("cogvideox_5b_t2v"))
    assert base == read_manifest("cogvideox5b_t2v_transformer_diffusers.tsv")


def test_i2v_matches_cogvideox_i2v_plus_tora_modules():
    base, tora = split_tora(meta_state("cogvideox_5b_i2v"))
    _, expected_tora = split_tora(read_manifest("tora_t2v_transformer_diffusers.tsv"))
    expected_base = read_manifest("cogvideox5b_i2v_transformer_diffusers.tsv")
    # diffusers builds its initial (sin-cos) pos_embedding in float64; ours is a plain buffer in the model dtype.
    assert expected_base["patch_embed.pos_embedding"][1] == "float64"
    expected_base["patch_embed.pos_embedding"] = (expected_base["patch_embed.pos_embedding"][0], "float32")
    assert base == expected_base
    assert tora == expected_tora
    assert base["patch_embed.pos_embedding"][0] == (1, 226 + 13 * 30 * 45, 3072)


def test_without_motion_modules_is_plain_cogvideox():
    config = ToraConfig.preset("cogvideox_5b_t2v").replace(has_motion_modules=False)
    model = build_transformer(config, device="meta")
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()}
    assert ours == read_manifest("cogvideox5b_t2v_transformer_diffusers.tsv")


@pytest.mark.parametrize("preset", ["cogvideox_5b_t2v", "cogvideox_5b_i2v"])
def test_config_inferred_from_our_state_dict_round_trips(preset):
    config = ToraConfig.preset(preset)
    model = build_transformer(config, device="meta", dtype=torch.bfloat16)
    assert model.proj_out.weight.dtype == torch.bfloat16
    assert model.traj_extractor.body[0].bn1.num_batches_tracked.dtype == torch.int64
    assert ToraConfig.from_state_dict(model.state_dict()) == config
