"""Measured trajectory control of the tiny Tora, by path family: `python -m tora_model.tiny.evaluate`.

Source: issue 7 ("Measured control"), issue 12 (by path family). Held-out clips come from `tora_model.tiny.synthetic`
with seeds the training never used: one row per family of `path_families` with one object, and a row of 2–3
crossing objects over all families. Each clip is generated from its first frame and its trajectory (in the
trajectory's own timing: drawn curves smooth, per-frame paths per point) through the real pipeline
(`motion_guidance.motion_from_trajectory` → `pipeline.generate`), then every object is tracked in the output by
colour segmentation (`synthetic.track_colours`, each object's colour read where it starts in the output's own first
frame) and compared with the ground-truth centres. Per row: motion on, motion off (the same model and seed without
motion features), the VAE round trip of the ground-truth clip, and the ground-truth clip itself (tracker sanity).
Errors are Euclidean, in pixels at 96×64, over frames 1..F-1 of every object; an object the tracker cannot find in
a frame is a lost detection, counted as being at the frame centre (inside the means, never left out). Under the
table, the rows of several objects are split where the objects first meet (`meeting_masks`): the error before, and
from then on. Progress is logged per clip.

Layouts: generated frames float [F, H, W, 3] in [0, 1]; centres [N, F, 2] (x, y).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..checkpoints import load_transformer
from ..errors import CheckpointError
from ..motion_guidance import motion_from_trajectory
from ..pipeline import decode_latents, generate
from ..vae import SCALE
from ..vae_loading import load_vae
from .path_families import EVALUATED_FAMILIES, FAMILIES, PROBE_FAMILIES, check_families
from .synthetic import (
    FRAMES,
    HEIGHT,
    WIDTH,
    Clip,
    chroma_cosines,
    chroma_directions,
    make_clips,
    track_colours,
)
from .train import DEFAULT_OUT, clip_pixels

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
            "`python -m tora_model.tiny.train all --seed 0`"
        )
    return load_transformer(transformer_path), load_vae(vae_path)


def reference_colours(frames: np.ndarray, clip: Clip, radius: int = 2, min_cosine: float = 0.8) -> np.ndarray:
    """[N, 3] each object's colour as it appears in frame 0 of `frames` (median of a small window at its start).

    The tiny VAE shifts hues a little; taking the colour from the output's own first frame (the conditioning
    image, where every object's position is known) keeps the tracker about positions, not colour fidelity. Only the
    window's pixels whose chroma points the way of the object's own colour count: where another object covers its
    start (objects that cross can start one under the other), the window shows the other object, whose colour would
    make the tracker follow the wrong one. An object hidden at its start is tracked by its own colour.
    """
    pixels = np.asarray(frames[0], dtype=np.float64)  # [H, W, 3]
    directions = chroma_directions(pixels)  # [H, W, 3]
    out = []
    for (x, y), colour in zip(clip.centres[:, 0], clip.colours, strict=True):
        row, col = int(y), int(x)
        rows = slice(max(row - radius, 0), row + radius + 1)
        cols = slice(max(col - radius, 0), col + radius + 1)
        visible = pixels[rows, cols][chroma_cosines(directions[rows, cols], colour) > min_cosine]  # [n, 3]
        out.append(np.median(visible, axis=0) if len(visible) else np.asarray(colour, dtype=np.float64))
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
            mode="auto",  # the trajectory's own timing: drawn paths smooth, per-frame paths per point
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


def evaluate(
    model, vae, clips: list[Clip], *, steps: int = 20, seed: int = 0, progress: bool = True
) -> dict[str, Errors]:
    """Errors per row (see ROWS) over `clips`; `progress` logs each clip as it is done."""
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
        if progress:
            log.info("clip %d/%d evaluated (motion on and off)", i + 1, len(clips))
    return {
        row: Errors(np.concatenate([e for e, _ in parts]), sum(m for _, m in parts))
        for row, parts in collected.items()
    }


@dataclass(frozen=True)
class RowSpec:
    """One row of the evaluation by path family: which clips (`synthetic.make_clips` arguments) it measures."""

    family: str  # a name of path_families.FAMILIES or PROBE_FAMILIES, or "all" (every selected family, drawn per path)
    objects: int | tuple[int, ...]  # objects per clip, or the counts to draw from
    clips: int
    seed: int
    families: tuple[str, ...]

    @property
    def label(self) -> str:
        count = self.objects if isinstance(self.objects, int) else f"{min(self.objects)}–{max(self.objects)}"
        unseen = " (never trained on)" if self.family in PROBE_FAMILIES else ""
        return f"{self.family}, {count} object{'s' if count != 1 else ''}{unseen}"


MULTI_SEED_OFFSET = 100  # clips with several objects; one-object rows use seed + the family's index


def family_rows(
    families: tuple[str, ...] = FAMILIES, *, clips: int = 8, multi_clips: int = 12, seed: int = HELD_OUT_SEED
) -> list[RowSpec]:
    """One row per family with one object, then one row of 2–3 crossing objects over the training families among
    `families` (a probe family's clips hold one object).

    A family's clips depend only on (seed, the family's place in EVALUATED_FAMILIES), so a row measures the
    same clips whatever else is selected; "curves" at 1 object and `seed` are exactly `make_clips(seed, clips, 1)`,
    the original set.
    """
    rows = [RowSpec(f, 1, clips, seed + EVALUATED_FAMILIES.index(f), (f,)) for f in families if clips > 0]
    crossing = tuple(f for f in families if f in FAMILIES)
    if multi_clips > 0 and crossing:
        rows.append(RowSpec("all", (2, 3), multi_clips, seed + MULTI_SEED_OFFSET, crossing))
    return rows


def evaluate_rows(
    model, vae, rows: list[RowSpec], *, steps: int = 20
) -> list[tuple[RowSpec, dict[str, Errors]]]:
    """`evaluate` per row, logging each clip's errors and the time left as it goes."""
    out, start, total, done = [], time.monotonic(), sum(r.clips for r in rows), 0
    for r, row in enumerate(rows):
        results: dict[str, list[Errors]] = {name: [] for name in ROWS}
        for i, clip in enumerate(make_clips(row.seed, row.clips, row.objects, row.families)):
            one = evaluate(model, vae, [clip], steps=steps, seed=i, progress=False)
            for name in ROWS:
                results[name].append(one[name])
            done += 1
            left = (time.monotonic() - start) / done * (total - done)
            log.info(
                "row %d/%d (%s) clip %d/%d: motion on %.2f px, off %.2f px, VAE %.2f px (%d lost on); ~%.0f s left",
                r + 1,
                len(rows),
                row.label,
                i + 1,
                row.clips,
                one["motion on"].mean,
                one["motion off"].mean,
                one["VAE round trip"].mean,
                one["motion on"].missing,
                left,
            )
        merged = {
            name: Errors(np.concatenate([e.values for e in parts]), sum(e.missing for e in parts))
            for name, parts in results.items()
        }
        out.append((row, merged))
    return out


