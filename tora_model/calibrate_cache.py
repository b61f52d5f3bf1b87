"""Calibrate the step cache: record probe and output changes during uncached runs and fit the rescale polynomial.

Source: the step cache of `step_cache.py` (TeaCache's idea). During an ordinary, uncached run `Recorder` evaluates
every call in full and records, per row group and step, the relative L1 change of block 0's modulated input (the
probe) against the previous step, and the error reusing the previous output would cause where the sampler uses it:
in x0 = s·x − σ·v (v-prediction, σ = √(1 − s²) from the run's schedule) that is σ·mean|v_i − v_{i−1}| / mean|x0_i|.
TeaCache fits the change of the raw output; for v-prediction that overstates late steps (σ → 0 there) and
understates none, so the x0 scale is the one that says which steps can be skipped. `fit` fits
x0 error ≈ f(probe change) with a least-squares polynomial; the cache accumulates f(probe change) and recomputes
when the sum passes its threshold.

Released 5B (one run, one command; the fit lands where the cache looks for it, beside the transformer weights):
    python -m tora_model generate --transformer tora/t2v/ ... --cache-calibrate tora/t2v/step_cache.json
The tiny Tora's shipped fit is written by `tiny/calibrate_cache.py` with this module's `Recorder` and `write_fit`.

Layouts: probes `[B', N, D]`, outputs v `[B', T, 16, h, w]`; records are host floats.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .sampling import StepInfo
from .schedule import make_schedule
from .speed import SpeedOptions
from .step_cache import CacheFit, relative_l1

log = logging.getLogger(__name__)

DEGREE = 4


@dataclass
class Recorder:
    """A network runner (see `speed.NetworkRunner`) that computes every call and records (probe change, x0 error)."""

    numerics: str = "sat"  # the run's schedule tables (x0 = s·x − σ·v)
    options: SpeedOptions = field(default_factory=SpeedOptions)
    pairs: list[tuple[float, float]] = field(default_factory=list)
    _last: dict[str, tuple[int, torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def __call__(self, model, step: StepInfo, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        inputs = model.prepare(x, *args, **kwargs)
        probe = model.modulated_input(inputs)  # [B', N, D]
        v = model.finish(inputs, model.run_blocks(inputs))  # [B', T, 16, h, w]
        s = make_schedule(step.total, self.numerics).x0_sqrt_alphas[step.index]
        sigma = math.sqrt(1.0 - s * s)
        x0 = s * x.float() - sigma * v.float()  # [B', T, 16, h, w]
        last = self._last.get(step.branch)
        if last is not None and last[0] == step.index - 1:
            # host reads are fine here: calibration is a measurement run, not the sampler's hot path
            change = relative_l1(probe, last[1]).item()
            x0_error = (sigma * (v.float() - last[2]).abs().mean() / x0.abs().mean().clamp_min(1e-12)).item()
            self.pairs.append((change, x0_error))
        self._last[step.branch] = (step.index, probe, v.float())
        return v

    def summary(self) -> str:
        return f"recorded {len(self.pairs)} (probe change, x0 error) pairs for the step cache"


def fit(pairs: list[tuple[float, float]], degree: int = DEGREE) -> tuple[CacheFit, dict]:
    """Least-squares polynomial x0 error ≈ f(probe change), and how well it fits (for the JSON file)."""
    if len(pairs) <= degree:
        raise ValueError(f"need more than {degree} recorded pairs to fit degree {degree}, got {len(pairs)}")
    probe, output = np.asarray(pairs, dtype=np.float64).T
    coefficients = np.polyfit(probe, output, degree)
    predicted = np.polyval(coefficients, probe)
    residual = float(np.sqrt(np.mean((predicted - output) ** 2)))
    quality = {
        "pairs": len(pairs),
        "degree": degree,
        "probe_change_range": [float(probe.min()), float(probe.max())],
        "x0_error_mean": float(output.mean()),
        "rms_residual": residual,
    }
    return CacheFit(tuple(float(c) for c in coefficients)), quality


def write_fit(recorder: Recorder, path: Path, **about) -> CacheFit:
    """Fit the recorder's pairs and write the JSON the cache reads; returns the fit."""
    result, quality = fit(recorder.pairs)
    result.save(path, **quality, **about)
    log.info(
        "step-cache fit written to %s: %d pairs, rms residual %.4f",
        path,
        quality["pairs"],
        quality["rms_residual"],
    )
    return result
