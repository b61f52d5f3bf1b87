"""Every bad command-line input gets one clear message, a non-zero exit, no traceback, and leaves nothing behind.

Table-driven (issue 13): each case builds its bad input in a temporary folder, runs `python -m tora_model` in
process, and checks the message names the option or file, what was expected and what arrived; that no output was
written; that torch's advice to turn weights_only off never appears; and, for every input that can be checked
without the model, that no model was loaded. Two cases also run as real subprocesses to see what a user sees.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tora_model import checkpoints, vae_loading
from tora_model.cli import build_parser, main
from tora_model.cli_output import write_frames, write_video
from tora_model.tiny.demo_models import build_demo_models, demo_trajectory, save_demo_models, write_demo_t5

REPO = Path(__file__).resolve().parents[1]
SIZE = ["--width", "32", "--height", "32", "--num-frames", "9", "--steps", "2"]


class _Evil:
    """Pickles as a call of os.getcwd: what weights-only loading must refuse (nothing is ever called here)."""

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad_input")
    transformer, vae = save_demo_models(*build_demo_models(seed=4), folder)
    embeds = folder / "prompt.safetensors"
    save_file({"prompt_embeds": torch.zeros(1, 16, 32)}, embeds)
    trajectory = folder / "trajectory.json"
    trajectory.write_text(demo_trajectory().to_json_string())
    return dict(transformer=transformer, vae=vae, embeds=embeds, trajectory=trajectory)


def _generate(files: dict, tmp: Path, *extra: str, **flags: Path | str | None) -> list[str]:
    """`generate` on the tiny model files, PNG frames into tmp/out, with flags replaced (None drops one)."""
    chosen = {
        "--transformer": files["transformer"],
        "--vae": files["vae"],
        "--prompt-embeds": files["embeds"],
        "--trajectory": files["trajectory"],
        "--frames-dir": tmp / "out",
    }
    chosen.update({"--" + name.replace("_", "-"): value for name, value in flags.items()})
    args = ["generate", *SIZE]
    for flag, value in chosen.items():
        if value is not None:
            args += [flag, str(value)]
    return [*args, *extra]


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _lfs_pointer(path: Path) -> Path:
    return _write(
        path, b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 99\n"
    )


def _truncated_safetensors(path: Path) -> Path:
    save_file({"prompt_embeds": torch.zeros(1, 16, 32)}, path)
    return _write(path, path.read_bytes()[:-100])


def _evil_pickle(path: Path) -> Path:
    torch.save({"prompt_embeds": torch.zeros(1, 16, 32), "state_dict": {"x": _Evil()}}, path)
    return path


def _truncated_zip(path: Path) -> Path:
    torch.save({"prompt_embeds": torch.zeros(1, 16, 32)}, path)
    return _write(path, path.read_bytes()[:200])


def _vae_config(files: dict, folder: Path, config: bytes) -> Path:
    """A copy of the tiny VAE folder whose config.json holds `config`."""
    shutil.copytree(files["vae"], folder)
    _write(folder / "config.json", config)
    return folder


def _trajectory(path: Path, **changes) -> Path:
    data = demo_trajectory().to_json()
    for key, value in changes.items():
        if key == "end_frame":
            data["tracks"][0]["end_frame"] = value
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return path


def _t5_with_pickle(folder: Path) -> Path:
    t5 = write_demo_t5(folder, text_dim=32, seed=0)
    from safetensors.torch import load_file

    weights = dict(load_file(t5 / "model.safetensors"))
    (t5 / "model.safetensors").unlink()
    torch.save({**weights, "extra": _Evil()}, t5 / "pytorch_model.bin")
    return t5


Case = Callable[[dict, Path], list[str]]
NOT_LOADED = True  # the input can be refused before any model is built
# (id, argv builder, expected message regex, refused before any model loads)
CASES: list[tuple[str, Case, str, bool]] = [
    ("fps-zero", lambda f, t: _generate(f, t, "--fps", "0"), r"argument --fps: expected a whole number of at least 1, got '0'", NOT_LOADED),
    ("fps-negative", lambda f, t: _generate(f, t, "--fps", "-5"), r"argument --fps: expected .* got '-5'", NOT_LOADED),
    ("cfg-nan", lambda f, t: _generate(f, t, "--cfg", "nan"), r"argument --cfg: expected a finite number .* got 'nan'", NOT_LOADED),
    ("cfg-inf", lambda f, t: _generate(f, t, "--cfg", "inf"), r"argument --cfg: expected a finite number .* got 'inf'", NOT_LOADED),
    ("seed-past-64-bits", lambda f, t: _generate(f, t, "--seed", str(2**64)), r"argument --seed: expected a whole number from 0 to 18446744073709551615, got '18446744073709551616'", NOT_LOADED),
    ("seed-negative", lambda f, t: _generate(f, t, "--seed", "-1"), r"argument --seed: expected a whole number from 0 to .* got '-1'", NOT_LOADED),
    ("steps-zero", lambda f, t: _generate(f, t, "--steps", "0"), r"argument --steps: expected a whole number of at least 1, got '0'", NOT_LOADED),
    ("motion-strength-nan", lambda f, t: _generate(f, t, "--motion-strength", "nan"), r"argument --motion-strength: expected a finite number >= 0, got 'nan'", NOT_LOADED),
    ("motion-start-above-1", lambda f, t: _generate(f, t, "--motion-start", "1.5"), r"argument --motion-start: expected a fraction .* from 0 to 1, got '1.5'", NOT_LOADED),
    ("motion-window-reversed", lambda f, t: _generate(f, t, "--motion-start", "0.8", "--motion-end", "0.2"), r"--motion-start 0.8 is after --motion-end 0.2", NOT_LOADED),
    ("prefix-of-frames-dir", lambda f, t: _generate(f, t, "--frames", "50"), r"unrecognized arguments: --frames 50", NOT_LOADED),
    ("device-unknown", lambda f, t: _generate(f, t, "--device", "gpu0"), r"--device gpu0: expected cpu, cuda or cuda:N", NOT_LOADED),
    ("end-frame-past-frames", lambda f, t: _generate(f, t, trajectory=_trajectory(t / "late.json", end_frame=20)), r"track 0, field 'end_frame': 20 must be < num_frames \(9\)", NOT_LOADED),
    ("canvas-1e30", lambda f, t: _generate(f, t, trajectory=_trajectory(t / "huge.json", width=1e30, height=1e30)), r"huge\.json: width: expected a canvas of at most 16384 pixels", NOT_LOADED),
    ("json-error-names-file", lambda f, t: _generate(f, t, trajectory=_write(t / "broken.json", b'{"version": 1,')), r"broken\.json: the trajectory is not valid JSON", NOT_LOADED),
    ("txt-random-bytes", lambda f, t: _generate(f, t, trajectory=_write(t / "noise.txt", np.random.default_rng(0).bytes(1 << 20))), r"noise\.txt is not a text file .* expected trajectory JSON .* or an official \.txt", NOT_LOADED),
    ("embeds-empty", lambda f, t: _generate(f, t, prompt_embeds=_write(t / "empty.safetensors", b"")), r"--prompt-embeds: .*empty\.safetensors is empty \(0 bytes\)", NOT_LOADED),
    ("embeds-truncated", lambda f, t: _generate(f, t, prompt_embeds=_truncated_safetensors(t / "cut.safetensors")), r"--prompt-embeds: .*cut\.safetensors is not a readable safetensors file: truncated .* Re-download", NOT_LOADED),
    ("embeds-truncated-zip", lambda f, t: _generate(f, t, prompt_embeds=_truncated_zip(t / "cut.pt")), r"--prompt-embeds: .*cut\.pt is a torch zip checkpoint with its end missing \(truncated\)", NOT_LOADED),
    ("embeds-lfs-pointer", lambda f, t: _generate(f, t, prompt_embeds=_lfs_pointer(t / "lfs.safetensors")), r"--prompt-embeds: .*lfs\.safetensors is not a model checkpoint.*Git LFS pointer", NOT_LOADED),
    ("embeds-pickle", lambda f, t: _generate(f, t, prompt_embeds=_evil_pickle(t / "evil.pt")), r"--prompt-embeds: .*evil\.pt contains pickled Python objects other than tensors \(found \w+\.getcwd\), so it was NOT opened", NOT_LOADED),
    ("embeds-no-key", lambda f, t: _generate(f, t, prompt_embeds=_write_tensors(t / "other.safetensors", {"x": torch.zeros(1)})), r"--prompt-embeds .*other\.safetensors: expected a tensor named 'prompt_embeds' \[1, L, D\], found \['x'\]", NOT_LOADED),
    ("embeds-wrong-shape", lambda f, t: _generate(f, t, prompt_embeds=_write_tensors(t / "flat.safetensors", {"prompt_embeds": torch.zeros(16, 32)})), r"expected 'prompt_embeds' as a float tensor \[1, L, D\], got torch.float32 \[16, 32\]", NOT_LOADED),
    ("t5-folder-pickle", lambda f, t: _generate(f, t, "--prompt", "a cat", prompt_embeds=None, t5=_t5_with_pickle(t / "t5")), r"--t5: .*t5 contains pickled Python objects other than tensors \(found \w+\.getcwd\)", NOT_LOADED),
    ("vae-empty", lambda f, t: _generate(f, t, vae=_write(t / "vae.safetensors", b"")), r"--vae: .*vae\.safetensors is empty \(0 bytes\).*download it again", NOT_LOADED),
    ("vae-lfs-pointer", lambda f, t: _generate(f, t, vae=_lfs_pointer(t / "3d-vae.pt")), r"--vae: .*3d-vae\.pt is not a model checkpoint.*Git LFS pointer.*git lfs pull", NOT_LOADED),
    ("vae-truncated", lambda f, t: _generate(f, t, vae=_truncated_safetensors(t / "vae.safetensors")), r"--vae: .*vae\.safetensors is not a readable safetensors file: truncated", NOT_LOADED),
    ("vae-pickle", lambda f, t: _generate(f, t, vae=_evil_pickle(t / "3d-vae.pt")), r"--vae: .*3d-vae\.pt contains pickled Python objects other than tensors \(found \w+\.getcwd\)", False),
    ("vae-config-not-json", lambda f, t: _generate(f, t, vae=_vae_config(f, t / "vae", b'{"in_channels": 3,')), r"--vae: .*vae/config\.json is not valid JSON \(Expecting property name enclosed in double quotes at line 1, column 19\): expected the diffusers AutoencoderKLCogVideoX config, a JSON object\. Re-download config\.json", NOT_LOADED),
    ("demo-fps-zero", lambda f, t: ["demo", "--out", str(t / "out"), "--fps", "0"], r"argument --fps: expected a whole number of at least 1, got '0'", NOT_LOADED),
    ("demo-models-missing", lambda f, t: ["demo", "--out", str(t / "out"), "--models", str(t / "nowhere")], r"--models .*nowhere: no such folder; expected the trained tiny Tora's folder .* check the path", NOT_LOADED),
    ("demo-cfg-unused", lambda f, t: ["demo", "--out", str(t / "out"), "--cfg", "3"], r"--cfg 3\.0: the trained tiny Tora has no text conditioning.*leave --cfg out", NOT_LOADED),
]  # fmt: skip


def _write_tensors(path: Path, tensors: dict) -> Path:
    save_file(tensors, path)
    return path


@pytest.fixture
def no_model_loads(monkeypatch):
    """Loading any model fails the test: for inputs that must be refused before."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(checkpoints, "load_transformer", refuse)
    monkeypatch.setattr(vae_loading, "load_vae", refuse)