def format_family_table(measured: list[tuple[RowSpec, dict[str, Errors]]]) -> str:
    """Markdown: per row the mean / p90 error and lost detections of motion on, motion off, the VAE round trip and
    the ground truth (lost = the tracker found no object; counted at the frame centre, so inside the means)."""
    lines = [
        "| paths | clips | on mean | on p90 | on lost | off mean | off lost | off / on | VAE mean | VAE p90 | VAE lost "
        "| truth mean |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row, res in measured:
        on, off, rt, gt = (res[name] for name in ROWS)
        size = on.values.size
        lines.append(
            f"| {row.label} | {row.clips} | {on.mean:.2f} | {on.p90:.2f} | {on.missing}/{size} | {off.mean:.2f} "
            f"| {off.missing}/{size} | {off.mean / max(on.mean, 1e-9):.1f}× | {rt.mean:.2f} | {rt.p90:.2f} "
            f"| {rt.missing}/{size} | {gt.mean:.2f} |"
        )
    return "\n".join(lines)


MEETING_PX = 12.0  # objects whose centres come this close have met (the objects' radii are 5.5–8 px)


def meeting_masks(clip: Clip, within: float = MEETING_PX) -> np.ndarray:
    """bool [N, F−1] over frames 1..F−1 (the layout of `trajectory_errors`): True from the first frame where the
    object's centre comes within `within` px of another object's on. After such a meeting the flow says where
    something moves but not which object; this is where crossing objects lose their paths."""
    centres = clip.centres[:, 1:]  # [N, F-1, 2]
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=-1)  # [N, N, F-1]
    gaps[np.arange(len(centres)), np.arange(len(centres))] = np.inf
    return np.logical_or.accumulate(gaps.min(axis=1) < within, axis=1)


