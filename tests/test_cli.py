"""`python -m tora_model`: the tiny demo end to end in a subprocess, `generate` on tiny model files, and its errors."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tests.bundled_tiny import BUNDLED_TINY, needs_bundled_tiny
from tora_model.cli import main
from tora_model.cli_output import to_uint8
from tora_model.config import ToraConfig
from tora_model.motion_guidance import motion_from_flow, motion_from_trajectory, trajectory_flow_rgb
from tora_model.pipeline import decode_latents, encode_image_latents, sample_latents
from tora_model.st_dit import STDiTTransformer, save_st_transformer
from tora_model.text import T5TextEncoder
from tora_model.tiny.demo_models import (
    DEMO_PROMPT,
    build_demo_models,
    demo_trajectory,
    save_demo_models,
    write_demo_t5,
)
from tora_model.trajectory import Track, Trajectory
from tora_model.vae_loading import load_vae

REPO = Path(__file__).resolve().parents[1]
SIZE = ["--width", "32", "--height", "32", "--num-frames", "9", "--steps", "2"]


def _png_frames(folder: Path) -> np.ndarray:
    paths = sorted(folder.glob("*.png"))
    return np.stack([cv2.imread(str(p), cv2.IMREAD_COLOR)[..., ::-1] for p in paths])  # [F, H, W, 3] RGB


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """Tiny random transformer (.safetensors), VAE (diffusers folder), prompt embeddings and a trajectory file."""
    folder = tmp_path_factory.mktemp("tiny_models")
    model, vae = build_demo_models(seed=4)
    transformer, vae_folder = save_demo_models(model, vae, folder)
    embeds = folder / "prompt.safetensors"
    save_file({"prompt_embeds": torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(5))}, embeds)
    trajectory = folder / "trajectory.json"
    trajectory.write_text(demo_trajectory().to_json_string())
    return dict(
        transformer=transformer, vae=vae_folder, embeds=embeds, trajectory=trajectory, models=(model, vae)
    )


def _generate_args(files: dict, **overrides) -> list[str]:
    flags = {
        "--transformer": files["transformer"],
        "--vae": files["vae"],
        "--prompt-embeds": files["embeds"],
        "--trajectory": files["trajectory"],
        **overrides,
    }
    args = ["generate", *SIZE, "--seed", "7"]
    for flag, value in flags.items():
        if value is not None:
            args += [flag, str(value)]
    return args


def test_demo_runs_end_to_end_and_writes_valid_outputs(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "tora_model", "demo", "--weights", "random", "--out", str(out), *SIZE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "RANDOM weights" in result.stderr and "noise" in result.stderr
    assert "tiny random T5" in result.stderr
    video, flow = _png_frames(out / "video"), _png_frames(out / "flow")
    assert video.shape == (9, 32, 32, 3) and flow.shape == (9, 32, 32, 3)
    assert video.std() > 1.0  # random weights: noise, but not a constant image
    assert (flow[0] == 255).all() and (flow[1:] != 255).any()  # frame 0 carries no motion; later frames do
    if importlib.util.find_spec("imageio") is not None:
        import imageio.v2 as imageio

        suffix = ".mp4" if importlib.util.find_spec("imageio_ffmpeg") is not None else ".gif"
        assert len(imageio.mimread(out / f"video{suffix}")) == 9


def test_generate_writes_the_pipeline_result(model_files, tmp_path):
    frames_dir = tmp_path / "frames"
    assert main(_generate_args(model_files, **{"--frames-dir": frames_dir})) == 0
    written = _png_frames(frames_dir)

    # The same run through the library: one CPU generator, flow latents drawn before the initial noise.
    model, vae = model_files["models"]
    generator = torch.Generator().manual_seed(7)
    motion, _ = motion_from_trajectory(
        model, vae, demo_trajectory(), num_frames=9, width=32, height=32, generator=generator
    )
    text = torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(5))
    latents = sample_latents(
        model,
        text_embeds=text,
        width=32,
        height=32,
        num_frames=9,
        steps=2,
        generator=generator,
        motion=motion,
    )
    np.testing.assert_array_equal(written, to_uint8(decode_latents(vae, latents)))


def test_generate_encodes_the_prompt_with_t5_and_zero_uncond(model_files, tmp_path):
    t5 = write_demo_t5(tmp_path / "t5", text_dim=32, seed=0)
    frames_dir = tmp_path / "frames"
    args = _generate_args(
        model_files, **{"--prompt-embeds": None, "--trajectory": None, "--frames-dir": frames_dir}
    )
    assert main([*args, "--t5", str(t5), "--prompt", DEMO_PROMPT]) == 0

    model, vae = model_files["models"]
    text = T5TextEncoder.load(t5, dtype=torch.float32).encode([DEMO_PROMPT])  # [1, 226, 32]
    latents = sample_latents(model, text_embeds=text, width=32, height=32, num_frames=9, steps=2, seed=7)
    np.testing.assert_array_equal(_png_frames(frames_dir), to_uint8(decode_latents(vae, latents)))


def test_generate_i2v_encodes_the_start_image_first(tmp_path):
    model, vae = build_demo_models(seed=8, i2v=True)
    transformer, vae_folder = save_demo_models(model, vae, tmp_path)
    image = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "start.png"), image[..., ::-1])
    embeds = tmp_path / "prompt.safetensors"
    save_file({"prompt_embeds": torch.ones(1, 16, 32)}, embeds)
    files = dict(transformer=transformer, vae=vae_folder, embeds=embeds, trajectory=None)
    frames_dir = tmp_path / "frames"
    assert main(_generate_args(files, **{"--image": tmp_path / "start.png", "--frames-dir": frames_dir})) == 0

    generator = torch.Generator().manual_seed(7)
    size = dict(width=32, height=32, num_frames=9)
    image_latents = encode_image_latents(vae, image.astype(np.float32) / 255, generator=generator, **size)
    latents = sample_latents(
        model,
        text_embeds=torch.ones(1, 16, 32),
        steps=2,
        generator=generator,
        image_latents=image_latents,
        **size,
    )
    np.testing.assert_array_equal(_png_frames(frames_dir), to_uint8(decode_latents(vae, latents)))


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (
            "--transformer",
            r"--transformer .*missing\.pt: no such file or folder .*Alibaba-Research-Intelligence",
        ),
        ("--vae", r"--vae .*missing\.pt: no such file or folder .*3d-vae\.pt"),
        ("--trajectory", r"--trajectory .*missing\.pt: no such file"),
        ("--image", r"--image .*missing\.pt: no such file"),
        ("--t5", r"--t5 .*missing\.pt: no such file or folder .*t5-v1_1-xxl"),
        ("--prompt-embeds", r"--prompt-embeds .*missing\.pt: no such file or folder .*save_file"),
    ],
)
def test_missing_files_name_flag_path_and_source(model_files, tmp_path, caplog, flag, expected):
    missing = tmp_path / "missing.pt"
    overrides = {flag: missing, "--frames-dir": tmp_path / "frames"}
    if flag == "--t5":
        overrides.update({"--prompt-embeds": None, "--prompt": "a cat"})
    with caplog.at_level(logging.ERROR, logger="tora_model"):
        assert main(_generate_args(model_files, **overrides)) == 2
    assert re.search(expected, caplog.text), caplog.text
    assert not (tmp_path / "frames").exists()  # refused before any work


def test_output_errors_are_clear(model_files, tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="tora_model"):
        assert main(_generate_args(model_files)) == 2
        assert "give --out VIDEO.mp4 and/or --frames-dir DIR" in caplog.text
        assert main(_generate_args(model_files, **{"--out": tmp_path / "video.avi"})) == 2
        assert "expected a .mp4 or .gif" in caplog.text
        assert main(_generate_args(model_files, **{"--num-frames": "13", "--frames-dir": tmp_path})) == 2
        assert "8k+1" in caplog.text
        unused = {
            "--negative-prompt": "blurry",
            "--frames-dir": tmp_path,
        }  # with --prompt-embeds: no T5 to use
        assert main(_generate_args(model_files, **unused)) == 2
        assert "--negative-prompt would have no effect" in caplog.text
        no_motion = {"--trajectory": None, "--motion-end": "0.3", "--frames-dir": tmp_path}
        assert main(_generate_args(model_files, **no_motion)) == 2
        assert "motion settings need --trajectory" in caplog.text
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        with caplog.at_level(logging.ERROR, logger="tora_model"):
            assert main(_generate_args(model_files, **{"--out": tmp_path / "video.mp4"})) == 2
        assert "imageio-ffmpeg" in caplog.text and "--frames-dir DIR" in caplog.text


@pytest.mark.parametrize("command", ["train", "evaluate", "calibrate-cache"])
def test_tiny_commands_forward_every_argument(monkeypatch, command):
    """`python -m tora_model train …` is `python -m tora_model.tiny.train …`: the rest of the line, --help too."""
    module = importlib.import_module(f"tora_model.tiny.{command.replace('-', '_')}")
    received = []
    monkeypatch.setattr(module, "main", received.append)
    assert main([command, "vae", "--seed", "0", "-q", "--help"]) == 0
    assert received == [["vae", "--seed", "0", "-q", "--help"]]


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_tiny_command_help_is_the_modules_own(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m tora_model.tiny.{command} ")


def test_tiny_command_errors_are_one_line(caplog):
    with caplog.at_level(logging.ERROR, logger="tora_model"):
        assert main(["train", "vae", "--families", "spirals", "--out", "unused"]) == 2
    assert "path families ['spirals'] are not known" in caplog.text


@pytest.mark.parametrize("rate", ["0", "-0.001", "nan"])
@pytest.mark.parametrize("option", ["--lr", "--flow-sigma"])
def test_train_refuses_a_rate_or_sigma_that_is_not_positive(capsys, rate, option):
    """A zero rate or σ must not fall back to the default unnoticed; nan or a negative value would not train."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "denoiser", option, rate, "--out", "unused"])
    assert exit_info.value.code == 2
    assert f"argument {option}: expected a finite number > 0, got '{rate}'" in capsys.readouterr().err


