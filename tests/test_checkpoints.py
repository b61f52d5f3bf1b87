"""Checkpoint loading: every layout round-trips a random tiny model bit-for-bit; every bad input gives a clear error.

SAT files are written by inverting the key rules here, independently of `keymaps.py`: fuse q/k/v, merge the two
adaLN linears back into SAT's 12 chunks (spec §5.3), rename with the SAT table of spec §7.1.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.shared_data import MANIFESTS, manifest_shapes
from tora_model.checkpoint_files import read_state_dict, sub_state_dict
from tora_model.checkpoints import infer_config, inspect_checkpoint, load_transformer
from tora_model.config import ToraConfig
from tora_model.errors import CheckpointError
from tora_model.keymaps import SAT_PREFIX, SAT_VAE_PREFIX
from tora_model.tensor_sources import SafetensorsFile
from tora_model.transformer import build_transformer

# canonical block-local name -> SAT name ({i} = block index), spec §7.1
SAT_BLOCK_NAMES = {
    "norm1.norm": "transformer.layers.{i}.input_layernorm",
    "norm2.norm": "transformer.layers.{i}.post_attention_layernorm",
    "attn1.to_out.0": "transformer.layers.{i}.attention.dense",
    "ff.net.0.proj": "transformer.layers.{i}.mlp.dense_h_to_4h",
    "ff.net.2": "transformer.layers.{i}.mlp.dense_4h_to_h",
    "attn1.norm_q": "mixins.adaln_layer.query_layernorm_list.{i}",
    "attn1.norm_k": "mixins.adaln_layer.key_layernorm_list.{i}",
}
SAT_GLOBAL_NAMES = {
    "patch_embed.proj": "mixins.patch_embed.proj",
    "patch_embed.text_proj": "mixins.patch_embed.text_proj",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "norm_final": "transformer.final_layernorm",
    "norm_out.norm": "mixins.final_layer.norm_final",
    "norm_out.linear": "mixins.final_layer.adaLN_modulation.1",
    "proj_out": "mixins.final_layer.linear",
}


def random_model(preset: str, seed: int = 0):
    """A tiny model whose every tensor (BatchNorm statistics included) is random and distinct."""
    torch.manual_seed(seed)
    model = build_transformer(ToraConfig.preset(preset))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand_like(tensor) + 0.5)
            elif name.endswith("num_batches_tracked"):
                tensor.fill_(1234)
            else:
                tensor.copy_(torch.randn_like(tensor) * 0.2)
    return model.eval()


def clone_state_dict(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def to_sat(sd: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    sat = {}
    for kind in ("weight", "bias"):
        for i in range(num_layers):
            block = f"transformer_blocks.{i}."
            for local, sat_name in SAT_BLOCK_NAMES.items():
                sat[f"{sat_name.format(i=i)}.{kind}"] = sd[f"{block}{local}.{kind}"]
            sat[f"transformer.layers.{i}.attention.query_key_value.{kind}"] = torch.cat(
                [sd[f"{block}attn1.to_{x}.{kind}"] for x in "qkv"]
            )
            norm1 = sd[f"{block}norm1.linear.{kind}"].chunk(6)  # img shift/scale/gate, text shift/scale/gate
            norm2 = sd[f"{block}norm2.linear.{kind}"].chunk(6)
            sat[f"mixins.adaln_layer.adaLN_modulations.{i}.1.{kind}"] = torch.cat(
                [*norm1[:3], *norm2[:3], *norm1[3:], *norm2[3:]]
            )
        for canonical, sat_name in SAT_GLOBAL_NAMES.items():
            sat[f"{sat_name}.{kind}"] = sd[f"{canonical}.{kind}"]
    for key, value in sd.items():
        if key.startswith("traj_extractor."):
            sat[key] = value
        elif key.startswith("fuser."):
            sat["mixins.adaln_layer.fuser_list." + key.removeprefix("fuser.")] = value
    if "patch_embed.pos_embedding" in sd:
        sat["mixins.pos_embed.pos_embedding"] = sd["patch_embed.pos_embedding"]
    # tensors the loader must drop
    sat["mixins.pos_embed.freqs_sin"] = torch.randn(5, 16)
    sat["mixins.pos_embed.freqs_cos"] = torch.randn(5, 16)
    sat["transformer.position_embeddings.weight"] = torch.randn(64, 32)
    assert len(sat) == len(sd) + 3 - 2 * 2 * num_layers - 2 * num_layers  # q,k,v→1 ; norm1,norm2→1
    return sat


def save_sat(sd, num_layers: int, folder: Path) -> Path:
    module = {SAT_PREFIX + k: v for k, v in to_sat(sd, num_layers).items()}
    module[SAT_VAE_PREFIX + "encoder.conv_in.weight"] = torch.arange(6.0)  # other parts of the SAT engine
    module["conditioner.embedders.0.transformer.shared.weight"] = torch.ones(3, 2)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mp_rank_00_model_states.pt"
    torch.save({"module": module, "global_steps": 1000}, path)
    return path


def save_sharded(sd, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    keys = sorted(sd)
    shards = {"diffusion_pytorch_model-00001-of-00002.safetensors": keys[::2]}
    shards["diffusion_pytorch_model-00002-of-00002.safetensors"] = keys[1::2]
    weight_map = {}
    for name, shard_keys in shards.items():
        save_file({k: sd[k].contiguous() for k in shard_keys}, folder / name)
        weight_map.update(dict.fromkeys(shard_keys, name))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def save_kijai(sd, folder: Path) -> Path:
    base = {k: v for k, v in sd.items() if not k.startswith(("fuser.", "traj_extractor."))}
    fuser = {k.removeprefix("fuser."): v for k, v in sd.items() if k.startswith("fuser.")}
    extractor = {
        k.removeprefix("traj_extractor."): v for k, v in sd.items() if k.startswith("traj_extractor.")
    }
    for sub, tensors in (("transformer", base), ("fuser", fuser), ("traj_extractor", extractor)):
        (folder / sub).mkdir(parents=True)
        name = "diffusion_pytorch_model.safetensors" if sub == "transformer" else f"{sub}.safetensors"
        save_file(tensors, folder / sub / name)
    return folder


def inputs(config: ToraConfig, seed: int = 1):
    """Small inputs (2 latent frames, 4×6, 5 text tokens): enough to touch every weight, cheap on a busy CPU."""
    g = torch.Generator().manual_seed(seed)
    shape = (1, 2, 16, 4, 6)
    return dict(
        latents=torch.randn(shape, generator=g),
        timestep=torch.tensor([500]),
        text_embeds=torch.randn(1, 5, config.text_dim, generator=g),
        motion=torch.randn(shape, generator=g),
        image_latents=torch.randn(shape, generator=g) if config.is_i2v else None,
    )


def run(model, x) -> torch.Tensor:
    with torch.no_grad():
        features = model.extract_motion(x["motion"]) if model.config.has_motion_modules else None
        return model(
            x["latents"], x["timestep"], x["text_embeds"], features, image_latents=x["image_latents"]
        )


_OUTPUTS: dict[int, torch.Tensor] = {}


def assert_same_model(loaded, original, original_sd, forward: bool = True):
    assert not loaded.training
    assert loaded.config == original.config
    loaded_sd = loaded.state_dict()
    assert sorted(loaded_sd) == sorted(original_sd)
    for key, tensor in original_sd.items():
        assert loaded_sd[key].dtype == tensor.dtype, key
        assert torch.equal(loaded_sd[key], tensor), key
    if not forward:  # equal tensors already imply equal outputs; forwards are run once per layout
        return
    x = inputs(original.config)
    if id(original) not in _OUTPUTS:  # the reference models live for the whole module
        _OUTPUTS[id(original)] = run(original, x)
    assert torch.equal(run(loaded, x), _OUTPUTS[id(original)])


@pytest.fixture(scope="module", params=["tiny", "tiny_i2v"])
def reference(request):
    model = random_model(request.param)
    yield model, clone_state_dict(model)
    _OUTPUTS.pop(id(model), None)


def test_sat_pickle_loads_bit_exact(reference, tmp_path):
    model, sd = reference
    path = save_sat(sd, model.config.num_layers, tmp_path / "tora" / "t2v")
    assert_same_model(load_transformer(path), model, sd)
    assert_same_model(
        load_transformer(path.parent), model, sd, forward=False
    )  # the folder holding mp_rank_00_…pt
    assert inspect_checkpoint(path).format.startswith("SAT layout, torch pickle")


def test_diffusers_sharded_and_pipeline_root_load_bit_exact(reference, tmp_path):
    model, sd = reference
    save_sharded(sd, tmp_path / "Tora_diffusers" / "transformer")
    checkpoint = inspect_checkpoint(tmp_path / "Tora_diffusers")
    assert checkpoint.format == "diffusers layout, 2 safetensors shard(s)"
    assert_same_model(load_transformer(tmp_path / "Tora_diffusers"), model, sd)


def test_single_safetensors_in_either_layout_loads_bit_exact(reference, tmp_path):
    model, sd = reference
    save_file(sd, tmp_path / "tora.safetensors")
    assert_same_model(load_transformer(tmp_path / "tora.safetensors"), model, sd)
    sat = {SAT_PREFIX + k: v.contiguous() for k, v in to_sat(sd, model.config.num_layers).items()}
    save_file(sat, tmp_path / "tora_sat.safetensors")
    assert_same_model(load_transformer(tmp_path / "tora_sat.safetensors"), model, sd)


def test_state_dict_passed_directly_is_copied_not_aliased(reference):
    model, sd = reference
    given = {k: v.clone() for k, v in sd.items()}
    loaded = load_transformer(given)
    assert_same_model(loaded, model, sd, forward=False)
    given["proj_out.bias"].add_(1.0)
    assert torch.equal(loaded.proj_out.bias, sd["proj_out.bias"])


def test_kijai_split_layout_loads_bit_exact(reference, tmp_path):
    model, sd = reference
    folder = save_kijai(sd, tmp_path / "CogVideoX-5b-Tora")
    assert_same_model(load_transformer(folder), model, sd)
    # the same files as a stock transformer folder + the Tora folder beside it
    assert_same_model(load_transformer(folder / "transformer", motion_source=folder), model, sd)


def test_kijai_folder_with_the_transformer_files_at_its_root(tmp_path):
    model = random_model("tiny")
    sd = clone_state_dict(model)
    folder = save_kijai(sd, tmp_path / "CogVideoX-5b-Tora")
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").rename(
        folder / "diffusion_pytorch_model.safetensors"
    )
    (folder / "transformer").rmdir()
    assert inspect_checkpoint(folder).format.startswith("third-party split layout")
    assert_same_model(load_transformer(folder), model, sd, forward=False)


def test_bf16_cast_keeps_integer_buffers_and_batchnorm_statistics(reference, tmp_path):
    model, sd = reference
    save_file(sd, tmp_path / "tora.safetensors")
    loaded = load_transformer(tmp_path / "tora.safetensors", dtype=torch.bfloat16)
    loaded_sd = loaded.state_dict()
    for key, tensor in sd.items():
        if tensor.is_floating_point():
            assert loaded_sd[key].dtype == torch.bfloat16, key
            assert torch.equal(loaded_sd[key], tensor.to(torch.bfloat16)), key
        else:
            assert loaded_sd[key].dtype == torch.int64 and loaded_sd[key].item() == 1234, key
    bn = loaded.traj_extractor.body[0].bn1
    assert torch.equal(bn.running_var, sd["traj_extractor.body.0.bn1.running_var"].to(torch.bfloat16))
    assert bn.running_var.min() >= 0.5  # stored statistics, not the (1.0) defaults
    assert not bn.training


def test_missing_num_batches_tracked_is_tolerated(reference, tmp_path):
    model, sd = reference
    trimmed = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    loaded_sd = load_transformer(trimmed).state_dict()
    for key, tensor in sd.items():
        if key.endswith("num_batches_tracked"):
            assert loaded_sd[key].item() == 0, key  # unused in eval mode
        else:
            assert torch.equal(loaded_sd[key], tensor), key


def test_cogvideox_without_tora_modules_builds_plain_model(tmp_path, caplog):
    model = random_model("tiny")
    sd = {k: v for k, v in clone_state_dict(model).items() if not k.startswith(("fuser.", "traj_extractor."))}
    save_sharded(sd, tmp_path / "CogVideoX-5b" / "transformer")
    with caplog.at_level(logging.INFO, logger="tora_model.checkpoints"):
        loaded = load_transformer(tmp_path / "CogVideoX-5b")
    assert loaded.config.has_motion_modules is False
    assert "has no Tora modules" in caplog.text and "has_motion_modules=False" in caplog.text
    x = inputs(model.config)
    with torch.no_grad():
        expected = model(x["latents"], x["timestep"], x["text_embeds"])  # no motion features: plain CogVideoX
        assert torch.equal(loaded(x["latents"], x["timestep"], x["text_embeds"]), expected)


def test_sat_file_exposes_vae_and_t5_sub_state_dicts(tmp_path):
    model = random_model("tiny")
    path = save_sat(clone_state_dict(model), 2, tmp_path)
    raw = read_state_dict(path)
    vae = sub_state_dict(raw, SAT_VAE_PREFIX)
    assert list(vae) == ["encoder.conv_in.weight"] and torch.equal(
        vae["encoder.conv_in.weight"], torch.arange(6.0)
    )
    t5 = sub_state_dict(raw, "conditioner.embedders.0.transformer.")
    assert list(t5) == ["shared.weight"]


def test_read_state_dict_of_safetensors_reads_lazily_and_exactly(tmp_path):
    tensors = {"a": torch.randn(4, 3).to(torch.bfloat16), "b": torch.arange(5), "c": torch.tensor(2.5)}
    save_file(tensors, tmp_path / "x.safetensors")
    raw = read_state_dict(tmp_path / "x.safetensors")
    assert sorted(raw) == ["a", "b", "c"]
    for key, tensor in tensors.items():
        assert raw[key].dtype == tensor.dtype and torch.equal(raw[key], tensor)


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float8_e4m3fn, torch.int64]
)
def test_safetensors_row_ranges_equal_torch_slicing(tmp_path, dtype):
    tensor = (torch.randn(12, 3, 2) * 4).to(dtype)
    save_file({"t": tensor, "other": torch.ones(5)}, tmp_path / "t.safetensors")
    file = SafetensorsFile(tmp_path / "t.safetensors")
    rows = [(0, 2), (6, 8), (4, 6)]
    expected = torch.cat([tensor[a:b] for a, b in rows])
    got = file.read("t", rows)
    assert got.dtype == dtype and got.view(torch.uint8).equal(expected.view(torch.uint8))
    assert file.read("t").view(torch.uint8).equal(tensor.view(torch.uint8))


@pytest.mark.skipif(not MANIFESTS.is_dir(), reason=f"reference manifests not found at {MANIFESTS}")
@pytest.mark.parametrize(
    ("manifest", "prefix", "layout", "expected_config"),
    [
        ("tora_sat_t2v_diffusion_model.tsv", SAT_PREFIX, "SAT", ToraConfig.preset("cogvideox_5b_t2v")),
        ("tora_sat_i2v_diffusion_model.tsv", SAT_PREFIX, "SAT", ToraConfig.preset("cogvideox_5b_i2v")),
        ("tora_t2v_transformer_diffusers.tsv", "", "diffusers", ToraConfig.preset("cogvideox_5b_t2v")),
        (
            "cogvideox5b_i2v_transformer_diffusers.tsv",
            "",
            "diffusers",
            ToraConfig.preset("cogvideox_5b_i2v").replace(has_motion_modules=False),
        ),
    ],
)
def test_released_layouts_infer_the_5b_config_and_fit_the_model(manifest, prefix, layout, expected_config):
    """Real key sets and shapes (meta tensors) → the exact 5B config, and the names/shapes the model expects."""
    state_dict = {
        prefix + key: torch.empty(shape, dtype=torch.bfloat16, device="meta")
        for key, shape in manifest_shapes(manifest).items()
    }
    checkpoint = inspect_checkpoint(state_dict)
    assert checkpoint.format == f"{layout} layout, passed in memory"
    config = infer_config(checkpoint)
    assert config == expected_config
    found = {k: tuple(t.shape) for k, t in checkpoint.meta_state_dict().items()}
    expected = {k: tuple(t.shape) for k, t in build_transformer(config, device="meta").state_dict().items()}
    assert found == expected


# --- errors ----------------------------------------------------------------------------------------------------


class NotATensor:
    """A custom class: pickling it into a checkpoint makes `weights_only` refuse the file."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def test_random_bytes_and_text_are_not_checkpoints(tmp_path):
    noise = tmp_path / "model.safetensors"
    noise.write_bytes(bytes(range(7, 255)) * 10)
    with pytest.raises(CheckpointError, match="is not a model checkpoint") as err:
        load_transformer(noise)
    assert str(noise) in str(err.value)
    text = tmp_path / "model.pt"
    text.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 22500000000\n")
    with pytest.raises(CheckpointError, match="is not a model checkpoint") as err:
        load_transformer(text)
    assert "version https://git-lfs" in str(err.value) and "git lfs pull" in str(err.value)


