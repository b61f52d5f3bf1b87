"""Noise schedule of CogVideoX-5B / Tora: zero-terminal-SNR scaled-linear betas, trailing timesteps, v-prediction.

Source: `tora_spec.md` §6.1 (official SAT inference: `ZeroSNRDDPMDiscretization(shift_scale=1.0)`, `DiscreteDenoiser`,
`DynamicCFG(scale, exp=5, num_steps)`) and §6.2 (diffusers `CogVideoXDPMScheduler`/`CogVideoXDDIMScheduler` with
`rescale_betas_zero_snr=True`, `snr_shift_scale=1.0`, trailing spacing).

Everything here is about √ᾱ ("sqrt alpha-bar"): the signal level of x_t = √ᾱ·x0 + √(1−ᾱ)·ε.
    β_t  = linspace(√0.00085, √0.012, 1000)²  (float64),   ᾱ_t = cumprod(1 − β)
    zero-SNR rescale of s = √ᾱ over a table:  s ← (s − s_last)·s_first / (s_first − s_last)
The official SAT code keeps TWO rescaled tables (spec §6.1):
  * the sampler rescales only the N selected values (s_first taken at the smallest selected t, e.g. 19), in float32;
  * the denoiser rescales the full 1000-step table (s_first at t=0) and turns v into x0 with the table level NEAREST
    to the sampler's value. For 50 steps that level is t itself for t >= 239 and t-1 for t <= 219.
diffusers uses the full table (float64) at t for everything. `make_schedule(steps, numerics)` builds either variant.

Layout: everything is per step, in sampling order (t descending); a schedule holds plain Python floats so it can be
used on any device without host/device syncs.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import numpy as np
import torch

from .errors import ConfigError

NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012
DYNAMIC_CFG_EXPONENT = 5

# CogVideoX-5B's scheduler_config.json as keyword arguments of diffusers' CogVideoXDPMScheduler /
# CogVideoXDDIMScheduler: the schedule this module reproduces, for the tests and benchmarks that compare with diffusers.
DIFFUSERS_SCHEDULER_CONFIG = MappingProxyType(
    dict(
        beta_schedule="scaled_linear",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        snr_shift_scale=1.0,
        timestep_spacing="trailing",
        clip_sample=False,
        set_alpha_to_one=True,
    )
)

Numerics = Literal["sat", "diffusers"]
NUMERICS = ("sat", "diffusers")


def alphas_cumprod() -> torch.Tensor:
    """ᾱ_t for t = 0..999, float64 [1000] (scaled-linear betas; the SNR shift of scale 1.0 is the identity)."""
    betas = torch.linspace(BETA_START**0.5, BETA_END**0.5, NUM_TRAIN_TIMESTEPS, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def rescale_zero_snr(sqrt_ab: torch.Tensor) -> torch.Tensor:
    """Shift/scale √ᾱ (ordered by increasing t) so the last entry is exactly 0 and the first keeps its value."""
    first, last = sqrt_ab[0], sqrt_ab[-1]
    return (sqrt_ab - last) * (first / (first - last))


def full_sqrt_alphas_cumprod(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Zero-SNR √ᾱ for every training timestep, [1000] indexed by t (the SAT denoiser table; diffusers' √ᾱ).

    SAT computes it in float32 (dtype=torch.float32); diffusers in float64. They agree to 7.6e-8.
    """
    return rescale_zero_snr(alphas_cumprod().to(dtype).sqrt())


def trailing_timesteps(steps: int) -> list[int]:
    """floor(linspace(999, 0, steps, endpoint=False)): 999, 979, …, 19 for 50 steps (= diffusers "trailing")."""
    if not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        raise ConfigError(
            f"steps must be between 1 and {NUM_TRAIN_TIMESTEPS}, got {steps}; the official setting is 50"
        )
    # numpy's linspace arithmetic, so floors at exact integers land where the official code's do
    points = np.linspace(NUM_TRAIN_TIMESTEPS - 1, 0, steps, endpoint=False)
    return np.floor(points).astype(np.int64).tolist()