@pytest.mark.parametrize(
    ("build", "expected", "before_models"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused_cleanly(
    files, tmp_path, monkeypatch, request, caplog, capsys, build, expected, before_models
):
    argv = build(files, tmp_path)
    monkeypatch.chdir(tmp_path)  # a mis-parsed option would write into the working folder
    before = set(tmp_path.iterdir())
    if before_models:
        request.getfixturevalue("no_model_loads")
    with caplog.at_level(logging.ERROR, logger="tora_model"):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse refuses on its own
            code = exit_.code
    message = caplog.text + capsys.readouterr().err
    assert code == 2, message
    assert re.search(expected, message, re.S), message
    assert "weights_only" not in message and "Traceback" not in message
    assert set(tmp_path.iterdir()) == before, "the refused run left files behind"


def test_cuda_device_without_a_gpu_is_refused(files, tmp_path, caplog, no_model_loads):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    with caplog.at_level(logging.ERROR, logger="tora_model"):
        assert main(_generate(files, tmp_path, "--device", "cuda")) == 2
    assert re.search(
        r"--device cuda: torch \S+ sees no CUDA GPU on this machine; use --device cpu", caplog.text
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["generate", "--fps", "0"], "argument --fps: expected a whole number of at least 1, got '0'"),
        (["demo", "--models", "/nonexistent/tiny"], "--models /nonexistent/tiny: no such folder"),
    ],
)
def test_a_user_sees_one_message_and_no_traceback(tmp_path, argv, expected):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tora_model",
            *argv,
            *(["--out", str(tmp_path / "o")] if argv[0] == "demo" else []),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2, result.stderr
    assert not (tmp_path / "o").exists()


