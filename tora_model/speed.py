"""Per-run speed options — step cache, CFG mode, compiled blocks — and the network runner that applies them.

`SpeedOptions` is a frozen value (what Tora Sampler and the CLI pass down); `NetworkRunner` is made once per run from
it and holds that run's cache state, so nothing is ever written on the shared model. The default options
(`SpeedOptions()`: cache off, batched CFG, eager blocks) take the model's plain forward: bit-identical to a run
without options, with no host sync per step.

Measured costs (tiny trained Tora, held-out clips, `bench/bench_cache.py`; mid config for compile) are in the
README and in each widget's tooltip (`nodes/speed_nodes.py`).

Layouts: as `pipeline._model_fn`: x `[B', T, 16, h, w]`, timestep `[B']`, context `[B', L, D]`; v like x.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch

from .compiled_blocks import block_runner
from .errors import ConfigError
from .sampling import CFG_MODES, StepInfo
from .step_cache import CACHE_PRESETS, CacheFit, StepCache, cache_threshold, forced_steps

log = logging.getLogger(__name__)

CfgMode = Literal["batched", "sequential"]


@dataclass(frozen=True)
class SpeedOptions:
    """How to evaluate the network during one run.

    cache: "off" (exact), "balanced", "fast" (`step_cache.CACHE_PRESETS`) or "custom" with `cache_threshold`;
    a given `cache_threshold` overrides the preset. cache_fit: the probe→output polynomial (None: the identity).
    cfg_mode: "batched" ([uncond; cond] in one forward, official) or "sequential" (two forwards of B rows: about
    half the activation memory). cfg_skip_tolerance: skip the uncond rows on steps whose CFG weight w has
    |w − 1| <= tolerance (None: never; 0: only where w is exactly 1). compile: run every block through one
    `torch.compile`d function (`compiled_blocks.py`), eager when unavailable.
    """

    cache: str = "off"
    cache_threshold: float | None = None
    cache_fit: CacheFit | None = None
    cfg_mode: CfgMode = "batched"
    cfg_skip_tolerance: float | None = None
    compile: bool = False
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        cache_threshold(self.cache, self.cache_threshold)  # raises ConfigError on a bad mode or threshold
        if self.cfg_mode not in CFG_MODES:
            raise ConfigError(f"cfg_mode must be one of {CFG_MODES}, got {self.cfg_mode!r}")
        if self.cfg_skip_tolerance is not None and not self.cfg_skip_tolerance >= 0.0:
            raise ConfigError(
                f"cfg_skip_tolerance must be a number >= 0 (or None to never skip), got {self.cfg_skip_tolerance}"
            )

    @property
    def threshold(self) -> float | None:
        return cache_threshold(self.cache, self.cache_threshold)

    @property
    def plain_forward(self) -> bool:
        """True when the model's own forward serves (no cache, no compile)."""
        return self.threshold is None and not self.compile

    def sampler_kwargs(self) -> dict:
        """The `sampling.sample` keywords these options set."""
        return {"cfg_mode": self.cfg_mode, "cfg_skip_tolerance": self.cfg_skip_tolerance}


class NetworkRunner:
    """One run's network evaluation: prepare → (cached or computed, maybe compiled) blocks → output head.

    Counters: `calls` network calls, `evaluations` block-stack passes actually computed.
    """

    def __init__(self, options: SpeedOptions, steps: int, motion=None, device: torch.device | str = "cpu"):
        active = None if motion is None else (lambda i: motion.active_at(i, steps))
        threshold = options.threshold
        self.options = options
        self.cache = None
        if threshold is not None:
            self.cache = StepCache(threshold, options.cache_fit or CacheFit(), forced_steps(steps, active))
        self.run = block_runner(device, options.compile_backend) if options.compile else None
        self.calls = 0
        self.evaluations = 0

    def __call__(self, model, step: StepInfo, *args, **kwargs) -> torch.Tensor:
        """v for one network call; args/kwargs as `model.forward`."""
        inputs = model.prepare(*args, **kwargs)
        self.calls += 1

        def run_blocks() -> torch.Tensor:
            self.evaluations += 1
            return model.run_blocks(inputs, self.run)  # [B', N, D]

        if self.cache is None:
            video = run_blocks()
        else:
            video = self.cache.blocks(model, inputs, step.index, step.branch, run_blocks)
        return model.finish(inputs, video)

    def summary(self) -> str:
        preset = {v: k for k, v in CACHE_PRESETS.items() if v is not None}
        cache = "off" if self.cache is None else preset.get(self.cache.threshold, f"{self.cache.threshold:g}")
        return (
            f"{self.evaluations}/{self.calls} network calls computed (cache {cache}, "
            f"compiled blocks {'on' if self.run is not None else 'off'})"
        )
