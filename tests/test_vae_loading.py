"""VAE names against the reference manifests, and `load_vae` on every supported layout and on bad files."""

import json
import logging
import re

import pytest
import torch
from safetensors.torch import save_file

from tests.shared_data import MANIFESTS
from tora_model.errors import CheckpointError
from tora_model.vae import CogVideoXVAE, VAEConfig
from tora_model.vae_loading import (
    canonical_key_to_sat,
    config_from_state_dict,
    load_vae,
    sat_key_to_canonical,
    to_canonical,
)


def _manifest(name: str) -> dict[str, tuple[int, ...]]:
    path = MANIFESTS / name
    if not path.is_file():
        pytest.skip(
            f"reference manifest {path} is absent (the shared folder sits beside the repo as ../shared)"
        )
    rows = (line.split("\t") for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {key: tuple(json.loads(shape)) for key, shape, _ in rows}


def _shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_5b_build_matches_diffusers_manifest():
    with torch.device("meta"):
        model = CogVideoXVAE(VAEConfig.preset("cogvideox_5b"))
    expected = _manifest("autoencoder_kl_cogvideox_default.tsv")
    assert _shapes(model) == expected
    assert len(expected) == 436 and sum(torch.Size(s).numel() for s in expected.values()) == 215_583_907


def test_config_inferred_from_5b_shapes():
    with torch.device("meta"):
        sd = CogVideoXVAE(VAEConfig()).state_dict()
    assert config_from_state_dict(sd) == VAEConfig.preset("cogvideox_5b")
    assert config_from_state_dict(to_canonical(_sat(sd))) == VAEConfig()


def test_sat_manifest_renames_onto_diffusers_manifest():
    sat, canonical = (
        _manifest("tora_sat_vae_first_stage_model.tsv"),
        _manifest("autoencoder_kl_cogvideox_default.tsv"),
    )
    assert {sat_key_to_canonical(k): v for k, v in sat.items()} == canonical
    assert {canonical_key_to_sat(k): v for k, v in canonical.items()} == sat
    assert sat_key_to_canonical("loss.discriminator.conv.weight") is None
    assert sat_key_to_canonical("decoder.up.0.block.3.conv1.conv.weight") == (
        "decoder.up_blocks.3.resnets.3.conv1.conv.weight"
    )


@pytest.fixture(scope="module")
def tiny():
    model = CogVideoXVAE(VAEConfig.preset("tiny")).eval()
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in sorted(model.state_dict().items())}
    model.load_state_dict(sd)
    z = torch.randn(1, 16, 1, 2, 2, generator=g)
    return sd, z, model.decode(z)


def _decodes_like(model: CogVideoXVAE, tiny) -> bool:
    sd, z, expected = tiny
    return torch.equal(model.decode(z), expected)


def _sat(sd, prefix=""):
    return {prefix + canonical_key_to_sat(k): v for k, v in sd.items()}


def test_sat_3d_vae_pt_loads_to_identical_outputs(tiny, tmp_path):
    path = tmp_path / "3d-vae.pt"
    torch.save({"state_dict": {**_sat(tiny[0]), "loss.logvar": torch.zeros(())}}, path)
    model = load_vae(path, config=VAEConfig.preset("tiny"))  # norm groups are not visible in shapes
    assert not any(p.is_meta for p in model.parameters())
    assert _decodes_like(model, tiny)


