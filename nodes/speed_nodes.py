"""Tora Speed Options: step cache, CFG mode and compiled blocks for Tora Sampler (TORA_SPEED, optional input).

A separate node, so the sampler's widgets (and every saved workflow) stay as they are and leaving it unconnected is
the exact official run. The value it returns is a frozen `tora_model.speed.SpeedOptions`; the sampler makes the
per-run state from it, never touching the model. Costs in the tooltips are measured (`bench/bench_cache.py`).
"""

from __future__ import annotations

from ..tora_model.speed import SpeedOptions
from ..tora_model.step_cache import CACHE_PRESETS

CACHE_MODES = [*CACHE_PRESETS, "custom"]


class ToraSpeedOptions:
    """Fewer or cheaper transformer evaluations for Tora Sampler, each with its measured cost."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "cache": (
                    CACHE_MODES,
                    {
                        "default": "off",
                        "tooltip": "Step cache (TeaCache idea): skip the transformer on steps whose input barely "
                        "changed and reuse its last residual. off: exact. Measured on the tiny model at 50 steps "
                        "(20 steps): balanced 2.0× (2.0×) fewer transformer evaluations, trajectory error -0.01 "
                        "(-0.03) px, PSNR 54.7 (54.1) dB against uncached; fast 2.9× (2.9×) fewer, error -0.06 "
                        "(-0.04) px, 47.1 (50.4) dB. custom: use cache_threshold. Reads one number from the GPU per step.",
                    },
                ),
                "cache_threshold": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 10.0,
                        "step": 0.01,
                        "tooltip": "Explicit cache threshold (accumulated estimated x0 change before recomputing; "
                        "balanced 0.4, fast 0.9); 0 = the preset's. Higher skips more. A model without a "
                        "step_cache.json fit beside its weights uses the raw input change (README: calibrating "
                        "the step cache).",
                    },
                ),
                "cfg_mode": (
                    ["batched", "sequential"],
                    {
                        "default": "batched",
                        "tooltip": "batched: uncond and cond rows in one forward (official). sequential: two "
                        "forwards of one row per step; 5B at 720x480x49: 1.54 GiB of step activations instead "
                        "of 2.86 GiB (estimate), the same result up to float rounding (max difference 1e-5 of the "
                        "range).",
                    },
                ),
                "cfg_skip_tolerance": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Skip the uncond rows on steps where the (dynamic) CFG weight w is within this "
                        "of 1 (0 = never); such a step's x0 moves by (w-1)·(cond-uncond). Official dynamic CFG, "
                        "50 steps, 0.01: 3 of 50 steps run one row (3 % fewer row evaluations), each off by at "
                        "most 1 % of the CFG difference.",
                    },
                ),
                "compile": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "torch.compile one transformer block and run every block through it (works "
                        "with fp8 and block swap; eager with one log line when compile is unavailable). CPU, "
                        "5B-width 4-block config: 1.03× per step (GEMM-bound; not measured on a GPU), outputs "
                        "within 2e-7 relative; the first step pays the compile (about 20 s per block type).",
                    },
                ),
            },
        }

    RETURN_TYPES = ("TORA_SPEED",)
    RETURN_NAMES = ("speed",)
    OUTPUT_TOOLTIPS = ("Speed options for Tora Sampler's optional 'speed' input.",)
    FUNCTION = "options"
    CATEGORY = "Tora/sampling"

    def options(self, cache, cache_threshold, cfg_mode, cfg_skip_tolerance, compile):
        return (
            SpeedOptions(
                cache=cache,
                cache_threshold=cache_threshold or None,
                cfg_mode=cfg_mode,
                cfg_skip_tolerance=cfg_skip_tolerance or None,
                compile=compile,
            ),
        )


NODE_CLASS_MAPPINGS = {"ToraSpeedOptions": ToraSpeedOptions}
NODE_DISPLAY_NAME_MAPPINGS = {"ToraSpeedOptions": "Tora Speed Options"}
