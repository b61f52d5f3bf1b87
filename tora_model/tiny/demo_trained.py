"""`python -m tora_model demo` with the shipped tiny Tora: a preset path drawn over a generated first frame.

Source: issue 7 ("Where it shows"). The first frame is made by `tora_model.tiny.synthetic` (textured background, one red
disc at the path's start); the path goes through the real trajectory path (`motion_from_trajectory`: resample →
Gaussian-spread flow → flow colours → VAE → extractor) and the real pipeline (`pipeline.generate`, I2V). Outputs in
`--out`: `video` (the generated clip), `flow` (the flow video the model saw) and `side_by_side` (generated | generated
with the drawn path and the per-frame target overlaid, ×4 nearest-neighbour for viewing), as PNG frames plus
.mp4/.gif when imageio is installed. The run's trajectory error is logged, with the frames where the
tracker lost the object named (they are never averaged away).

Layouts: frames uint8 [F, H, W, 3] RGB.
"""

from __future__ import annotations

import argparse
import logging

import cv2
import numpy as np
import torch

from ..errors import ConfigError
from ..motion_guidance import motion_from_trajectory
from ..pipeline import generate
from ..resample import resample
from ..trajectory import Track, Trajectory
from .evaluate import load_tiny_tora
from .synthetic import FRAMES, HEIGHT, PALETTE, WIDTH, background, render, track_colours

log = logging.getLogger("tora_model")

ZOOM = 4


def demo_path() -> Trajectory:
    """An S-curve across the 96×64 frame with eased speed."""
    track = Track(points=((16.0, 46.0), (36.0, 18.0), (60.0, 46.0), (82.0, 20.0)), easing="ease-in-out")
    return Trajectory(WIDTH, HEIGHT, (track,))


def first_frame(centres: np.ndarray, seed: int) -> np.ndarray:
    """uint8 [H, W, 3]: a synthetic background with one red textured disc at the path's first point."""
    rng = np.random.default_rng(seed)
    return render(rng, centres[:, :1], PALETTE[:1], background(rng))[0]


def side_by_side(frames: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """[F, H·Z, 2·W·Z, 3]: generated | generated with the drawn path (white) and this frame's target (black ring)."""
    big = np.repeat(np.repeat(frames, ZOOM, axis=1), ZOOM, axis=2)  # [F, H·Z, W·Z, 3]
    path = np.round(centres[0] * ZOOM).astype(np.int32)  # [F, 2]
    out = []
    for f, frame in enumerate(big):
        overlay = np.ascontiguousarray(frame.copy())
        cv2.polylines(overlay, [path.reshape(-1, 1, 2)], False, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.circle(overlay, tuple(int(v) for v in path[f]), 3 * ZOOM, (0, 0, 0), 1, cv2.LINE_AA)
        out.append(np.concatenate([frame, overlay], axis=1))
    return np.stack(out)


def path_report(pixels: np.ndarray, centres: np.ndarray) -> tuple[str, int]:
    """(one log line, lost frames): how far the red object strays from `centres` [F, 2] in `pixels` uint8 [F, H, W, 3].

    Frames where the tracker finds no object are reported as lost (how many, which) and count in no average: a
    mean over the found frames alone would hide exactly the frames where control failed.
    """
    tracked = track_colours(pixels, PALETTE[:1])[0, 1:]  # [F-1, 2], frame 0 is the conditioning image
    lost = np.flatnonzero(np.isnan(tracked[:, 0])) + 1
    found = np.hypot(*(tracked - centres[1:]).T)[~np.isnan(tracked[:, 0])]
    moving = len(centres) - 1
    if not found.size:
        return f"object LOST in all {moving} generated frames (1-{moving}): the model did not draw it", moving
    summary = (
        f"object follows the path in {found.size} of {moving} frames: mean error {found.mean():.2f} px, "
        f"max {found.max():.2f} px"
    )
    if lost.size:
        lost_frames = ", ".join(map(str, lost))
        return f"{summary}; LOST in {lost.size} frames ({lost_frames}), counted in neither figure", int(
            lost.size
        )
    return f"{summary}; no frame lost", 0


def run_trained_demo(args: argparse.Namespace, write_preview) -> None:
    """Generate with the trained tiny Tora and write video, flow and side-by-side previews to args.out."""
    if args.cfg is not None:
        raise ConfigError(
            f"--cfg {args.cfg}: the trained tiny Tora has no text conditioning, so it always runs at cfg 1 without "
            "the dynamic schedule; leave --cfg out (it is used by --weights random)"
        )
    if (args.width, args.height, args.num_frames) != (WIDTH, HEIGHT, FRAMES):
        log.warning(
            "the tiny Tora was trained at %dx%d, %d frames; generating at %dx%d, %d frames instead",
            WIDTH,
            HEIGHT,
            FRAMES,
            args.width,
            args.height,
            args.num_frames,
        )
    model, vae = load_tiny_tora(args.models) if args.models else load_tiny_tora()
    trajectory = demo_path()
    centres = resample(trajectory, args.num_frames, args.width, args.height, "smooth")  # [1, F, 2]
    start = first_frame(centres * [[WIDTH / args.width, HEIGHT / args.height]], args.seed)
    start = cv2.resize(start, (args.width, args.height), interpolation=cv2.INTER_AREA)
    generator = torch.Generator().manual_seed(args.seed)
    size = dict(width=args.width, height=args.height, num_frames=args.num_frames)
    motion, flow_rgb = motion_from_trajectory(
        model, vae, trajectory, generator=generator, mode="smooth", **size
    )
    frames = generate(
        model,
        vae,
        text_embeds=torch.zeros(1, 1, model.config.text_dim),
        start_image=start.astype(np.float32) / 255,
        generator=generator,
        steps=args.steps,
        cfg=1.0,
        dynamic_cfg=False,
        sampler=args.sampler,
        motion=motion,
        tiling=False,
        **size,
    )
    pixels = np.clip(np.rint(frames.numpy() * 255), 0, 255).astype(np.uint8)  # [F, H, W, 3]
    report, lost = path_report(pixels, centres[0])
    (log.warning if lost else log.info)("%s", report)
    write_preview(flow_rgb, args.out, "flow", args.fps)
    write_preview(pixels, args.out, "video", args.fps)
    write_preview(side_by_side(pixels, centres), args.out, "side_by_side", args.fps)
    log.info("DEMO finished: outputs in %s (video, flow, side_by_side)", args.out)
