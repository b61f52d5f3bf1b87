"""Measured trajectory control of the tiny Tora: `python -m tora_model.evaluate --clips 16 --steps 20`.

Source: issue 7 ("Measured control"). Held-out clips come from `tora_model.synthetic` with a seed the training never
used; each is generated from its first frame and its drawn trajectory through the real pipeline
(`motion_guidance.motion_from_trajectory` → `pipeline.generate`), then every object is tracked in the output by
colour segmentation (`synthetic.track_colours`, each object's colour read where it starts in the output's own first
frame) and compared with the ground-truth centres. Rows: motion on, motion
off (the same model and seed without motion features), the VAE round trip of the ground-truth clip, and the
ground-truth clip itself (tracker sanity). Errors are Euclidean, in pixels at 96×64, over frames 1..F-1 of every
object; an object the tracker cannot find in a frame counts as being at the frame centre.

Layouts: generated frames float [F, H, W, 3] in [0, 1]; centres [N, F, 2] (x, y).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoints import load_transformer
from .errors import CheckpointError
from .motion_guidance import motion_from_trajectory
from .pipeline import decode_latents, generate
from .synthetic import FRAMES, HEIGHT, WIDTH, Clip, make_clips, track_colours
from .train import DEFAULT_OUT, clip_pixels
from .vae import SCALE
from .vae_loading import load_vae

log = logging.getLogger(__name__)

HELD_OUT_SEED = 1000  # training uses seeds 0 (VAE) and 1 (denoiser) by default
ROWS = ("motion on", "motion off", "VAE round trip", "ground truth")


@dataclass(frozen=True)
class Errors:
    """Per object-frame errors (px) of one row, and how many detections were missing."""

    values: np.ndarray  # [M]
    missing: int

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def p90(self) -> float:
        return float(np.percentile(self.values, 90))


def load_tiny_tora(folder: Path = DEFAULT_OUT):
    """(transformer, vae) of the shipped tiny Tora, through the same loaders as real weights."""
    transformer_path, vae_path = folder / "transformer.safetensors", folder / "vae"
    missing = [path.name for path in (transformer_path, vae_path) if not path.exists()]
    if missing and Path(folder).resolve() != DEFAULT_OUT:
        found = "no such folder" if not Path(folder).is_dir() else f"no {' or '.join(missing)} in it"
        raise CheckpointError(
            f"--models {folder}: {found}; expected the trained tiny Tora's folder (transformer.safetensors and vae/, "
            f"as shipped in {DEFAULT_OUT}) — check the path, or leave --models out"
        )
    if missing:
        raise CheckpointError(
            f"{folder} has no {' or '.join(missing)}: the trained tiny Tora ships with the repository (a pip-installed "
            "tora_model does not include it); run from a clone, pass --models FOLDER, or retrain it with "
            "`python -m tora_model.train all --seed 0`"
        )
    return load_transformer(transformer_path), load_vae(vae_path)


def reference_colours(frames: np.ndarray, clip: Clip, radius: int = 2) -> np.ndarray:
    """[N, 3] each object's colour as it appears in frame 0 of `frames` (median of a small window at its start).

    The tiny VAE shifts hues a little; taking the colour from the output's own first frame (the conditioning
    image, where every object's position is known) keeps the tracker about positions, not colour fidelity.
    """
    out = []
    for x, y in clip.centres[:, 0]:
        row, col = int(y), int(x)
        window = frames[0, max(row - radius, 0) : row + radius + 1, max(col - radius, 0) : col + radius + 1]
        out.append(np.median(np.asarray(window, dtype=np.float64).reshape(-1, 3), axis=0))
    return np.stack(out)


def trajectory_errors(frames: np.ndarray, clip: Clip) -> tuple[np.ndarray, int]:
    """Errors [N·(F−1)] of the tracked objects in `frames` (uint8-range [F, H, W, 3]) against the clip's centres."""
    colours = reference_colours(frames, clip)  # [N, 3]
    saturation = colours.max(-1) - colours.min(-1)
    threshold = float(np.clip(saturation.min() / 2, 20.0, 60.0))
    tracked = track_colours(frames, colours, min_saturation=threshold)[:, 1:]  # [N, F-1, 2]
    missing = np.isnan(tracked[..., 0])
    tracked[missing] = (WIDTH / 2, HEIGHT / 2)
    errors = np.hypot(*(tracked - clip.centres[:, 1:]).transpose(2, 0, 1))  # [N, F-1]
    return errors.ravel(), int(missing.sum())