def _mean(values: np.ndarray) -> str:
    return f"{values.mean():.2f} px" if values.size else "—"


def format_meeting_split(measured: list[tuple[RowSpec, dict[str, Errors]]]) -> str:
    """Per row of several objects, the motion-on and motion-off errors split at the objects' first meeting
    (`meeting_masks`): before it, from it on, and the share of the row's error from it on. "" without such rows."""
    lines = []
    for row, res in measured:
        if row.objects == 1:
            continue
        clips = make_clips(row.seed, row.clips, row.objects, row.families)
        met = np.concatenate([meeting_masks(clip).ravel() for clip in clips])  # aligned with Errors.values
        for name in ("motion on", "motion off"):
            values = res[name].values
            before, after = values[~met], values[met]
            lines.append(
                f"{row.label}, {name}: before the objects meet (within {MEETING_PX:g} px) {_mean(before)} over "
                f"{before.size} object-frames; from then on {_mean(after)} over {after.size} "
                f"({after.sum() / max(values.sum(), 1e-9):.0%} of the error)"
            )
    return "\n".join(lines)


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


FIGURES = """figures in the README files and the commands behind them (held-out seeds; 20 steps):
  models/tiny_tora/README.md, control by path family (and the crossing objects' split where they meet):
      python -m tora_model.tiny.evaluate
  models/tiny_tora/README.md, paths never trained on (drawn loops and scribbles, 16 clips each):
      python -m tora_model.tiny.evaluate --families probes --clips 16
  models/tiny_tora/README.md, the original eased curves (16 clips, one object):
      python -m tora_model.tiny.evaluate --families curves --objects 1 --clips 16
  README.md Demo, the demo's error and lost frames: python -m tora_model demo (its log line)
  CI bounds: tests/test_trained_tiny.py, tests/test_tiny_workflow.py (their comments give the measured values)
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tora_model.tiny.evaluate",
        description=__doc__.split("\n")[0],
        epilog=FIGURES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--families",
        default="all",
        help=f"comma-separated path families; all (default) stands for {', '.join(FAMILIES)}, probes for "
        f"{', '.join(PROBE_FAMILIES)} (drawn paths never trained on, one object each); e.g. all,probes",
    )
    parser.add_argument("--clips", type=int, default=8, help="held-out clips per family row (default 8)")
    parser.add_argument(
        "--multi-clips",
        type=int,
        default=12,
        help="clips of the 2–3 crossing objects row (default 12; 0 leaves the row out)",
    )
    parser.add_argument(
        "--objects",
        type=int,
        choices=(1, 2, 3),
        default=None,
        help="every row at this object count instead (no separate multi-object row)",
    )
    parser.add_argument("--steps", type=int, default=20, help="sampler steps")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED, help="held-out data seed")
    parser.add_argument(
        "--models", type=Path, default=DEFAULT_OUT, help="folder with transformer.safetensors, vae/"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the 96x64 "not the released size" warning is expected here
    log.setLevel(logging.INFO)  # but this module's progress lines are shown: a run takes minutes
    torch.set_num_threads(1)
    families = check_families(args.families, probes=True)
    if args.objects not in (None, 1) and set(families) & set(PROBE_FAMILIES):
        parser.error(
            f"probe families hold one object per clip; --objects {args.objects} applies to {FAMILIES}"
        )
    model, vae = load_tiny_tora(args.models)
    if args.objects is None:
        rows = family_rows(families, clips=args.clips, multi_clips=args.multi_clips, seed=args.seed)
    else:
        rows = [
            replace(row, objects=args.objects)
            for row in family_rows(families, clips=args.clips, multi_clips=0, seed=args.seed)
        ]
    measured = evaluate_rows(model, vae, rows, steps=args.steps)
    split = format_meeting_split(measured)
    sys.stdout.write(format_family_table(measured) + "\n" + (f"\n{split}\n" if split else ""))


if __name__ == "__main__":
    main()
