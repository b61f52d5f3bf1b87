"""Families of paths users draw, for the tiny Tora's training clips and its evaluation by family.

Source: issue 12 (trajectory control that holds for any path a user draws). `synthetic.random_track` makes the
family "curves" (2–4 control points, smooth, eased, the drawn-path form the tiny Tora was first trained on). The
other families are per-frame paths, one point per frame as KJNodes coordinate strings carry them (`per_point`
timing, `resample.track_per_point_positions` gives the points back exactly):

- wiggles: a drift plus sums of 2–3 sinusoids per axis (0.5–3.5 cycles per clip);
- timed: a polyline with sharp corners, timed frame by frame with pauses (one of 2 frames mid-path) and sudden
  speed changes;
- fast: 8–14 px per frame at 96×64, bouncing off the frame's inner box, with an occasional sharp turn;
- holds: long holds (3–7 frames) between short moves;
- border: along the frame's edges, centres 7–10 px from the border (objects touch or cross it).

`PROBE_FAMILIES` are never in a training clip (training refuses them): paths drawn as a canvas user draws them, in the
drawn form (control points, interpolation, easing), unlike any training path, so the evaluation measures control on
paths the model has not seen — loops: a smooth eased loop or spiral through 6–9 control points, drawn on a canvas five
times the generation size (the canvas of a source image, scaled at resampling); scribbles: a polyline through 5–7
points with sharp corners at a steady pace.

Every family keeps within `MAX_SPEED` px per frame. `crossing` tells whether two paths cross (clips with several
objects are drawn until every later path crosses an earlier one, when it can).

Layouts: positions float64 [F, 2] (x, y) in pixels of the WIDTH×HEIGHT frame.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..resample import resample
from ..trajectory import EASINGS, Track, Trajectory

FAMILIES = ("curves", "wiggles", "timed", "fast", "holds", "border")
PROBE_FAMILIES = ("loops", "scribbles")  # evaluation only
EVALUATED_FAMILIES = FAMILIES + PROBE_FAMILIES  # their order fixes each evaluation row's seed
LOOP_CANVAS_SCALE = 5
MAX_SPEED = 14.0  # px per frame at 96×64
INNER = 9.0  # per-frame families keep centres this far from the border (objects are 5.5–8 px in radius)
MARGIN = 11.0  # drawn paths (curves, probes) keep their control points this far in


def _box(width: int, height: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    return np.array([margin, margin]), np.array([width - margin, height - margin])


def _fit(positions: np.ndarray, width: int, height: int, margin: float = INNER) -> np.ndarray:
    """Scale a path about its centre until it fits the box (and MAX_SPEED), then shift it inside: [F, 2]."""
    low, high = _box(width, height, margin)
    span = positions.max(0) - positions.min(0)
    scale = min(1.0, *((high - low) / np.maximum(span, 1e-9)))
    speed = np.hypot(*np.diff(positions, axis=0).T).max(initial=0.0)
    scale = min(scale, MAX_SPEED / max(speed, 1e-9))
    centre = (positions.max(0) + positions.min(0)) / 2
    out = centre + (positions - centre) * scale
    shift = np.maximum(low - out.min(0), 0) + np.minimum(high - out.max(0), 0)
    return out + shift


def _along(polyline: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """Points [F, 2] at arc-length `distances` [F] along `polyline` [P, 2] (clamped to its ends)."""
    lengths = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(polyline, axis=0).T))])
    return np.stack([np.interp(distances, lengths, polyline[:, k]) for k in (0, 1)], axis=-1)


def _length(polyline: np.ndarray) -> float:
    return float(np.hypot(*np.diff(polyline, axis=0).T).sum())


def wiggle(rng: np.random.Generator, frames: int, width: int, height: int) -> np.ndarray:
    """A drift plus 2–3 sinusoids per axis."""
    t = np.linspace(0.0, 1.0, frames)[:, None]  # [F, 1]
    low, high = _box(width, height, INNER)
    start = rng.uniform(low, high)
    drift = rng.uniform(-1, 1, size=2) * rng.uniform(10, 50)
    path = start + t * drift  # [F, 2]
    for _ in range(int(rng.integers(2, 4))):
        amplitude = rng.uniform(2, 9, size=2)
        cycles, phase = rng.uniform(0.5, 3.5, size=2), rng.uniform(0, 2 * np.pi, size=2)
        path = path + amplitude * np.sin(2 * np.pi * cycles * t + phase)
    return _fit(path, width, height)


def _corners(rng: np.random.Generator, count: int, width: int, height: int) -> np.ndarray:
    """`count` random points in the inner box with at least 20 px between consecutive ones: [count, 2]."""
    low, high = _box(width, height, INNER)
    points = [rng.uniform(low, high)]
    while len(points) < count:
        candidate = rng.uniform(low, high)
        if np.hypot(*(candidate - points[-1])) >= 20:
            points.append(candidate)
    return np.stack(points)


def timed(rng: np.random.Generator, frames: int, width: int, height: int) -> np.ndarray:
    """A polyline with sharp corners timed per frame: pauses (a 2-frame one mid-path) and sudden speed changes."""
    polyline = _corners(rng, int(rng.integers(2, 5)), width, height)
    speed = rng.choice([0.3, 1.0, 2.5], size=frames - 1) * rng.uniform(0.6, 1.4, size=frames - 1)
    pause = int(rng.integers(frames // 4, 3 * frames // 4))
    speed[pause : pause + 2] = 0.0  # the two-frame pause mid-path
    speed[rng.random(frames - 1) < 0.12] = 0.0  # and the odd other frame without motion
    speed[0] = max(speed[0], 0.3)  # never a path without any motion
    total = min(
        _length(polyline), MAX_SPEED * speed.sum() / speed.max()
    )  # the fastest frame at most MAX_SPEED
    return _along(polyline, np.concatenate([[0.0], np.cumsum(speed)]) * total / speed.sum())


def fast(rng: np.random.Generator, frames: int, width: int, height: int) -> np.ndarray:
    """8–14 px per frame, bouncing off the inner box, turning sharply now and then."""
    low, high = _box(width, height, INNER)
    position, angle = rng.uniform(low, high), rng.uniform(0, 2 * np.pi)
    out = [position]
    for _ in range(frames - 1):
        if rng.random() < 0.15:
            angle += rng.uniform(np.pi / 3, np.pi) * rng.choice([-1, 1])
        step = rng.uniform(8, MAX_SPEED) * np.array([np.cos(angle), np.sin(angle)])
        position = out[-1] + step
        for k in (0, 1):  # reflect off the box
            if position[k] < low[k] or position[k] > high[k]:
                position[k] = 2 * (low[k] if position[k] < low[k] else high[k]) - position[k]
                angle = np.pi - angle if k == 0 else -angle
        out.append(np.clip(position, low, high))
    return np.stack(out)


def holds(rng: np.random.Generator, frames: int, width: int, height: int) -> np.ndarray:
    """Holds of 3–7 frames between short linear moves (2–5 frames each)."""
    points = _corners(rng, 3, width, height)
    out, target = [points[0]] * int(rng.integers(3, 8)), 1
    while len(out) < frames:
        if target < len(points):
            steps = int(rng.integers(2, 6))
            speed = np.hypot(*(points[target] - out[-1])) / steps
            steps = max(steps, int(np.ceil(speed / MAX_SPEED * steps)))
            out += list(out[-1] + np.linspace(0, 1, steps + 1)[1:, None] * (points[target] - out[-1]))
            target += 1
        out += [out[-1]] * int(rng.integers(3, 8))
    return np.stack(out[:frames])


def border(rng: np.random.Generator, frames: int, width: int, height: int) -> np.ndarray:
    """Along the frame's edges, 7–10 px in: a walk over 2–3 consecutive sides of that band, at a steady pace."""
    inset = rng.uniform(7, 10)
    low, high = _box(width, height, inset)
    corners = np.array([low, [high[0], low[1]], high, [low[0], high[1]]])  # clockwise
    first, sides = int(rng.integers(4)), int(rng.integers(1, 4))
    order = [(first + k) % 4 for k in range(sides + 1)]
    polyline = corners[order if rng.random() < 0.5 else order[::-1]]
    polyline[0] += (polyline[1] - polyline[0]) * rng.uniform(0, 0.5)
    length = min(_length(polyline), (frames - 1) * rng.uniform(2, MAX_SPEED * 0.8))
    return _along(polyline, np.linspace(0.0, length, frames))


