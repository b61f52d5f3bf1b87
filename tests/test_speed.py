"""Speed options (tora_model/speed.py, step_cache.py, compiled_blocks.py, sampling CFG modes) at the tiny presets.

The defaults are the exact run (bit for bit); the runner path with nothing enabled is the model's forward split in
three; the cache always computes the first, last and motion-switch steps, reads one host scalar per decided call
and writes nothing on the model; sequential CFG matches batched to float32 rounding; compiled blocks fall back with
one log line and run through fp8 storage and block swap.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tests.weights import randomise
from tora_model import compiled_blocks
from tora_model.calibrate_cache import Recorder, fit
from tora_model.config import ToraConfig
from tora_model.errors import ConfigError
from tora_model.motion_guidance import MotionGuidance
from tora_model.offload import enable_block_swap, store_block_linears
from tora_model.pipeline import sample_latents
from tora_model.speed import NetworkRunner, SpeedOptions
from tora_model.st_dit import STDiTTransformer
from tora_model.step_cache import CacheFit, find_fit, forced_steps
from tora_model.tiny.train import DEFAULT_OUT
from tora_model.transformer import build_transformer

SIZE = dict(width=96, height=64, num_frames=9)  # latents [1, 3, 16, 64/c, 96/c], c = the VAE compression
STEPS = 8


def tiny(preset: str = "tiny") -> torch.nn.Module:
    config = ToraConfig.preset(preset)
    model = STDiTTransformer(config).eval() if preset == "tiny_st" else build_transformer(config)
    randomise(model, seed=0)
    return model


def text(model, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 16, model.config.text_dim, generator=torch.Generator().manual_seed(seed))


def run(model, steps: int = STEPS, **kwargs) -> torch.Tensor:
    kwargs.setdefault("text_embeds", text(model))
    kwargs.setdefault("uncond_embeds", text(model, 1))
    if model.config.is_i2v:
        kwargs.setdefault(
            "image_latents", torch.randn(latent_shape(model), generator=torch.Generator().manual_seed(2))
        )
    return sample_latents(model, steps=steps, seed=5, **SIZE, **kwargs)


def latent_shape(model) -> tuple[int, ...]:
    c = model.config.vae_spatial_compression
    return (1, 3, 16, SIZE["height"] // c, SIZE["width"] // c)


def motion(model, start: float = 0.0, end: float = 1.0) -> MotionGuidance:
    latents = torch.randn(latent_shape(model), generator=torch.Generator().manual_seed(3))
    features = tuple(model.extract_motion(latents))
    return MotionGuidance(features=features, num_frames=9, height=64, width=96, start=start, end=end)


@pytest.fixture(scope="module")
def t2v():
    return tiny("tiny")


def test_default_options_are_the_exact_run(t2v):
    reference = run(t2v)
    torch.testing.assert_close(run(t2v, speed=SpeedOptions()), reference, rtol=0, atol=0)
    # the runner path with nothing enabled (and a zero threshold: every call computed) is the forward in three parts
    torch.testing.assert_close(
        run(t2v, speed=NetworkRunner(SpeedOptions(), STEPS)), reference, rtol=0, atol=0
    )
    zero = SpeedOptions(cache="custom", cache_threshold=0.0)
    torch.testing.assert_close(run(t2v, speed=zero), reference, rtol=0, atol=0)


@pytest.mark.parametrize("preset", ["tiny", "tiny_st"])
def test_cache_computes_first_last_and_motion_switch_steps(preset):
    model = tiny(preset)
    guidance = motion(model, start=0.3, end=0.6)  # active at steps 3..6 of 10 (fraction i/10)
    assert forced_steps(10, lambda i: guidance.active_at(i, 10)) == {0, 3, 7, 9}
    runner = NetworkRunner(SpeedOptions(cache="custom", cache_threshold=1e9), 10, guidance)
    out = run(model, steps=10, motion=guidance, speed=runner, cfg=1.0, dynamic_cfg=False)
    computed = [i for i, _, done in runner.cache.decisions if done]
    assert computed == [0, 3, 7, 9] and runner.evaluations == 4 and runner.calls == 10
    assert torch.isfinite(out).all()


def test_cache_reads_one_host_scalar_per_decided_call_and_writes_nothing_on_the_model(t2v):
    class ScalarReads(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                ScalarReads.count += 1
            return func(*args, **(kwargs or {}))

    state = {k: v.data_ptr() for k, v in t2v.state_dict().items()}
    attributes = dict(vars(t2v))
    import tora_model.pipeline as pipeline

    real_sample = pipeline.sample

    def counted(*args, **kwargs):
        with ScalarReads():
            return real_sample(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline, "sample", counted)
        run(t2v)  # default: no host read inside the loop
        assert ScalarReads.count == 0
        runner = NetworkRunner(SpeedOptions(cache="fast"), STEPS)
        run(t2v, speed=runner)
    assert ScalarReads.count == STEPS - 2  # every step but the forced first and last
    assert {k: v.data_ptr() for k, v in t2v.state_dict().items()} == state and dict(vars(t2v)) == attributes


def test_sequential_cfg_matches_batched_and_skipping_cfg_is_the_cond_only_run(t2v):
    reference = run(t2v, cfg=6.0, dynamic_cfg=False)
    sequential = run(t2v, cfg=6.0, dynamic_cfg=False, speed=SpeedOptions(cfg_mode="sequential"))
    assert (sequential - reference).abs().max() <= 1e-5 * reference.abs().max()
    exact = run(t2v, cfg=6.0, dynamic_cfg=False, speed=SpeedOptions(cfg_skip_tolerance=0.0))  # no w is 1
    torch.testing.assert_close(exact, reference, rtol=0, atol=0)
    skipped = run(t2v, cfg=1.5, dynamic_cfg=False, speed=SpeedOptions(cfg_skip_tolerance=0.5))  # every step
    torch.testing.assert_close(skipped, run(t2v, cfg=1.0, dynamic_cfg=False), rtol=0, atol=0)


def test_sequential_cfg_with_the_cache_keeps_one_state_per_row_group(t2v):
    runner = NetworkRunner(SpeedOptions(cache="custom", cache_threshold=1e9, cfg_mode="sequential"), STEPS)
    run(t2v, speed=runner)
    assert runner.calls == 2 * STEPS and runner.evaluations == 4  # first and last step, uncond and cond
    assert {b for _, b, _ in runner.cache.decisions} == {"uncond", "cond"}


def test_options_are_validated():
    with pytest.raises(ConfigError, match="cache must be one of"):
        SpeedOptions(cache="turbo")
    with pytest.raises(ConfigError, match="custom.*needs an explicit threshold"):
        SpeedOptions(cache="custom")
    with pytest.raises(ConfigError, match="cfg_mode"):
        SpeedOptions(cfg_mode="parallel")
    with pytest.raises(ConfigError, match="cfg_skip_tolerance"):
        SpeedOptions(cfg_skip_tolerance=-1.0)


def test_calibration_fits_and_the_shipped_fit_loads(t2v, tmp_path):
    recorder = Recorder()
    run(t2v, steps=12, speed=recorder)
    assert len(recorder.pairs) == 11 and all(a >= 0 and b >= 0 for a, b in recorder.pairs)
    result, quality = fit(recorder.pairs, degree=2)
    result.save(tmp_path / "step_cache.json", **quality)
    assert find_fit(tmp_path / "transformer.safetensors").coefficients == result.coefficients
    shipped = find_fit(DEFAULT_OUT / "transformer.safetensors")
    assert shipped.source.endswith("step_cache.json") and len(shipped.coefficients) == 5
    assert CacheFit().rescale(0.25) == 0.25
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(
        ConfigError, match=r"bad\.json holds a JSON array \(list\): expected a step-cache fit"
    ):
        CacheFit.load(tmp_path / "bad.json")


def test_compile_unavailable_falls_back_with_one_log_line(t2v, monkeypatch, caplog):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(compiled_blocks, "_AVAILABLE", {})
    monkeypatch.setattr(compiled_blocks.torch, "compile", no_compiler)
    with caplog.at_level(logging.WARNING, logger="tora_model.compiled_blocks"):
        runners = [NetworkRunner(SpeedOptions(compile=True), STEPS) for _ in range(2)]
    assert all(r.run is None for r in runners)
    assert len(caplog.records) == 1 and "no C++ compiler found" in caplog.records[0].getMessage()


def test_compiled_blocks_run_through_fp8_storage_and_block_swap(monkeypatch):
    """Dynamo's graph capture ('eager' backend: no C++ build in CI) over UpcastLinear and block-swap hooks."""
    model = tiny("tiny").to(torch.bfloat16)
    store_block_linears(model.transformer_blocks, torch.float8_e4m3fn)
    reference = run(model, steps=3)
    swap = enable_block_swap(model.transformer_blocks, 1, torch.device("cpu"), torch.device("cpu"))
    try:
        options = SpeedOptions(compile=True, compile_backend="eager")
        compiled = run(model, steps=3, speed=options)
    finally:
        swap.close()
    torch.testing.assert_close(compiled, reference, rtol=0, atol=0)
