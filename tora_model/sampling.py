"""Denoising loop of Tora: stochastic DPM-Solver++(2M) (official) or deterministic DDIM, with (dynamic) CFG on x0.

Source: `tora_spec.md` §6.1 (SAT `VPSDEDPMPP2MSampler` + `DynamicCFG` + `DiscreteDenoiser`/`VideoScaling`, the official
inference) and §6.2 (diffusers `CogVideoXDPMScheduler` / `CogVideoXDDIMScheduler`, eta 0). Per step i with
a = √ᾱ_i, a′ = √ᾱ_{i+1} (sampler table, `schedule.py`), λ = log(a/√(1−a²)), h = λ′ − λ:
    x0    = s·x − √(1−s²)·v                     (v-prediction, s = schedule.x0_sqrt_alphas[i])
    x0    = x0_u + w·(x0_c − x0_u)              (CFG on x0, batch order [uncond, cond], one network call)
    DPM:  x′ = √((1−a′²)/(1−a²))·e^{−h}·x − (e^{−2h}−1)·a′·D + √(1−a′²)·√(1−e^{−2h})·ε
          D = x0 on the first step, else (1 + 1/2r)·x0 − (1/2r)·x0_prev with r = (λ − λ_prev)/h and a second ε
    DDIM: x′ = √((1−a′²)/(1−a²))·x + (a′ − a·√((1−a′²)/(1−a²)))·x0
    The last step (a′ = 1) returns x0.
Random draws follow the official order: every DPM step but the last draws one ε, and steps after the first draw a
second one that replaces it (the first stays unused, as in SAT and diffusers), so a seeded generator reproduces them.

Layout: latents x [B, T, C, h, w] float32 between steps; text contexts [B, L, D]; guided network calls see 2B rows
ordered [uncond; cond].

CFG modes (opt-in, `speed.SpeedOptions`): "batched" is the official single call on [uncond; cond] (default);
"sequential" makes two calls of B rows (uncond, then cond) and combines them the same way — about half the
activation memory per call, the same numbers up to GEMM blocking (max |Δ| ~1e-6 relative in float32 on the CPU);
`cfg_skip_tolerance` runs only the cond rows on steps whose weight w has |w − 1| <= tolerance, which changes that
step's x0 by (w − 1)·(x0_c − x0_u) — exact at tolerance 0 up to the same GEMM blocking.

Model callback contract (`ModelFn`): model_fn(x, timestep, context, step) -> v
    x         float32 [B' , T, C, h, w] with B' = 2B when step.guided (rows [uncond; cond]) else B
    timestep  int64 [B'] on x's device, the raw timestep (999 … 19)
    context   [B', L, D] as given by the caller (cond / uncond concatenated when guided)
    step      StepInfo (index, total, timestep, guided; fraction = index / total for step windows)
    returns   v-prediction with x's shape, any float dtype (upcast to float32 here). The callback casts x to the
              network's dtype/device and adds per-run extras (image latents, motion features for step windows).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch

from .errors import ConfigError, GenerationInterrupted
from .schedule import Numerics, Schedule, guidance_weights, make_schedule

SamplerName = Literal["dpmpp_2m_sde", "ddim"]
SAMPLERS = ("dpmpp_2m_sde", "ddim")
CFG_MODES = ("batched", "sequential")


@dataclass(frozen=True)
class StepInfo:
    """Where the loop is: step `index` of `total` (0-based) at integer `timestep`; `guided` = batch is [uncond; cond].

    `branch` names the rows of this call: "batch" (all rows of the step), or "uncond" / "cond" for the two calls of
    sequential CFG.
    """

    index: int
    total: int
    timestep: int
    guided: bool
    branch: str = "batch"

    @property
    def fraction(self) -> float:
        """index / total: 0.0 at the first step; compare against a [start, end] window of fractions."""
        return self.index / self.total


ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, StepInfo], torch.Tensor]
ProgressFn = Callable[[int, int, torch.Tensor], None]


def _log_snr(sqrt_alpha: float) -> float:
    """λ = log(a / √(1 − a²)); −inf at pure noise (a = 0), +inf at the clean end (a = 1)."""
    if sqrt_alpha <= 0.0:
        return -math.inf
    if sqrt_alpha >= 1.0:
        return math.inf
    return math.log(sqrt_alpha / math.sqrt(1.0 - sqrt_alpha * sqrt_alpha))


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal float32 noise of x's shape, drawn on the generator's device, then moved to x's device.

    A CPU generator with CUDA latents therefore gives the same numbers as on a CPU-only machine (diffusers' rule);
    without a generator the global RNG of x's device is used (SAT's `randn_like`).
    """
    return _draw(x, generator).to(x.device)


