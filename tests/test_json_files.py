"""Bad JSON in the files the library reads (tora_model.json_files and its users): a step-cache fit, a diffusers shard
index, a safetensors header and the model config in an st_dit header. Each hole gets the caller's ToraError naming
the file, what was expected, what arrived and the fix — never a raw JSONDecodeError, UnicodeDecodeError or TypeError,
and no entry dropped or filled in."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tora_model.checkpoint_files import DIFFUSERS_INDEX, safetensors_folder
from tora_model.checkpoints import inspect_checkpoint
from tora_model.config import ToraConfig
from tora_model.errors import CheckpointError, ConfigError
from tora_model.json_files import entry_problems, parse_json_object, read_json_object
from tora_model.st_dit import _FIELD_TYPES, BACKBONE_KEY, CONFIG_KEY, read_backbone
from tora_model.step_cache import FIT_FORMAT, CacheFit
from tora_model.tensor_sources import SafetensorsFile

NOT_UTF8 = b'{"a": "\xff"}'  # byte offset 7 starts no UTF-8 character
CUT_OFF = b'{\n  "a": 1,\n  "b": ['  # a download cut off in line 3
# What arrived, as the helper words it, for each kind of bad bytes
ARRIVED = {
    "not_utf8": (NOT_UTF8, r"is not a text file \(not UTF-8 text: invalid start byte at byte offset 7\)"),
    "cut_off": (CUT_OFF, r"is not valid JSON \(Expecting value at line 3, column 9\)"),
    "list": (b"[1, 2]", r"holds a JSON array \(list\)"),
    "string": (b'"weights"', r"holds a JSON string"),
    "number": (b"3.5", r"holds a JSON number"),
    "null": (b"null", r"holds a JSON null"),
    "deep": (b"[" * 100_000, r"is nested too deeply to read as JSON"),
}


@pytest.mark.parametrize("case", sorted(ARRIVED))
def test_the_helper_names_source_expected_arrived_and_fix(case):
    data, arrived = ARRIVED[case]
    with pytest.raises(ConfigError, match=rf"^src\.json {arrived}: expected a thing\. Fix it\.$"):
        parse_json_object(data, "src.json", "a thing", "Fix it.", ConfigError)


def test_the_helper_reads_a_file_or_says_why_it_cannot(tmp_path):
    (tmp_path / "ok.json").write_text('{"a": [1]}')
    assert read_json_object(tmp_path / "ok.json", "a thing", "Fix it.") == {"a": [1]}
    with pytest.raises(
        CheckpointError,
        match=r"absent\.json cannot be read \(No such file or directory\): expected a thing\.",
    ):
        read_json_object(tmp_path / "absent.json", "a thing", "Fix it.")


def test_entry_problems_names_missing_and_mistyped_entries():
    entries = {name: ("a whole number", lambda v: isinstance(v, int)) for name in ("a", "b", "c")}
    assert entry_problems({"a": "1"}, entries, required=["b", "c"]) == [
        "b and c are missing",
        "a must be a whole number, got '1'",
    ]
    assert entry_problems({"a": 1, "b": 2}, entries, required=["c"]) == [
        "c is missing (expected a whole number)"
    ]


def _write(path: Path, data: bytes | dict) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


def _fit(tmp_path: Path, data: bytes | dict) -> Path:
    return _write(tmp_path / "step_cache.json", data)


def _index(tmp_path: Path, data: bytes | dict) -> Path:
    _write(tmp_path / DIFFUSERS_INDEX, data)
    return tmp_path


def _safetensors_with_header(path: Path, header: bytes) -> Path:
    return _write(path, struct.pack("<Q", len(header)) + header)


# Each file the library reads as JSON: (read it from bytes in a folder, its error class, its message with {arrived})
READERS = {
    "step_cache": (
        lambda folder, data: CacheFit.load(_fit(folder, data)),
        ConfigError,
        r"step_cache\.json {arrived}: expected a step-cache fit, .* Recreate it with `python -m tora_model "
        r"generate … --cache-calibrate FILE`",
    ),
    "shard_index": (
        lambda folder, data: safetensors_folder(_index(folder, data)),
        CheckpointError,
        r"index\.json {arrived}: expected a diffusers safetensors index, a JSON object with a weight_map\. "
        r"Re-download the index and every shard",
    ),
    "safetensors_header": (
        lambda folder, data: SafetensorsFile(_safetensors_with_header(folder / "model.safetensors", data)),
        CheckpointError,
        r"model\.safetensors is not a readable safetensors file: its header {arrived}\. Re-download",
    ),
}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("case", ["not_utf8", "cut_off", "list"])
def test_a_file_that_is_not_a_json_object_gets_its_readers_error(tmp_path, reader, case):
    data, arrived = ARRIVED[case]
    read, error, message = READERS[reader]
    with pytest.raises(error, match=message.format(arrived=arrived)):
        read(tmp_path, data)


# --- step-cache fit (step_cache.CacheFit.load) ---


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ({"coefficients": "1, 0"}, r"coefficients must be a non-empty list of finite numbers .*, got '1, 0'"),
        ({"coefficients": [[1.0], 0.0]}, r"coefficients must be .*, got \[\[1\.0\], 0\.0\]"),
        ({"coefficients": []}, r"coefficients must be .*, got \[\]"),
        ({"coefficients": [True, 0]}, r"coefficients must be .*, got \[True, 0\]"),
        ({"coefficients": [float("nan"), 0]}, r"coefficients must be .*, got \[nan, 0\]"),
        ({}, r"coefficients is missing \(expected a non-empty list of finite numbers"),
        (
            {"coefficients": [1, 0], "probe_change_range": [0.1, 0.5, 0.9]},
            r"probe_change_range must be a list of two finite numbers \[low, high\] with low <= high, got "
            r"\[0\.1, 0\.5, 0\.9\]",
        ),
        (
            {"coefficients": [1, 0], "probe_change_range": ["0.1", 1]},
            r"probe_change_range must .*, got \['0\.1', 1\]",
        ),
        (
            {"coefficients": [1, 0], "probe_change_range": [0.9, 0.1]},
            r"probe_change_range must .* with low <= high, got \[0\.9, 0\.1\]",
        ),
    ],
    ids=["string", "nested", "empty", "bool", "nan", "missing", "three_ends", "string_end", "reversed"],
)
def test_a_step_cache_fit_with_wrong_entries_names_them(tmp_path, entries, expected):
    path = _fit(tmp_path, {"format": FIT_FORMAT, **entries})
    with pytest.raises(
        ConfigError, match=rf"step_cache\.json is not a step-cache fit: {expected}.* Recreate it"
    ):
        CacheFit.load(path)


def test_a_good_step_cache_fit_loads_with_its_range(tmp_path):
    fit = {"format": FIT_FORMAT, "coefficients": [2, 1], "probe_change_range": [0, 1]}
    loaded = CacheFit.load(_fit(tmp_path, fit))
    assert loaded.coefficients == (2, 1) and loaded.domain == (0, 1)
    assert loaded.rescale(5.0) == 3.0  # f held at the range's end


# --- diffusers shard index (checkpoint_files.safetensors_folder) ---


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (
            {"metadata": {}},
            r"weight_map is missing \(expected a non-empty object, tensor name -> shard file\)",
        ),
        (
            {"weight_map": ["a.safetensors"]},
            r"weight_map must be a non-empty object, .* got \['a\.safetensors'\]",
        ),
        ({"weight_map": {}}, r"weight_map must be a non-empty object, .* got \{\}"),
        (
            {"weight_map": {"a.weight": "1.safetensors", "b.weight": 2, "c.weight": None}},
            r"weight_map must name each tensor's shard file \(a string\), got \{'b\.weight': 2, 'c\.weight': None\}",
        ),
    ],
    ids=["missing", "list", "empty", "not_strings"],
)
def test_a_shard_index_with_a_bad_weight_map_names_it(tmp_path, index, expected):
    with pytest.raises(
        CheckpointError, match=rf"index\.json is not a valid safetensors index: {expected}\. Re-download"
    ):
        safetensors_folder(_index(tmp_path, index))


# --- the model config in an st_dit safetensors header (st_dit.read_backbone) ---

TINY_ST = dataclasses.asdict(ToraConfig.preset("tiny_st"))


def _st_dit_file(tmp_path: Path, config: str | dict) -> Path:
    path = tmp_path / "transformer.safetensors"
    text = config if isinstance(config, str) else json.dumps(config)
    save_file({"x": torch.zeros(1)}, path, metadata={BACKBONE_KEY: "st_dit", CONFIG_KEY: text})
    return path


def test_every_tora_config_field_has_a_json_check():
    """A field of a new type would otherwise fail at load time with a KeyError instead of being checked."""
    assert {f.type for f in dataclasses.fields(ToraConfig)} <= set(_FIELD_TYPES)


def test_a_good_st_dit_header_config_reads_back(tmp_path):
    assert read_backbone(_st_dit_file(tmp_path, TINY_ST)) == ("st_dit", ToraConfig.preset("tiny_st"))


def test_a_header_written_before_flow_sigma_reads_as_the_release_spreading(tmp_path):
    """Files written before ToraConfig.flow_sigma existed were trained on σ = 10 flow videos; a stored σ is kept."""
    older = {k: v for k, v in TINY_ST.items() if k != "flow_sigma"}
    assert read_backbone(_st_dit_file(tmp_path, older))[1].flow_sigma == 10.0
    stored = read_backbone(_st_dit_file(tmp_path, {**TINY_ST, "flow_sigma": 2.5}))[1]
    assert stored == ToraConfig.preset("tiny_st").replace(flow_sigma=2.5)


FIX = r"download it again, or write it again with tora_model\.st_dit\.save_st_transformer"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            json.dumps(TINY_ST)[:40],
            r"is not valid JSON \(Unterminated string starting at line 1, column 35\): expected the ToraConfig "
            r"fields as a JSON object\.",
        ),
        ("[8, 4, 32]", r"holds a JSON array \(list\): expected the ToraConfig fields as a JSON object\."),
        (
            {**TINY_ST, "colour": "red", "depth": 3},
            r"is not a ToraConfig: unknown fields \['colour', 'depth'\]\.",
        ),
        (
            {**TINY_ST, "num_layers": "8", "norm_eps": None, "has_motion_modules": 1, "backbone": ["st_dit"]},
            r"is not a ToraConfig: num_layers must be a whole number, got '8'; norm_eps must be a finite number, got "
            r"None; has_motion_modules must be true or false, got 1; backbone must be a string, got \['st_dit'\]\.",
        ),
        (
            {k: v for k, v in TINY_ST.items() if k not in ("head_dim", "fuser_groups")},
            r"is not a ToraConfig: head_dim and fuser_groups are missing\.",
        ),
        (
            {**TINY_ST, "head_dim": 12},
            r"is not a valid ToraConfig: head_dim must be a multiple of 8 .*, got 12",
        ),
        (
            {**TINY_ST, "flow_sigma": "3"},
            r"is not a ToraConfig: flow_sigma must be a finite number, got '3'\.",
        ),
        (
            {**TINY_ST, "flow_sigma": 0},
            r"is not a valid ToraConfig: flow_sigma must be a positive number of pixels \(10 for the release\), "
            r"got 0",
        ),
    ],
    ids=[
        "cut_off",
        "list",
        "unknown_keys",
        "wrong_types",
        "missing_keys",
        "invalid",
        "sigma_type",
        "sigma_zero",
    ],
)
def test_a_bad_st_dit_header_config_names_the_file_and_the_fix(tmp_path, config, expected):
    path = _st_dit_file(tmp_path, config)
    message = (
        rf"the 'tora_config' entry in the safetensors header of .*transformer\.safetensors {expected}.*{FIX}"
    )
    with pytest.raises(CheckpointError, match=message):
        read_backbone(path)
    # what LoadToraModel calls: the file is not taken for a CogVideoX checkpoint, whose error would hide this one
    with pytest.raises(CheckpointError, match=message):
        inspect_checkpoint(path)
