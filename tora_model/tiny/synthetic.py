"""Procedural training / evaluation clips for the tiny Tora: textured objects moving over a textured background.

Source: issue 7 (a CPU-trainable Tora whose control is measured by trajectory error). Each clip holds one to three
centrally symmetric objects (disc, square, diamond) of distinct saturated colours with a moving stripe texture,
over a static low-saturation textured background. Every object follows a `Trajectory` track a user could draw
(2–4 control points, smooth interpolation, a start/end frame = pauses, an easing = varied speed), or with
`families` a path of the `path_families` (wiggles, per-frame timed, fast, holds, border; issue 12) given one point
per frame; its per-frame centres are EXACTLY `resample(trajectory, F, W, H)` (the trajectory's own timing), the
positions the pipeline renders into the flow video (`flow_video` below = `render_flow` → `flow_to_rgb`, the inference
functions). `track_colours` is the evaluation's tracker: chroma segmentation per object colour → centroid.

Layouts: frames uint8 [F, H, W, 3] (RGB); centres float64 [N_objects, F, 2] (x, y in pixels, pixel centres at
integer + 0.5); flow video uint8 [F, H, W, 3]. Deterministic for a given seed (numpy PCG64).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..flow import SIGMA, flow_to_rgb, render_flow
from ..resample import resample
from ..trajectory import EASINGS, Track, Trajectory
from .path_families import (
    MARGIN,
    PROBE_FAMILIES,
    PROBES,
    check_families,
    crossing,
    family_positions,
)

WIDTH, HEIGHT, FRAMES = 96, 64, 17
# Saturated, pairwise distinct in chroma direction (cosine between any two chroma vectors <= 0.5).
PALETTE = np.array(
    [[225, 30, 30], [30, 190, 40], [40, 70, 235], [235, 205, 20], [215, 40, 215], [20, 200, 215]],
    dtype=np.float64,
)
SHAPES = ("disc", "square", "diamond")


@dataclass(frozen=True, eq=False)
class Clip:
    """One generated clip with its ground truth."""

    frames: np.ndarray  # uint8 [F, H, W, 3]
    centres: np.ndarray  # float64 [N, F, 2] — equals resample(trajectory, ...) exactly
    colours: np.ndarray  # float64 [N, 3] RGB of each object
    trajectory: Trajectory  # the drawn paths (canvas = the generation size)

    def flow_video(self, sigma: float = SIGMA) -> np.ndarray:
        """The conditioning flow video uint8 [F, H, W, 3], rendered as at inference (`sigma`: the model's
        `ToraConfig.flow_sigma`)."""
        return flow_to_rgb(render_flow(self.centres, HEIGHT, WIDTH, sigma))

    def dense_flow_video(self) -> np.ndarray:
        """The colour-coded `dense_flow` uint8 [F, H, W, 3] (training's first stage, `train denoiser --dense-flow`)."""
        return flow_to_rgb(dense_flow(self))


def _smooth_noise(rng: np.random.Generator, cells: tuple[int, int]) -> np.ndarray:
    """Low-frequency noise [H, W] in [0, 1]: a random grid bilinearly upsampled."""
    grid = rng.random((cells[0] + 1, cells[1] + 1))
    ys = np.linspace(0, cells[0], HEIGHT)[:, None]
    xs = np.linspace(0, cells[1], WIDTH)[None, :]
    y0, x0 = np.minimum(ys.astype(int), cells[0] - 1), np.minimum(xs.astype(int), cells[1] - 1)
    fy, fx = ys - y0, xs - x0
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy  # [H, W]


def background(rng: np.random.Generator) -> np.ndarray:
    """Static low-saturation texture float64 [H, W, 3] in [0, 255]: blotches, fine grain and faint stripes."""
    base = 70 + 110 * _smooth_noise(rng, (int(rng.integers(2, 5)), int(rng.integers(3, 7))))  # [H, W]
    grain = 18 * _smooth_noise(rng, (16, 24)) - 9
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 16)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    stripes = 8 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    tint = rng.uniform(-8, 8, size=3)  # a faint colour cast keeps the saturation low
    grey = (base + grain + stripes)[..., None]  # [H, W, 1]
    return np.clip(grey + tint, 0, 255)  # [H, W, 3]


