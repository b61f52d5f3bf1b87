"""Sampling loop against diffusers' CogVideoX schedulers (same model outputs, same noise) and an analytic model."""

import math

import pytest
import torch

from tora_model.errors import ConfigError, GenerationInterrupted
from tora_model.sampling import StepInfo, sample
from tora_model.schedule import (
    DIFFUSERS_SCHEDULER_CONFIG,
    full_sqrt_alphas_cumprod,
    make_schedule,
    trailing_timesteps,
)

schedulers = pytest.importorskip("diffusers.schedulers", reason="diffusers is the test-only reference")

SHAPE = (1, 3, 4, 4, 6)  # [B, T, C, h, w]
CONFIG = DIFFUSERS_SCHEDULER_CONFIG


def test_full_table_equals_diffusers_scheduler():
    scheduler = schedulers.CogVideoXDPMScheduler(**CONFIG)
    ours = full_sqrt_alphas_cumprod(torch.float64)
    assert torch.allclose(ours, scheduler.alphas_cumprod.sqrt(), rtol=0, atol=1e-14)
    for steps in (10, 25, 50):
        scheduler.set_timesteps(steps)
        assert trailing_timesteps(steps) == scheduler.timesteps.tolist()


def model_outputs(steps, batch=1, seed=1):
    """A fixed random v per step (the 'network'), independent of x so both loops see identical outputs."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn((batch * SHAPE[0], *SHAPE[1:]), generator=gen) for _ in range(steps)]


def replay(outputs):
    """model_fn returning the stored v of the current step."""

    def model_fn(x, timestep, context, step):
        assert x.dtype == torch.float32 and timestep.dtype == torch.int64
        assert timestep.tolist() == [step.timestep] * x.shape[0]
        return outputs[step.index]

    return model_fn


def diffusers_loop(scheduler, noise, outputs, steps, seed, weights=None):
    """The diffusers pipeline's loop: CFG on v ([uncond, cond]), then scheduler.step. Returns x and every x0."""
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    x, old_x0, x0s = noise.clone(), None, []
    for i, t in enumerate(scheduler.timesteps):
        v = outputs[i]
        if weights is not None:
            v_uncond, v_cond = v.chunk(2)
            v = v_uncond + weights[i] * (v_cond - v_uncond)
        if isinstance(scheduler, schedulers.CogVideoXDPMScheduler):
            back = scheduler.timesteps[i - 1] if i > 0 else None
            x, old_x0 = scheduler.step(v, old_x0, t, back, x, generator=gen, return_dict=False)
        else:
            x, old_x0 = scheduler.step(v, t, x, return_dict=False)
        x0s.append(old_x0)
    return x, x0s


def run_ours(noise, outputs, steps, seed, **kwargs):
    x0s = []
    x = sample(
        replay(outputs),
        noise,
        steps=steps,
        generator=torch.Generator().manual_seed(seed),
        callback=lambda i, n, x0: x0s.append(x0),
        **kwargs,
    )
    return x, x0s


@pytest.mark.parametrize("steps", [50, 10])
def test_dpm_equals_diffusers_with_the_full_table(steps):
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    outputs = model_outputs(steps)
    cond = torch.zeros(1, 5, 8)
    ours, our_x0s = run_ours(
        noise, outputs, steps, 7, cond=cond, cfg_scale=1.0, dynamic_cfg=False, numerics="diffusers"
    )
    ref, ref_x0s = diffusers_loop(schedulers.CogVideoXDPMScheduler(**CONFIG), noise, outputs, steps, 7)
    for mine, theirs in zip(our_x0s, ref_x0s, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_dpm_with_dynamic_cfg_equals_diffusers_pipeline():
    steps, scale = 50, 6.0
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    outputs = model_outputs(steps, batch=2, seed=4)
    cond, uncond = torch.ones(1, 5, 8), torch.zeros(1, 5, 8)
    ours, _ = run_ours(
        noise, outputs, steps, 5, cond=cond, uncond=uncond, cfg_scale=scale, numerics="diffusers"
    )
    scheduler = schedulers.CogVideoXDPMScheduler(**CONFIG)
    scheduler.set_timesteps(steps)
    weights = [  # the diffusers Tora pipeline's expression, raw timestep t
        1 + scale * (1 - math.cos(math.pi * ((steps - t) / steps) ** 5.0)) / 2
        for t in scheduler.timesteps.tolist()
    ]
    ref, _ = diffusers_loop(scheduler, noise, outputs, steps, 5, weights)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("cfg_scale", "batch"), [(1.0, 1), (4.5, 2)])