def test_tora_sat_checkpoint_first_stage_model(tiny, tmp_path):
    path = tmp_path / "mp_rank_00_model_states.pt"
    other = {"model.diffusion_model.mixins.pos_embed.freqs_sin": torch.zeros(2)}
    torch.save({"module": {**_sat(tiny[0], "first_stage_model."), **other}}, path)
    model = load_vae(path, dtype=torch.bfloat16, config=VAEConfig.preset("tiny"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert (model.decode(tiny[1]).float() - tiny[2]).abs().max() < 0.1 * tiny[2].abs().max()


def test_diffusers_folder_and_safetensors_file(tiny, tmp_path, caplog):
    vae_dir = tmp_path / "Tora_T2V_diffusers" / "vae"
    vae_dir.mkdir(parents=True)
    save_file(tiny[0], vae_dir / "diffusion_pytorch_model.safetensors")
    cfg = VAEConfig.preset("tiny")
    config = {"block_out_channels": list(cfg.block_channels), "layers_per_block": 1, "norm_num_groups": 4}
    (vae_dir / "config.json").write_text(json.dumps({**config, "scaling_factor": 1.15258426}))
    with caplog.at_level(logging.WARNING):
        assert _decodes_like(load_vae(vae_dir.parent), tiny)  # the pipeline folder holding vae/
    assert "scaling_factor 1.15258426 ignored" in caplog.text
    assert _decodes_like(load_vae(vae_dir / "diffusion_pytorch_model.safetensors", config=cfg), tiny)
    assert _decodes_like(load_vae(to_canonical(_sat(tiny[0])), config=cfg), tiny)


def test_bad_sources_raise_checkpoint_errors(tiny, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_vae(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_vae(garbage)
    with pytest.raises(CheckpointError, match="not a diffusers VAE folder"):
        load_vae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "ToraTransformer3DModel"}))
    save_file({"x": torch.zeros(1)}, tmp_path / "diffusion_pytorch_model.safetensors")
    with pytest.raises(CheckpointError, match="holds a ToraTransformer3DModel"):
        load_vae(tmp_path)
    sd = dict(tiny[0])
    sd.pop("decoder.conv_out.conv.bias")
    sd["encoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.safetensors"
    save_file(sd, path)
    with pytest.raises(
        CheckpointError, match=r"broken.safetensors.*1 missing \['decoder.conv_out.conv.bias'\].*extra"
    ):
        load_vae(path, config=VAEConfig.preset("tiny"))
    with pytest.raises(CheckpointError, match="not a CogVideoX VAE"):
        load_vae({"weight": torch.zeros(1)})


TINY_CONFIG = (
    '{\n  "block_out_channels": [8, 8, 16, 16],\n  "layers_per_block": 1,\n  "norm_num_groups": 4\n}\n'
)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            TINY_CONFIG[: TINY_CONFIG.index('  "norm')],  # a download cut off after line 3
            r"config\.json is not valid JSON \(Expecting property name enclosed in double quotes at line 4, "
            r"column 1\): expected the diffusers AutoencoderKLCogVideoX config, a JSON object\.",
        ),
        (
            "<!DOCTYPE html>\n<title>404</title>\n",  # an error page saved under the file's name
            r"config\.json is not valid JSON \(Expecting value at line 1, column 1\)",
        ),
        (
            b'{"_class_name": "\xff"}',
            r"config\.json is not a text file \(not UTF-8 text: invalid start byte at byte offset 17\): expected "
            r"the diffusers",
        ),
        (
            "[16, 16, 32]",
            r"config\.json holds a JSON array \(list\): expected the diffusers .* a JSON object\.",
        ),
        (
            '{"block_out_channels": "8,8,16,16", "layers_per_block": "1", "norm_num_groups": true, "norm_eps": -1}',
            r"config\.json is not a CogVideoX VAE config: block_out_channels must be a non-empty list of whole "
            r"numbers >= 1, each a multiple of the first, got '8,8,16,16'; layers_per_block must be a whole number "
            r">= 1, got '1'; norm_num_groups must be a whole number >= 1, got True; norm_eps must be a positive "
            r"number, got -1\.",
        ),
        (
            '{"block_out_channels": [8, 12, 16, 16], "layers_per_block": 1, "norm_num_groups": 4}',
            r"block_out_channels must be .* each a multiple of the first, got \[8, 12, 16, 16\]\.",
        ),
        (
            TINY_CONFIG.replace(',\n  "norm_num_groups": 4', ""),  # the key the tiny VAE cannot do without
            r"config\.json describes no CogVideoX VAE: every level width must be divisible by norm_groups=32, "
            r"not \[8, 8, 16, 16\] \(entries it lacks take diffusers' CogVideoX-5B defaults: in_channels=3, "
            r"out_channels=3, latent_channels=16, norm_num_groups=32, norm_eps=1e-06, temporal_compression_ratio=4\)\.",
        ),
    ],
    ids=["cut_off", "html_page", "not_utf8", "json_list", "wrong_types", "odd_widths", "missing_key"],
)
def test_a_broken_vae_config_json_names_the_file_and_how_to_fix_it(tiny, tmp_path, config, expected):
    """A diffusers VAE folder whose config.json is not a CogVideoX VAE config gets a CheckpointError that names the
    file, what was expected and what arrived, and says where to get the file again: no JSONDecodeError, KeyError or
    ZeroDivisionError from deeper down."""
    folder = tmp_path / "Tora_T2V_diffusers" / "vae"
    folder.mkdir(parents=True)
    save_file(tiny[0], folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_bytes(config if isinstance(config, bytes) else config.encode())
    for source in (folder, folder.parent):
        with pytest.raises(CheckpointError) as error:
            load_vae(source)
        message = str(error.value)
        assert message.startswith(f"{folder / 'config.json'} "), message
        assert re.search(expected, message), message
        assert message.endswith(
            "Re-download config.json from the page the VAE folder came from (Tora: Hugging Face "
            "'Alibaba-Research-Intelligence-Computing/Tora_T2V_diffusers', vae/config.json); a diffusers VAE folder "
            "holds config.json beside diffusion_pytorch_model.safetensors (README, Model files)."
        )
    (folder / "config.json").write_text(TINY_CONFIG)  # only the config was broken
    assert _decodes_like(load_vae(folder.parent), tiny)


def test_legacy_non_zip_pt_loads_read_whole(tiny, tmp_path):
    """A harmless old-format (non-zip) .pt cannot be memory-mapped; it is read whole instead of refused."""
    path = tmp_path / "3d-vae-legacy.pt"
    torch.save({"state_dict": _sat(tiny[0])}, path, _use_new_zipfile_serialization=False)
    assert _decodes_like(load_vae(path, config=VAEConfig.preset("tiny")), tiny)
