"""Schedule numbers against the reference fixture (official SAT + diffusers values) and diffusers' scheduler tables."""

import json

import pytest
import torch

from tests.shared_data import FIXTURE
from tora_model.errors import ConfigError
from tora_model.schedule import (
    full_sqrt_alphas_cumprod,
    guidance_weights,
    make_schedule,
    trailing_timesteps,
)


@pytest.fixture(scope="module")
def reference():
    if not FIXTURE.is_file():
        pytest.skip(
            f"reference fixture {FIXTURE} is absent (the shared folder sits beside the repo as ../shared)"
        )
    return json.loads(FIXTURE.read_text())["schedule_50_steps"]


def test_timesteps_match_fixture(reference):
    assert trailing_timesteps(50) == reference["timesteps"]
    assert make_schedule(50).timesteps == tuple(reference["timesteps"])


def test_sat_sampler_table_matches_fixture(reference):
    schedule = make_schedule(50, "sat")
    assert schedule.sqrt_alphas[:50] == pytest.approx(
        reference["sqrt_alphabar_sat_sampler_50step_rescale"], abs=1e-9
    )
    assert schedule.sqrt_alphas[50] == 1.0


def test_full_table_matches_fixture(reference):
    expected = torch.tensor(reference["sqrt_alphabar_diffusers_and_sat_denoiser_table"], dtype=torch.float64)
    timesteps = reference["timesteps"]
    float64 = full_sqrt_alphas_cumprod(torch.float64)[timesteps]
    float32 = full_sqrt_alphas_cumprod(torch.float32)[timesteps].double()  # SAT's denoiser precision
    assert torch.allclose(float64, expected, rtol=0, atol=1e-12)
    assert torch.allclose(float32, expected, rtol=0, atol=1e-7)
    diffusers_schedule = make_schedule(50, "diffusers")
    assert diffusers_schedule.sqrt_alphas[:50] == pytest.approx(expected.tolist(), abs=1e-12)
    assert diffusers_schedule.x0_sqrt_alphas == diffusers_schedule.sqrt_alphas[:50]


def test_sat_denoiser_uses_nearest_full_table_level(reference):
    """SAT quantises the sampler's √ᾱ to the nearest full-table level: t itself down to 239, t - 1 from 219 on."""
    table = full_sqrt_alphas_cumprod(torch.float32)
    schedule = make_schedule(50, "sat")
    levels = [t if t >= 239 else t - 1 for t in reference["timesteps"]]
    assert list(schedule.x0_sqrt_alphas) == table[levels].tolist()
    sampler = torch.tensor(reference["sqrt_alphabar_sat_sampler_50step_rescale"])
    for level, value in zip(levels, sampler.tolist(), strict=True):
        neighbours = (table[level - 1 : level + 2].double() - value).abs()
        assert neighbours.argmin().item() == 1


def test_two_tables_differ_by_the_documented_amount(reference):
    sat = torch.tensor(make_schedule(50, "sat").sqrt_alphas[:50], dtype=torch.float64)
    full = torch.tensor(reference["sqrt_alphabar_diffusers_and_sat_denoiser_table"], dtype=torch.float64)
    gap = (sat - full).abs().max().item()
    assert 6.1e-4 < gap < 6.3e-4  # spec §6.1: ≈ 6.2e-4


def test_dynamic_cfg_weights_match_fixture(reference):
    weights = guidance_weights(make_schedule(50), 6.0, dynamic_cfg=True)
    assert weights == pytest.approx(reference["dynamic_cfg_scale_per_step_scale6_exp5"], rel=1e-13, abs=1e-13)
    assert weights[:3] == pytest.approx([2.29, 2.54, 6.97], abs=5e-3)


def test_plain_cfg_weights_are_constant():
    assert guidance_weights(make_schedule(10), 4.5, dynamic_cfg=False) == [4.5] * 10


def test_single_step_is_pure_noise_to_x0():
    for numerics in ("sat", "diffusers"):
        schedule = make_schedule(1, numerics)
        assert schedule.timesteps == (999,) and schedule.sqrt_alphas == (0.0, 1.0)
        assert schedule.x0_sqrt_alphas == (0.0,)


@pytest.mark.parametrize("steps", [0, 1001])
def test_bad_step_count_is_a_config_error(steps):
    with pytest.raises(ConfigError, match="steps must be between 1 and 1000"):
        trailing_timesteps(steps)


def test_unknown_numerics_is_a_config_error():
    with pytest.raises(ConfigError, match="numerics must be one of"):
        make_schedule(50, "comfy")