def random_track(rng: np.random.Generator) -> Track:
    """A drawable path: 2–4 control points at least 24 px apart in total, pauses and an easing."""
    count = int(rng.integers(2, 5))
    while True:
        xs = rng.uniform(MARGIN, WIDTH - MARGIN, size=count)
        ys = rng.uniform(MARGIN, HEIGHT - MARGIN, size=count)
        if np.hypot(np.diff(xs), np.diff(ys)).sum() >= 24:
            break
    start = int(rng.integers(0, 5)) if rng.random() < 0.5 else 0
    end = int(rng.integers(FRAMES - 5, FRAMES)) if rng.random() < 0.5 else None
    return Track(
        points=tuple(zip(xs.round(1).tolist(), ys.round(1).tolist(), strict=True)),
        interpolation="smooth",
        start_frame=start,
        end_frame=end,
        easing=EASINGS[int(rng.integers(len(EASINGS)))],
    )


def _coverage(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape centred at the origin (pixel offsets dx, dy)."""
    if shape == "disc":
        distance = np.hypot(dx, dy)
    elif shape == "square":
        distance = np.maximum(np.abs(dx), np.abs(dy)) * 1.1
    else:
        distance = (np.abs(dx) + np.abs(dy)) * 0.8
    return np.clip(radius + 0.5 - distance, 0.0, 1.0)


def render(
    rng: np.random.Generator, centres: np.ndarray, colours: np.ndarray, canvas: np.ndarray
) -> np.ndarray:
    """Draw the objects (later ones on top) at `centres` [N, F, 2] over `canvas` [H, W, 3] → uint8 [F, H, W, 3]."""
    shapes = [SHAPES[int(rng.integers(len(SHAPES)))] for _ in colours]
    radii = rng.uniform(5.5, 8.0, size=len(colours))
    stripe_angle, stripe_period = (
        rng.uniform(0, np.pi, size=len(colours)),
        rng.uniform(3, 6, size=len(colours)),
    )
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH] + 0.5  # pixel centres
    frames = np.empty((centres.shape[1], HEIGHT, WIDTH, 3))
    for f in range(centres.shape[1]):
        frame = canvas.copy()
        for i, colour in enumerate(colours):
            dx, dy = xx - centres[i, f, 0], yy - centres[i, f, 1]
            alpha = _coverage(shapes[i], dx, dy, radii[i])[..., None]  # [H, W, 1]
            phase = (dx * np.cos(stripe_angle[i]) + dy * np.sin(stripe_angle[i])) / stripe_period[i]
            shade = (
                0.78 + 0.22 * np.sign(np.sin(2 * np.pi * phase))[..., None]
            )  # texture moves with the object
            frame = frame * (1 - alpha) + colour * shade * alpha
        frames[f] = frame
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


def _object_count(rng: np.random.Generator, num_objects: int | tuple[int, ...] | None) -> int:
    if num_objects is None:
        return int(rng.integers(1, 4))
    if isinstance(num_objects, tuple):
        return int(num_objects[int(rng.integers(len(num_objects)))])
    return num_objects


def family_trajectory(rng: np.random.Generator, count: int, families: tuple[str, ...]) -> Trajectory:
    """`count` paths of families drawn from `families`, as one per-frame (KJNodes-style) trajectory.

    Drawn curves are resampled to one point per frame, so every track is timed alike (`per_point`, exact). Each
    later path is redrawn (up to 30 times) until it crosses an earlier one: clips with several objects are about
    objects that cross.
    """
    paths: list[np.ndarray] = []
    for _ in range(count):
        for _attempt in range(30):
            family = families[int(rng.integers(len(families)))]
            if family == "curves":
                drawn = Trajectory(WIDTH, HEIGHT, (random_track(rng),))
                path = np.round(resample(drawn, FRAMES, WIDTH, HEIGHT, "smooth")[0], 1)  # [F, 2]
            else:
                path = family_positions(rng, family, FRAMES, WIDTH, HEIGHT)
            if not paths or any(crossing(path, earlier) for earlier in paths):
                break
        paths.append(path)
    tracks = tuple(Track(points=tuple(map(tuple, path.tolist())), interpolation="linear") for path in paths)
    return Trajectory(WIDTH, HEIGHT, tracks, per_point=True)


def make_clip(
    rng: np.random.Generator,
    num_objects: int | tuple[int, ...] | None = None,
    families: tuple[str, ...] | None = None,
) -> Clip:
    """One clip: 1–3 objects (or `num_objects`: a count, or a tuple of counts to draw from) of distinct palette
    colours along random paths — drawn eased curves (`families` None or ("curves",), the original clips, bit for
    bit), one object along a drawn path of a probe family (`path_families.PROBE_FAMILIES`, in its drawn form and
    canvas), else paths of the named `path_families` that cross."""
    count = _object_count(rng, num_objects)
    colours = PALETTE[rng.permutation(len(PALETTE))[:count]]
    if families is None or tuple(families) == ("curves",):
        trajectory = Trajectory(WIDTH, HEIGHT, tuple(random_track(rng) for _ in range(count)))
    elif len(families) == 1 and families[0] in PROBE_FAMILIES:
        if count != 1:
            raise ValueError(f"probe family {families[0]!r} clips hold one object, got {count}")
        trajectory = PROBES[families[0]](rng, FRAMES, WIDTH, HEIGHT)
    else:
        trajectory = family_trajectory(rng, count, check_families(families))
    centres = resample(trajectory, FRAMES, WIDTH, HEIGHT)  # [N, F, 2], the trajectory's own timing
    frames = render(rng, centres, colours, background(rng))
    return Clip(frames=frames, centres=centres, colours=colours, trajectory=trajectory)


def make_clips(
    seed: int,
    count: int,
    num_objects: int | tuple[int, ...] | None = None,
    families: tuple[str, ...] | None = None,
) -> list[Clip]:
    """`count` clips, deterministic for `seed` (see `make_clip`); `families` None gives the original clips."""
    rng = np.random.default_rng(seed)
    return [make_clip(rng, num_objects, families) for _ in range(count)]


def _chroma(rgb: np.ndarray) -> np.ndarray:
    return rgb - rgb.mean(axis=-1, keepdims=True)


def chroma_directions(pixels: np.ndarray) -> np.ndarray:
    """Unit chroma vectors [..., 3] of float RGB pixels [..., 3] (about zero for grey pixels)."""
    chroma = _chroma(pixels)
    return chroma / (np.linalg.norm(chroma, axis=-1, keepdims=True) + 1e-9)


def chroma_cosines(directions: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Cosine [...] between `chroma_directions` [..., 3] and the chroma direction of the RGB `colour` [3]."""
    target = _chroma(np.asarray(colour, dtype=np.float64))
    return directions @ (target / np.linalg.norm(target))


def object_masks(
    frames: np.ndarray, colours: np.ndarray, min_saturation: float = 60.0, min_cosine: float = 0.9
) -> np.ndarray:
    """Chroma segmentation bool [N, F, H, W]: a pixel of frames (uint8 or float in [0, 255], [F, H, W, 3]) belongs to
    object i when its saturation (max − min) exceeds `min_saturation` and its chroma direction is within
    arccos(min_cosine) of the object colour's."""
    pixels = np.asarray(frames, dtype=np.float64)  # [F, H, W, 3]
    saturated = pixels.max(-1) - pixels.min(-1) > min_saturation  # [F, H, W]
    directions = chroma_directions(pixels)  # [F, H, W, 3]
    return np.stack([saturated & (chroma_cosines(directions, colour) > min_cosine) for colour in colours])


def track_colours(
    frames: np.ndarray, colours: np.ndarray, min_saturation: float = 60.0, min_cosine: float = 0.9
) -> np.ndarray:
    """Centroid per object and frame float64 [N, F, 2] (NaN where no pixel matches) of the `object_masks`."""
    masks = object_masks(frames, colours, min_saturation, min_cosine)  # [N, F, H, W]
    yy, xx = np.mgrid[0 : masks.shape[2], 0 : masks.shape[3]] + 0.5
    out = np.full((*masks.shape[:2], 2), np.nan)
    for i, mask in enumerate(masks):
        counts = mask.sum(axis=(1, 2))
        found = counts > 0
        out[i, found, 0] = (mask * xx).sum(axis=(1, 2))[found] / counts[found]
        out[i, found, 1] = (mask * yy).sum(axis=(1, 2))[found] / counts[found]
    return out


def dense_flow(clip: Clip) -> np.ndarray:
    """The clip's dense object flow float32 [F, H, W, 2]: frame f + 1 holds, on every pixel of object i in frame f
    (its `object_masks`, the visible part: an object on top hides the one below), the object's move from frame f to
    f + 1 — the flow layout of `flow.render_flow`, object-shaped instead of a Gaussian around the path point. The
    Tora paper's first training stage conditions on dense optical flow; this is its exact counterpart here."""
    masks = object_masks(clip.frames[:-1], clip.colours)  # [N, F-1, H, W]
    moves = np.diff(clip.centres, axis=1).astype(np.float32)  # [N, F-1, 2]
    flow = np.zeros((*clip.frames.shape[:3], 2), dtype=np.float32)  # [F, H, W, 2]
    for mask, move in zip(masks, moves, strict=True):
        flow[1:][mask] = np.broadcast_to(move[:, None, None], (*mask.shape, 2))[mask]
    return flow
