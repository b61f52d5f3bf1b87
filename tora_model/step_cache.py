"""Step cache: skip the transformer's block stack on steps whose input has barely changed, reusing the last residual.

Idea: TeaCache (Liu et al., "Timestep Embedding Tells: It's Time to Cache for Video Diffusion Model", 2024). This is
an independent implementation for Tora's two backbones. Per network call the probe is block 0's timestep-modulated
video input m_i `[B, N, D]` (`model.modulated_input`): cheap (one LayerNorm and one small Linear) and, unlike the
noisy latents alone, it moves with the timestep. Its relative L1 change d_i = mean|m_i − m_{i−1}| / mean|m_{i−1}| is
mapped by a fitted polynomial f (`CacheFit`, from `calibrate_cache.py`) to an estimate of the relative change of the
network's output, and accumulated: A += f(d_i). While A stays below the threshold the step reuses the residual of
the last computed step (video tokens after the last block minus those entering block 0) instead of running the
blocks; once A reaches it the blocks run, the residual is refreshed and A restarts from 0. Steps listed as forced
(the first, the last, and where motion guidance switches on or off — `forced_steps`) always run the blocks.

Host syncs: deciding needs d_i on the host, so a cached run reads one scalar per network call (`.item()`); the
default path (no cache) reads none. State is per run and per row group (`branch`: the batched [uncond; cond] rows,
or the uncond / cond rows of sequential CFG): two tensors of the video-token shape (the previous probe and the
residual), 2 × 216 MB for the 5B at 720×480×49 in bf16 with batched CFG. Nothing is written on the model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from .errors import ConfigError
from .json_files import Entry, entry_problems, finite_number, read_json_object, shown

log = logging.getLogger(__name__)

FIT_FILE = "step_cache.json"  # looked for beside the transformer weights
FIT_FORMAT = "tora-step-cache-fit/1"
# Thresholds on the accumulated estimate of the output's relative change (measured on the tiny model: bench_cache.py)
CACHE_PRESETS = {"off": None, "balanced": 0.4, "fast": 0.9}
FIT_EXPECTED = f"a step-cache fit, the JSON object of format {FIT_FORMAT!r} that calibration writes"
FIT_FIX = "Recreate it with `python -m tora_model generate … --cache-calibrate FILE`."


def _coefficients(value: object) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(finite_number(c) for c in value)


def _range(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and all(map(finite_number, value))
        and value[0] <= value[1]
    )


# The entries of a fit file this loader reads: (what is expected, its check); the file's other entries say how the
# fit was measured (pairs, degree, quality) and are not read.
FIT_ENTRIES: dict[str, Entry] = {
    "coefficients": ("a non-empty list of finite numbers (highest degree first)", _coefficients),
    "probe_change_range": ("a list of two finite numbers [low, high] with low <= high", _range),
}


@dataclass(frozen=True)
class CacheFit:
    """Polynomial f mapping the probe's relative L1 change to the output's: coefficients highest degree first."""

    coefficients: tuple[float, ...] = (1.0, 0.0)  # identity: the raw probe change, for an uncalibrated model
    source: str = "uncalibrated (identity)"
    # probe changes the fit was measured over; f is evaluated at the nearest end outside it (a polynomial
    # extrapolates wildly: a 20-step run's first steps change more than any 50-step step did)
    domain: tuple[float, float] = (0.0, float("inf"))

    def __post_init__(self) -> None:
        if not _coefficients(self.coefficients):
            raise ConfigError(
                f"a step-cache fit needs a list of polynomial coefficients (finite numbers, highest degree first), "
                f"got {self.coefficients!r}. {FIT_FIX}"
            )

    def rescale(self, distance: float) -> float:
        """f(distance) with distance held inside the fitted domain, clamped at 0 (a negative change means none)."""
        distance = min(max(distance, self.domain[0]), self.domain[1])
        value = 0.0
        for c in self.coefficients:
            value = value * distance + c
        return max(value, 0.0)

    @classmethod
    def load(cls, path: str | Path) -> CacheFit:
        """Read a fit written by `calibrate_cache.py` (JSON: format, coefficients, and how it was measured); a file
        that is not one, or whose entries have the wrong type, gets a ConfigError naming the file and the entry."""
        path = Path(path)
        data = read_json_object(path, FIT_EXPECTED, FIT_FIX, ConfigError)
        if data.get("format") != FIT_FORMAT:
            raise ConfigError(
                f"{path} is not a step-cache fit: expected format {FIT_FORMAT!r}, found {shown(data.get('format'))}. "
                f"{FIT_FIX}"
            )
        wrong = entry_problems(data, FIT_ENTRIES, required=["coefficients"])
        if wrong:
            raise ConfigError(f"{path} is not a step-cache fit: {'; '.join(wrong)}. {FIT_FIX}")
        domain = tuple(data.get("probe_change_range", (0.0, float("inf"))))
        return cls(tuple(data["coefficients"]), source=str(path), domain=domain)

    def save(self, path: str | Path, **measured) -> None:
        payload = {"format": FIT_FORMAT, "coefficients": list(self.coefficients), **measured}
        Path(path).write_text(json.dumps(payload, indent=2) + "\n")


def find_fit(weights_path: str | Path | None) -> CacheFit:
    """The fit shipped beside a transformer file (`step_cache.json` in its folder), else the identity with a log."""
    if weights_path is not None:
        folder = Path(weights_path)
        candidate = (folder if folder.is_dir() else folder.parent) / FIT_FILE
        if candidate.is_file():
            return CacheFit.load(candidate)
    log.info(
        "step cache: no %s beside the transformer weights; using the raw probe change (calibrate with "
        "`python -m tora_model generate … --cache-calibrate FILE`, see README)",
        FIT_FILE,
    )
    return CacheFit()


def forced_steps(total: int, active: Callable[[int], bool] | None = None) -> frozenset[int]:
    """Steps that always run the blocks: first, last, and each step where `active(i)` (motion) differs from i − 1."""
    forced = {0, total - 1}
    if active is not None:
        states = [active(i) for i in range(total)]
        forced.update(i for i in range(1, total) if states[i] != states[i - 1])
    return frozenset(forced)


def relative_l1(current: Tensor, previous: Tensor) -> Tensor:
    """mean|current − previous| / mean|previous| as a 0-dim tensor on the device (no host sync here)."""
    return (current - previous).abs().mean() / previous.abs().mean().clamp_min(1e-12)


@dataclass
class _Branch:
    """One row group's state between steps."""

    probe: Tensor | None = None
    residual: Tensor | None = None
    index: int = -2  # step of the last call
    accumulated: float = 0.0