def test_truncated_safetensors_is_reported(tmp_path):
    path = tmp_path / "cut.safetensors"
    save_file({"w": torch.randn(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match=r"truncated — tensors need \d+ bytes, the file has \d+") as err:
        load_transformer(path)
    assert str(path) in str(err.value) and "Re-download" in str(err.value)


def test_truncated_pickle_is_reported(tmp_path):
    path = save_sat(clone_state_dict(random_model("tiny")), 2, tmp_path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="could not be read as a torch checkpoint") as err:
        load_transformer(path)
    assert str(path) in str(err.value)


def test_pickle_with_custom_class_is_refused_not_executed(tmp_path):
    path = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": {"model.diffusion_model.x": torch.zeros(1)}, "extra": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects other than tensors") as err:
        load_transformer(path)
    assert str(path) in str(err.value) and "NotATensor" in str(err.value)


def test_missing_path_says_where_it_looked(tmp_path):
    missing = tmp_path / "models" / "tora" / "t2v"
    with pytest.raises(CheckpointError, match="checkpoint not found: looked for") as err:
        load_transformer(missing)
    assert str(missing) in str(err.value) and "Hugging Face" in str(err.value)


def test_folder_without_weights_lists_what_it_looked_for(tmp_path):
    (tmp_path / "README.md").write_text("nothing here")
    with pytest.raises(CheckpointError, match="no checkpoint found in folder") as err:
        load_transformer(tmp_path)
    for name in ("diffusion_pytorch_model.safetensors.index.json", "mp_rank_00_model_states.pt", "fuser/"):
        assert name in str(err.value)


def test_folder_above_the_sat_folders_names_them(tmp_path):
    for variant in ("t2v", "i2v"):
        (tmp_path / variant).mkdir()
        (tmp_path / variant / "mp_rank_00_model_states.pt").write_bytes(b"PK\x03\x04")
    with pytest.raises(CheckpointError, match=r"pick one: \['i2v/mp_rank_00_model_states.pt', 't2v/"):
        load_transformer(tmp_path)


def test_missing_shard_is_named(tmp_path):
    folder = save_sharded(clone_state_dict(random_model("tiny")), tmp_path / "transformer")
    (folder / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="1 are missing") as err:
        load_transformer(folder)
    assert "diffusion_pytorch_model-00002-of-00002.safetensors" in str(err.value)


def test_wrong_keys_and_shapes_are_listed_with_counts(tmp_path):
    sd = clone_state_dict(random_model("tiny"))
    del sd["transformer_blocks.1.attn1.to_k.weight"]
    del sd["fuser.0.flow_cond_norm.bias"]
    sd["transformer_blocks.0.attn1.lora_A.weight"] = torch.zeros(2, 2)
    sd["proj_out.bias"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as err:
        load_transformer(sd)
    message = str(err.value)
    assert "state dict (diffusers layout, passed in memory)" in message
    assert (
        "missing 2 of 142 model keys: transformer_blocks.1.attn1.to_k.weight, fuser.0.flow_cond_norm.bias"
        in (message)
    )
    assert "unexpected 1 checkpoint keys: transformer_blocks.0.attn1.lora_A.weight" in message
    assert "1 shape mismatches: proj_out.bias: file [7] vs model [64]" in message
    assert "How to fix" in message


def test_explicit_config_that_does_not_fit_is_reported(tmp_path):
    sd = clone_state_dict(random_model("tiny"))
    with pytest.raises(CheckpointError) as err:
        load_transformer(sd, config=ToraConfig.preset("tiny_i2v"))
    message = str(err.value)
    assert "missing 1 of 143 model keys: patch_embed.pos_embedding" in message
    assert (
        "1 shape mismatches: patch_embed.proj.weight: file [32, 16, 2, 2] vs model [32, 32, 2, 2]" in message
    )


def test_vae_file_is_not_taken_for_a_transformer(tmp_path):
    save_file({"encoder.conv_in.weight": torch.zeros(2, 3, 3, 3, 3)}, tmp_path / "vae.safetensors")
    with pytest.raises(CheckpointError, match="holds no transformer weights") as err:
        load_transformer(tmp_path / "vae.safetensors")
    assert "encoder.conv_in.weight" in str(err.value)


def test_kijai_folder_without_base_transformer_explains_motion_source(tmp_path):
    folder = save_kijai(clone_state_dict(random_model("tiny")), tmp_path / "CogVideoX-5b-Tora")
    for file in (folder / "transformer").iterdir():
        file.unlink()
    (folder / "transformer").rmdir()
    with pytest.raises(CheckpointError, match="motion_source"):
        load_transformer(folder)


def test_fused_tensor_that_does_not_split_is_reported():
    broken = {SAT_PREFIX + "transformer.layers.0.attention.query_key_value.weight": torch.zeros(7, 2)}
    with pytest.raises(
        CheckpointError, match=r"query_key_value.weight: dim 0 of shape \(7, 2\) does not split"
    ):
        load_transformer(broken)
