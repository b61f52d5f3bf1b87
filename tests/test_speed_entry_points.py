"""Speed options from Tora Speed Options → Tora Sampler and from `python -m tora_model generate` flags."""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_cli import _generate_args, model_files  # noqa: F401 (fixture)
from tests.test_nodes_e2e import conditioning, env, load, nodes, sample  # noqa: F401 (fixtures)
from tora_model.cli import build_parser, main
from tora_model.cli_speed import speed_from_args
from tora_model.errors import ConfigError
from tora_model.simulated_gpu.accounting import DeviceMemory
from tora_model.simulated_gpu.fake_cuda import simulated_cuda
from tora_model.step_cache import FIT_FILE


def test_speed_node_feeds_the_sampler_and_leaves_the_model_alone(env, conditioning):  # noqa: F811
    model, _ = load(env)
    (off,) = nodes(env)["ToraSpeedOptions"].options("off", 0.0, "batched", 0.0, False)
    reference = sample(env, model, conditioning)["samples"]
    torch.testing.assert_close(
        sample(env, model, conditioning, speed=off)["samples"], reference, rtol=0, atol=0
    )
    (sequential,) = nodes(env)["ToraSpeedOptions"].options("custom", 1e6, "sequential", 0.0, False)
    state = {k: v.data_ptr() for k, v in model.transformer.state_dict().items()}
    out = sample(env, model, conditioning, speed=sequential)["samples"]  # 2 steps: both forced, both computed
    assert (out - reference).abs().max() <= 1e-5 * reference.abs().max()
    assert {k: v.data_ptr() for k, v in model.transformer.state_dict().items()} == state
    with pytest.raises(env.tora_model.errors.ConfigError, match="custom.*needs an explicit threshold"):
        nodes(env)["ToraSpeedOptions"].options("custom", 0.0, "batched", 0.0, False)


def _parse(files, *flags):
    return build_parser().parse_args(_generate_args(files, **{"--out": "x.gif"}) + list(flags))


def test_cli_flags_make_speed_options_and_refuse_contradictions(model_files, tmp_path):  # noqa: F811
    assert speed_from_args(_parse(model_files)).plain_forward
    options = speed_from_args(_parse(model_files, "--cache", "fast", "--cfg-mode", "sequential", "--compile"))
    assert (options.threshold, options.cfg_mode, options.compile) == (0.9, "sequential", True)
    assert speed_from_args(_parse(model_files, "--cache-threshold", "0.3")).threshold == 0.3
    with pytest.raises(ConfigError, match="--cache-calibrate records an uncached run"):
        speed_from_args(_parse(model_files, "--cache", "fast", "--cache-calibrate", "fit.json"))
    with pytest.raises(ConfigError, match="--cache-fit has no effect"):
        speed_from_args(_parse(model_files, "--cache-fit", "fit.json"))


def test_cli_calibration_run_writes_a_fit_the_cache_then_reads(model_files, tmp_path):  # noqa: F811
    fit_path = tmp_path / FIT_FILE
    args = _generate_args(model_files, **{"--frames-dir": tmp_path / "frames", "--steps": "6"})
    assert main([*args, "--cache-calibrate", str(fit_path)]) == 0
    written = json.loads(fit_path.read_text())
    assert written["pairs"] == 5 and len(written["coefficients"]) == 5
    assert main([*args, "--cache", "balanced", "--cache-fit", str(fit_path)]) == 0


def test_cfg_options_stay_free_of_host_syncs_on_the_simulated_gpu(env, conditioning, monkeypatch):  # noqa: F811
    """The CFG options add no host read to the step loop (the step cache reads one per step by design)."""
    glue = env.nodes.comfy_glue
    monkeypatch.setattr(glue, "compute_device", lambda: torch.device("cuda", 0))
    monkeypatch.setattr(glue, "supports_bf16", lambda device: True)
    model, _ = load(env, precision="bf16")
    pipeline = env.tora_model.pipeline
    real_sample = pipeline.sample
    # 2 steps, dynamic CFG 6: w = 5.41 (sequential rows), then 3.71 (within 3 of 1: the cond row only)
    speed = env.tora_model.speed.SpeedOptions(cfg_mode="sequential", cfg_skip_tolerance=3.0)
    with simulated_cuda(), DeviceMemory() as memory:

        def sample_in_hot_loop(*args, **kwargs):
            with memory.stage("denoising steps", hot=True):
                return real_sample(*args, **kwargs)

        monkeypatch.setattr(pipeline, "sample", sample_in_hot_loop)
        with memory.stage("sampler node"):
            sample(env, model, conditioning, speed=speed)
    steps = next(r for r in memory.records if r.name == "denoising steps")
    assert steps.flops > 0 and steps.device_to_host_bytes == 0