GENERATORS = {"wiggles": wiggle, "timed": timed, "fast": fast, "holds": holds, "border": border}


def family_positions(
    rng: np.random.Generator, family: str, frames: int, width: int, height: int
) -> np.ndarray:
    """Per-frame positions [F, 2] of one path of a per-frame `family` (every family of FAMILIES but curves)."""
    if family not in GENERATORS:
        raise ConfigError(
            f"path family {family!r} has no per-frame generator; expected one of {sorted(GENERATORS)} (curves are "
            "drawn paths: synthetic.random_track)"
        )
    return np.round(GENERATORS[family](rng, frames, width, height), 1)


def _fastest(trajectory: Trajectory, frames: int, width: int, height: int) -> float:
    """The largest per-frame step (px of the generation) of a one-track trajectory, in its own timing."""
    return float(np.hypot(*np.diff(resample(trajectory, frames, width, height)[0], axis=0).T).max())


def loop(rng: np.random.Generator, frames: int, width: int, height: int) -> Trajectory:
    """A drawn loop or spiral: 6–9 control points over 0.8–1.5 turns of an ellipse whose radius may shrink (a
    spiral), smooth, eased, on a canvas LOOP_CANVAS_SCALE times the generation size; shrunk about its centre until
    its fastest frame is within MAX_SPEED."""
    turns, count = rng.uniform(0.8, 1.5), int(rng.integers(6, 10))
    angles = rng.uniform(0, 2 * np.pi) + rng.choice([-1, 1]) * np.linspace(0, 2 * np.pi * turns, count)
    shrink = np.linspace(1.0, rng.uniform(0.45, 1.0), count)[:, None]  # 1 = a loop, < 1 a spiral
    points = shrink * rng.uniform([9, 7], [22, 16]) * np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    low, high = _box(width, height, MARGIN)
    points = points * min(1.0, *((high - low) / (points.max(0) - points.min(0))))  # [count, 2], fits the box
    room = high - low - (points.max(0) - points.min(0))
    points = points - points.min(0) + low + rng.uniform(0, 1, size=2) * room
    easing = EASINGS[int(rng.integers(len(EASINGS)))]
    scale = LOOP_CANVAS_SCALE
    while True:
        track = Track(points=tuple(map(tuple, np.round(points * scale, 1).tolist())), easing=easing)
        trajectory = Trajectory(width * scale, height * scale, (track,))
        if _fastest(trajectory, frames, width, height) <= MAX_SPEED:
            return trajectory
        centre = (points.max(0) + points.min(0)) / 2
        points = centre + (points - centre) * 0.9