def test_ddim_equals_diffusers(cfg_scale, batch):
    steps = 25
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(8))
    outputs = model_outputs(steps, batch=batch, seed=9)
    cond = torch.ones(1, 5, 8)
    uncond = torch.zeros(1, 5, 8) if batch == 2 else None
    ours, our_x0s = run_ours(
        noise,
        outputs,
        steps,
        0,
        cond=cond,
        uncond=uncond,
        cfg_scale=cfg_scale,
        dynamic_cfg=False,
        sampler="ddim",
        numerics="diffusers",
    )
    weights = [cfg_scale] * steps if batch == 2 else None
    ref, ref_x0s = diffusers_loop(
        schedulers.CogVideoXDDIMScheduler(**CONFIG), noise, outputs, steps, 0, weights
    )
    for mine, theirs in zip(our_x0s, ref_x0s, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=5e-5)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=5e-5)


def sat_tables_in_diffusers(sampler_cls):
    """A diffusers scheduler whose ᾱ at the selected timesteps are SAT's sampler values, fed x0 directly."""
    config = {**CONFIG, "prediction_type": "sample"}
    scheduler = sampler_cls(**config)
    schedule = make_schedule(50, "sat")
    table = scheduler.alphas_cumprod.clone()
    for t, a in zip(schedule.timesteps, schedule.sqrt_alphas[:-1], strict=True):
        table[t] = a**2
    scheduler.alphas_cumprod = table
    return scheduler, schedule


@pytest.mark.parametrize("sampler", ["dpmpp_2m_sde", "ddim"])
def test_sat_numerics_are_diffusers_steps_on_sat_tables(sampler):
    """SAT = the same update on the sampler's rescaled table, with x0 from the denoiser's nearest full-table level."""
    steps = 50
    cls = schedulers.CogVideoXDPMScheduler if sampler == "dpmpp_2m_sde" else schedulers.CogVideoXDDIMScheduler
    scheduler, schedule = sat_tables_in_diffusers(cls)
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(11))
    outputs = model_outputs(steps, seed=12)
    ours, our_x0s = run_ours(
        noise,
        outputs,
        steps,
        13,
        cond=torch.zeros(1, 5, 8),
        cfg_scale=1.0,
        dynamic_cfg=False,
        sampler=sampler,
    )
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(13)
    x, old_x0 = noise.clone(), None
    for i, t in enumerate(scheduler.timesteps):
        s = schedule.x0_sqrt_alphas[i]
        x0 = s * x - math.sqrt(1 - s * s) * outputs[i]
        torch.testing.assert_close(our_x0s[i], x0, rtol=1e-5, atol=2e-5)
        if sampler == "ddim":
            x, old_x0 = scheduler.step(x0, t, x, return_dict=False)
        else:
            back = scheduler.timesteps[i - 1] if i > 0 else None
            x, old_x0 = scheduler.step(x0, old_x0, t, back, x, generator=gen, return_dict=False)
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=2e-5)


def analytic_model(target, calls=None):
    """A perfect v-predictor for clean latents `target` (rows [uncond; cond] when guided: uncond predicts zeros)."""
    table = full_sqrt_alphas_cumprod(torch.float64)

    def model_fn(x, timestep, context, step):
        if calls is not None:
            calls.append(step)
        wanted = torch.cat([torch.zeros_like(target), target]) if step.guided else target
        assert x.shape == wanted.shape and context.shape[0] == x.shape[0]
        s = table[step.timestep].item()
        return ((s * x - wanted) / math.sqrt(1 - s * s)).to(torch.bfloat16)  # network dtype != latents dtype

    return model_fn


@pytest.mark.parametrize("sampler", ["dpmpp_2m_sde", "ddim"])
def test_perfect_model_converges_to_its_target(sampler):
    target = torch.randn(SHAPE, generator=torch.Generator().manual_seed(30))
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(31))
    common = dict(cond=torch.zeros(1, 2, 2), cfg_scale=1.0, dynamic_cfg=False, sampler=sampler)
    gen = torch.Generator().manual_seed(32)
    exact = sample(analytic_model(target), noise, numerics="diffusers", generator=gen, **common)
    torch.testing.assert_close(exact, target, rtol=0, atol=5e-3)  # bf16 v, x0 recovered at every step
    # SAT reads x0 at the nearest level (t - 1 for t <= 219) while this model was built on level t: a small bias.
    sat = sample(analytic_model(target), noise, numerics="sat", generator=gen, **common)
    error = (sat - target).abs()
    assert error.max().item() < 0.03 and error.mean().item() < 0.01
    assert (sat - exact).abs().max().item() > 1e-4  # the two numerics really differ


