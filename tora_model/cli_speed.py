"""Command-line speed options of `python -m tora_model generate`: step cache, CFG mode, compiled blocks, calibration.

All off by default (the exact official run). `--cache-calibrate FILE` runs uncached, records the probe/x0 changes
of every step (`calibrate_cache.Recorder`) and writes the step-cache fit there after the run; put it beside the
transformer weights as `step_cache.json` and later runs with `--cache` pick it up.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from .calibrate_cache import Recorder, write_fit
from .errors import ConfigError
from .sampling import CFG_MODES
from .speed import SpeedOptions
from .step_cache import CACHE_PRESETS, FIT_FILE, CacheFit, find_fit


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0.0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def add_speed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "speed (all off by default: the exact official run; costs measured in the README)"
    )
    g.add_argument(
        "--cache",
        choices=list(CACHE_PRESETS),
        default="off",
        help="step cache: skip the transformer on steps whose input barely changed (one GPU read per step)",
    )
    g.add_argument(
        "--cache-threshold",
        type=_threshold,
        help="explicit cache threshold (enables the cache; overrides presets)",
    )
    g.add_argument(
        "--cache-fit", type=Path, help=f"step-cache fit JSON (default: {FIT_FILE} beside --transformer)"
    )
    g.add_argument(
        "--cache-calibrate",
        type=Path,
        metavar="FIT.json",
        help=f"record this uncached run and write the step-cache fit (save it as {FIT_FILE} beside the weights)",
    )
    g.add_argument(
        "--cfg-mode", choices=CFG_MODES, default="batched", help="sequential: half the activation memory"
    )
    g.add_argument(
        "--cfg-skip-tolerance", type=_threshold, help="skip the uncond rows where |CFG weight - 1| <= this"
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks (regional)")


def speed_from_args(args: argparse.Namespace) -> SpeedOptions | Recorder:
    """The run's speed options (or a calibration recorder) from the parsed flags; refuses contradictions."""
    cache_on = args.cache != "off" or args.cache_threshold is not None
    if args.cache_calibrate is not None and cache_on:
        raise ConfigError(
            "--cache-calibrate records an uncached run; drop --cache/--cache-threshold for the calibration run"
        )
    if args.cache_fit is not None and not cache_on:
        raise ConfigError("--cache-fit has no effect without --cache balanced|fast or --cache-threshold")
    fit = None
    if cache_on:
        fit = CacheFit.load(args.cache_fit) if args.cache_fit is not None else find_fit(args.transformer)
    options = SpeedOptions(
        cache="custom" if args.cache == "off" and cache_on else args.cache,
        cache_threshold=args.cache_threshold,
        cache_fit=fit,
        cfg_mode=args.cfg_mode,
        cfg_skip_tolerance=args.cfg_skip_tolerance,
        compile=args.compile,
    )
    if args.cache_calibrate is not None:
        return Recorder(options=options)
    return options


def finish_speed(speed: SpeedOptions | Recorder, args: argparse.Namespace) -> None:
    """After a successful run: write the calibration fit when one was recorded."""
    if isinstance(speed, Recorder):
        write_fit(speed, args.cache_calibrate, model=str(args.transformer), steps=args.steps)