def sat_sampler_sqrt_alphas(timesteps: list[int]) -> list[float]:
    """√ᾱ the SAT sampler steps through: float32, zero-SNR rescaled over the selected timesteps only."""
    ordered = sorted(timesteps)  # increasing t, as the SAT discretizer rescales them
    if len(ordered) == 1:
        return [
            0.0
        ]  # the only level is the terminal one, which the rescale pins to zero (SAT would divide 0/0)
    selected = alphas_cumprod()[ordered].to(torch.float32).sqrt()
    by_t = dict(zip(ordered, rescale_zero_snr(selected).tolist(), strict=True))
    return [by_t[t] for t in timesteps]


@dataclass(frozen=True)
class Schedule:
    """What a sampler needs per step i (N steps, t descending).

    timesteps[i]: integer timestep fed to the network's time embedding.
    sqrt_alphas[i]: √ᾱ of the sampler's update at step i; sqrt_alphas[N] = 1.0 (clean) closes the chain.
    x0_sqrt_alphas[i]: √ᾱ with which v turns into x0 = √ᾱ·x − √(1−ᾱ)·v.
    """

    timesteps: tuple[int, ...]
    sqrt_alphas: tuple[float, ...]
    x0_sqrt_alphas: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.timesteps)
        if len(self.sqrt_alphas) != n + 1 or len(self.x0_sqrt_alphas) != n:
            raise ConfigError(
                f"schedule of {n} steps needs {n + 1} sqrt_alphas and {n} x0_sqrt_alphas, got "
                f"{len(self.sqrt_alphas)} and {len(self.x0_sqrt_alphas)}"
            )

    @property
    def steps(self) -> int:
        return len(self.timesteps)


@functools.lru_cache(maxsize=16)
def make_schedule(steps: int, numerics: Numerics = "sat") -> Schedule:
    """Timesteps and both √ᾱ tables for `steps` denoising steps (host-side numbers; cached, the result is frozen).

    numerics="sat": the official SAT inference (sampler table rescaled over the selected steps; x0 from the full table
    at the level nearest to the sampler's value). numerics="diffusers": diffusers' CogVideoX schedulers (full float64
    table at t for both); equal to them whenever 1000 % steps == 0 (otherwise diffusers rounds its trailing timesteps
    differently and looks ahead by 1000 // steps).
    """
    timesteps = trailing_timesteps(steps)
    if numerics == "sat":
        table = full_sqrt_alphas_cumprod(torch.float32)  # [1000]
        sampler = sat_sampler_sqrt_alphas(timesteps)
        levels = (torch.tensor(sampler, dtype=torch.float32)[None, :] - table[:, None]).abs().argmin(dim=0)
        x0_sqrt_alphas = table[levels].tolist()
    elif numerics == "diffusers":
        sampler = full_sqrt_alphas_cumprod(torch.float64)[timesteps].tolist()
        x0_sqrt_alphas = sampler
    else:
        raise ConfigError(f"numerics must be one of {NUMERICS}, got {numerics!r}")
    return Schedule(tuple(timesteps), (*sampler, 1.0), tuple(x0_sqrt_alphas))


def dynamic_cfg_weight(scale: float, timestep: int, steps: int) -> float:
    """Guidance weight of the official dynamic CFG: w = 1 + scale·(1 − cos(π·((N − t)/N)^5))/2.

    t is the raw timestep value (999…19), not the step index — a quirk of both official paths (spec §6.1, §9.4)
    that makes w oscillate in [1, 1 + scale]; kept for fidelity.
    """
    progress = (steps - timestep) / steps
    return 1.0 + scale * (1.0 - math.cos(math.pi * progress**DYNAMIC_CFG_EXPONENT)) / 2.0


def guidance_weights(schedule: Schedule, cfg_scale: float, dynamic_cfg: bool) -> list[float]:
    """CFG weight per step: constant `cfg_scale`, or the dynamic schedule with `cfg_scale` as its scale."""
    if dynamic_cfg:
        return [dynamic_cfg_weight(cfg_scale, t, schedule.steps) for t in schedule.timesteps]
    return [float(cfg_scale)] * schedule.steps