def test_guidance_weight_applies_to_x0():
    """cond predicts target, uncond predicts 0 ⇒ x0 = w·target; the last dynamic weight (t=19) is 1.1234."""
    target = torch.randn(SHAPE, generator=torch.Generator().manual_seed(40))
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(41))
    calls = []
    out = sample(
        analytic_model(target, calls),
        noise,
        cond=torch.ones(1, 2, 2),
        uncond=torch.zeros(1, 2, 2),
        cfg_scale=6.0,
        numerics="diffusers",
        sampler="ddim",
    )
    torch.testing.assert_close(out, 1.123397939968981 * target, rtol=0, atol=0.03)
    assert [c.index for c in calls] == list(range(50)) and all(c.guided for c in calls)
    assert calls[10].fraction == 0.2 and calls[0].timestep == 999 and calls[-1].timestep == 19


def test_unit_weights_skip_the_uncond_half():
    seen = []
    sample(
        lambda x, t, c, step: seen.append((x.shape[0], step.guided)) or torch.zeros_like(x),
        torch.zeros(SHAPE),
        cond=torch.zeros(1, 2, 2),
        uncond=torch.zeros(1, 2, 2),
        steps=3,
        cfg_scale=1.0,
        dynamic_cfg=False,
    )
    assert seen == [(1, False)] * 3


def test_context_rows_are_uncond_then_cond():
    cond, uncond = torch.full((2, 3, 4), 1.0), torch.full((2, 3, 4), -1.0)

    def model_fn(x, timestep, context, step):
        assert x.shape[0] == 4 and context[:2].eq(-1).all() and context[2:].eq(1).all()
        return torch.zeros_like(x)

    sample(model_fn, torch.zeros(2, *SHAPE[1:]), cond=cond, uncond=uncond, steps=2)


def test_should_stop_interrupts_between_steps():
    calls, progress = [], []
    with pytest.raises(GenerationInterrupted, match="before step 4 of 10"):
        sample(
            lambda x, t, c, step: calls.append(step.index) or torch.zeros_like(x),
            torch.zeros(SHAPE),
            cond=torch.zeros(1, 2, 2),
            steps=10,
            cfg_scale=1.0,
            dynamic_cfg=False,
            callback=lambda i, n, x0: progress.append((i, n)),
            should_stop=lambda: len(calls) == 3,
        )
    assert calls == [0, 1, 2] and progress == [(0, 10), (1, 10), (2, 10)]


def test_callback_exception_propagates():
    class HostInterrupt(Exception):
        pass

    def callback(i, n, x0):
        raise HostInterrupt

    with pytest.raises(HostInterrupt):
        sample(
            lambda x, t, c, s: torch.zeros_like(x),
            torch.zeros(SHAPE),
            cond=torch.zeros(1, 2, 2),
            steps=5,
            callback=callback,
            uncond=torch.zeros(1, 2, 2),
        )


def test_guidance_without_uncond_is_a_config_error():
    with pytest.raises(ConfigError, match="needs an unconditional context"):
        sample(lambda x, t, c, s: x, torch.zeros(SHAPE), cond=torch.zeros(1, 2, 2), cfg_scale=6.0)


def test_wrong_output_shape_is_a_config_error():
    with pytest.raises(ConfigError, match="must return v with the shape"):
        sample(
            lambda x, t, c, s: x[:, :1],
            torch.zeros(SHAPE),
            cond=torch.zeros(1, 2, 2),
            cfg_scale=1.0,
            dynamic_cfg=False,
        )


def test_unknown_sampler_is_a_config_error():
    with pytest.raises(ConfigError, match="sampler must be one of"):
        sample(lambda x, t, c, s: x, torch.zeros(SHAPE), cond=torch.zeros(1, 2, 2), sampler="euler")


def test_step_info_fraction():
    assert StepInfo(index=5, total=20, timestep=749, guided=True).fraction == 0.25