@dataclass
class StepCache:
    """Per-run cache state and counters; `blocks` runs or skips the block stack of one network call."""

    threshold: float
    fit: CacheFit
    forced: frozenset[int]
    computed: int = 0
    skipped: int = 0
    decisions: list[tuple[int, str, bool]] = field(default_factory=list)  # (step, branch, computed)
    _branches: dict[str, _Branch] = field(default_factory=dict)

    def blocks(self, model, inputs, index: int, branch: str, run_blocks: Callable[[], Tensor]) -> Tensor:
        """Video tokens after the last block `[B, N, D]`: computed by `run_blocks()` or rebuilt from the residual."""
        state = self._branches.setdefault(branch, _Branch())
        probe = model.modulated_input(inputs)  # [B, N, D]
        compute = (
            index in self.forced
            or state.index != index - 1  # this row group skipped the previous step (e.g. CFG off there)
            or state.residual is None
            or state.residual.shape != inputs.video.shape
        )
        if not compute:
            change = relative_l1(probe, state.probe).item()  # the one host sync of a cached step
            state.accumulated += self.fit.rescale(change)
            compute = state.accumulated >= self.threshold
        state.probe, state.index = probe, index
        self.decisions.append((index, branch, compute))
        if not compute:
            self.skipped += 1
            return inputs.video + state.residual
        video = run_blocks()  # [B, N, D]
        state.residual, state.accumulated = video - inputs.video, 0.0
        self.computed += 1
        return video

    @property
    def skipped_steps(self) -> list[int]:
        return sorted({i for i, _, computed in self.decisions if not computed})


def cache_threshold(mode: str, threshold: float | None) -> float | None:
    """The threshold of a cache mode (`CACHE_PRESETS`), or the explicit one; None = cache off."""
    if mode not in CACHE_PRESETS and mode != "custom":
        raise ConfigError(f"cache must be one of {[*CACHE_PRESETS, 'custom']}, got {mode!r}")
    if threshold is not None:
        if not threshold >= 0.0:
            raise ConfigError(f"the cache threshold must be a number >= 0, got {threshold}")
        return threshold
    if mode == "custom":
        raise ConfigError("cache 'custom' needs an explicit threshold (e.g. 0.15); or pick balanced or fast")
    return CACHE_PRESETS[mode]


def describe(decisions: Iterable[tuple[int, str, bool]]) -> str:
    """'34/50 computed' style summary for logs."""
    decisions = list(decisions)
    return f"{sum(c for _, _, c in decisions)}/{len(decisions)} network calls computed"