def _draw(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Noise of x's shape on the generator's device (x's without one), not yet moved."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=torch.float32)


def dpmpp_2m_sde_step(
    x: torch.Tensor,
    x0: torch.Tensor,
    x0_prev: torch.Tensor | None,
    sqrt_alphas: tuple[float | None, float, float],
    generator: torch.Generator | None,
) -> torch.Tensor:
    """One stochastic DPM-Solver++(2M) step from level a to a′; sqrt_alphas = (a_prev or None, a, a′)."""
    a_prev, a, a_next = sqrt_alphas
    if a_next >= 1.0:
        return x0
    lam, lam_next = _log_snr(a), _log_snr(a_next)
    h = lam_next - lam
    x_scale = math.sqrt((1.0 - a_next**2) / (1.0 - a**2)) * math.exp(-h)
    x0_scale = math.expm1(-2.0 * h) * a_next
    noise_scale = math.sqrt(1.0 - a_next**2) * math.sqrt(1.0 - math.exp(-2.0 * h))
    # Drawn even when replaced below, to keep the official random stream; moved to x's device only when used, so a
    # second-order step copies one noise tensor to the GPU, not two.
    first_noise = _draw(x, generator)
    if x0_prev is None or a_prev is None:
        return x_scale * x - x0_scale * x0 + noise_scale * first_noise.to(x.device)
    r = (lam - _log_snr(a_prev)) / h
    d = (1.0 + 1.0 / (2.0 * r)) * x0 - (1.0 / (2.0 * r)) * x0_prev  # second-order x0 extrapolation
    return x_scale * x - x0_scale * d + noise_scale * randn_like(x, generator)


def ddim_step(x: torch.Tensor, x0: torch.Tensor, a: float, a_next: float) -> torch.Tensor:
    """Deterministic DDIM (eta 0) step from level a to a′."""
    if a_next >= 1.0:
        return x0
    x_scale = math.sqrt((1.0 - a_next**2) / (1.0 - a**2))
    return x_scale * x + (a_next - a * x_scale) * x0


def _check_inputs(noise: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, sampler: str) -> None:
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if not noise.is_floating_point() or noise.ndim < 2:
        raise ConfigError(
            f"noise must be a float tensor [B, T, C, h, w], got {tuple(noise.shape)} {noise.dtype}"
        )
    if cond.shape[0] != noise.shape[0]:
        raise ConfigError(
            f"cond has batch {cond.shape[0]} but noise has batch {noise.shape[0]}; give one context row per sample"
        )
    if uncond is not None and uncond.shape != cond.shape:
        raise ConfigError(
            f"uncond must have the shape of cond {tuple(cond.shape)}, got {tuple(uncond.shape)}; "
            "pad both prompts to the same token count"
        )


def _predict_x0(
    model_fn: ModelFn,
    x: torch.Tensor,
    context: torch.Tensor,
    step: StepInfo,
    sqrt_alpha: float,
    weight: float,
) -> torch.Tensor:
    """Network call (batched [uncond; cond] when guided) → guided x0, float32 [B, ...]."""
    x_in = torch.cat([x, x]) if step.guided else x  # [B', T, C, h, w]
    timestep = torch.full((x_in.shape[0],), step.timestep, dtype=torch.int64, device=x.device)  # [B']
    v = model_fn(x_in, timestep, context, step)
    if v.shape != x_in.shape:
        raise ConfigError(
            f"model_fn must return v with the shape of its input {tuple(x_in.shape)}, got {tuple(v.shape)}"
        )
    x0 = sqrt_alpha * x_in - math.sqrt(1.0 - sqrt_alpha**2) * v.float()  # [B', T, C, h, w]
    if not step.guided:
        return x0
    x0_uncond, x0_cond = x0.chunk(2)
    return x0_uncond + weight * (x0_cond - x0_uncond)


def _predict_x0_sequential(
    model_fn: ModelFn,
    x: torch.Tensor,
    contexts: tuple[torch.Tensor, torch.Tensor],
    step: StepInfo,
    sqrt_alpha: float,
    weight: float,
) -> torch.Tensor:
    """Sequential CFG: one call on the uncond rows, one on the cond rows, combined as the batched call is."""
    x0_uncond, x0_cond = (
        _predict_x0(model_fn, x, context, replace(step, guided=False, branch=branch), sqrt_alpha, 1.0)
        for branch, context in zip(("uncond", "cond"), contexts, strict=True)
    )
    return x0_uncond + weight * (x0_cond - x0_uncond)


def _guidance(uncond: torch.Tensor | None, weights: list[float]) -> bool:
    """Whether to run the uncond half; all-1 weights need none (x0_u + 1·(x0_c − x0_u) = x0_c)."""
    needed = any(w != 1.0 for w in weights)
    if needed and uncond is None:
        raise ConfigError(
            "classifier-free guidance needs an unconditional context: pass uncond (all zeros for the official "
            "behaviour, see tora_model.text) or use cfg_scale=1 with dynamic_cfg=False"
        )
    return needed


@torch.no_grad()
def sample(
    model_fn: ModelFn,
    noise: torch.Tensor,
    *,
    cond: torch.Tensor,
    uncond: torch.Tensor | None = None,
    steps: int = 50,
    cfg_scale: float = 6.0,
    dynamic_cfg: bool = True,
    sampler: SamplerName = "dpmpp_2m_sde",
    numerics: Numerics = "sat",
    generator: torch.Generator | None = None,
    callback: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
    cfg_mode: str = "batched",
    cfg_skip_tolerance: float | None = None,
) -> torch.Tensor:
    """Denoise `noise` [B, T, C, h, w] (the initial latents, unit variance) into clean latents, float32.

    cond / uncond: text contexts [B, L, D] (uncond all zeros reproduces the official SAT run). cfg_scale is the
    constant CFG weight, or with dynamic_cfg the scale of the official dynamic schedule (w in [1, 1 + cfg_scale]).
    numerics: "sat" (official inference tables) or "diffusers" (diffusers' CogVideoX schedulers), see schedule.py.
    generator: source of the sampler's fresh noise (DPM only). callback(step_index, total, x0) after every step;
    should_stop() is polled before every step and a True answer raises GenerationInterrupted (exceptions raised by
    the callback propagate unchanged, so a host's own interrupt exception works too). cfg_mode / cfg_skip_tolerance:
    see the module docstring (defaults: the official batched call on every guided step).
    """
    _check_inputs(noise, cond, uncond, sampler)
    if cfg_mode not in CFG_MODES:
        raise ConfigError(f"cfg_mode must be one of {CFG_MODES}, got {cfg_mode!r}")
    schedule: Schedule = make_schedule(steps, numerics)
    weights = guidance_weights(schedule, cfg_scale, dynamic_cfg)
    guided = _guidance(uncond, weights)
    context = torch.cat([uncond, cond]) if guided else cond  # [B', L, D]
    x = noise.float()  # [B, T, C, h, w]
    x0_prev = None
    for i, timestep in enumerate(schedule.timesteps):
        if should_stop is not None and should_stop():
            raise GenerationInterrupted(
                f"sampling stopped on request before step {i + 1} of {schedule.steps}"
            )
        step_guided = guided and not (
            cfg_skip_tolerance is not None and abs(weights[i] - 1.0) <= cfg_skip_tolerance
        )
        step = StepInfo(index=i, total=schedule.steps, timestep=timestep, guided=step_guided)
        if step_guided and cfg_mode == "sequential":
            x0 = _predict_x0_sequential(
                model_fn, x, (uncond, cond), step, schedule.x0_sqrt_alphas[i], weights[i]
            )
        else:
            step_context = context if step_guided or not guided else cond  # [B', L, D]
            x0 = _predict_x0(model_fn, x, step_context, step, schedule.x0_sqrt_alphas[i], weights[i])
        a, a_next = schedule.sqrt_alphas[i], schedule.sqrt_alphas[i + 1]
        if sampler == "ddim":
            x = ddim_step(x, x0, a, a_next)
        else:
            a_prev = schedule.sqrt_alphas[i - 1] if i > 0 else None
            x = dpmpp_2m_sde_step(x, x0, x0_prev, (a_prev, a, a_next), generator)
        x0_prev = x0
        if callback is not None:
            callback(i, schedule.steps, x0)
    return x