@pytest.mark.parametrize("weight", ["-1", "nan"])
@pytest.mark.parametrize("stage, option", [("vae", "--ghost-weight"), ("denoiser", "--object-weight")])
def test_train_refuses_a_loss_weight_below_zero(capsys, weight, stage, option):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", stage, option, weight, "--out", "unused"])
    assert exit_info.value.code == 2
    assert f"argument {option}: expected a finite number >= 0" in capsys.readouterr().err


@needs_bundled_tiny
def test_generate_spreads_the_flow_with_the_sigma_the_model_file_names(tmp_path):
    """An st_dit file whose header says flow_sigma = 3 gets its trajectory spread with σ = 3, as the library does;
    the release's σ = 10 would give another video. Random (non-zero) weights, the bundled ×4 VAE, I2V, 2 steps."""
    config = ToraConfig.preset("tiny_st").replace(flow_sigma=3.0)
    model = STDiTTransformer(config)
    with torch.no_grad():
        for i, parameter in enumerate(model.parameters()):
            parameter.copy_(0.05 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(i)))
    model.eval()
    save_st_transformer(model, tmp_path / "transformer.safetensors")
    vae = load_vae(BUNDLED_TINY / "vae")
    image = np.random.default_rng(3).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "start.png"), image[..., ::-1])
    save_file({"prompt_embeds": torch.zeros(1, 1, 16)}, tmp_path / "prompt.safetensors")
    trajectory = Trajectory(96, 64, (Track(points=((20.0, 20.0), (60.0, 40.0)), interpolation="linear"),))
    (tmp_path / "path.json").write_text(trajectory.to_json_string())
    files = dict(
        transformer=tmp_path / "transformer.safetensors",
        vae=BUNDLED_TINY / "vae",
        embeds=tmp_path / "prompt.safetensors",
        trajectory=tmp_path / "path.json",
    )
    size = dict(width=96, height=64, num_frames=9)
    frames_dir = tmp_path / "frames"
    args = _generate_args(
        files, **{"--image": tmp_path / "start.png", "--frames-dir": frames_dir, "--cfg": "1"}
    )
    assert main([*args, "--width", "96", "--height", "64"]) == 0

    def library_run(sigma: float) -> np.ndarray:
        generator = torch.Generator().manual_seed(7)
        image_latents = encode_image_latents(vae, image.astype(np.float32) / 255, generator=generator, **size)
        flow = trajectory_flow_rgb(trajectory, sigma=sigma, **size)
        motion = motion_from_flow(model, vae, flow, generator=generator)
        latents = sample_latents(
            model,
            text_embeds=torch.zeros(1, 1, 16),
            steps=2,
            cfg=1.0,
            generator=generator,
            image_latents=image_latents,
            motion=motion,
            **size,
        )
        return to_uint8(decode_latents(vae, latents))

    written = _png_frames(frames_dir)
    np.testing.assert_array_equal(written, library_run(3.0))
    assert (written != library_run(10.0)).any()