def scribble(rng: np.random.Generator, frames: int, width: int, height: int) -> Trajectory:
    """A drawn polyline through 5–7 points (consecutive ones 14–36 px apart, so at most 13.5 px per frame) with
    sharp corners, at a steady pace."""
    low, high = _box(width, height, MARGIN)
    count, points = int(rng.integers(5, 8)), [rng.uniform(low, high)]
    while len(points) < count:
        candidate = rng.uniform(low, high)
        if 14 <= np.hypot(*(candidate - points[-1])) <= 36:
            points.append(candidate)
    track = Track(points=tuple(map(tuple, np.round(points, 1).tolist())), interpolation="linear")
    return Trajectory(width, height, (track,))


PROBES = {"loops": loop, "scribbles": scribble}


def check_families(families, probes: bool = False) -> tuple[str, ...]:
    """`families` as a tuple of known names (a comma-separated string or a sequence of names); "all" among them
    stands for the training FAMILIES and, with `probes` (evaluation), "probes" for the PROBE_FAMILIES, which may
    then also be named one by one. Repeats count once, in the order first named."""
    known = EVALUATED_FAMILIES if probes else FAMILIES
    groups = {"all": FAMILIES, **({"probes": PROBE_FAMILIES} if probes else {})}
    given = tuple(n.strip() for n in families.split(",")) if isinstance(families, str) else tuple(families)
    names = tuple(dict.fromkeys(name for n in given for name in groups.get(n, (n,))))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        hint = (
            "or 'probes'"
            if probes
            else f"({list(PROBE_FAMILIES)} only measure unseen paths: never trained on)"
        )
        raise ConfigError(
            f"path families {unknown or list(given)} are not known here; expected names from {list(known)} "
            f"(comma-separated), 'all' {hint}"
        )
    return names


def _segments_cross(a0, a1, b0, b1) -> bool:
    def side(p, q, r):
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])

    return side(a0, a1, b0) * side(a0, a1, b1) < 0 and side(b0, b1, a0) * side(b0, b1, a1) < 0


def crossing(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether two paths [F, 2] cross (any segment of one properly intersects one of the other)."""
    return any(
        _segments_cross(first[i], first[i + 1], second[j], second[j + 1])
        for i in range(len(first) - 1)
        for j in range(len(second) - 1)
    )
