"""Calibrate the tiny Tora's step cache: `python -m tora_model.tiny.calibrate_cache`.

Source: the step cache of `step_cache.py` and its calibration (`calibrate_cache.Recorder`, `write_fit`: how the
probe and x0 changes are recorded and fitted). Here the runs are uncached I2V generations of the trained tiny Tora
on synthetic one-object clips (`synthetic.make_clips`) with their trajectories, on clips the training, the
evaluation and the benchmark never use. The shipped `models/tiny_tora/step_cache.json` was written by
    python -m tora_model.tiny.calibrate_cache --clips 4 --steps 20 50 --out models/tiny_tora/step_cache.json

Layouts: as `calibrate_cache.py` (records are host floats).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from ..calibrate_cache import Recorder, write_fit
from .evaluate import generate_clip, load_tiny_tora
from .synthetic import make_clips
from .train import DEFAULT_OUT

log = logging.getLogger(__name__)

CALIBRATION_SEED = 3000  # synthetic clips neither the training (0-3) nor the evaluation/benchmark (1000) use


def calibrate_tiny(clips: int, steps: list[int], seed: int, models: Path) -> Recorder:
    """Uncached I2V runs of the tiny Tora on synthetic one-object clips with their trajectories, at each step
    count (so the fit covers the probe changes of short and long runs), recorded."""
    model, vae = load_tiny_tora(models)
    recorder = Recorder()
    for count in steps:
        for i, clip in enumerate(make_clips(seed, clips, 1)):
            generate_clip(model, vae, clip, steps=count, seed=seed + i, motion=True, speed=recorder)
            log.info("%d steps: clip %d/%d recorded", count, i + 1, clips)
    return recorder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tora_model.tiny.calibrate_cache", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--clips", type=int, default=4, help="synthetic clips to run")
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50], help="sampler steps of the runs")
    parser.add_argument("--seed", type=int, default=CALIBRATION_SEED, help="synthetic data seed")
    parser.add_argument("--models", type=Path, default=DEFAULT_OUT, help="tiny Tora folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT / "step_cache.json", help="fit file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    # this module's progress and the fit's summary line are shown, other warnings (96x64 is not a released size) not
    for name in (__name__, write_fit.__module__):
        logging.getLogger(name).setLevel(logging.INFO)
    torch.set_num_threads(1)
    recorder = calibrate_tiny(args.clips, args.steps, args.seed, args.models)
    result = write_fit(
        recorder,
        args.out,
        model="tiny Tora (models/tiny_tora)",
        command=" ".join(["calibrate_cache", *(sys.argv[1:] if argv is None else argv)]),
    )
    sys.stdout.write(f"coefficients (highest degree first): {list(result.coefficients)}\n")


if __name__ == "__main__":
    main()