def test_every_parser_refuses_abbreviations_and_help_shows_defaults():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0])))
    for name, sub in subparsers.choices.items():
        assert sub.allow_abbrev is False, name
    assert parser.allow_abbrev is False
    help_text = subparsers.choices["generate"].format_help()
    assert (
        "(default: 50)" in help_text
        and "(default: 8)" in help_text
        and "(default: dpmpp_2m_sde)" in help_text
    )


def test_quiet_works_before_and_after_the_subcommand():
    parser = build_parser()
    assert parser.parse_args(["-q", "demo"]).quiet is True
    assert parser.parse_args(["demo", "-q"]).quiet is True
    assert parser.parse_args(["demo"]).quiet is False


def test_outputs_appear_only_complete(tmp_path, monkeypatch):
    """Frames and videos are written under a temporary name and moved into place; a failed write leaves nothing."""
    imageio = pytest.importorskip("imageio.v2")
    frames = np.full((3, 16, 16, 3), 200, np.uint8)
    written = write_frames(frames, tmp_path / "frames")
    assert [p.name for p in written] == ["frame_0000.png", "frame_0001.png", "frame_0002.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # no staging folder left

    def disk_full(path, *args, **kwargs):
        Path(path).write_bytes(b"GIF89a")  # a partial file, then the failure
        raise OSError("No space left on device")

    monkeypatch.setattr(imageio, "mimsave", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_video(frames, tmp_path / "video.gif", fps=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]