def generate_clip(model, vae, clip: Clip, *, steps: int, seed: int, motion: bool, speed=None) -> np.ndarray:
    """Frames [F, H, W, 3] in [0, 255] generated from the clip's first frame (and trajectory when `motion`);
    `speed` as `pipeline.sample_latents` (step cache, compiled blocks; None = exact)."""
    guidance = None
    if motion:
        generator = torch.Generator().manual_seed(seed + 1)
        guidance, _ = motion_from_trajectory(
            model,
            vae,
            clip.trajectory,
            num_frames=FRAMES,
            width=WIDTH,
            height=HEIGHT,
            mode="smooth",
            generator=generator,
            tiling=False,
        )
    frames = generate(
        model,
        vae,
        text_embeds=torch.zeros(1, 1, model.config.text_dim),
        width=WIDTH,
        height=HEIGHT,
        num_frames=FRAMES,
        start_image=clip.frames[0].astype(np.float32) / 255,
        seed=seed,
        steps=steps,
        cfg=1.0,
        dynamic_cfg=False,
        motion=guidance,
        tiling=False,
        speed=speed,
    )
    return frames.numpy() * 255


def vae_round_trip(vae, clip: Clip, seed: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = vae.encode(clip_pixels(clip.frames)).sample(generator) * SCALE  # [1, 16, T, h, w]
    return decode_latents(vae, z.permute(0, 2, 1, 3, 4), tiling=False).numpy() * 255


def evaluate(model, vae, clips: list[Clip], *, steps: int = 20, seed: int = 0) -> dict[str, Errors]:
    """Errors per row (see ROWS) over `clips`."""
    collected: dict[str, list] = {row: [] for row in ROWS}
    for i, clip in enumerate(clips):
        outputs = {
            "motion on": generate_clip(model, vae, clip, steps=steps, seed=seed + i, motion=True),
            "motion off": generate_clip(model, vae, clip, steps=steps, seed=seed + i, motion=False),
            "VAE round trip": vae_round_trip(vae, clip, seed + i),
            "ground truth": clip.frames,
        }
        for row, frames in outputs.items():
            collected[row].append(trajectory_errors(frames, clip))
        log.info("clip %d/%d evaluated (motion on and off)", i + 1, len(clips))
    return {
        row: Errors(np.concatenate([e for e, _ in parts]), sum(m for _, m in parts))
        for row, parts in collected.items()
    }


def format_table(results: dict[str, Errors]) -> str:
    lines = [
        "| row | mean error (px) | p90 error (px) | missing detections |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row, errors in results.items():
        lines.append(
            f"| {row} | {errors.mean:.2f} | {errors.p90:.2f} | {errors.missing} / {errors.values.size} |"
        )
    on, off = results["motion on"].mean, results["motion off"].mean
    lines.append(f"\nmotion off / motion on mean error: {off / max(on, 1e-9):.1f}×")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tora_model.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=16, help="held-out clips")
    parser.add_argument("--objects", type=int, default=None, help="objects per clip (default: 1-3 at random)")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="held-out data seed")
    parser.add_argument(
        "--models", type=Path, default=DEFAULT_OUT, help="folder with transformer.safetensors, vae/"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the 96x64 "not the released size" warning is expected here
    log.setLevel(logging.INFO)  # but this module's progress lines are shown: a run takes minutes
    torch.set_num_threads(1)
    model, vae = load_tiny_tora(args.models)
    clips = make_clips(args.seed, args.clips, args.objects)
    results = evaluate(model, vae, clips, steps=args.steps)
    sys.stdout.write(format_table(results) + "\n")


if __name__ == "__main__":
    main()
